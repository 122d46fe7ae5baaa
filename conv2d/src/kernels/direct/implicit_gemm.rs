//! An implicit GEMM on `direct`'s padded slab, vectorised over output channels: for the
//! layers where [`tiled`](super::tiled)'s shifted windows waste most (dilated maps, whose
//! padding columns it computes and drops) or do not apply (strided ones), every output
//! pixel is a row of the GEMM, every (input channel, tap) a step of its reduction, and a
//! register tile holds [`TILE_PIXELS`] pixels by up to four vectors of 16 output channels
//! (on AVX2, by 16 channels: two vectors).
//! With a stride, the slab is split into column phases as for `direct`, and a pixel's
//! origin is its slot in phase 0 of its first padded row.
//!
//! The weights are packed once per call into panels of [`BLOCK`] output channels (the
//! reduction step outermost, the channels contiguous, a partial vector padded with zeros).
//! Each task is one panel and a chunk of pixels of a band; it sweeps the reduction in
//! blocks of whole input channels (at most [`BLOCK_STEPS`] steps, so that the block's
//! panel stays in L1), carrying the sums pixel-major between blocks, then writes them into
//! the channel planes. Every output sums its bias, then its taps in order, whatever the
//! thread count.

use super::tiled::{as_f32, as_f32_mut, bands};
use super::{balanced_runs, block_tasks, padded_slab, Scratch};
use crate::element::Accumulator;
use crate::error::try_reserve;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};
use crate::kernels::Aligned;
use crate::threading::{for_each_chunk, for_each_item, for_each_item_init};

/// Output pixels per register tile.
pub(crate) const TILE_PIXELS: usize = 6;
/// Output channels per panel (four vectors of 16).
pub(crate) const BLOCK: usize = 64;
/// Reduction steps (input channels times taps) every tile of a task sweeps before the next
/// block, at most: whole input channels, so that the block's panel (18 KiB at 64 channels)
/// stays in L1.
const BLOCK_STEPS: usize = 72;
/// Pixels per task at least.
const MIN_CHUNK: usize = 16 * TILE_PIXELS;

/// One task's sweep of a block of the reduction: for each pixel `p` and channel `j <
/// width`, `sums[p * width + j] = (resume ? sums[..] : init[j]) + sum_k panel[k * width +
/// j] * slab[pixels[p] + starts[k]]`.
pub(crate) struct PixelTile<'a> {
    pub slab: &'a [f32],
    /// Where each reduction step reads, from a pixel's origin.
    pub starts: &'a [usize],
    /// `starts.len()` rows of `width` weights.
    pub panel: &'a [f32],
    /// Channels per row of the panel and of the sums: 16, 32, 48 or 64.
    pub width: usize,
    /// Each pixel's origin in the slab.
    pub pixels: &'a [usize],
    /// `width` starting sums (the bias).
    pub init: &'a [f32],
    /// Whether the sums start from `sums` (a later block) rather than `init`.
    pub resume: bool,
    /// `pixels.len()` rows of `width` sums.
    pub sums: &'a mut [f32],
}

impl PixelTile<'_> {
    /// The slab, panel, init and sums pointers of the vector kernel, after checking every
    /// bound it relies on: `width` whole vectors up to [`BLOCK`], a panel row per step and
    /// a row of sums per pixel, every read `pixels[p] + starts[k]` inside the slab. Panics
    /// (a bug, not a user error) if one fails.
    pub(crate) fn pointers(&mut self) -> (*const f32, *const f32, *const f32, *mut f32) {
        let width = self.width;
        assert!(width.is_multiple_of(16) && (16..=BLOCK).contains(&width));
        assert!(self.init.len() >= width);
        assert!(self.panel.len() >= self.starts.len() * width);
        assert!(self.sums.len() >= self.pixels.len() * width);
        if let (Some(&p), Some(&s)) = (self.pixels.iter().max(), self.starts.iter().max()) {
            assert!(p + s < self.slab.len());
        }
        (
            self.slab.as_ptr(),
            self.panel.as_ptr(),
            self.init.as_ptr(),
            self.sums.as_mut_ptr(),
        )
    }
}

/// Whether the implicit GEMM computes this shape's forward pass in `A`: `f32` on AVX-512 or
/// AVX2, more than one tap, at least 16 output channels per group, and a slab that
/// [`fits`](super::fits).
pub(crate) fn applies<A: Accumulator>(g: &Geometry) -> bool {
    as_f32::<A>(&[]).is_some()
        && matches!(isa(), Isa::Avx512 | Isa::Avx2)
        && g.kh.saturating_mul(g.kw) > 1
        && g.cout_per_group() >= 16
        && super::fits(g)
}

/// Whether [`Algorithm::choose`](crate::Algorithm) takes the implicit GEMM for a shape
/// (whatever the type), with more than one tap and 32 or more output channels per group:
/// - dilated stride-1 kernels on maps of 4096 or more output pixels with 128 or more input
///   channels per group. Over `conv2d-bench/sweeps/implicit_gemm.json` (one and two
///   threads) it ran 65x65 maps of 128-256 channels 1.15-1.18x as fast as `direct-tiled`'s
///   masked tiles (which compute no padding column either; a tie for 128 channels on two
///   threads), 57x57 and smaller maps 0.42-1.05x, and 64 channels 0.95-0.97x;
/// - dilated stride-1 kernels that the masked tiles do not [`suit`](super::masked::suits)
///   (output rows narrower or wider than the input's, or no AVX-512), with 256 or more
///   input channels per group and 144 or more output pixels: before the masked tiles, the
///   same sweep ran those 1.02-1.25x as fast as `direct-tiled`'s padded tiles (1.3-2.2x at
///   dilations 6 to 18), dilated layers of 64-128 channels 0.89-1.13x, and every
///   undilated layer 0.65-0.98x: packing the weights per call costs more than the padding
///   columns it saves there;
/// - strided kernels with 2048 or more output pixels in all: over
///   `conv2d-bench/sweeps/strided.json` 1.19-1.47x as fast as `im2col-gemm` (1 and 2
///   threads), 0.94-1.29x at 196-784 pixels and 0.57-0.71x at 49 (packing again);
/// - strided kernels with 144 or more output pixels an image: against `direct-tiled`'s
///   tiles of 8 channels (2026-12-03, Intel Xeon, `conv2d-bench --algorithm`, one and two
///   threads) 3x3 and 2x2 stride-2 layers of 64-256 channels ran 1.05-1.28x as fast at
///   144-784 pixels, 0.99-1.03x at 100, 0.92-1.12x at 64 and 0.69-0.70x at 49; but not
///   those that `direct-tiled`'s masked tiles over phase planes
///   [take](super::masked::takes_strided) (the 7x7 stem, many output channels).
pub(crate) fn wins(g: &Geometry) -> bool {
    let pixels = g.oh.saturating_mul(g.ow);
    let dilated = g.stride.h == 1
        && g.stride.w == 1
        && g.dilation.h.max(g.dilation.w) >= 2
        && match super::masked::suits(g) {
            true => g.cin_per_group() >= 128 && pixels >= 4096,
            false => g.cin_per_group() >= 256 && pixels >= 144,
        };
    let strided = (g.stride.h > 1 || g.stride.w > 1)
        && (pixels >= 144 || g.n.saturating_mul(pixels) >= 2048)
        && !super::masked::takes_strided(g);
    g.kh.saturating_mul(g.kw) > 1 && g.cout_per_group() >= 32 && (dilated || strided)
}

/// `out = conv2d(input, weight) + bias` for a shape that [`applies`], overwriting `out`.
pub(crate) fn forward<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    weight: &[A],
    bias: Option<&[A]>,
    out: &mut [A],
    scratch: &Scratch,
) {
    let (Some(input), Some(weight), Some(out)) = (as_f32(input), as_f32(weight), as_f32_mut(out))
    else {
        unreachable!("applies admits f32 only");
    };
    let bias = bias.map(|b| as_f32(b).expect("applies admits f32 only"));
    forward_f32(g, input, weight, bias, out, scratch);
}

fn forward_f32(
    g: &Geometry,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &Scratch,
) {
    let plane = g.oh * g.ow;
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let (taps, kernel) = (cin_g * g.kh * g.kw, g.kh * g.kw);
    let in_len = cin_g * g.h * g.w;
    let Some(panels) = pack(g, weight, scratch) else {
        return;
    };
    let group_panels = cout_g.next_multiple_of(16) * taps;
    // Bands of output rows within `direct-tiled`'s 1 Mi slab budget.
    let band = bands(g).1;
    for_each_chunk(out, cout_g * plane, |task, group_out| {
        let (n, group) = (task / g.groups, task % g.groups);
        let x = &input[(n * g.cin + group * cin_g) * g.h * g.w..][..in_len];
        let panels = &panels[group * group_panels..][..group_panels];
        for oy0 in (0..g.oh).step_by(band) {
            let rows = band.min(g.oh - oy0);
            let Some(slab) = padded_slab(g, x, oy0, rows, 0, scratch) else {
                return;
            };
            let starts = slab.tap_starts(g);
            let row_len = slab.row_len();
            // Tasks: a panel of channels and a chunk of the band's pixels, enough of them
            // to share out (each output is still summed whole by one task, in order), no
            // more (each chunk streams its panel again: against the tiles' 16 tasks, the
            // strided layers of 16-64 channels on 112x112 and 224x224 inputs of
            // `sweeps/strided.json` and `sweeps/patches.json` 1.05-1.11x as fast on two
            // threads, the others within 0.98-1.03x; Zen 4, 9 alternated rounds).
            let blocks = cout_g.div_ceil(BLOCK);
            let chunk = (rows * g.ow)
                .div_ceil(balanced_runs(blocks * g.groups * g.n))
                .max(MIN_CHUNK)
                .next_multiple_of(TILE_PIXELS);
            let planes = group_out
                .chunks_exact_mut(plane)
                .map(|p| p[oy0 * g.ow..][..rows * g.ow].chunks_mut(chunk));
            let tasks = block_tasks(planes, BLOCK);
            // Each worker keeps its buffer of sums from task to task.
            for_each_item_init(tasks, Vec::new, |sums, (b, c, mut outs)| {
                let c0 = c * chunk;
                let width = outs.len().next_multiple_of(16);
                let co0 = group * cout_g + b * BLOCK;
                let mut init = [0.0; BLOCK];
                if let Some(bias) = bias {
                    init[..outs.len()].copy_from_slice(&bias[co0..][..outs.len()]);
                }
                let count = outs[0].len();
                // Each pixel's origin in the slab (built per task, on the task's thread: for
                // the whole band before the tasks, 2% of the stem's time on two threads).
                let (mut r, mut ox) = (c0 / g.ow, c0 % g.ow);
                let pixels: Vec<usize> = (0..count)
                    .map(|_| {
                        let origin = r * g.stride.h * row_len + ox;
                        (r, ox) = if ox + 1 == g.ow {
                            (r + 1, 0)
                        } else {
                            (r, ox + 1)
                        };
                        origin
                    })
                    .collect();
                let gemm = Gemm {
                    slab: &slab.data,
                    starts: &starts,
                    channel_steps: kernel,
                    panel: &panels[b * BLOCK * taps..][..width * taps],
                    width,
                    pixels: &pixels,
                    init: &init,
                };
                let Some(sums) = grown(sums, count * width, scratch) else {
                    return;
                };
                gemm.sums(sums);
                let rows: Vec<usize> = (0..count).map(|i| i * width).collect();
                transpose(sums, &rows, &mut outs);
            });
        }
    });
}

/// One task's implicit GEMM: the sums of `pixels` by `width` channels over the reduction
/// `starts` (a panel row each), in blocks of whole input channels of `channel_steps` steps.
pub(super) struct Gemm<'a> {
    pub slab: &'a [f32],
    pub starts: &'a [usize],
    pub channel_steps: usize,
    pub panel: &'a [f32],
    pub width: usize,
    pub pixels: &'a [usize],
    pub init: &'a [f32],
}

impl Gemm<'_> {
    /// Computes the sums: `sums` holds a row of `width` per pixel.
    pub(super) fn sums(&self, sums: &mut [f32]) {
        let width = self.width;
        let block_steps = (BLOCK_STEPS / self.channel_steps).max(1) * self.channel_steps;
        for (k, starts) in self.starts.chunks(block_steps).enumerate() {
            run(&mut PixelTile {
                slab: self.slab,
                starts,
                panel: &self.panel[k * block_steps * width..],
                width,
                pixels: self.pixels,
                init: self.init,
                resume: k > 0,
                sums,
            });
        }
        if self.starts.is_empty() {
            // No reduction step: every sum is its starting value.
            for row in sums.chunks_exact_mut(width) {
                row.copy_from_slice(&self.init[..width]);
            }
        }
    }
}

/// The first `len` values of a worker's buffer, grown as needed; `None` once an allocation
/// failure is recorded.
pub(super) fn grown<'a>(
    buffer: &'a mut Vec<f32>,
    len: usize,
    scratch: &Scratch,
) -> Option<&'a mut [f32]> {
    if buffer.len() < len {
        scratch.ok(try_reserve(buffer, len - buffer.len()))?;
        buffer.resize(len, 0.0);
    }
    Some(&mut buffer[..len])
}

/// Pixel-major sums (rows of `width`) into channel rows: `outs[j][i] = sums[rows[i] *
/// width + j]` for every `i < rows.len()` and channel `j < outs.len()` (see [`transpose`]).
pub(super) fn write_rows(sums: &[f32], width: usize, outs: &mut [&mut [f32]], rows: &[usize]) {
    let starts: Vec<usize> = rows.iter().map(|&r| r * width).collect();
    transpose(sums, &starts, outs);
}

/// `outs[j][i] = values[starts[i] + j]` for every `i < starts.len()` and row `j <
/// outs.len()`: blocks of 16 x 16 transposed in registers (AVX-512, AVX2), 16 output rows at a
/// time along their length (16 write streams: all of a panel's channels at once took twice
/// as long on `deeplab_dil2_3x3`, whose output is not in cache), what is left 64 values of
/// a row at a time (reading many rows at once would alias in L1: planes of 4 KiB share its
/// sets), each row's values written in order.
pub(super) fn transpose(values: &[f32], starts: &[usize], outs: &mut [&mut [f32]]) {
    let (whole, rows) = (starts.len() / 16 * 16, outs.len() / 16 * 16);
    for (j0, block) in (0..rows).step_by(16).zip(outs.chunks_exact_mut(16)) {
        let mut runs = block.iter_mut().map(|o| &mut o[..whole]);
        let runs = std::array::from_fn(|_| runs.next().expect("16 rows"));
        transpose16(&values[j0..], &starts[..whole], runs);
    }
    let rest = |i0: usize, j0: usize, outs: &mut [&mut [f32]]| {
        for (i0, at) in (i0..starts.len()).step_by(64).zip(starts[i0..].chunks(64)) {
            for (j, out) in outs.iter_mut().enumerate() {
                for (o, &s) in out[i0..][..at.len()].iter_mut().zip(at) {
                    *o = values[s + j0 + j];
                }
            }
        }
    };
    rest(0, rows, &mut outs[rows..]);
    rest(whole, 0, &mut outs[..rows]);
}

/// The weights as panels: for each group and each [`BLOCK`] of its output channels
/// (the last rounded up to whole vectors of 16, the extra channels zero), row `k` holds
/// reduction step `k`'s weight of every channel. `None` if the buffer cannot be allocated.
fn pack(g: &Geometry, weight: &[f32], scratch: &Scratch) -> Option<Aligned<f32>> {
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let taps = cin_g * g.kh * g.kw;
    let padded = cout_g.next_multiple_of(16);
    let mut panels = scratch.filled_aligned(g.groups * padded * taps, 0.0)?;
    // Panels in parallel; one per group's block, `width * taps` long.
    let blocks = padded.div_ceil(BLOCK);
    let mut jobs = Vec::new();
    let mut rest = &mut panels[..];
    for group in 0..g.groups {
        for b in 0..blocks {
            let count = BLOCK.min(cout_g - b * BLOCK);
            let (panel, tail) = rest.split_at_mut(count.next_multiple_of(16) * taps);
            rest = tail;
            jobs.push((group * cout_g + b * BLOCK, count, panel));
        }
    }
    for_each_item(jobs, |(co0, count, panel)| {
        pack_panel(&weight[co0 * taps..][..count * taps], taps, panel);
    });
    Some(panels)
}

/// One panel: `panel[k * width + j] = rows[j * taps + k]` for the `rows.len() / taps`
/// weight rows `j`, `width` the panel's row length.
pub(super) fn pack_panel(rows: &[f32], taps: usize, panel: &mut [f32]) {
    let width = panel.len() / taps;
    // Blocks of 16 weight rows (16 streams the prefetcher follows), 16 steps at a time:
    // one cache line of each row into 16 panel rows, transposed in registers when whole.
    for (j0, rows) in (0..width).step_by(16).zip(rows.chunks(16 * taps)) {
        for (k0, dst) in (0..taps).step_by(16).zip(panel.chunks_mut(16 * width)) {
            if rows.len() == 16 * taps && dst.len() == 16 * width {
                let mut panel_rows = dst.chunks_exact_mut(width);
                let outs = std::array::from_fn(|_| {
                    &mut panel_rows.next().expect("16 panel rows")[j0..j0 + 16]
                });
                let starts: [usize; 16] = std::array::from_fn(|k| k * taps);
                transpose16(&rows[k0..], &starts, outs);
                continue;
            }
            for (j, row) in rows.chunks_exact(taps).enumerate() {
                for (k, &w) in row[k0..].iter().take(16).enumerate() {
                    dst[k * width + j0 + j] = w;
                }
            }
        }
    }
}

/// `outs[j][p] = values[starts[p] + j]` for 16 rows `j` and every `p < starts.len()` (a
/// multiple of 16): in registers on AVX-512 and AVX2, else value by value.
pub(super) fn transpose16(values: &[f32], starts: &[usize], outs: [&mut [f32]; 16]) {
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it; the kernel checks
        // its bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::arch::x86_64::transpose16_f32_avx512(values, starts, outs) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::arch::x86_64::transpose16_f32_avx2(values, starts, outs) },
        _ => {
            for (j, out) in outs.into_iter().enumerate() {
                for (o, &s) in out.iter_mut().zip(starts) {
                    *o = values[s + j];
                }
            }
        }
    }
}

/// Runs a sweep on the AVX-512 or AVX2 kernel (see [`applies`]).
fn run(job: &mut PixelTile<'_>) {
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it; `pointers` checks
        // the job's bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::arch::x86_64::pixel_tile_f32_avx512(job) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::arch::x86_64::pixel_tile_f32_avx2(job) },
        _ => unreachable!("applies admits AVX-512 and AVX2 only"),
    }
}
