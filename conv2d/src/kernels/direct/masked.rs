//! [`Algorithm::DirectTiled`](crate::Algorithm::DirectTiled)'s forward pass on AVX-512 for
//! layers whose output rows are their input rows divided by the stride (the "same"
//! padding of most CNNs, and its strided counterpart, as in ResNet's 7x7 stem):
//! [`tiled`](super::tiled)'s register tile, with the input rows stored without padding
//! columns and the taps that would read one masked instead.
//!
//! The input is stored as phase planes, `stride.h * stride.w` a channel: plane `(py, px)`
//! holds input rows `py, py + stride.h, ...` and in them columns `px, px + stride.w, ...`,
//! `ow` of them, so that with output pixel `q = oy * ow + ox` (the output's own layout)
//! every tap reads element `start + q` of one plane as in `tiled` (at stride 1 there is
//! one plane, the input's rows). A tap to the side of a row's first or last pixel reads
//! the neighbouring row's pixel there: those lanes are masked out of the fused multiply-add
//! (AVX-512's masked FMA costs what the plain one does). So no column is computed and
//! dropped (`tiled` computes `(kw - 1) * dilation` per row: 7% of a 28-wide map, 29% of a
//! 7-wide one), and the sums go straight into the output.
//!
//! A masked lane leaves out a term where `tiled` adds `0 * weight`; the two differ only
//! when the weight is infinite or NaN (PyTorch gives NaN there). Every weight meets an
//! input value in some output (the padding is narrower than a row), which is then not
//! finite either: the kernel reports whether any output is not finite, and the caller then
//! runs `tiled`.
//!
//! A vector of outputs whose rows all read the padding with a kernel row leaves that row's
//! taps out (see [`kernel_row_segments`]): the padding rows of dilated layers, a quarter to
//! a third of the taps of a 33x33 map at dilation 12 or 18 (only padding columns stay
//! masked lanes).
//!
//! Within a block of input channels ([`ci_block`]) the taps go kernel column by kernel
//! column (so that the column's masks stay in mask registers), then channel by channel and
//! row by row; every output sums its bias, then the blocks in order, whatever the thread
//! count.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

use super::tiled::{as_type, as_type_mut, summed_channels, tile_rows, Tile, CO, MIN_CHANNELS};
use super::{block_tasks, runs_per_tile, split_pairs, Scratch};
use crate::element::Accumulator;
use crate::error::try_reserve;
use crate::geometry::{checked_product, Geometry};
use crate::isa::{isa, Isa};
use crate::threading::{for_each_chunk, for_each_item};

/// Input channels whose taps one sweep runs through before the next block (the run's sums
/// are stored and loaded again between blocks). 32 against 16 (`conv2d-bench`, 2026-12-03,
/// Intel Xeon, the suite's masked layers, alternated rounds): 3x3 layers of 64-128
/// channels on 28x28-56x56 maps 1.06-1.09x as fast on one and two threads, 256-512
/// channels 1.02-1.06x, `deeplab_dil2_3x3` and the input gradient 0.98-1.01x; 64 ran
/// 0.83-0.92x on most (a block's windows no longer stay in L1). See [`ci_block`].
const CI_BLOCK: usize = 32;
/// [`CI_BLOCK`] on a CPU that [halves](crate::isa::halved_avx512) its 512-bit
/// instructions, whose multiply-adds leave time for the windows to come from L2.
/// 64 against 32 (2026-12-05, Zen 4, one thread, three alternated rounds, 20 layers of 3 to
/// 512 channels on 7x7-112x112 maps: 3x3, 5x5, dilated, strided, input gradients): 1.00-1.022x
/// as fast, none slower (the suite's dense 3x3 layers 1.009-1.022x).
const HALVED_CI_BLOCK: usize = 64;
/// [`CI_BLOCK`] for layers strided along columns (whose taps read two or more column phase
/// planes per tap row, twice the lines of a stride-1 tap row) with at least
/// [`HALF_BLOCK_PIXELS`] output pixels per plane. Over the `s_` layers of
/// `conv2d-bench/sweeps/strided.json` (2026-12-03, Intel Xeon, three alternated rounds):
/// the 3x3 and 4x4 stride-2 layers of 64 to 128 channels on 56x56 maps (784 outputs) ran
/// 1.15-1.21x as fast on two threads and 1.03-1.06x on one (batch 8: 1.03-1.04x), the
/// others within the noise; halving on smaller planes too ran the 128- and 256-channel
/// layers on 28x28 and 14x14 maps 0.97-0.99x. Dilated layers take it too on CPUs that do
/// not halve AVX-512 (measured there only), from as many output pixels: over the dilated
/// layers of `conv2d-bench/sweeps/implicit_gemm.json` (2026-12-07, Intel Xeon, one thread,
/// 11 in-process alternated rounds) 41x41-57x57 maps of 64-512 channels ran 1.045-1.068x as
/// fast, 33x33 maps 0.988-1.043x (`deeplab_dil2_3x3` 1.019x), 24x24 1.019x, 28x28 0.992x;
/// 14x14 and 17x17 maps 0.979-0.984x (so not below 512 pixels).
const STRIDED_CI_BLOCK: usize = 16;
/// See [`STRIDED_CI_BLOCK`].
const HALF_BLOCK_PIXELS: usize = 512;
/// Elements of a band's slab (all input channels of the group), as in `tiled`.
const SLAB_BUDGET: usize = 1024 * 1024;
/// Bytes of a strided band's slab: 1 MiB, half a core's L2 on the Intel Xeon measured, so
/// that each tile of output channels finds the band there after the first (a strided
/// band's phase planes hold `stride.h * stride.w` input pixels per output pixel). Over
/// `conv2d-bench/sweeps/strided.json` (2026-12-03, `f32`, one and two threads)
/// [`SLAB_BUDGET`]'s 4 MiB ran 2x2 stride-2 layers of 64-256 channels on 64-112 maps
/// 0.51-0.76x as fast, a quarter of this budget 0.84-1.05x, half of it 0.78-1.13x, twice it
/// 0.67-1.01x (two threads); in `f64` the same 1 MiB ran the sweep 1.22x as fast as 2 MiB.
const STRIDED_BUDGET_BYTES: usize = 1 << 20;
/// Bytes of a slab that every tile of output channels finds in L2 (see [`slab_shape`]).
const L2_SLAB_BYTES: usize = 1 << 20;
/// Bytes in one AVX-512 register.
const REGISTER_BYTES: usize = 64;

/// Whether the masked forward pass runs this shape in `A`: `f32` or `f64` and a shape it
/// [`suits`].
pub(crate) fn applies<A: Accumulator>(g: &Geometry) -> bool {
    (as_type::<A, f32>(&[]).is_some() || as_type::<A, f64>(&[]).is_some()) && suits(g)
}

/// Whether the masked forward pass suits the shape on this CPU, whatever the type:
/// AVX-512 and a shape it [`can_run`].
pub(crate) fn suits(g: &Geometry) -> bool {
    isa() == Isa::Avx512 && can_run(g)
}

/// Whether the masked forward pass can run the shape on a CPU with AVX-512: output columns
/// the input's divided by the column stride, and likewise rows where the row stride is
/// more than 1 (so that `q` steps through the phase planes and the output alike), padding
/// narrower than the input on each side of such an axis, at least half a tile of output
/// channels per group, and an input channel (a slab of channels per block of them).
fn can_run(g: &Geometry) -> bool {
    let divides = |input: usize, outputs: usize, stride: usize, k: usize, d: usize, pad| {
        let reach = (k.max(1) - 1).saturating_mul(d);
        outputs.checked_mul(stride) == Some(input)
            && pad < input
            && reach.checked_sub(pad).is_some_and(|p| p < input)
    };
    divides(g.w, g.ow, g.stride.w, g.kw, g.dilation.w, g.pad_left)
        && (g.stride.h == 1 || divides(g.h, g.oh, g.stride.h, g.kh, g.dilation.h, g.pad_top))
        && g.cout_per_group() >= MIN_CHANNELS
        && g.cin_per_group() > 0
}

/// Whether a strided shape runs faster on the masked tiles than on
/// [`implicit-gemm`](super::implicit_gemm) (which [`Algorithm::choose`](crate::Algorithm)
/// takes for strided shapes otherwise): a shape they [`can_run`] whose taps overlap along
/// both axes (the kernel reaches at least the stride), with 128 or more output channels per
/// group or 8 or fewer input channels per group (a first layer's small slab). Whatever the
/// CPU, so that a plan's choice does not depend on it: without AVX-512, `direct-tiled` runs
/// its padded phase planes, as `implicit-gemm` would there.
/// `conv2d-bench --algorithm` over `conv2d-bench/sweeps/strided.json` (2026-12-03, Intel
/// Xeon, one and two threads): the masked tiles ran 3x3, 4x4 and 5x5 stride-2 layers of 128
/// to 512 output channels 1.00-1.96x as fast, 7x7 and 3x3 stride-2 layers of 3 input
/// channels (stems) 1.02-1.76x, but layers of 16-64 input and 32-64 output channels on
/// 56-112 maps 0.72-0.88x on two threads (each tile of 8 channels streams the slab again;
/// `implicit-gemm` reads it once per panel of 64), and 2x2 stride-2 ones 0.81-1.07x.
pub(crate) fn takes_strided(g: &Geometry) -> bool {
    let overlaps = |k: usize, d: usize, s: usize| (k.max(1) - 1).saturating_mul(d) >= s;
    (g.stride.h > 1 || g.stride.w > 1)
        && can_run(g)
        && overlaps(g.kh, g.dilation.h, g.stride.h)
        && overlaps(g.kw, g.dilation.w, g.stride.w)
        && (g.cout_per_group() >= 128 || g.cin_per_group() <= 8)
}

/// Input channels a sweep of the tiles runs through before the next block:
/// [`STRIDED_CI_BLOCK`] for a layer strided along columns (or dilated, where AVX-512 is not
/// halved) with [`HALF_BLOCK_PIXELS`] or more output pixels a plane, else
/// [`HALVED_CI_BLOCK`] or [`CI_BLOCK`] by the CPU.
fn ci_block(g: &Geometry) -> usize {
    let large = g.oh.saturating_mul(g.ow) >= HALF_BLOCK_PIXELS;
    let dilated = g.dilation.h > 1 || g.dilation.w > 1;
    match (large && g.stride.w > 1, crate::isa::halved_avx512()) {
        (true, _) => STRIDED_CI_BLOCK,
        (false, true) => HALVED_CI_BLOCK,
        (false, false) if large && dilated => STRIDED_CI_BLOCK,
        (false, false) => CI_BLOCK,
    }
}

/// Where kernel tap `k` of an axis reads: output `o`'s input `o * stride + k * dilation -
/// pad` is in phase `phase` (inputs `phase, phase + stride, ...`) at slot `o + slot`,
/// counted from `lag(pad, stride)` slots before the phase's first input. Returns
/// `(phase, slot)`.
fn tap_phase(k: usize, dilation: usize, pad: usize, stride: usize) -> (usize, usize) {
    // No overflow: `Geometry` checked `o * stride + k * dilation` for a tap `k`, and
    // `pad` rounds up to whole strides only where `pad < input` (see `suits`).
    let r = k * dilation + (pad.next_multiple_of(stride) - pad);
    (r % stride, r / stride)
}

/// Phase rows a band's slab holds past its output rows: the last kernel row's slot.
fn row_reach(g: &Geometry) -> usize {
    tap_phase(g.kh - 1, g.dilation.h, g.pad_top, g.stride.h).1
}

/// Slots an axis's phases are read from before their first input (the padding, in slots).
fn lag(pad: usize, stride: usize) -> usize {
    pad.div_ceil(stride)
}

/// Whether output column `ox`'s tap `kx` reads an input column (not the padding).
fn reads_input(g: &Geometry, ox: usize, kx: usize) -> bool {
    let x = ox * g.stride.w + kx * g.dilation.w;
    x >= g.pad_left && x - g.pad_left < g.w
}

/// One tile sweep over a block of input channels: [`Tile`]'s sums with each tap `t` a tap
/// row (`starts[t]`, kernel column 0) swept over every kernel column `kx`, the lanes
/// outside `masks` left out: for `from <= q < len`, `outs[c][q] = init[c] (or outs[c][q]
/// when resuming) + sum over t and kx, where masks[q / lanes * columns + kx] has q's lane,
/// of weights[rows[c] + weight_taps[t] + kx] * slab[starts[t] + column_offsets[kx] + q]`.
pub(crate) struct MaskedTile<'a, A> {
    /// The slab from the task's first output row, the tap rows of the block (`(ci, ky)`,
    /// those of the kernel rows the outputs read) as `starts`, and any `len`; `rows` the
    /// start of each channel's weights.
    pub tile: Tile<'a, A>,
    /// The first output summed: a multiple of the register's lanes.
    pub from: usize,
    /// Per tap row, where its weights start in a channel's row.
    pub weight_taps: &'a [usize],
    /// Kernel columns.
    pub columns: usize,
    /// Per kernel column, where its reads start from a tap row's (its phase plane and
    /// slot).
    pub column_offsets: &'a [usize],
    /// Per vector of outputs and kernel column: the lanes whose term reads a real input
    /// column (see [`column_masks`]).
    pub masks: &'a [u16],
}

impl<A> MaskedTile<'_, A> {
    /// The slab, weight-row and output pointers of the vector kernel, for registers of
    /// `lanes` elements and the first `channels`, after checking every bound it relies on:
    /// `from` a multiple of `lanes` up to `len`, each of those channels' outputs holding
    /// `len` sums, a weight offset per tap row and every weight row reaching each offset's
    /// `columns` weights, a mask per vector of `len` and column, and every window up to
    /// `len` rounded up to whole vectors inside the slab. Panics (a bug, not a user error)
    /// if one fails.
    #[allow(clippy::type_complexity)] // three pointers, named where they are unpacked
    pub(crate) fn pointers(
        &mut self,
        lanes: usize,
        channels: usize,
    ) -> (*const A, [*const A; CO], [*mut A; CO]) {
        let (tile, columns) = (&mut self.tile, self.columns);
        let len = tile.len;
        assert!(self.from.is_multiple_of(lanes) && self.from <= len);
        assert!(channels <= CO && tile.outs[..channels].iter().all(|o| o.len() >= len));
        assert_eq!(self.weight_taps.len(), tile.starts.len());
        let row_weights = self.weight_taps.iter().max().map_or(0, |&t| t + columns);
        assert!(tile
            .rows
            .iter()
            .all(|&r| r + row_weights <= tile.weights.len()));
        assert!(self.masks.len() >= len.div_ceil(lanes) * columns);
        assert!(self.column_offsets.len() >= columns);
        let offsets = &self.column_offsets[..columns];
        let reach = offsets
            .iter()
            .max()
            .map_or(0, |&o| o + len.next_multiple_of(lanes));
        let end = tile.starts.iter().max().map_or(0, |&r| r + reach);
        assert!(end <= tile.slab.len());
        tile.unchecked_pointers()
    }
}

/// Per vector of `lanes` outputs from output `0` of a row (up to `len` outputs) and kernel
/// column `kx`: the bits of the lanes whose term [`reads_input`]. Every lane's bit is set,
/// then cleared where a row's output column does not read the input: the few columns at
/// each end of a row, found once (a test per lane took 3% of the stem's time on two
/// threads, the other thread idle).
pub(super) fn column_masks(g: &Geometry, len: usize, lanes: usize) -> Vec<u16> {
    let vectors = len.div_ceil(lanes);
    let mut masks = vec![u16::MAX; vectors * g.kw];
    for kx in 0..g.kw {
        let padding: Vec<usize> = (0..g.ow).filter(|&ox| !reads_input(g, ox, kx)).collect();
        for row in (0..vectors * lanes).step_by(g.ow) {
            for q in padding
                .iter()
                .map(|&ox| row + ox)
                .filter(|&q| q < vectors * lanes)
            {
                masks[q / lanes * g.kw + kx] &= !(1 << (q % lanes));
            }
        }
    }
    masks
}

/// `out = conv2d(input, weight) + bias` for a shape that [`applies`]; `false` if an output
/// is not finite (a masked term may then differ from PyTorch's `0 * weight`: the caller
/// recomputes every output another way).
pub(crate) fn forward<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    weight: &[A],
    bias: Option<&[A]>,
    out: &mut [A],
    scratch: &Scratch,
) -> bool {
    let plane = g.oh * g.ow;
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let taps = cin_g * g.kh * g.kw;
    let lanes = REGISTER_BYTES / std::mem::size_of::<A>();
    let ci_block = ci_block(g);
    let (band, slab_channels) = slab_shape::<A>(g, ci_block);
    let finite = AtomicBool::new(true);
    // Tasks: a tile of CO channels and a run of a band's rows (see `tiled`); the masks of
    // the longest run serve every run (a vector's masks depend on its place in the run).
    let tiles = cout_g.div_ceil(CO);
    let runs = runs_per_tile(g, tiles);
    let row_chunk = |rows: usize| rows.div_ceil(runs.min(rows));
    let masks = column_masks(g, row_chunk(band) * g.ow, lanes);
    let segmented = skipped_rows_pay(g, lanes);
    let unread = unread_kernel_rows(g);
    // Every tap row's weight offset in a channel's row (of a slab's channels).
    let all_weights: Vec<usize> = (0..slab_channels * g.kh).map(|t| t * g.kw).collect();
    for_each_chunk(out, cout_g * plane, |task, group_out| {
        let (n, group) = (task / g.groups, task % g.groups);
        for c0 in (0..cin_g).step_by(slab_channels) {
            let channels = slab_channels.min(cin_g - c0);
            let first = n * g.cin + group * cin_g + c0;
            let x = &input[first * g.h * g.w..][..channels * g.h * g.w];
            // The slab's channels' weights start `c0 * kh * kw` into every weight row.
            let weight_shift = c0 * g.kh * g.kw;
            let last_channels = c0 + channels == cin_g;
            for oy0 in (0..g.oh).step_by(band) {
                let rows = band.min(g.oh - oy0);
                let Some(slab) = unpadded_slab(g, x, oy0, rows, lanes, scratch) else {
                    return;
                };
                let tap_rows = &slab.tap_rows;
                let slab_taps = tap_rows.len() * g.kw;
                let row_chunk = row_chunk(rows);
                let (segments, row_taps) = match segmented {
                    true => kernel_row_segments(g, &slab, oy0, rows, row_chunk, lanes, unread),
                    false => (Vec::new(), Vec::new()),
                };
                let Some(tails) = tail_columns(g, &slab, rows, row_chunk, scratch) else {
                    return;
                };
                let planes = group_out
                    .chunks_exact_mut(plane)
                    .map(|p| p[oy0 * g.ow..][..rows * g.ow].chunks_mut(row_chunk * g.ow));
                for_each_item(block_tasks(planes, CO), |(tile, chunk, outs)| {
                    let co0 = group * cout_g + tile * CO;
                    let count = outs.len();
                    let len = outs[0].len();
                    let main = len - tail_len(len, lanes);
                    let (init, weight_rows) = tile_rows(bias, co0, count, taps);
                    let weight_rows = weight_rows.map(|r| r + weight_shift);
                    // A channel summed past the group's last sums into a spare row, dropped;
                    // rows past those are placeholders the kernel does not touch.
                    let summed = summed_channels(count);
                    let Some(mut spare) = scratch.filled((summed - count) * len, A::ZERO) else {
                        return;
                    };
                    let (mut real, mut spare) = (outs.into_iter(), spare.chunks_exact_mut(len));
                    let mut outs: [&mut [A]; CO] = std::array::from_fn(|_| {
                        let row: &mut [A] = match real.next() {
                            Some(row) => row,
                            None => spare.next().unwrap_or_default(),
                        };
                        row
                    });
                    let block_rows = ci_block * g.kh;
                    let blocks = tap_rows.len().div_ceil(block_rows);
                    let tail = Tail {
                        columns: &tails[(chunk * TAIL_LANES * slab_taps).min(tails.len())..],
                        taps: slab_taps,
                        weight,
                        weight_rows: &weight_rows[..count],
                        init: &init[..count],
                    };
                    let mut partial = [[A::ZERO; 16 * CO]; TAIL_LANES];
                    for (b, rows) in tap_rows.chunks(block_rows).enumerate() {
                        let terms = b * ci_block * g.kh * g.kw;
                        let check = last_channels && b + 1 == blocks;
                        let whole = [(0, main, usize::MAX)];
                        let runs = segments.get(chunk).map_or(&whole[..], Vec::as_slice);
                        for &(from, to, kernel_rows) in runs {
                            let (starts, weight_taps) = match row_taps.get(kernel_rows) {
                                Some(taps) => taps.block(b, ci_block),
                                None => (rows, &all_weights[b * block_rows..][..rows.len()]),
                            };
                            let all_finite = run(
                                &mut MaskedTile {
                                    tile: Tile {
                                        slab: &slab.data[slab.start + chunk * row_chunk * g.ow..],
                                        starts,
                                        weights: weight,
                                        rows: weight_rows,
                                        init,
                                        resume: c0 > 0 || b > 0,
                                        outs: outs.each_mut().map(|o| &mut **o),
                                        len: to,
                                        channels: summed,
                                        prefetch: false,
                                    },
                                    from,
                                    weight_taps,
                                    columns: g.kw,
                                    column_offsets: &slab.column_offsets,
                                    masks: &masks,
                                },
                                check,
                            );
                            if !all_finite {
                                finite.store(false, Ordering::Relaxed);
                            }
                        }
                        // The tail's terms of the block, while its weights are in L1.
                        tail.add(len - main, terms..terms + rows.len() * g.kw, &mut partial);
                    }
                    let tail_finite = tail.finish(main..len, &partial, &mut outs, c0 > 0);
                    if last_channels && !tail_finite {
                        finite.store(false, Ordering::Relaxed);
                    }
                });
            }
        }
    });
    finite.into_inner()
}

/// The output rows of a band and the input channels of its slab: every input channel of
/// the group and as many rows as [`SLAB_BUDGET`] (or [`STRIDED_BUDGET_BYTES`]) holds; but
/// where the whole image's slab of every channel would not fit in [`L2_SLAB_BYTES`] and
/// that of [`ci_block`] channels would, the whole image in slabs of as many whole blocks of
/// channels as fit, whose sums each slab's sweeps resume from the previous one's (each
/// tile of output channels streams the slab again: from L2, not L3).
fn slab_shape<A>(g: &Geometry, ci_block: usize) -> (usize, usize) {
    let cin_g = g.cin_per_group();
    let budget = match g.stride.h * g.stride.w {
        1 => SLAB_BUDGET,
        _ => STRIDED_BUDGET_BYTES / std::mem::size_of::<A>(),
    };
    // Each output row of a band adds `stride.h * w` elements a channel (its phase rows),
    // the band's rows reach `row_reach` more.
    let row = g.stride.h.saturating_mul(g.w).max(1);
    let image = row.saturating_mul(g.oh.saturating_add(row_reach(g)));
    let l2 = L2_SLAB_BYTES / std::mem::size_of::<A>();
    let channels = match image.saturating_mul(cin_g) > l2 && image.saturating_mul(ci_block) <= l2 {
        true => l2 / image / ci_block * ci_block,
        false => cin_g,
    };
    let band = (budget / channels.saturating_mul(row))
        .saturating_sub(row_reach(g))
        .clamp(1, g.oh);
    (band, channels)
}

/// The kernel rows whose input row is inside the image for output row `oy`, as bits
/// (every bit for a kernel of more than 64 rows).
fn kernel_rows(g: &Geometry, oy: usize) -> u64 {
    if g.kh > 64 {
        return u64::MAX;
    }
    (0..g.kh)
        .filter(|&ky| {
            let y = oy * g.stride.h + ky * g.dilation.h;
            y >= g.pad_top && y - g.pad_top < g.h
        })
        .fold(0, |bits, ky| bits | 1 << ky)
}

/// The kernel rows that read no output row's input, as bits (see [`kernel_rows`]).
fn unread_kernel_rows(g: &Geometry) -> u64 {
    !(0..g.oh).fold(0, |bits, oy| bits | kernel_rows(g, oy))
}

/// The tap rows of some kernel rows: per input channel (in order), those kernel rows' tap
/// rows (`starts`) and their weights' offsets in a channel's row (`weights`).
struct RowTaps {
    starts: Vec<usize>,
    weights: Vec<usize>,
    /// Kernel rows per input channel.
    per_channel: usize,
}

impl RowTaps {
    /// The tap rows of input channels `block * ci_block..` (at most `ci_block`) and their
    /// weight offsets.
    fn block(&self, block: usize, ci_block: usize) -> (&[usize], &[usize]) {
        let first = (block * ci_block * self.per_channel).min(self.starts.len());
        let end = (first + ci_block * self.per_channel).min(self.starts.len());
        (&self.starts[first..end], &self.weights[first..end])
    }
}

/// Whether [`kernel_row_segments`] pays for a shape (else each run sums every kernel row):
/// at least [`MIN_SKIPPED`] of the (output row, kernel row) pairs read the padding, in rows
/// that hold two segments' worth of pixels or more. Finding the segments costs a few
/// microseconds a band: with 3x3 kernels padded by 1, 1.2% of the pairs on a 56x56 map
/// (where a run of 3 vectors is at most the first row's), ResNeXt's 32 groups of 4
/// channels ran 0.79-0.87x as fast with them.
fn skipped_rows_pay(g: &Geometry, lanes: usize) -> bool {
    if g.kh == 0 || g.kh > 64 {
        return false;
    }
    let all = u64::MAX >> (64 - g.kh);
    let (pairs, rows) = (0..g.oh)
        .map(|oy| (all & !kernel_rows(g, oy)).count_ones() as usize)
        .filter(|&missing| missing > 0)
        .fold((0usize, 0usize), |(pairs, rows), missing| {
            (pairs + missing, rows + 1)
        });
    pairs.saturating_mul(MIN_SKIPPED.1) >= g.oh.saturating_mul(g.kh) * MIN_SKIPPED.0
        && rows.saturating_mul(g.ow) >= 2 * SEGMENT_VECTORS * lanes
}

/// See [`skipped_rows_pay`]: a fiftieth.
const MIN_SKIPPED: (usize, usize) = (1, 50);

/// Vectors of outputs that [`kernel_row_segments`] gives the same kernel rows: the AVX-512
/// kernel's run for [`CO`] channels, so that a segment adds no shorter run than the one at
/// a task's end (splitting at every vector ran 14x14 maps 0.89-0.97x as fast).
const SEGMENT_VECTORS: usize = 3;

/// Per run of `row_chunk` rows of a band of `rows` from output row `oy0`: its whole
/// vectors (up to the pixels [`Tail`] leaves, see [`tail_len`]) in segments of the same
/// kernel rows, `(from, to, i)` with `row_taps[i]` the taps of those rows. Every
/// [`SEGMENT_VECTORS`] vectors sum the kernel rows that any of their pixels' rows reads
/// inside the image: the taps of the others read zero rows (of a dilated layer's padding,
/// a third of a 33x33 map's first and last six rows at dilation 6). The kernel rows that
/// read no output row's input (`unread`, see [`unread_kernel_rows`]) sum everywhere: their
/// weights would meet no input otherwise, so that an infinite one would leave every output
/// finite (PyTorch's `0 * inf` makes NaNs there, and a non-finite output is what sends the
/// call back to the padded slab).
#[allow(clippy::type_complexity)] // the segments and their taps, named by the caller
fn kernel_row_segments<A>(
    g: &Geometry,
    slab: &UnpaddedSlab<A>,
    oy0: usize,
    rows: usize,
    row_chunk: usize,
    lanes: usize,
    unread: u64,
) -> (Vec<Vec<(usize, usize, usize)>>, Vec<RowTaps>) {
    let mut kinds: Vec<u64> = Vec::new();
    let segments = (0..rows.div_ceil(row_chunk))
        .map(|run| {
            let first_row = oy0 + run * row_chunk;
            let len = row_chunk.min(rows - run * row_chunk) * g.ow;
            let main = len - tail_len(len, lanes);
            let mut segments: Vec<(usize, usize, usize)> = Vec::new();
            for from in (0..main).step_by(SEGMENT_VECTORS * lanes) {
                let to = (from + SEGMENT_VECTORS * lanes).min(main);
                let bits = (first_row + from / g.ow..=first_row + (to - 1) / g.ow)
                    .fold(unread, |bits, oy| bits | kernel_rows(g, oy));
                let kind = kinds.iter().position(|&k| k == bits).unwrap_or_else(|| {
                    kinds.push(bits);
                    kinds.len() - 1
                });
                match segments.last_mut() {
                    Some((_, end, k)) if *k == kind => *end = to,
                    _ => segments.push((from, to, kind)),
                }
            }
            segments
        })
        .collect();
    let row_taps = kinds
        .iter()
        .map(|&bits| {
            let read = |ky: usize| ky >= 64 || bits >> ky & 1 == 1;
            let (mut starts, mut weights) = (Vec::new(), Vec::new());
            for (t, &start) in slab.tap_rows.iter().enumerate() {
                if read(t % g.kh) {
                    starts.push(start);
                    weights.push(t * g.kw);
                }
            }
            RowTaps {
                starts,
                weights,
                per_channel: (0..g.kh).filter(|&ky| read(ky)).count(),
            }
        })
        .collect();
    (segments, row_taps)
}

/// Lanes of a run's last vector up to which [`Tail`] sums its pixels instead of the tile
/// kernel, which would spend a whole vector of multiply-adds per tap and channel on them:
/// a 7x7 map is 3 vectors and 1 pixel (a quarter of the tile's work for 2% of the
/// outputs), a 14x14 map 12 vectors and 4 pixels.
const TAIL_LANES: usize = 4;

/// The pixels at the end of a run of `len` that [`Tail`] sums: those of a last vector of
/// [`TAIL_LANES`] or fewer used lanes after a whole one, else none.
fn tail_len(len: usize, lanes: usize) -> usize {
    match len % lanes {
        tail if tail <= TAIL_LANES && len > lanes => tail,
        _ => 0,
    }
}

/// Per run of `row_chunk` rows of a band of `rows` (the last run shorter), [`TAIL_LANES`]
/// columns of terms for its tail pixels (see [`tail_len`]), the first that many used: each
/// pixel's terms in the weights' order (input channel, kernel row, kernel column), zero
/// where a tap reads a padding column. Empty if no run has a tail; `None` if the buffer
/// cannot be allocated.
fn tail_columns<A: Accumulator>(
    g: &Geometry,
    slab: &UnpaddedSlab<A>,
    rows: usize,
    row_chunk: usize,
    scratch: &Scratch,
) -> Option<Vec<A>> {
    let lanes = REGISTER_BYTES / std::mem::size_of::<A>();
    let taps = slab.tap_rows.len() * g.kw;
    let runs = rows.div_ceil(row_chunk);
    let run_len = |run: usize| row_chunk.min(rows - run * row_chunk) * g.ow;
    if (0..runs).all(|run| tail_len(run_len(run), lanes) == 0) {
        return Some(Vec::new());
    }
    let mut columns = scratch.filled(runs * TAIL_LANES * taps, A::ZERO)?;
    for (run, run_columns) in columns.chunks_exact_mut(TAIL_LANES * taps).enumerate() {
        let len = run_len(run);
        let slab_run = &slab.data[slab.start + run * row_chunk * g.ow..];
        let pixels = len - tail_len(len, lanes)..len;
        for (q, column) in pixels.zip(run_columns.chunks_exact_mut(taps)) {
            for (&row, terms) in slab.tap_rows.iter().zip(column.chunks_exact_mut(g.kw)) {
                for ((kx, term), &offset) in terms.iter_mut().enumerate().zip(&slab.column_offsets)
                {
                    if reads_input(g, q % g.ow, kx) {
                        *term = slab_run[row + offset + q];
                    }
                }
            }
        }
    }
    Some(columns)
}

/// The last pixels of a task's run (see [`tail_len`]), summed one by one: the pixel's
/// column of terms (see [`tail_columns`]) dotted with every channel's weight row, a block
/// of terms at a time as the tiles sum them, into a register of partial sums per channel
/// (lane `l` sums the terms `t` with `t % lanes == l`, in order), whose lanes are added in
/// order at the end.
struct Tail<'a, A> {
    /// A column of `taps` terms per tail pixel (from the run's first).
    columns: &'a [A],
    taps: usize,
    weight: &'a [A],
    /// Per channel, the start of its weight row.
    weight_rows: &'a [usize],
    /// Per channel, the value its sums start from (the bias, or zero).
    init: &'a [A],
}

impl<A: Accumulator> Tail<'_, A> {
    /// Adds terms `terms` of the first `pixels` tail pixels to their partial sums.
    fn add(&self, pixels: usize, terms: std::ops::Range<usize>, partial: &mut [[A; 16 * CO]]) {
        let channels = self.weight_rows.len();
        // Channels past the tile's repeat its last (their sums are dropped).
        let rows = std::array::from_fn(|c| self.weight_rows[c.min(channels - 1)] + terms.start);
        // Two pixels at a time (see `dot_rows_avx512`).
        let columns = self.columns.chunks_exact(self.taps).take(pixels);
        let mut partial = partial[..pixels].iter_mut();
        let mut columns = columns.map(|c| &c[terms.clone()]);
        while let Some(first) = columns.next() {
            let p0 = partial.next().expect("a partial per pixel");
            match (columns.next(), partial.next()) {
                (Some(second), Some(p1)) => dot_rows(self.weight, &rows, [first, second], [p0, p1]),
                _ => dot_rows(self.weight, &rows, [first], [p0]),
            }
        }
    }

    /// Writes the sums of run pixels `pixels` into `outs` (a row per channel): `init`, or
    /// the sum already there when `resume`, plus the lanes of their partial sums; whether
    /// every one is finite.
    fn finish(
        &self,
        pixels: std::ops::Range<usize>,
        partial: &[[A; 16 * CO]],
        outs: &mut [&mut [A]],
        resume: bool,
    ) -> bool {
        let lanes = REGISTER_BYTES / std::mem::size_of::<A>();
        let mut finite = true;
        for (q, partial) in pixels.zip(partial) {
            for ((out, &init), lanes_c) in outs.iter_mut().zip(self.init).zip(partial.chunks(16)) {
                let start = if resume { out[q] } else { init };
                let sum = lanes_c[..lanes].iter().fold(start, |sum, &v| sum + v);
                out[q] = sum;
                finite &= sum.is_finite();
            }
        }
        finite
    }
}

/// [`dot_rows_avx512`](crate::arch::x86_64::dot_rows_avx512) for `A` (see [`applies`]).
fn dot_rows<A: Accumulator, const P: usize>(
    weights: &[A],
    rows: &[usize; CO],
    columns: [&[A]; P],
    partials: [&mut [A]; P],
) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::arch::x86_64::dot_rows_avx512;
        if let Some(w) = as_type::<A, f32>(weights) {
            let columns = columns.map(|c| as_type::<A, f32>(c).expect("one type"));
            let partials = partials.map(|p| as_type_mut::<A, f32>(p).expect("one type"));
            // SAFETY: `applies` admitted AVX-512, which `isa()` reports only where the CPU
            // has it; the kernel checks its bounds.
            return unsafe { dot_rows_avx512(w, rows, columns, partials) };
        }
        if let Some(w) = as_type::<A, f64>(weights) {
            let columns = columns.map(|c| as_type::<A, f64>(c).expect("one type"));
            let partials = partials.map(|p| as_type_mut::<A, f64>(p).expect("one type"));
            // SAFETY: as above.
            return unsafe { dot_rows_avx512(w, rows, columns, partials) };
        }
    }
    let _ = (weights, rows, columns, partials);
    unreachable!("applies admits f32 and f64 with AVX-512 only");
}

/// The input rows output rows `oy0..oy0 + rows` read, of every input channel of `x`, as
/// phase planes (see the module's doc) of `ow` columns, with zero rows for the padding
/// above and below but no padding column, after `lag` zero slots (the padding on the left)
/// and followed by the reach of a row's last, partial vector.
struct UnpaddedSlab<A> {
    /// Unused values first (`start` of them; the zero slots follow), so that the first
    /// plane starts a register's worth of bytes: runs of outputs whose taps are whole rows
    /// apart then load whole cache lines.
    data: Vec<A>,
    start: usize,
    /// Per tap row (input channel, kernel row), where its reads for the band's first
    /// output start, from `start`: its phase plane's row, at the column phase 0.
    tap_rows: Vec<usize>,
    /// Per kernel column, where its reads start from a tap row's: its column phase's
    /// plane and its slot.
    column_offsets: Vec<usize>,
}

/// [`unpadded_slab`]'s two column phases (stride 2 across) of one channel's row phase
/// `py`, `phases` (two planes of `height` rows of `ow`), for `f32` on AVX-512: the rows
/// outside the image zero, those inside split by one call of the vector kernel (over the
/// generic loop, a call of `split_pairs` per row: grouped stride-2 layers of
/// `sweeps/strided.json` 1.07-1.23x as fast, `s_g32_512_28_s2` 1.23x, dense ones
/// 1.02-1.05x, the stem 1.00x; AMD Zen 5, one thread, three alternated rounds); false,
/// nothing written, for other types and CPUs.
fn split_rows<A: Accumulator>(
    g: &Geometry,
    x_c: &[A],
    phases: &mut [MaybeUninit<A>],
    (oy0, lag_h, height, py): (usize, usize, usize, usize),
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        let (Some(x_c), Some(phases)) = (
            as_type::<A, f32>(x_c),
            as_type_mut::<MaybeUninit<A>, MaybeUninit<f32>>(phases),
        ) else {
            return false;
        };
        let sh = g.stride.h;
        // Plane row `r` holds input row `(oy0 + r - lag_h) * sh + py` where that lies inside.
        let first = lag_h.saturating_sub(oy0).min(height);
        let inside = g.h.saturating_sub(py).div_ceil(sh) + lag_h;
        let last = inside.saturating_sub(oy0).clamp(first, height);
        let zero = MaybeUninit::new(0.0f32);
        let (even, odd) = phases.split_at_mut(height * g.ow);
        for plane in [&mut *even, &mut *odd] {
            plane[..first * g.ow].fill(zero);
            plane[last * g.ow..height * g.ow].fill(zero);
        }
        let src = &x_c[((oy0 + first).saturating_sub(lag_h) * sh + py).min(g.h) * g.w..];
        let halves = (&mut even[first * g.ow..], &mut odd[first * g.ow..]);
        // SAFETY: `isa()` returns AVX-512 only if the CPU supports it; the kernel checks its
        // bounds.
        unsafe {
            crate::arch::x86_64::split_rows_f32_avx512(
                src,
                sh * g.w,
                last - first,
                g.ow,
                halves,
                g.ow,
            )
        };
        return true;
    }
    let _ = (g, x_c, phases, oy0, lag_h, height, py);
    false
}

/// Copies [`UnpaddedSlab`]; `None` if its buffer cannot be allocated.
fn unpadded_slab<A: Accumulator>(
    g: &Geometry,
    x: &[A],
    oy0: usize,
    rows: usize,
    lanes: usize,
    scratch: &Scratch,
) -> Option<UnpaddedSlab<A>> {
    let (sh, sw) = (g.stride.h, g.stride.w);
    let (lag_h, lag_w) = (lag(g.pad_top, sh), lag(g.pad_left, sw));
    // Plane row `r` holds the phase's input row `oy0 + r - lag_h` (in phase rows).
    let height = rows + row_reach(g);
    let plane_len = height * g.ow;
    let channels = x.len() / (g.h * g.w).max(1);
    let row_phases = channels * sh;
    let reach_w = tap_phase(g.kw - 1, g.dilation.w, g.pad_left, sw).1;
    // The zero slots before, and after the last plane the reach of its last row's taps
    // past the row (`reach_w - lag_w`) and of a last, partial vector.
    let margins = lag_w.max(reach_w) + lanes;
    let len = scratch.ok(
        checked_product(&[row_phases, sw, plane_len], "an unpadded slab").and_then(|len| {
            len.checked_add(margins)
                .ok_or_else(|| crate::error::ConvError::overflow("an unpadded slab"))
        }),
    )?;
    let mut data: Vec<A> = Vec::new();
    let lead = REGISTER_BYTES / std::mem::size_of::<A>();
    scratch.ok(try_reserve(&mut data, len.saturating_add(lead)))?;
    let start = data
        .as_ptr()
        .wrapping_add(lag_w)
        .align_offset(REGISTER_BYTES);
    let (start, len) = (start.min(lead), len + start.min(lead));
    // Every element is written once, each channel's row phase in parallel (no zeroing
    // pass first).
    let zero = MaybeUninit::new(A::ZERO);
    let slab = &mut data.spare_capacity_mut()[..len];
    let (front, rest) = slab.split_at_mut(start + lag_w);
    let (planes_data, back) = rest.split_at_mut(row_phases * sw * plane_len);
    front.fill(zero);
    back.fill(zero);
    for_each_chunk(planes_data, sw * plane_len, |c, phases| {
        let (channel, py) = (c / sh, c % sh);
        let x_c = &x[channel * g.h * g.w..][..g.h * g.w];
        if sh * sw == 1 {
            // One plane, the input's rows: those inside the image in one copy.
            let first = lag_h.saturating_sub(oy0).min(height);
            let last = (g.h + lag_h).saturating_sub(oy0).clamp(first, height);
            let (above, rest) = phases.split_at_mut(first * g.w);
            let (image, below) = rest.split_at_mut((last - first) * g.w);
            above.fill(zero);
            image.write_copy_of_slice(&x_c[(oy0 + first - lag_h) * g.w..][..image.len()]);
            below.fill(zero);
            return;
        }
        if sw == 2 && split_rows(g, x_c, phases, (oy0, lag_h, height, py)) {
            return;
        }
        for r in 0..height {
            let iy = (oy0 + r)
                .checked_sub(lag_h)
                .map(|row| row * sh + py)
                .filter(|&iy| iy < g.h);
            let mut phase_rows = phases[r * g.ow..].chunks_mut(plane_len);
            let mut next_row = || &mut phase_rows.next().expect("a plane per phase")[..g.ow];
            let Some(iy) = iy else {
                (0..sw).for_each(|_| next_row().fill(zero));
                continue;
            };
            let src = &x_c[iy * g.w..][..g.w];
            match sw {
                1 => {
                    next_row().write_copy_of_slice(src);
                }
                2 => {
                    let even = next_row();
                    split_pairs(src, even, next_row());
                }
                _ => {
                    for px in 0..sw {
                        let dst = next_row();
                        for (d, &v) in dst.iter_mut().zip(src[px..].iter().step_by(sw)) {
                            d.write(v);
                        }
                    }
                }
            }
        }
    });
    // SAFETY: the first `len` elements (within the capacity reserved) were all written
    // above: the unused lead and the front margin, the back margin, and every chunk: at
    // stride 1 its one plane's rows above, inside and below the image; otherwise each
    // row, `ow` elements of each of its phases' rows (zeros, or every input column of the
    // phase: `w == ow * stride.w`, see `suits`; `split_pairs` writes every element of both
    // halves, `split_rows` every row of both planes); `for_each_chunk` returns once every
    // chunk is done.
    unsafe { data.set_len(len) };
    let tap_rows = (0..channels)
        .flat_map(|ci| {
            (0..g.kh).map(move |ky| {
                let (py, slot) = tap_phase(ky, g.dilation.h, g.pad_top, sh);
                ((ci * sh + py) * sw) * plane_len + slot * g.ow
            })
        })
        .collect();
    let column_offsets = (0..g.kw)
        .map(|kx| {
            let (px, slot) = tap_phase(kx, g.dilation.w, g.pad_left, sw);
            px * plane_len + slot
        })
        .collect();
    Some(UnpaddedSlab {
        data,
        start,
        tap_rows,
        column_offsets,
    })
}

/// Runs a tile sweep with the AVX-512 kernel for `A` (see [`applies`]); whether every sum
/// it stored is finite (checked only when `check`, else `true`).
fn run<A: Accumulator>(job: &mut MaskedTile<'_, A>, check: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::arch::x86_64::masked_tile_avx512;
        if let Some(mut job) = job.retyped::<f32>() {
            // SAFETY: `applies` admitted AVX-512, which `isa()` reports only where the CPU
            // has it; the caller builds the job to `MaskedTile`'s bounds.
            return unsafe { masked_tile_avx512(&mut job, check) };
        }
        if let Some(mut job) = job.retyped::<f64>() {
            // SAFETY: as above.
            return unsafe { masked_tile_avx512(&mut job, check) };
        }
    }
    let _ = (job, check);
    unreachable!("applies admits f32 and f64 with AVX-512 only");
}

impl<A: 'static + Copy> MaskedTile<'_, A> {
    /// The same sweep over `B`; `None` if `A` is another type.
    fn retyped<B: 'static + Copy>(&mut self) -> Option<MaskedTile<'_, B>> {
        Some(MaskedTile {
            tile: self.tile.retyped()?,
            from: self.from,
            weight_taps: self.weight_taps,
            columns: self.columns,
            column_offsets: self.column_offsets,
            masks: self.masks,
        })
    }
}
