//! The strided input gradient (a strided transposed convolution's forward pass) on the
//! implicit-GEMM kernel, split into stride phases ("sub-pixel"): the input-gradient pixels
//! whose rows and columns share a phase modulo the stride receive the same taps, each
//! from one output-gradient pixel at a fixed offset, so each phase is an implicit GEMM
//! over the zero-padded output gradient with the phase's taps only: no zero insertion, no
//! column buffer, no scattered adds.
//!
//! Input-gradient row `iy` (with `iy + pad = s * q + r`) receives tap `ky` exactly when
//! `ky * d = s * a + r` for some `a >= 0`, from output-gradient row `q - a`; the slab pads
//! the output gradient by the largest `a` before and with zeros after, so every read is
//! inside it. Tasks are a panel of 64 input-gradient channels and a band of its rows;
//! every output sums its taps in a fixed order, whatever the thread count.

use super::implicit_gemm::{grown, pack_panel, write_rows, Gemm, BLOCK};
use super::tiled::{as_f32, as_f32_mut};
use super::{balanced_runs, block_tasks, padded_slab, Scratch};
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};
use crate::kernels::all_finite;
use crate::kernels::Aligned;
use crate::threading::{for_each_chunk, for_each_item_init};

/// Tasks a call is split into at most, where its rows allow.
const TASKS: usize = 16;
/// Input-gradient pixels of each phase a band holds at least where the call has tasks
/// enough without more bands: each band sweeps its block's whole panel (every phase's
/// weights), so that thin bands stream the panels from L3 for a few pixels each. Against
/// [`TASKS`] bands whatever their size (`conv2d-bench/sweeps/transposed.json`, 2026-12-07,
/// AMD Zen 4, five in-process alternated rounds): stride-2 to stride-4 layers of 32-256
/// channels on 8x8-20x20 inputs 1.04-1.32x as fast on one thread and 1.02-1.25x on two,
/// the others within 0.97-1.03x; the strided sweep's input gradients 1.09-1.12x where
/// they take the phases. Every output's sum is the same whatever the split.
const MIN_BAND_PIXELS: usize = 256;

/// One axis of the phase split: for each phase `r < s`, its taps `(k, a)` (read `a` rows or
/// columns before the pixel's `q`); the padding before (the largest `a`) and the slab's
/// extent along the axis.
struct Axis {
    stride: usize,
    pad: usize,
    taps: Vec<Vec<(usize, usize)>>,
    before: usize,
    extent: usize,
}

impl Axis {
    /// `size` input-gradient pixels, `outputs` output-gradient ones, a kernel of `k` taps.
    fn new(size: usize, outputs: usize, k: usize, s: usize, d: usize, pad: usize) -> Self {
        let taps: Vec<Vec<(usize, usize)>> = (0..s)
            .map(|r| {
                (0..k)
                    .filter(|&t| (t * d) % s == r)
                    .map(|t| (t, (t * d - r) / s))
                    .collect()
            })
            .collect();
        let before = taps.iter().flatten().map(|&(_, a)| a).max().unwrap_or(0);
        let last_q = (size - 1 + pad) / s;
        Axis {
            stride: s,
            pad,
            taps,
            before,
            extent: before + outputs.max(last_q + 1),
        }
    }

    /// Pixel `i`'s phase and its `q`.
    fn phase(&self, i: usize) -> (usize, usize) {
        ((i + self.pad) % self.stride, (i + self.pad) / self.stride)
    }

    /// The pixels of `range` in phase `r`, every `stride`-th from the first.
    fn in_phase(&self, r: usize, range: std::ops::Range<usize>) -> impl Iterator<Item = usize> {
        let s = self.stride;
        let first = range.start + (r + s - (range.start + self.pad) % s) % s;
        (first..range.end).step_by(s)
    }
}

/// Phases (the product of the strides) at most: each is a GEMM with its own panels.
const MAX_PHASES: usize = 64;

/// Whether the phase split computes this shape's input gradient in `A`: `f32` on AVX-512 or
/// AVX2, a stride above 1 (at most [`MAX_PHASES`] phases), 16 or more input channels per
/// group (the GEMM's width), every dimension non-empty, and a padded output gradient at most a few times the planes' size.
pub(crate) fn applies<A: Accumulator>(g: &Geometry) -> bool {
    let planes =
        g.h.saturating_mul(g.w)
            .saturating_add(g.oh.saturating_mul(g.ow));
    let slab = |size: usize, outputs: usize, pad: usize, s: usize| {
        (size.saturating_add(pad) / s.max(1)).max(outputs)
    };
    as_f32::<A>(&[]).is_some()
        && matches!(isa(), Isa::Avx512 | Isa::Avx2)
        && (g.stride.h > 1 || g.stride.w > 1)
        && g.stride.h.saturating_mul(g.stride.w) <= MAX_PHASES
        && g.cin_per_group() >= 16
        && g.h > 0
        && g.w > 0
        && g.kh > 0
        && g.kw > 0
        && slab(g.h, g.oh, g.pad_top, g.stride.h)
            .saturating_add(g.kh.saturating_mul(g.dilation.h))
            .saturating_mul(
                slab(g.w, g.ow, g.pad_left, g.stride.w)
                    .saturating_add(g.kw.saturating_mul(g.dilation.w)),
            )
            <= planes.saturating_mul(4).saturating_add(4096)
}

/// Whether plans take the phase split for a transposed convolution (whatever the type):
/// strided with overlapping taps (a kernel larger than the stride), 32 or more output
/// channels per group, and at least as many input pixels in all as input channels per
/// group. The phase split packs the weights per call (a cost per weight, repaid over the
/// pixels); `im2col-gemm` scatters its columns into the output (a cost per column value,
/// repaid over the input channels each sums). Over `conv2d-bench/sweeps/transposed.json`
/// (`conv2d-bench --algorithm implicit-gemm` against `im2col-gemm`, 2026-12-06, Intel Xeon
/// with AVX-512, one thread, two or three alternated rounds), where pixels >= channels:
/// 1.1-2.4x as fast on 64-256 pixels (8x8 stride-4 kernels, 6x6 stride 3, 4x4 and 3x3
/// stride 2 on 8x8 to 16x16 maps of 64-256 channels), 1.07-1.77x from 400 (an earlier
/// rule), 0.93-0.98x on two 64-256 pixel layers; where pixels < channels: 0.29-0.95x on
/// 16-256 pixels of 128-1024 channels, and `im2col-gemm` 1.02-1.29x as fast on 400-576
/// pixels of 768-1024 channels.
pub(crate) fn wins(g: &Geometry) -> bool {
    (g.stride.h > 1 || g.stride.w > 1)
        && g.kh.saturating_mul(g.kw) > g.stride.h.saturating_mul(g.stride.w)
        && g.cin_per_group() >= 32
        && g.n.saturating_mul(g.oh).saturating_mul(g.ow) >= g.cout_per_group()
}

/// `grad_in = conv2d's input gradient` for a shape that [`applies`] with a finite weight
/// (a zero-padded read times an infinite weight would be a NaN that PyTorch's definition
/// does not have), overwriting `grad_in`; `false` (nothing written) otherwise.
pub(crate) fn backward_input<A: Accumulator>(
    g: &Geometry,
    grad_out: &[A],
    weight: &[A],
    grad_in: &mut [A],
    scratch: &Scratch,
) -> bool {
    if !applies::<A>(g) || !all_finite(weight) {
        return false;
    }
    let (Some(grad_out), Some(weight), Some(grad_in)) =
        (as_f32(grad_out), as_f32(weight), as_f32_mut(grad_in))
    else {
        unreachable!("applies admits f32 only");
    };
    backward_input_f32(g, grad_out, weight, grad_in, scratch);
    true
}

fn backward_input_f32(
    g: &Geometry,
    grad_out: &[f32],
    weight: &[f32],
    grad_in: &mut [f32],
    scratch: &Scratch,
) {
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let (s, d) = (g.stride, g.dilation);
    let rows_axis = Axis::new(g.h, g.oh, g.kh, s.h, d.h, g.pad_top);
    let cols = Axis::new(g.w, g.ow, g.kw, s.w, d.w, g.pad_left);
    // The output gradient as `padded_slab` pads a stride-1 convolution's input: `before`
    // zero rows and columns first, zeros after up to the extents.
    let slab_geometry = Geometry {
        n: 1,
        cin: cout_g,
        h: g.oh,
        w: g.ow,
        cout: 1,
        kh: rows_axis.extent - g.oh + 1,
        kw: cols.extent - g.ow + 1,
        groups: 1,
        stride: crate::options::Pair { h: 1, w: 1 },
        dilation: crate::options::Pair { h: 1, w: 1 },
        pad_top: rows_axis.before,
        pad_left: cols.before,
        oh: g.oh,
        ow: g.ow,
    };
    let (row_len, plane_len) = (cols.extent, rows_axis.extent * cols.extent);
    // Per phase (row phase major): the reduction steps (output channel, then the phase's
    // taps) as slab offsets from a pixel's origin, and the panels of every group and block.
    let phases: Vec<(usize, usize)> = (0..s.h)
        .flat_map(|ry| (0..s.w).map(move |rx| (ry, rx)))
        .collect();
    let steps: Vec<Vec<usize>> = phases
        .iter()
        .map(|&(ry, rx)| {
            (0..cout_g)
                .flat_map(|co| {
                    let (rows, cols) = (&rows_axis, &cols);
                    rows.taps[ry].iter().flat_map(move |&(_, ay)| {
                        cols.taps[rx].iter().map(move |&(_, ax)| {
                            co * plane_len + (rows.before - ay) * row_len + cols.before - ax
                        })
                    })
                })
                .collect()
        })
        .collect();
    let Some((panels, offsets)) = pack(g, weight, &rows_axis, &cols, &phases, scratch) else {
        return;
    };
    let blocks = cin_g.div_ceil(BLOCK);
    let in_plane = g.h * g.w;
    // As few bands as leave two tasks a thread (so that the threads come out even) or
    // [`MIN_BAND_PIXELS`] pixels a phase, and no more than make [`TASKS`] tasks: the fewer
    // the bands, the more pixels reuse each block of the panel.
    let units = g.n * g.groups * blocks;
    let wide = (g.h * g.w / (s.h * s.w * MIN_BAND_PIXELS)).max(1);
    let bands = TASKS
        .div_ceil(units)
        .min(wide.max(balanced_runs(units)))
        .min(g.h);
    let band = g.h.div_ceil(bands);
    for_each_chunk(grad_in, cin_g * in_plane, |task, group_in| {
        let (n, group) = (task / g.groups, task % g.groups);
        let x = &grad_out[(n * g.cout + group * cout_g) * g.oh * g.ow..][..cout_g * g.oh * g.ow];
        let Some(slab) = padded_slab(&slab_geometry, x, 0, g.oh, 0, scratch) else {
            return;
        };
        let planes = group_in
            .chunks_exact_mut(in_plane)
            .map(|p| p.chunks_mut(band * g.w));
        let tasks = block_tasks(planes, BLOCK);
        for_each_item_init(tasks, Vec::new, |sums, (b, chunk, mut outs)| {
            let r0 = chunk * band;
            let width = outs.len().next_multiple_of(16);
            let band_rows = outs[0].len() / g.w;
            let Some(sums) = grown(sums, band_rows * g.w * width, scratch) else {
                return;
            };
            // Every phase's sums one after another; `rows[i]` is the row of band place `i`.
            let mut rows = vec![0; band_rows * g.w];
            let mut done = 0;
            for (p, &(ry, rx)) in phases.iter().enumerate() {
                // The band's pixels in this phase: their origins in the slab.
                let mut pixels = Vec::new();
                for iy in rows_axis.in_phase(ry, r0..r0 + band_rows) {
                    let qy = rows_axis.phase(iy).1;
                    for ix in cols.in_phase(rx, 0..g.w) {
                        rows[(iy - r0) * g.w + ix] = done + pixels.len();
                        pixels.push(qy * row_len + cols.phase(ix).1);
                    }
                }
                if pixels.is_empty() {
                    continue;
                }
                let taps = rows_axis.taps[ry].len() * cols.taps[rx].len();
                let panel = &panels[offsets[(group * blocks + b) * phases.len() + p]..];
                Gemm {
                    slab: &slab.data,
                    starts: &steps[p],
                    channel_steps: taps.max(1),
                    panel: &panel[..steps[p].len() * width],
                    width,
                    pixels: &pixels,
                    init: &[0.0; BLOCK],
                }
                .sums(&mut sums[done * width..][..pixels.len() * width]);
                done += pixels.len();
            }
            write_rows(sums, width, &mut outs, &rows);
        });
    });
}

/// The weight as panels for each group, block of [`BLOCK`] input-gradient channels and
/// phase: row `k` (output channel, then the phase's taps, as the steps) holds every
/// channel's weight, a partial vector padded with zeros; with each panel's offset.
fn pack(
    g: &Geometry,
    weight: &[f32],
    rows: &Axis,
    cols: &Axis,
    phases: &[(usize, usize)],
    scratch: &Scratch,
) -> Option<(Aligned<f32>, Vec<usize>)> {
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let kernel = g.kh * g.kw;
    let blocks = cin_g.div_ceil(BLOCK);
    let mut offsets = Vec::new();
    let mut len = 0;
    for _group in 0..g.groups {
        for b in 0..blocks {
            let width = BLOCK.min(cin_g - b * BLOCK).next_multiple_of(16);
            for &(ry, rx) in phases {
                offsets.push(len);
                len += cout_g * rows.taps[ry].len() * cols.taps[rx].len() * width;
            }
        }
    }
    let mut panels = scratch.filled_aligned(len, 0.0f32)?;
    // A job per group and block: its panels (one per phase) are contiguous; each output
    // channel's weights for the block (`count` rows of `kernel` taps, contiguous) are read
    // once, into every phase.
    let mut rest = &mut panels[..];
    let mut jobs = Vec::new();
    for group in 0..g.groups {
        for b in 0..blocks {
            let count = BLOCK.min(cin_g - b * BLOCK);
            let width = count.next_multiple_of(16);
            let mut phase_panels = Vec::new();
            for &(ry, rx) in phases {
                let steps = cout_g * rows.taps[ry].len() * cols.taps[rx].len();
                let (panel, tail) = rest.split_at_mut(steps * width);
                rest = tail;
                phase_panels.push(panel.chunks_exact_mut(width));
            }
            jobs.push((group, b * BLOCK, count, phase_panels));
        }
    }
    // Each output channel's block of weights is transposed into rows of `width`, one per
    // tap (16 x 16 at a time in registers where whole), then each phase's rows copied from
    // there. Over a strided gather per panel row (2.7% of `dcgan_up_4x4s2`'s samples):
    // `sweeps/transposed.json`'s phase-split layers 1.02-1.21x as fast (the 8x8 stride-4
    // kernels and the 8x8 maps most), `dcgan_up_4x4s2` 1.011-1.017x (Intel Xeon, one
    // thread, 3-10 alternated rounds, 2026-12-07).
    for_each_item_init(
        jobs,
        Vec::new,
        |by_tap, (group, ci0, count, mut phase_panels)| {
            // Rows as wide as the job's panels' (`count` rounded up to whole vectors).
            let width = count.next_multiple_of(16);
            let Some(by_tap) = grown(by_tap, kernel * width, scratch) else {
                return;
            };
            for co in group * cout_g..(group + 1) * cout_g {
                let block = &weight[(co * cin_g + ci0) * kernel..][..count * kernel];
                pack_panel(block, kernel, by_tap);
                for (&(ry, rx), dst) in phases.iter().zip(&mut phase_panels) {
                    for &(ky, _) in &rows.taps[ry] {
                        for &(kx, _) in &cols.taps[rx] {
                            let row = dst.next().expect("a panel row per step");
                            let tap = ky * g.kw + kx;
                            row[..count].copy_from_slice(&by_tap[tap * width..][..count]);
                        }
                    }
                }
            }
        },
    );
    Some((panels, offsets))
}
