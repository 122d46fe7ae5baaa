//! The `bf16` forward pass (and, through the flipped convolution, the stride-1 input
//! gradient) on AMX tiles: `bf16` products summed exactly into `f32` by the CPU's matrix
//! unit instead of widening every operand to `f32` first.
//!
//! A step of the reduction multiplies 32 output channels' 32 terms (two left tiles) by 32
//! pixels' same terms, stored as 16 rows of pairs of terms, each pixel's pair side by side
//! (two right tiles, the layout `tdpbf16ps` reads). [`Layout::Pairs`] (stride 1, larger
//! maps) pads the input into a slab of channel pairs, read as shifted windows as in
//! [`tiled`](super::tiled), and packs the weights per call; [`Layout::Unrolled`] reads the
//! weights in place and unrolls the input (an im2col, any stride). Tasks are 32 output
//! channels by a run of output rows; their sums (bias first, then the steps in order) are
//! rounded once to `bf16`.
//!
//! The unit treats subnormal `bf16` operands as zero and flushes subnormal `f32` sums, so a
//! result below `f32::MIN_POSITIVE` in magnitude comes out as zero here, as in PyTorch's
//! own AMX kernels.
//!
//! CPUs with AVX512-BF16 but no AMX run the same jobs on `vdpbf16ps`
//! (`arch::x86_64::bf16_dot_tiles`, the same flushing), on the layers that
//! [`suits_dot_products`], where those dot products outrun `f32` multiply-adds (AMD's Zen 4
//! and 5; Intel's run them at half the FLOPs, so its CPUs without AMX widen `bf16` to `f32`).

use half::{bf16, slice::HalfFloatSliceExt};

use super::masked::column_masks;
use super::{balanced_runs, block_tasks, fits, runs_per_tile, Scratch};
use crate::element::narrow_bf16;
use crate::geometry::{checked_product, Geometry};
use crate::isa::{isa, Isa};
use crate::kernels::Aligned;
use crate::threading::{for_each_chunk, for_each_item_init};

/// Output channels per task (two tiles of 16) and input channels per reduction step (a
/// tile row of 64 bytes of `bf16`).
pub(super) const CHANNELS: usize = 32;
/// Values in a tile of packed weights: 32 output channels by 32 input channels, stored
/// whole (its rows 64 bytes apart, one contiguous run for the tile load).
const TILE: usize = CHANNELS * CHANNELS;
/// Values of an unrolled input (per image and group) beyond which a strided layer is left
/// to the widened `f32` path (16 Mi: 32 MiB).
const UNROLLED_BUDGET: usize = 16 << 20;

/// One task's sweep for `crate::arch::amx::bf16_tiles`: `sums[c][p]` is `bias[c]` plus, over
/// the steps, the step's left row `c` times its right column `p`, for 32 channels `c` and
/// `p < len` (a multiple of [`step_pixels`]). A step's left operand is 32 rows (output
/// channels) of 32 `bf16` values `a_stride` apart from `a[at]`; its right operand 16 rows
/// (pairs of reduction terms) `b_stride` apart from `b[bt]`, each pixel's pair side by side.
pub(crate) struct AmxJob<'a> {
    pub a: &'a [u16],
    pub a_stride: usize,
    pub b: &'a [u16],
    pub b_stride: usize,
    /// Per reduction step, `(at, bt)`.
    pub steps: &'a [(usize, usize)],
    /// Per output channel of the task, its bias 16 times (one tile row).
    pub bias: &'a [f32],
    /// 32 rows of `len` sums.
    pub sums: &'a mut [f32],
    pub len: usize,
    /// Values between the two terms of a pair in a row of the left operand: 1 where they
    /// are side by side (pair `r` at `2r`), more where the row is a weight read in place
    /// (pair `r` at `2r * pair_gap` and `(2r + 1) * pair_gap`; the dot-product kernel only).
    pub pair_gap: usize,
    /// The lanes that read each step's right operand, per vector of 16 sums, the others
    /// reading zeros (the dot-product kernel only; `None`: every lane reads every step).
    pub lanes: Option<StepLanes<'a>>,
}

/// Which sums of an [`AmxJob`] read which steps' right operand: sum `p` reads step `s`'s
/// where bit `p % 16` of `masks[p / 16 * columns + step_columns[s]]` is set, zeros where it
/// is clear (a step's kernel column, whose taps read the neighbouring row's pixels at the
/// ends of a row, where the padding's zeros belong, see [`column_masks`]).
pub(crate) struct StepLanes<'a> {
    pub masks: &'a [u16],
    pub columns: usize,
    pub step_columns: &'a [usize],
}

impl AmxJob<'_> {
    /// The operand, bias and sums pointers of the kernel, after checking every bound it
    /// relies on. Panics (a bug, not a user error) if one fails.
    pub(crate) fn pointers(&mut self) -> (*const u16, *const u16, *const f32, *mut f32) {
        let len = self.len;
        assert!(len.is_multiple_of(16) && self.sums.len() >= CHANNELS * len);
        assert!(self.bias.len() >= CHANNELS * 16);
        let (at, bt) = self
            .steps
            .iter()
            .fold((0, 0), |(a, b), &(at, bt)| (a.max(at), b.max(bt)));
        let reach = 31 * self.a_stride + 31 * self.pair_gap + 1;
        assert!(self.pair_gap > 0 && (self.steps.is_empty() || at + reach <= self.a.len()));
        assert!(self.steps.is_empty() || bt + 2 * len + 15 * self.b_stride <= self.b.len());
        if let Some(lanes) = &self.lanes {
            assert_eq!(lanes.step_columns.len(), self.steps.len());
            assert!(lanes.step_columns.iter().all(|&c| c < lanes.columns));
            assert!(lanes.masks.len() >= len / 16 * lanes.columns);
        }
        (
            self.a.as_ptr(),
            self.b.as_ptr(),
            self.bias.as_ptr(),
            self.sums.as_mut_ptr(),
        )
    }
}

/// Whether the AMX tiles run this shape's `bf16` forward pass: 16 or more output channels
/// per group, and, with stride 1, 16 or more input channels per group, else 32 or more
/// terms per output (input channels x taps) and an unrolled input of at most
/// [`UNROLLED_BUDGET`] values; a slab that [`fits`], where the tiles are [`ready`].
pub(crate) fn applies(g: &Geometry) -> bool {
    let terms = g.cin_per_group().saturating_mul(g.kh).saturating_mul(g.kw);
    let pixels = g.oh.saturating_mul(g.ow).saturating_add(CHANNELS);
    let inputs = match g.stride.h == 1 && g.stride.w == 1 {
        true => g.cin_per_group() >= 16,
        false => terms >= CHANNELS && terms.saturating_mul(pixels) <= UNROLLED_BUDGET,
    };
    inputs && g.cout_per_group() >= 16 && fits(g) && ready(g)
}

/// Whether the tiles run `g` here, the AVX-512 level in force: on a CPU with AMX-BF16
/// granted to the process, or without AMX on one whose AVX512-BF16 dot products outrun its
/// `f32` multiply-adds (AMD's) where `g` [`suits_dot_products`].
pub(super) fn ready(g: &Geometry) -> bool {
    isa() == Isa::Avx512 && (amx_available() || (dot_products_pay() && suits_dot_products(g)))
}

/// Output pixels per image from which a layer runs on AVX512-BF16's dot products without
/// AMX (or see [`DOT_MIN_CHANNEL_PAIRS`]). `conv2d-bench --dtype bf16` against the widened
/// `f32` path (2026-12-05, AMD Zen 4, one thread, `sweeps/amx_bf16.json` and
/// `sweeps/bf16_dot.json`, 52 layers): 1.3-1.9x on every layer from 14x14 outputs with whole
/// blocks of 32 channels (the suite's 3x3, 1x1 strided and transposed layers, both
/// gradients), but on 7x7 to 12x12 maps 0.53-1.6x, the losses there on layers of 64-192
/// channels, from a quarter of the tiles' 32-pixel steps or more computed and dropped, and
/// the per-call packing.
const DOT_MIN_PIXELS: usize = 196;
/// Input times output channels per group from which a layer of fewer than
/// [`DOT_MIN_PIXELS`] runs on the dot products too: 256 channels or more on 5x5 to 10x10
/// maps ran 1.02-1.8x the widened path (strided to 7x7, 1x1 strided, transposed, the weight
/// gradient), 1x1 layers of 512-2048 channels on 7x7 0.99x; but the input gradient, whose
/// weights are packed per call, 0.77x at 256 channels on 7x7 (so it keeps the pixel rule).
const DOT_MIN_CHANNEL_PAIRS: usize = 256 * 256;

/// Whether `g` runs faster on AVX512-BF16's dot products (a step of the AMX job per pair
/// of terms) than widened to `f32`, on a CPU without AMX: at least [`DOT_MIN_PIXELS`]
/// output pixels per image or [`DOT_MIN_CHANNEL_PAIRS`], and at most a quarter more work
/// padded into whole blocks of 32 output channels and 32 terms (input channels with stride
/// 1, input channels x taps otherwise) than the layer has: 48 channels, padded to 64 on
/// both sides, ran 0.52x.
fn suits_dot_products(g: &Geometry) -> bool {
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let (terms, terms_pad) = match g.stride.h == 1 && g.stride.w == 1 {
        true => (cin_g, cin_g.next_multiple_of(CHANNELS)),
        false => {
            let terms = cin_g.saturating_mul(g.kh).saturating_mul(g.kw);
            (terms, terms.next_multiple_of(CHANNELS))
        }
    };
    let padded = cout_g.next_multiple_of(CHANNELS).saturating_mul(terms_pad);
    (g.oh.saturating_mul(g.ow) >= DOT_MIN_PIXELS
        || cin_g.saturating_mul(cout_g) >= DOT_MIN_CHANNEL_PAIRS)
        && padded.saturating_mul(4) <= cout_g.saturating_mul(terms).saturating_mul(5)
}

/// The pixels an [`AmxJob`]'s sums come in: whole tiles of 32 on AMX, vectors of 16 on the
/// dot products.
fn step_pixels() -> usize {
    if amx_available() {
        CHANNELS
    } else {
        16
    }
}

#[cfg(target_arch = "x86_64")]
fn amx_available() -> bool {
    crate::arch::amx::available()
}

/// Whether this CPU has AVX512-BF16's dot products and runs them faster than `f32`
/// multiply-adds ([`fast_bf16_dots`](crate::isa::fast_bf16_dots)).
#[cfg(target_arch = "x86_64")]
fn dot_products_pay() -> bool {
    crate::arch::x86_64::bf16_dot_available() && crate::isa::fast_bf16_dots()
}

/// Whether the dot-product kernel takes pairs `taps` values apart.
#[cfg(target_arch = "x86_64")]
fn in_place_gap(taps: usize) -> bool {
    crate::arch::x86_64::PAIR_GAPS.contains(&taps)
}

#[cfg(not(target_arch = "x86_64"))]
fn in_place_gap(_: usize) -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn amx_available() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn dot_products_pay() -> bool {
    false
}

/// How a shape's reduction (input channels x taps) is laid out for the tiles.
enum Layout {
    /// Stride 1: the weights packed per call as `[group][block of 32 output channels][tap]
    /// [block of 32 input channels][channel][32]`, `per_block` values a block, or `None`:
    /// read in place (see [`reads_weights_in_place`]); the input padded into a slab of
    /// channel pairs. A step is one tap of 32 input channels: its right tile is 16 pixels
    /// of 16 pairs read in place, at the tap's shift.
    Pairs {
        weights: Option<Aligned<u16>>,
        per_block: usize,
        cin_pad: usize,
    },
    /// The weights read as they are (each output channel's row of `cin_g * kh * kw` terms
    /// in PyTorch's order), or, where the terms or the channels are not whole blocks of
    /// 32, from a zero-padded copy `[group][co_pad][terms_pad]`; the input unrolled into
    /// rows of consecutive pairs of those terms for every output pixel (an im2col, any
    /// stride or dilation). A step is 32 consecutive terms.
    Unrolled {
        padded: Option<Aligned<u16>>,
        terms_pad: usize,
    },
}

/// A stride-1 layer's input planes zero-padded onto rows of `row_len` pixels, input pixel
/// `(y, x)` at `(y + pad_top) * row_len + pad_left + x`: each tap reads a window of them
/// shifted by its `shifts` entry (taps row by row), for every pixel of the output grid
/// (outputs at `y * row_len + x`).
pub(super) struct PaddedGrid {
    pub row_len: usize,
    /// Pixels per padded plane: its rows, then a tile of pixels past the last output and
    /// the reach of the last pixels' windows (their sums are dropped).
    pub plane_px: usize,
    pub shifts: Vec<usize>,
}

impl PaddedGrid {
    /// Rows as wide as the padded input: the output grid has the columns of every window,
    /// `(kw - 1) * dilation` more a row than the output.
    pub(super) fn new(g: &Geometry) -> Self {
        Self::with_rows(g, g.ow + (g.kw - 1) * g.dilation.w)
    }

    /// Rows as wide as the input, for a layer whose output is as wide ([`masks_columns`]):
    /// no padding column, so the output grid is the output itself; a tap to the side of a
    /// row's first or last pixels would read the neighbouring row's pixels there, lanes
    /// that the job's [`StepLanes`] read as zeros instead.
    fn unpadded(g: &Geometry) -> Self {
        Self::with_rows(g, g.w)
    }

    fn with_rows(g: &Geometry, row_len: usize) -> Self {
        let height = g.oh + (g.kh - 1) * g.dilation.h;
        let reach = (g.kw - 1) * g.dilation.w;
        let shifts = (0..g.kh)
            .flat_map(|ky| (0..g.kw).map(move |kx| ky * g.dilation.h * row_len + kx * g.dilation.w))
            .collect();
        PaddedGrid {
            row_len,
            plane_px: height * row_len + CHANNELS + row_len.max(reach),
            shifts,
        }
    }
}

/// Whether a stride-1 `g` on [`Layout::Pairs`] reads [`PaddedGrid::unpadded`] rows, the
/// padding columns' zeros loaded by lane masks: on the dot products (AMX tiles take no
/// lane masks), with an output as wide as the input. Every sum has the padded rows' terms
/// in their order (`0 * weight` included, NaN for an infinite weight as in PyTorch).
/// `conv2d-bench --dtype bf16` (2026-12-07, AMD Zen 4, one thread): `resnet_3x3_c128`
/// 1.245 -> 1.16 ms, the 2 padding columns of its 28 a row no longer computed and
/// dropped, nor any row's tail of 32 pixels (tasks split the plane anywhere).
fn masks_columns(g: &Geometry) -> bool {
    g.ow == g.w && !amx_available()
}

/// Whether [`Layout::Pairs`] reads `g`'s weights as they are: on the dot products (AMX
/// loads tiles of rows side by side), not flipped (whose rows are gathered across the
/// weight), with whole blocks of 32 input and output channels per group and a tap count
/// the kernel has compiled in as the gap between a pair's terms (1x1 and 3x3). Each pair
/// is then put together from the two values instead of packed per call (2026-12-07, AMD Zen
/// 4, one thread, four alternated processes: `resnet_3x3_c256` in `bf16` 1.19 -> 1.16 ms,
/// `c128` 1.055-1.066 -> 1.049-1.065 ms, `c64` unchanged; packing was 7.7% of `c256`).
fn reads_weights_in_place(g: &Geometry, flipped: bool) -> bool {
    let whole = |channels: usize| channels.is_multiple_of(CHANNELS);
    !flipped
        && !amx_available()
        && whole(g.cin_per_group())
        && whole(g.cout_per_group())
        && in_place_gap(g.kh * g.kw)
}

/// Whether a stride-1 `g` takes [`Layout::Unrolled`] rather than [`Layout::Pairs`]: maps of
/// at most 128 padded pixels per image (`conv2d-bench/sweeps/amx_bf16.json`, one thread:
/// 1.9-3.6x the packed layout's speed on 7x7 to 11x11 maps, where packing the weights
/// dominates; 0.8-1.3x at 13x13 and 14x14, `resnet_3x3_c256` among the slower; 0.6-0.87x
/// from 357 pixels, whose unrolled input outgrows the caches).
fn unrolls(g: &Geometry, row_len: usize) -> bool {
    g.oh * row_len <= 128
}

/// `out = conv2d(input, weight) + bias` for a shape that [`applies`], overwriting `out`;
/// with `flipped`, `g` is a [`flipped`] convolution and `weight` the weight of the
/// convolution whose input gradient it computes, flipped and transposed as it is packed.
pub(crate) fn forward(
    g: &Geometry,
    input: &[bf16],
    weight: &[bf16],
    flipped: bool,
    bias: Option<&[bf16]>,
    out: &mut [bf16],
    scratch: &Scratch,
) {
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let co_pad = cout_g.next_multiple_of(CHANNELS);
    let bits: &[u16] = weight.reinterpret_cast();
    let stride_1 = g.stride.h == 1 && g.stride.w == 1;
    let padded = PaddedGrid::new(g);
    let unrolls_input = !stride_1 || (!flipped && unrolls(g, padded.row_len));
    let masked = !unrolls_input && masks_columns(g);
    let PaddedGrid {
        row_len,
        plane_px,
        shifts,
    } = if masked {
        PaddedGrid::unpadded(g)
    } else {
        padded
    };
    let taps = shifts.len();
    let terms = cin_g * taps;
    let layout = if unrolls_input {
        let terms_pad = terms.next_multiple_of(CHANNELS);
        let padded = match terms == terms_pad && cout_g == co_pad {
            true => None,
            false => match padded_weights(g, bits, terms_pad, co_pad, scratch) {
                Some(padded) => Some(padded),
                None => return,
            },
        };
        Layout::Unrolled { padded, terms_pad }
    } else {
        let cin_pad = cin_g.next_multiple_of(CHANNELS);
        let Some(per_block) = scratch.ok(checked_product(
            &[shifts.len(), CHANNELS, cin_pad],
            "AMX weight panels",
        )) else {
            return;
        };
        let packing = Packing {
            cin_pad,
            per_block,
            flipped,
        };
        let weights = match reads_weights_in_place(g, flipped) {
            true => None,
            false => match packed_weights(g, weight, &packing, scratch) {
                Some(packed) => Some(packed),
                None => return,
            },
        };
        Layout::Pairs {
            weights,
            per_block,
            cin_pad,
        }
    };
    // Output pixel `(y, x)` is pixel `y * grid_row + x` of the right operand.
    let grid_row = if stride_1 { row_len } else { g.ow };
    let plane = g.oh * g.ow;
    // A grid as wide as the output is the output itself: tasks split it anywhere.
    let dense = grid_row == g.ow;
    let masks = masked.then(|| column_masks(g, plane.next_multiple_of(CHANNELS), 16));
    // Per step of [`Layout::Pairs`] (tap by tap), its kernel column.
    let step_columns: Vec<usize> = match &layout {
        Layout::Pairs { cin_pad, .. } if masked => (0..shifts.len())
            .flat_map(|tap| std::iter::repeat_n(tap % g.kw, cin_pad / CHANNELS))
            .collect(),
        _ => Vec::new(),
    };
    for_each_chunk(out, cout_g * plane, |task, group_out| {
        let (n, group) = (task / g.groups, task % g.groups);
        let x = &input[(n * g.cin + group * cin_g) * g.h * g.w..][..cin_g * g.h * g.w];
        let x = x.reinterpret_cast();
        // The right operand: its buffer and row stride.
        let right = match &layout {
            Layout::Pairs { cin_pad, .. } => {
                let slab = scratch.ok(checked_product(&[*cin_pad, plane_px], "an AMX slab"));
                slab.and_then(|len| scratch.filled_aligned(len, 0u16))
                    .map(|mut slab| {
                        pair_slab(g, x, &mut slab, plane_px, row_len);
                        (slab, 2 * plane_px)
                    })
            }
            Layout::Unrolled { terms_pad, .. } => unrolled(g, x, *terms_pad, grid_row, scratch)
                .map(|b| (b, 2 * (g.oh * grid_row + CHANNELS))),
        };
        let Some((right, b_stride)) = right else {
            return;
        };
        let Some(mut bias_rows) = scratch.filled_aligned(co_pad * 16, 0f32) else {
            return;
        };
        if let Some(b) = bias {
            for (row, b) in bias_rows
                .chunks_exact_mut(16)
                .zip(&b[group * cout_g..][..cout_g])
            {
                row.fill(b.to_f32());
            }
        }
        let blocks = co_pad / CHANNELS;
        // Output pixels a task: on a dense grid, runs of whole tiles of 32 pixels for two
        // tasks a thread (only the plane's last run is padded to whole steps), else whole
        // rows (each padded).
        let chunk_px = match dense {
            true => plane
                .div_ceil(balanced_runs(blocks * g.groups * g.n))
                .next_multiple_of(CHANNELS),
            false => g.oh.div_ceil(runs_per_tile(g, blocks).min(g.oh)) * g.ow,
        };
        let planes = group_out
            .chunks_exact_mut(plane)
            .map(|p| p.chunks_mut(chunk_px));
        // A task's sums per channel: its outputs on the grid, in whole steps.
        let sums_len = |pixels: usize| match dense {
            true => pixels.next_multiple_of(step_pixels()),
            false => ((pixels / g.ow - 1) * grid_row + g.ow).next_multiple_of(step_pixels()),
        };
        // Each thread's sums and rounded row, for the longest task, kept across its tasks
        // (the kernel overwrites the sums it reads: no filling per task).
        let max_len = sums_len(chunk_px);
        let buffers = || -> Option<(Aligned<f32>, Vec<bf16>)> { None };
        let tasks = block_tasks(planes, CHANNELS);
        for_each_item_init(tasks, buffers, |buffers, (block, chunk, outs)| {
            // The task's first output, on the grid.
            let first = chunk * chunk_px;
            let q0 = first / g.ow * grid_row + first % g.ow;
            let len = sums_len(outs[0].len());
            if buffers.is_none() {
                let rounded_len = if dense { 0 } else { max_len };
                *buffers = scratch
                    .filled_aligned(CHANNELS * max_len, 0f32)
                    .map(|sums| (sums, vec![bf16::ZERO; rounded_len]));
            }
            let Some((sums, rounded)) = buffers else {
                return;
            };
            let sums = &mut sums[..CHANNELS * len];
            let (a, a_stride, steps): (&[u16], usize, Vec<(usize, usize)>) = match &layout {
                Layout::Pairs {
                    weights,
                    per_block,
                    cin_pad,
                } => {
                    let (a, a_stride) = match weights {
                        None => (
                            &bits[(group * cout_g + block * CHANNELS) * terms..]
                                [..CHANNELS * terms],
                            terms,
                        ),
                        Some(w) => (
                            &w[(group * blocks + block) * per_block..][..*per_block],
                            CHANNELS,
                        ),
                    };
                    // Where a step's left operand starts: tap `tap` of input channels `32k..`.
                    let at = |tap: usize, k: usize| match weights {
                        // Channel `c`'s pair `r`: its terms `2r` and `2r + 1` of the 32
                        // input channels at the tap, `taps` apart in its row.
                        None => k * CHANNELS * taps + tap,
                        // A flipped convolution's panels hold its taps in reverse.
                        Some(_) => {
                            let panel = if flipped { taps - 1 - tap } else { tap };
                            panel * CHANNELS * cin_pad + k * TILE
                        }
                    };
                    let steps = shifts
                        .iter()
                        .enumerate()
                        .flat_map(|(tap, &shift)| {
                            (0..cin_pad / CHANNELS).map(move |k| {
                                (at(tap, k), 2 * (q0 + shift) + k * CHANNELS * plane_px)
                            })
                        })
                        .collect();
                    (a, a_stride, steps)
                }
                Layout::Unrolled { padded, terms_pad } => {
                    let first = block * CHANNELS;
                    let (a, a_stride) = match padded {
                        None => (&bits[(group * cout_g + first) * terms..], terms),
                        Some(p) => (&p[(group * co_pad + first) * terms_pad..], *terms_pad),
                    };
                    let steps = (0..terms_pad / CHANNELS)
                        .map(|k| (k * CHANNELS, k * 16 * b_stride + 2 * q0))
                        .collect();
                    (a, a_stride, steps)
                }
            };
            let mut job = AmxJob {
                a,
                a_stride,
                b: &right,
                b_stride,
                steps: &steps,
                bias: &bias_rows[block * CHANNELS * 16..][..CHANNELS * 16],
                sums,
                len,
                pair_gap: match &layout {
                    Layout::Pairs { weights: None, .. } => taps,
                    _ => 1,
                },
                lanes: masks.as_ref().map(|masks| StepLanes {
                    masks: &masks[q0 / 16 * g.kw..],
                    columns: g.kw,
                    step_columns: &step_columns,
                }),
            };
            run(&mut job);
            // Each channel's run rounded at once (long vectors), then its rows copied out
            // (on a dense grid, rounded straight into the output).
            for (out_rows, sums_c) in outs.into_iter().zip(sums.chunks_exact(len)) {
                if dense {
                    narrow_bf16(&sums_c[..out_rows.len()], out_rows);
                    continue;
                }
                let rounded = &mut rounded[..len];
                narrow_bf16(sums_c, rounded);
                for (dst, src) in out_rows
                    .chunks_exact_mut(g.ow)
                    .zip(rounded.chunks(grid_row))
                {
                    dst.copy_from_slice(&src[..g.ow]);
                }
            }
        });
    });
}

/// The flipped convolution (see `direct::backward_input`) whose forward pass on the tiles,
/// with `flipped` set, is the input gradient of the stride-1 convolution `g`; `None` where
/// the tiles do not apply, or where a weight is not finite (its products with the flipped
/// convolution's zero padding would be NaN where the input gradient has no such terms).
pub(crate) fn flipped(g: &Geometry, weight: &[bf16]) -> Option<Geometry> {
    let flipped = super::flipped_shape(g).filter(applies)?;
    // The flipped convolution packs its weights per call ([`Layout::Pairs`]), which the dot
    // products without AMX repay only from [`DOT_MIN_PIXELS`] on, whatever the channels.
    let repaid = amx_available() || flipped.oh.saturating_mul(flipped.ow) >= DOT_MIN_PIXELS;
    (repaid && all_finite(weight)).then_some(flipped)
}

/// Whether no value is infinite or NaN (exponent all ones; in chunks without early exit,
/// which vectorise).
pub(super) fn all_finite(values: &[bf16]) -> bool {
    let bits: &[u16] = values.reinterpret_cast();
    let finite = |c: &[u16]| c.iter().fold(true, |ok, &b| ok & (b & 0x7F80 != 0x7F80));
    bits.chunks(256).all(finite)
}

/// The right operand of [`Layout::Unrolled`], on a grid of `grid` pixels a row: the
/// group's input `x` zero-padded (each padded row split into its column phases where the
/// kernel is wider than the stride, so that the taps' reads are runs), then for each pair
/// of consecutive reduction terms `(ci, ky, kx)` (`terms_pad` of them, zero past the last)
/// a row holding, for every pixel of the output grid (and a tile more), the two terms'
/// inputs side by side. With stride 1 the grid is the padded width, and each term's pixels
/// one run of its padded plane; otherwise it is the output width, read row by row.
/// `None` if a buffer cannot be allocated.
fn unrolled(
    g: &Geometry,
    x: &[u16],
    terms_pad: usize,
    grid: usize,
    scratch: &Scratch,
) -> Option<Aligned<u16>> {
    let (cin_g, taps) = (g.cin_per_group(), g.kh * g.kw);
    let (s, d) = (g.stride, g.dilation);
    let stride_1 = s.h == 1 && s.w == 1;
    let height = (g.oh - 1) * s.h + (g.kh - 1) * d.h + 1;
    let width = (g.ow - 1) * s.w + (g.kw - 1) * d.w + 1;
    // Phases: padded column `c` is slot `c / s.w` of phase `c % s.w`; else `step` apart.
    let (phases, step) = match g.kw > s.w {
        true => (s.w, 1),
        false => (1, s.w),
    };
    let slots = width.div_ceil(phases);
    let row_len = slots * phases;
    let pixels = g.oh * grid + CHANNELS;
    // With stride 1 a term's run starts up to a row in and is `pixels` long: a tail.
    let plane = height * row_len + if stride_1 { width + CHANNELS } else { 0 };
    let slab_len = scratch.ok(checked_product(&[cin_g, plane], "an AMX slab"))?;
    let mut slab = scratch.filled(slab_len, 0u16)?;
    // Padded column `first + i` holds input column `i`, for `i < count` (as `padded_slab`).
    let first = g.pad_left.min(width);
    let count = g.w.min(width - first);
    for_each_chunk(&mut slab, plane, |c, plane| {
        let src = &x[c * g.h * g.w..][..g.h * g.w];
        for (r, dst) in plane.chunks_exact_mut(row_len).take(height).enumerate() {
            let Some(iy) = r.checked_sub(g.pad_top).filter(|&iy| iy < g.h) else {
                continue;
            };
            let src = &src[iy * g.w..][..count];
            if phases == 1 {
                dst[first..first + count].copy_from_slice(src);
                continue;
            }
            for (p, phase) in dst.chunks_exact_mut(slots).enumerate() {
                // The first slot of phase `p` at or after `first`, and its input column.
                let j0 = first.saturating_sub(p).div_ceil(phases);
                let Some(src) = src.get(j0 * phases + p - first..) else {
                    continue;
                };
                for (d, &v) in phase[j0..].iter_mut().zip(src.iter().step_by(phases)) {
                    *d = v;
                }
            }
        }
    });
    let len = scratch.ok(checked_product(
        &[terms_pad, pixels],
        "an unrolled AMX input",
    ))?;
    let mut rows = scratch.filled_aligned(len, 0u16)?;
    // Where term `t`'s inputs for output row 0 start, if it is a term (output row `oy`'s
    // `oy * s.h` rows further, read `step` apart).
    let start = |t: usize| {
        let (ci, ky, kx) = (t / taps, t % taps / g.kw, t % g.kw);
        let c = kx * d.w;
        let start = ci * plane + ky * d.h * row_len + c % phases * slots + c / phases;
        (t < cin_g * taps).then_some(start)
    };
    // Segments of the grid read as one run: all of it with stride 1, else each output row.
    let (segments, segment) = if stride_1 { (1, pixels) } else { (g.oh, g.ow) };
    for_each_chunk(&mut rows, 2 * pixels, |m, row| {
        let row: &mut [u32] = bytemuck::cast_slice_mut(row);
        let [even, odd] = [2 * m, 2 * m + 1].map(start);
        for (oy, dst) in row.chunks_exact_mut(segment).take(segments).enumerate() {
            let run = |start: Option<usize>| start.map(|at| &slab[at + oy * s.h * row_len..]);
            // Past the last term (an odd term needs its even one): the zeros there.
            if let Some(even) = run(even) {
                write_pairs(dst, even, run(odd), step);
            }
        }
    });
    Some(rows)
}

/// The weights of every group zero-padded to `[group][co_pad][terms_pad]` `bf16` bits, for
/// [`Layout::Unrolled`] where the rows are not whole tiles; `None` if the buffer cannot be
/// allocated.
fn padded_weights(
    g: &Geometry,
    bits: &[u16],
    terms_pad: usize,
    co_pad: usize,
    scratch: &Scratch,
) -> Option<Aligned<u16>> {
    let terms = g.cin_per_group() * g.kh * g.kw;
    let cout_g = g.cout_per_group();
    let len = scratch.ok(checked_product(
        &[g.groups, co_pad, terms_pad],
        "padded AMX weights",
    ))?;
    let mut padded = scratch.filled_aligned(len, 0u16)?;
    for_each_chunk(&mut padded, co_pad * terms_pad, |group, rows| {
        let weights = bits[group * cout_g * terms..][..cout_g * terms].chunks_exact(terms);
        for (dst, src) in rows.chunks_exact_mut(terms_pad).zip(weights) {
            dst[..terms].copy_from_slice(src);
        }
    });
    Some(padded)
}

/// Runs a job on the AMX tiles, or on AVX512-BF16 where the CPU has no AMX, where one of
/// them is [`ready`].
#[cfg(target_arch = "x86_64")]
pub(super) fn run(job: &mut AmxJob<'_>) {
    if amx_available() {
        // SAFETY: the CPU has AMX-BF16 and the process was granted its tile registers
        // (`available`); `AmxJob::pointers` checks the job's bounds.
        unsafe { crate::arch::amx::bf16_tiles(job) }
    } else {
        // SAFETY: the callers' `applies` checked `ready`: without AMX, the CPU has
        // AVX512-BF16 and AVX-512 F; `AmxJob::pointers` checks the job's bounds.
        unsafe { crate::arch::x86_64::bf16_dot_tiles(job) }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn run(_: &mut AmxJob<'_>) {
    unreachable!("applies admits x86-64 CPUs only");
}

/// How [`packed_weights`] packs: input channels rounded up to `cin_pad`, `per_block` values
/// per block of 32 output channels, and whether the weight is that of the convolution whose
/// input gradient this one is (`w'[o][i][tap] = w[i][o][taps - 1 - tap]` within a group:
/// packed by the original's taps, so that panel tap `t` holds this one's tap `taps - 1 -
/// t`, each run of taps copied as it is).
struct Packing {
    cin_pad: usize,
    per_block: usize,
    flipped: bool,
}

/// The weights of every group as `[group][block of 32 output channels][tap][block of 32 input
/// channels][channel][32]` `bf16` bits (zero past the group's channels), the blocks packed
/// in parallel; `None` if the buffer cannot be allocated.
fn packed_weights(
    g: &Geometry,
    weight: &[bf16],
    packing: &Packing,
    scratch: &Scratch,
) -> Option<Aligned<u16>> {
    let (cin_g, cout_g, taps) = (g.cin_per_group(), g.cout_per_group(), g.kh * g.kw);
    let Packing {
        cin_pad,
        per_block,
        flipped,
    } = *packing;
    let blocks = cout_g.div_ceil(CHANNELS);
    let len = scratch.ok(checked_product(
        &[g.groups, blocks, per_block],
        "AMX weight panels",
    ))?;
    let mut packed = scratch.filled_aligned(len, 0u16)?;
    let bits: &[u16] = weight.reinterpret_cast();
    let stride = CHANNELS * cin_pad;
    for_each_chunk(&mut packed, per_block, |b, panel| {
        let (group, block) = (b / blocks, b % blocks);
        let first = group * cout_g + block * CHANNELS;
        let count = CHANNELS.min(cout_g - block * CHANNELS);
        let mut gathered = Vec::new();
        for c in 0..count {
            let row = match flipped {
                false => &bits[(first + c) * cin_g * taps..][..cin_g * taps],
                true => {
                    // Output channel `o` of the flipped convolution is input channel `o`
                    // of the original, whose weights are spread over its output channels.
                    let o = block * CHANNELS + c;
                    gathered.clear();
                    for i in 0..cin_g {
                        let run = &bits[((group * cin_g + i) * cout_g + o) * taps..][..taps];
                        gathered.extend_from_slice(run);
                    }
                    &gathered[..]
                }
            };
            // Input channel `ci` of channel `c` within a tap: its tile, row, column.
            let at = |ci: usize| ci / CHANNELS * TILE + c * CHANNELS + ci % CHANNELS;
            // Whole blocks of 32 input channels by vector permutations, the rest one by one.
            let mut ci = 0;
            while ci + CHANNELS <= cin_g
                && transpose_taps(&row[ci * taps..], taps, &mut panel[at(ci)..], stride)
            {
                ci += CHANNELS;
            }
            for (ci, taps_of) in row.chunks_exact(taps).enumerate().skip(ci) {
                for (tap, &w) in taps_of.iter().enumerate() {
                    panel[tap * stride + at(ci)] = w;
                }
            }
        }
    });
    Some(packed)
}

/// `out[t * stride + j] = row[j * taps + t]` for 32 channels `j`, with AVX-512 (which
/// [`applies`] requires); `false` (nothing written) where it does not run.
#[cfg(target_arch = "x86_64")]
fn transpose_taps(row: &[u16], taps: usize, out: &mut [u16], stride: usize) -> bool {
    use crate::arch::x86_64::{transpose_taps_avx512, MAX_TRANSPOSED_TAPS};
    let runs = isa() == Isa::Avx512 && taps <= MAX_TRANSPOSED_TAPS;
    if runs {
        // SAFETY: `isa()` returns AVX-512 only if the CPU supports it (F and BW); the
        // kernel checks the bounds.
        unsafe { transpose_taps_avx512(row, taps, out, stride) };
    }
    runs
}

#[cfg(not(target_arch = "x86_64"))]
fn transpose_taps(_: &[u16], _: usize, _: &mut [u16], _: usize) -> bool {
    false
}

/// Pads `x` (the group's input planes as `bf16` bits) into `slab` (zeroed): pair `j` holds
/// channels `2j` and `2j + 1` (zero past the last), each input pixel `(y, x)` at pixel
/// `(y + pad_top) * row_len + pad_left + x` of its [`PaddedGrid`] plane as two values side by
/// side.
fn pair_slab(g: &Geometry, x: &[u16], slab: &mut [u16], pair_plane: usize, row_len: usize) {
    let cin_g = g.cin_per_group();
    let plane = |c: usize| (c < cin_g).then(|| &x[c * g.h * g.w..][..g.h * g.w]);
    for_each_chunk(slab, pair_plane * 2, |j, pair| {
        let pair: &mut [u32] = bytemuck::cast_slice_mut(pair);
        let Some(even) = plane(2 * j) else {
            return;
        };
        let odd = plane(2 * j + 1);
        for (iy, even) in even.chunks_exact(g.w).enumerate() {
            let dst = &mut pair[(iy + g.pad_top) * row_len + g.pad_left..][..g.w];
            write_pairs(dst, even, odd.map(|odd| &odd[iy * g.w..]), 1);
        }
    });
}

/// `dst[i]` = the pair `(even[i * step], odd[i * step])` (zero for the odd value without
/// `odd`) side by side, written as one `u32` (which vectorises at step 1), for every `i`
/// below `dst.len()`.
fn write_pairs(dst: &mut [u32], even: &[u16], odd: Option<&[u16]>, step: usize) {
    let n = dst.len();
    match (odd, step) {
        (Some(odd), 1) => {
            for (d, (&e, &o)) in dst.iter_mut().zip(even[..n].iter().zip(&odd[..n])) {
                *d = bytemuck::cast([e, o]);
            }
        }
        (Some(odd), _) => {
            let pairs = even.iter().step_by(step).zip(odd.iter().step_by(step));
            for (d, (&e, &o)) in dst.iter_mut().zip(pairs) {
                *d = bytemuck::cast([e, o]);
            }
        }
        (None, _) => {
            for (d, &e) in dst.iter_mut().zip(even.iter().step_by(step)) {
                *d = bytemuck::cast([e, 0u16]);
            }
        }
    }
}
