//! [`Algorithm::DirectTiled`](crate::Algorithm::DirectTiled)'s forward pass: several
//! output channels per group, `f32` sums on AVX2 or AVX-512. A register tile of
//! [`tile_channels`] output channels by a few vectors of pixels, the weights broadcast, the
//! input read as shifted windows of a band's [`phase_planes`].
//!
//! Every tap of output pixel `q` (counted row after row in phase rows,
//! `q = r * row_len + x`) reads element `start + q` of the planes, so a band of output rows
//! is one contiguous run of `q`: the tile sweeps it (the `row_len - ow` columns per row
//! that are not outputs are computed and dropped), then the output rows are copied out.
//! The taps are swept in blocks of [`CI_BLOCK`] input channels, the sums carried in the
//! output block between blocks, so that each block's windows and weights stay in L1; every
//! output sums its bias, then its taps in order, whatever the thread count. On AVX-512,
//! shapes whose output rows and columns are the input's divided by the stride go to
//! [`masked`](super::masked) first, which computes no padding column; pointwise ones go to
//! [`pointwise`](super::pointwise), which reads the input planes as they are.

use std::any::TypeId;

use super::phase_planes::{self, phase_planes};
use super::{block_tasks, masked, pointwise, runs_per_tile, Scratch, LANES};
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};
use crate::threading::{for_each_chunk, for_each_item};

/// Output channels per tile of the AVX-512 kernels, the most a tile holds: 8 channels by
/// 3 vectors of sums. A microbenchmark of the tile loop alone (2026-12-03, Intel Xeon) ran
/// it 2-8% faster than 6 by 4 (fewer pixel loads, most of which split cache lines), and
/// `conv2d-bench` ran the masked 3x3 layers of the suite 1-6% faster; most layers' channel
/// counts are multiples of 8, not of 6.
pub(crate) const CO: usize = 8;
/// Output channels per tile of the AVX2 kernel: 6 channels by 2 vectors of sums in 12 of
/// its 16 registers (see [`direct_tile_avx2`](crate::arch::x86_64::direct_tile_avx2)).
pub(crate) const AVX2_CO: usize = 6;
/// Output channels per group the tiled kernels need at least: with fewer, most of a tile's
/// sums would be dropped.
pub(crate) const MIN_CHANNELS: usize = 3;
/// Zeros after a band's planes, for the vector reads of a run's last outputs (a run's
/// length is rounded up to whole vectors).
const SLACK: usize = 4 * LANES;
/// Input channels whose taps one sweep runs through before the next block.
const CI_BLOCK: usize = 16;
/// Elements of a band's slab (all input channels of the group): the whole padded image of
/// most layers (4 MiB of `f32`); larger images go in bands of rows.
const SLAB_BUDGET: usize = 1024 * 1024;
/// Elements of a band's [`phase_planes`] in a strided forward pass: 256 KiB of `f32`, half
/// a Zen 3 core's L2, so that each tile of output channels finds the band there after the
/// first (strided planes hold several input pixels per output pixel). `conv2d-bench` over
/// 12 layers of the suite and `sweeps/strided.json` (2026-12-02, Zen 3, AVX2, alternated
/// rounds) ran 3x3 stride-2 layers of 64-128 channels 1.1-1.5x and 2x2 stride-2 ones
/// 1.2-1.6x as fast as with [`SLAB_BUDGET`], the 7x7 stem 0.97-0.98x; a quarter of this
/// budget ran 0.85x overall (more bands, each re-padding the rows its kernel reaches).
/// Stride-1 layers keep [`SLAB_BUDGET`]: 0.92-1.10x with this one, and `deeplab_dil2_3x3`
/// (256 channels, dilation 2: two output rows a band) 0.71-0.83x.
const STRIDED_BUDGET: usize = 64 * 1024;

/// The row length of a band's slab and the output rows per band: as many as keep the
/// band's slab (every input channel of the group) within [`SLAB_BUDGET`] elements, at
/// least one.
pub(crate) fn bands(g: &Geometry) -> (usize, usize) {
    phase_planes::bands(g, SLAB_BUDGET)
}

/// Whether the shape suits the tiled forward pass, whatever the type: at least
/// [`MIN_CHANNELS`] output channels per group.
pub(crate) fn suits(g: &Geometry) -> bool {
    g.cout_per_group() >= MIN_CHANNELS
}

/// Output channels per tile on this CPU: [`CO`] with AVX-512, [`AVX2_CO`] otherwise.
pub(crate) fn tile_channels() -> usize {
    match isa() {
        Isa::Avx512 => CO,
        _ => AVX2_CO,
    }
}

/// The channels a tile of `count` real ones sums on this CPU: with AVX-512 2, 4, 6 or [`CO`]
/// (a channel past the group's last sums into a row that is dropped), [`AVX2_CO`] otherwise.
pub(crate) fn summed_channels(count: usize) -> usize {
    match isa() {
        Isa::Avx512 => count.next_multiple_of(2).min(CO),
        _ => AVX2_CO,
    }
}

/// Whether the tiled kernel computes this shape's forward pass in `A`.
pub(crate) fn applies<A: Accumulator>(g: &Geometry) -> bool {
    suits(g) && has_tile_kernel::<A>()
}

/// One tile sweep: `outs[c][q] = init[c] + sum_t weights[rows[c] + t] * slab[starts[t] + q]`
/// for `q < len` (a multiple of [`LANES`]).
pub(crate) struct Tile<'a, A> {
    pub slab: &'a [A],
    pub starts: &'a [usize],
    /// The layer's weights as they are (one row of taps per output channel): each tap's
    /// weights are broadcast one by one, so they need no packing.
    pub weights: &'a [A],
    /// Where channel `c`'s weights for `starts` begin in `weights` (a channel past the
    /// group's last repeats a real one; its sums are dropped).
    pub rows: [usize; CO],
    pub init: [A; CO],
    /// Whether the sums start from `outs` (a later block of taps) rather than `init`.
    pub resume: bool,
    /// Per channel, `len` sums (channels past `channels` are not touched).
    pub outs: [&'a mut [A]; CO],
    pub len: usize,
    /// The channels summed: the first [`summed_channels`].
    pub channels: usize,
    /// Whether the AVX2 kernel prefetches each tap's window two runs on: for pointwise
    /// layers, whose every tap reads another input plane (1x1 layers 1.07x as fast on Zen
    /// 3; the 3x3 layers, whose taps share rows, 0.99-1.01x).
    pub prefetch: bool,
}

impl<A> Tile<'_, A> {
    /// The slab, weight rows and output pointers of the vector kernels for the first
    /// `channels`, after checking every bound they rely on: `len` a multiple of [`LANES`],
    /// each of those channels' outputs holding `len` sums and every row a weight per tap,
    /// every tap's window `start..start + len` inside the slab. Panics (a bug, not a user
    /// error) if one fails.
    #[allow(clippy::type_complexity)] // three pointers, named where they are unpacked
    pub(crate) fn pointers(&mut self, channels: usize) -> (*const A, [*const A; CO], [*mut A; CO]) {
        let len = self.len;
        assert!(len.is_multiple_of(LANES) && channels <= CO);
        assert!(self.outs[..channels].iter().all(|o| o.len() >= len));
        let taps = self.starts.len();
        assert!(self.rows.iter().all(|&r| r + taps <= self.weights.len()));
        let end = self.starts.iter().max().map_or(0, |&s| s + len);
        assert!(end <= self.slab.len());
        self.unchecked_pointers()
    }

    /// The slab, weight-row and output pointers, for callers that checked their bounds.
    #[allow(clippy::type_complexity)] // as `pointers`
    pub(super) fn unchecked_pointers(&mut self) -> (*const A, [*const A; CO], [*mut A; CO]) {
        let weights = self.weights.as_ptr();
        // `wrapping_add` keeps this safe code (the caller checked every row).
        let rows = self.rows.map(|r| weights.wrapping_add(r));
        let outs = self.outs.each_mut().map(|o| o.as_mut_ptr());
        (self.slab.as_ptr(), rows, outs)
    }
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
    if pointwise::applies(g) {
        return pointwise::forward(g, input, weight, bias, out, scratch);
    }
    if masked::applies::<A>(g) && masked::forward(g, input, weight, bias, out, scratch) {
        return;
    }
    let plane = g.oh * g.ow;
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let taps = cin_g * g.kh * g.kw;
    let in_len = cin_g * g.h * g.w;
    let strided = g.stride.h > 1 || g.stride.w > 1;
    let budget = if strided { STRIDED_BUDGET } else { SLAB_BUDGET };
    let band = phase_planes::bands(g, budget).1;
    // Each (image, group) pads a band of its input once; its tiles of output channels
    // then run in parallel over that slab.
    for_each_chunk(out, cout_g * plane, |task, group_out| {
        let (n, group) = (task / g.groups, task % g.groups);
        let x = &input[(n * g.cin + group * cin_g) * g.h * g.w..][..in_len];
        for oy0 in (0..g.oh).step_by(band) {
            let rows = band.min(g.oh - oy0);
            let Some(slab) = phase_planes(g, x, oy0, rows, SLACK, scratch) else {
                return;
            };
            let (starts, row_len) = (&slab.starts, slab.width);
            // Tasks: a tile of channels and a run of the band's rows, enough of them to
            // share out even when the channels make few tiles (each output is still summed
            // whole by one task, in the same order).
            let co = tile_channels();
            let tiles = cout_g.div_ceil(co);
            let row_chunk = rows.div_ceil(runs_per_tile(g, tiles).min(rows));
            let planes = group_out
                .chunks_exact_mut(plane)
                .map(|p| p[oy0 * g.ow..][..rows * g.ow].chunks_mut(row_chunk * g.ow));
            for_each_item(block_tasks(planes, co), |(tile, chunk, outs)| {
                let r0 = chunk * row_chunk;
                let co0 = group * cout_g + tile * co;
                let count = outs.len();
                let chunk_rows = outs[0].len() / g.ow;
                let len = ((chunk_rows - 1) * row_len + g.ow).next_multiple_of(LANES);
                let (init, rows) = tile_rows(bias, co0, count, taps);
                let channels = summed_channels(count);
                let Some(mut flat) = scratch.filled_aligned(channels * len, A::ZERO) else {
                    return;
                };
                // A row of `len` sums per channel summed; placeholders past those.
                let mut rows_of_flat = flat.chunks_exact_mut(len);
                let mut sums: [&mut [A]; CO] =
                    std::array::from_fn(|_| rows_of_flat.next().unwrap_or_default());
                // Blocks of input channels whose windows and weights stay in L1.
                let block_taps = CI_BLOCK * g.kh * g.kw;
                for (b, starts) in starts.chunks(block_taps).enumerate() {
                    run(&mut Tile {
                        slab: &slab.data[r0 * row_len..],
                        starts,
                        weights: weight,
                        rows: rows.map(|r| r + b * block_taps),
                        init,
                        resume: b > 0,
                        outs: sums.each_mut().map(|o| &mut **o),
                        len,
                        channels,
                        prefetch: false,
                    });
                }
                for (out_rows, flat_c) in outs.into_iter().zip(sums) {
                    for (d, s) in out_rows.chunks_exact_mut(g.ow).zip(flat_c.chunks(row_len)) {
                        d.copy_from_slice(&s[..g.ow]);
                    }
                }
            });
        }
    });
}

/// The starting sums (the bias) of a tile of `count` channels from `co0`, and where their
/// weight rows of `taps` weights begin; channels past the group's last repeat its last row
/// (their sums are dropped).
pub(super) fn tile_rows<A: Accumulator>(
    bias: Option<&[A]>,
    co0: usize,
    count: usize,
    taps: usize,
) -> ([A; CO], [usize; CO]) {
    let init = std::array::from_fn(|c| match bias {
        Some(b) if c < count => b[co0 + c],
        _ => A::ZERO,
    });
    let rows = std::array::from_fn(|c| (co0 + c.min(count - 1)) * taps);
    (init, rows)
}

/// Whether the tile kernels exist for `A` on this CPU (`f32` with AVX2 or AVX-512); other
/// types and CPUs run [`Algorithm::untiled`](crate::Algorithm::untiled)'s choice.
pub(crate) fn has_kernel<A: Accumulator>() -> bool {
    TypeId::of::<A>() == TypeId::of::<f32>() && matches!(isa(), Isa::Avx2 | Isa::Avx512)
}

/// Whether [`run`]'s forward tile kernel exists for `A` on this CPU: `f32` and `f64` with
/// AVX2 or AVX-512 (the gradient tiles are `f32` only, see [`has_kernel`]).
fn has_tile_kernel<A: Accumulator>() -> bool {
    has_kernel::<A>() || TypeId::of::<A>() == TypeId::of::<f64>() && has_kernel::<f32>()
}

/// `values` as `B`; `None` if `A` is another type.
pub(crate) fn as_type<A: 'static, B: 'static>(values: &[A]) -> Option<&[B]> {
    // SAFETY: `A` is `B` (same `TypeId`): the same slice, re-typed (same layout, length
    // and lifetime).
    (TypeId::of::<A>() == TypeId::of::<B>())
        .then(|| unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), values.len()) })
}

/// As [`as_type`], mutably.
pub(crate) fn as_type_mut<A: 'static, B: 'static>(values: &mut [A]) -> Option<&mut [B]> {
    // SAFETY: as in `as_type`; the borrow of `values` is moved into the result.
    (TypeId::of::<A>() == TypeId::of::<B>()).then(|| unsafe {
        std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), values.len())
    })
}

/// `values` as `f32`, for the `f32` kernels; `None` if `A` is another type.
pub(crate) fn as_f32<A: Accumulator>(values: &[A]) -> Option<&[f32]> {
    as_type(values)
}

/// As [`as_f32`], mutably.
pub(crate) fn as_f32_mut<A: Accumulator>(values: &mut [A]) -> Option<&mut [f32]> {
    as_type_mut(values)
}

#[cfg(target_arch = "x86_64")]
impl<A: 'static + Copy> Tile<'_, A> {
    /// The same sweep over `B`; `None` if `A` is another type.
    pub(super) fn retyped<B: 'static + Copy>(&mut self) -> Option<Tile<'_, B>> {
        Some(Tile {
            slab: as_type(self.slab)?,
            starts: self.starts,
            weights: as_type(self.weights)?,
            rows: self.rows,
            init: as_type(&self.init)?.try_into().ok()?,
            resume: self.resume,
            outs: self
                .outs
                .each_mut()
                .map(|o| as_type_mut(o).expect("the outputs' type is the slab's")),
            len: self.len,
            channels: self.channels,
            prefetch: self.prefetch,
        })
    }
}

/// Runs a tile sweep with the vector kernel for `A` (see [`has_tile_kernel`]).
pub(super) fn run<A: Accumulator>(job: &mut Tile<'_, A>) {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(mut job) = job.retyped::<f32>() {
            return sweep(&mut job);
        }
        if let Some(mut job) = job.retyped::<f64>() {
            return sweep(&mut job);
        }
    }
    unreachable!("callers check has_tile_kernel, which admits f32 and f64 only");
}

/// Runs a tile sweep with the vector kernel for this CPU.
#[cfg(target_arch = "x86_64")]
fn sweep<E: crate::arch::x86_64::TileElement>(job: &mut Tile<'_, E>) {
    use crate::arch::x86_64::{direct_tile_avx2, direct_tile_avx512};
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it; the callers build
        // the job to `Tile`'s bounds.
        Isa::Avx512 => unsafe { direct_tile_avx512(job) },
        // SAFETY: as above.
        Isa::Avx2 => unsafe { direct_tile_avx2(job) },
        _ => unreachable!("has_tile_kernel admits AVX2 and AVX-512 only"),
    }
}
