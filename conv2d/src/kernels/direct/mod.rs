//! Direct convolution with the sums in registers. Each forward task pads the input rows its
//! band of output rows reads (for each input channel of the group) into a small slab, split
//! into `stride` column phases so that every tap reads contiguous pixels; then it computes
//! four vectors of 16 output pixels at a time, tap after tap (3x3 taps a row apart reuse
//! each input row for three output rows). The weight gradient reduces against the same
//! slabs; the stride-1 input gradient is a forward pass on the flipped weight. On AVX-512,
//! 3x3 depthwise-style layers and stride-1 3x3 weight gradients read the input planes
//! with no slab ([`in_place`]); depthwise layers those do not take, and on small maps
//! those they do, run vectorised over channels ([`depthwise_channels`]).

#[allow(unsafe_code)] // dispatch to the AMX kernel in `crate::arch::amx`
pub(crate) mod amx;
pub(crate) mod amx_phases;
pub(crate) mod amx_weight;
mod depthwise_channels;
mod implicit_gemm;
mod in_place;
mod masked;
mod phase_planes;
mod pointwise;
mod subpixel;
mod tiled;
mod tiled_weight;
mod weight_channels;

pub(crate) use amx::AmxJob;
pub(crate) use depthwise_channels::{
    ChannelForward, ChannelWeightGrad, CHANNELS as DEPTHWISE_CHANNELS,
};
pub(crate) use implicit_gemm::{
    applies as implicit_gemm, forward as implicit_forward, wins as implicit_gemm_wins, PixelTile,
    TILE_PIXELS,
};
pub(crate) use in_place::{PlaneRows, PlaneWeightRows};
pub(crate) use masked::MaskedTile;
pub(crate) use pointwise::applies as pointwise;
pub(crate) use subpixel::{backward_input as backward_input_subpixel, wins as subpixel_wins};
pub(crate) use tiled::{
    applies as tiles, as_type, as_type_mut, forward as tiled_forward, suits as suits_tiles, Tile,
    AVX2_CO, CO,
};
pub(crate) use tiled_weight::{backward_weight as backward_weight_tiled, WeightTile, WCO, WTAPS};
pub(crate) use weight_channels::{ChannelWeightTile, CCO, CTAPS};

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

use super::rows::band_rows;
use super::{all_finite, every_nth, Aligned, Scratch};
use crate::element::Accumulator;
use crate::error::try_reserve;
use crate::geometry::{checked_product, Geometry};
use crate::isa::{isa, Isa};
use crate::threading::{for_each_chunk, for_each_chunk_init};

/// Output pixels in one vector of sums.
const LANES: usize = 16;

/// Tasks the tiles' kernels split a layer into at least, where its rows allow (a constant,
/// not the thread count, so that the split never depends on it).
const TASKS: usize = 16;

/// Into how many runs of rows (or chunks of pixels) the tile kernels split each of the
/// `tiles` tiles of output channels of one image and group: enough that every image's and
/// group's tiles together make [`TASKS`] tasks. Counting every image and group, not one
/// (2026-12-03, Intel Xeon, the masked tiles, alternated rounds): grouped layers of 8-16
/// channels per group ran 1.07-1.45x as fast on one and two threads (`resnext_g32_3x3`
/// 1.24x and 1.39x, the grouped stride-2 layers of `sweeps/strided.json` 1.07-1.45x),
/// whose runs of two rows or fewer had cost more per tap than the spread gained; batches
/// within the noise.
pub(crate) fn runs_per_tile(g: &Geometry, tiles: usize) -> usize {
    TASKS.div_ceil(tiles.saturating_mul(g.groups).saturating_mul(g.n).max(1))
}

/// Into how many tasks each of `units` independent parts of a call (images, groups, panels)
/// splits for two tasks a thread at least, so that the threads come out even while every
/// task keeps as much work as it can (the kernels whose tasks each stream a panel of
/// weights). Which task sums an output never changes its sum.
pub(crate) fn balanced_runs(units: usize) -> usize {
    (2 * crate::threading::num_threads()).div_ceil(units.max(1))
}

/// The padded input of one band: for each input channel of the group, `height` rows of
/// `phases` phases of `phase_width` pixels; phase `p` of a row holds padded columns
/// `p, p + stride.w, p + 2*stride.w, ...` (there are `stride.w` phases, or fewer when the
/// stride exceeds the row: the others would hold no column a tap reads).
pub(crate) struct Slab<A: 'static> {
    data: Aligned<A>,
    height: usize,
    phase_width: usize,
    phases: usize,
    /// Input channels held.
    planes: usize,
}

/// The extents of a slab for `rows` output rows: `(height, width, phase_width, phases)`,
/// saturating
/// (only a slab that [`fits`] is ever allocated).
fn slab_extents(g: &Geometry, rows: usize) -> (usize, usize, usize, usize) {
    let extent = |count: usize, s: usize, k: usize, d: usize| {
        count
            .saturating_sub(1)
            .saturating_mul(s)
            .saturating_add(k.saturating_sub(1).saturating_mul(d))
            .saturating_add(1)
    };
    let width = extent(g.ow, g.stride.w, g.kw, g.dilation.w);
    let height = extent(rows, g.stride.h, g.kh, g.dilation.h);
    (
        height,
        width,
        width.div_ceil(g.stride.w),
        g.stride.w.min(width),
    )
}

/// Whether this algorithm suits the shape: a whole image's slab is at most a few times the
/// size of its input and output planes (a huge stride, padding or dilation would make it
/// mostly padding that no tap reads).
pub(crate) fn fits(g: &Geometry) -> bool {
    let (height, _, phase_width, phases) = slab_extents(g, g.oh);
    let slab = height.saturating_mul(phase_width).saturating_mul(phases);
    let planes =
        g.h.saturating_mul(g.w)
            .saturating_add(g.oh.saturating_mul(g.ow));
    slab <= planes.saturating_mul(4).saturating_add(4096)
}

impl<A: Accumulator> Slab<A> {
    fn row_len(&self) -> usize {
        self.phase_width * self.phases
    }

    /// Where each tap `(ci, ky, kx)` of output row 0, pixel 0, starts in the slab, for every
    /// channel the slab holds; output row `r` starts `r * stride.h` slab rows further.
    fn tap_starts(&self, g: &Geometry) -> Vec<usize> {
        let (s, row_len) = (g.stride.w, self.row_len());
        let plane_len = self.height * row_len;
        (0..self.planes)
            .flat_map(|ci| (0..g.kh).flat_map(move |ky| (0..g.kw).map(move |kx| (ci, ky, kx))))
            .map(|(ci, ky, kx)| {
                let c = kx * g.dilation.w;
                ci * plane_len + ky * g.dilation.h * row_len + (c % s) * self.phase_width + c / s
            })
            .collect()
    }
}

/// One band of output rows of one plane, with its slab and its output channel's weights.
pub(crate) struct Band<'a, A: 'static> {
    pub g: &'a Geometry,
    pub slab: &'a Slab<A>,
    /// The slab's [`tap_starts`](Slab::tap_starts).
    pub starts: &'a [usize],
    /// The `cin/groups * kh * kw` weights of the plane's output channel.
    pub taps: &'a [A],
    pub init: A,
    /// `rows * ow` outputs.
    pub out: &'a mut [A],
}

/// `out = conv2d(input, weight) + bias`, overwriting every element of `out`.
pub(crate) fn forward<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    weight: &[A],
    bias: Option<&[A]>,
    out: &mut [A],
    scratch: &Scratch,
) {
    let plane = g.oh * g.ow;
    if plane == 0 || out.is_empty() {
        return;
    }
    if depthwise_channels::forward_applies::<A>(g) {
        return depthwise_channels::forward(g, input, weight, bias, out, scratch);
    }
    if in_place::forward_applies::<A>(g) {
        return in_place::forward(g, input, weight, bias, out);
    }
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let taps = cin_g * g.kh * g.kw;
    let bias_of = |co: usize| bias.map_or(A::ZERO, |b| b[co]);
    if band_rows(g.n * g.groups, g.oh) == g.oh {
        // Enough (image, group) pairs to keep every thread busy: each task pads its group's
        // input once, for all the group's output channels.
        for_each_chunk(out, cout_g * plane, |task, group_out| {
            let (n, group) = (task / g.groups, task % g.groups);
            let x = &input[(n * g.cin + group * cin_g) * g.h * g.w..][..cin_g * g.h * g.w];
            let Some(slab) = padded_slab(g, x, 0, g.oh, 0, scratch) else {
                return;
            };
            let starts = slab.tap_starts(g);
            for (co_in_group, out_plane) in group_out.chunks_mut(plane).enumerate() {
                let co = group * cout_g + co_in_group;
                run(&mut Band {
                    g,
                    slab: &slab,
                    starts: &starts,
                    taps: &weight[co * taps..][..taps],
                    init: bias_of(co),
                    out: out_plane,
                });
            }
        });
        return;
    }
    // Otherwise bands of rows of each output plane, each padding the rows it reads.
    for_each_band(g, input, out, |co, x, oy0, rows| {
        let Some(slab) = padded_slab(g, x, oy0, rows.len() / g.ow, 0, scratch) else {
            return;
        };
        let mut job = Band {
            g,
            slab: &slab,
            starts: &slab.tap_starts(g),
            taps: &weight[co * taps..][..taps],
            init: bias_of(co),
            out: rows,
        };
        run(&mut job);
    });
}

/// Tasks of bands of [`band_rows`] rows of each output plane (of `n * cout` in `out`):
/// `task(co, x, oy0, rows)` with `x` the input planes of the image's group that output
/// channel `co` belongs to and `rows` the band's outputs from row `oy0`.
fn for_each_band<A: Send + Sync>(
    g: &Geometry,
    input: &[A],
    out: &mut [A],
    task: impl Fn(usize, &[A], usize, &mut [A]) + Sync,
) {
    let (cin_g, group_len) = (g.cin_per_group(), g.cin_per_group() * g.h * g.w);
    let band = band_rows(g.n * g.cout, g.oh);
    for_each_chunk(out, g.oh * g.ow, |p, out_plane| {
        let (n, co) = (p / g.cout, p % g.cout);
        let ci0 = co / g.cout_per_group() * cin_g;
        let x = &input[(n * g.cin + ci0) * g.h * g.w..][..group_len];
        if band >= g.oh {
            // One band: the plane is the task, with no nested split to share out (whose
            // setup per plane cost depthwise layers on 3x3-7x7 maps 3-14%, 14x14-56x56
            // ones 2-6%; AMD Zen 5, one thread).
            return task(co, x, 0, out_plane);
        }
        for_each_chunk(out_plane, band * g.ow, |b, rows| {
            task(co, x, b * band, rows)
        });
    });
}

/// Tasks over channel planes cut into the same chunks: for each block of `per_block`
/// planes (the last may be short) and each chunk, `(block, chunk, that chunk of every
/// plane of the block)`, block after block.
fn block_tasks<'a, T: 'a>(
    planes: impl Iterator<Item = std::slice::ChunksMut<'a, T>>,
    per_block: usize,
) -> Vec<(usize, usize, Vec<&'a mut [T]>)> {
    let mut planes: Vec<_> = planes.collect();
    let mut tasks = Vec::new();
    for (b, block) in planes.chunks_mut(per_block).enumerate() {
        for chunk in 0.. {
            let outs: Vec<&mut [T]> = block.iter_mut().flat_map(Iterator::next).collect();
            if outs.is_empty() {
                break;
            }
            tasks.push((b, chunk, outs));
        }
    }
    tasks
}

/// The elements of a slab, the product of `extents` (channels, then the extents of one
/// channel's planes), and `tail` more: `what`, checked for overflow.
fn slab_len(extents: &[usize], tail: usize, what: &str) -> crate::Result<usize> {
    checked_product(extents, what)?
        .checked_add(tail)
        .ok_or_else(|| crate::error::ConvError::overflow(what))
}

/// The input rows output rows `oy0..oy0+rows` read, of every plane of `x`, zero-padded on
/// every side and split into column phases; `None` if its buffer cannot be allocated.
fn padded_slab<A: Accumulator>(
    g: &Geometry,
    x: &[A],
    oy0: usize,
    rows: usize,
    tail: usize,
    scratch: &Scratch,
) -> Option<Slab<A>> {
    let s = g.stride.w;
    let (height, width, phase_width, phases) = slab_extents(g, rows);
    let row_len = phase_width * phases;
    let planes = x.len() / (g.h * g.w).max(1);
    let len = scratch.ok(slab_len(&[planes, height, row_len], tail, "a padded slab"))?;
    // Channels in parallel (a caller with one image and group pads its whole slab here),
    // every element written once: the padding as zeros around each row's copy.
    let plane_len = height * row_len;
    let zero = MaybeUninit::new(A::ZERO);
    let pad_plane = |c: usize, slab_c: &mut [MaybeUninit<A>]| {
        if c >= planes {
            slab_c.fill(zero);
            return;
        }
        let x_c = &x[c * g.h * g.w..][..g.h * g.w];
        for (r, dst) in slab_c.chunks_exact_mut(row_len).enumerate() {
            let iy = (oy0 * g.stride.h + r).checked_sub(g.pad_top);
            let Some(iy) = iy.filter(|&iy| iy < g.h) else {
                dst.fill(zero);
                continue;
            };
            // Padded column c (input column c - pad_left) goes to phase c % s, slot c / s.
            let first = g.pad_left.min(width);
            let count = g.w.min(width - first);
            let src = &x_c[iy * g.w..][..count];
            match s {
                1 => {
                    padded_middle(dst, first, count, zero).write_copy_of_slice(src);
                }
                // Even source columns go to `first`'s phase, odd ones to the other.
                2 => {
                    let (phase0, phase1) = dst.split_at_mut(phase_width);
                    let ((even, even_at), (odd, odd_at)) = match first % 2 {
                        0 => ((phase0, first / 2), (phase1, first / 2)),
                        _ => ((phase1, first / 2), (phase0, first.div_ceil(2))),
                    };
                    split_pairs(
                        src,
                        padded_middle(even, even_at, count.div_ceil(2), zero),
                        padded_middle(odd, odd_at, count / 2, zero),
                    );
                }
                _ => {
                    dst.fill(zero);
                    // SAFETY: every element of `dst` was just written.
                    let dst = unsafe { dst.assume_init_mut() };
                    for (p, phase) in dst.chunks_exact_mut(phase_width).enumerate() {
                        // Slot j of phase p holds padded column j*s + p; the first one at
                        // or after `first` is slot ceil((first - p) / s).
                        let j0 = first.saturating_sub(p).div_ceil(s);
                        let src_start = j0 * s + p - first;
                        if src_start >= count {
                            continue;
                        }
                        let src = &src[src_start..];
                        let dst = &mut phase[j0..];
                        let count = dst.len().min(src.len().div_ceil(s));
                        every_nth(&mut dst[..count], src, s);
                    }
                }
            }
        }
    };
    // SAFETY: `pad_plane` writes every element of each chunk: a chunk past the planes
    // whole, and each row of a plane (planes are whole rows) whole: with zeros outside the
    // image; for stride 1 and 2 as zeros before and after each phase's `padded_middle`,
    // which the copy (or `split_pairs`, which writes every element of both halves) fills;
    // for other strides with zeros first.
    let data = unsafe { scratch.written_aligned(len, plane_len, A::ZERO, pad_plane) }?;
    Some(Slab {
        data,
        height,
        phase_width,
        phases,
        planes,
    })
}

/// `even[i] = src[2 * i]` and `odd[i] = src[2 * i + 1]` for every `i`, one pass over
/// `src` (which holds `even.len() + odd.len()` values or more; `odd` is as long as `even`
/// or one shorter).
#[inline]
pub(super) fn split_pairs<A: Accumulator>(
    src: &[A],
    even: &mut [MaybeUninit<A>],
    odd: &mut [MaybeUninit<A>],
) {
    let pairs = odd.len();
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
        e.write(pair[0]);
        o.write(pair[1]);
    }
    if let Some(e) = even.get_mut(pairs) {
        e.write(src[2 * pairs]);
    }
}

/// Zeros `dst` before `at` and after `at + len`, and returns the `len` between.
fn padded_middle<T: Copy>(
    dst: &mut [MaybeUninit<T>],
    at: usize,
    len: usize,
    zero: MaybeUninit<T>,
) -> &mut [MaybeUninit<T>] {
    let (before, rest) = dst.split_at_mut(at);
    let (middle, after) = rest.split_at_mut(len);
    before.fill(zero);
    after.fill(zero);
    middle
}

/// Rows of one output plane for the `f32` band kernels: `out[r * ow + x] = init +
/// sum_t taps[t] * slab[r * step + starts[t] + x]`, with fused multiply-adds.
pub(crate) struct BandRows<'a> {
    pub slab: &'a [f32],
    pub starts: &'a [usize],
    pub taps: &'a [f32],
    pub init: f32,
    pub out: &'a mut [f32],
    pub ow: usize,
    /// Slab elements from one output row's windows to the next's.
    pub step: usize,
}

impl BandRows<'_> {
    /// The slab, weight and output pointers and the row count, after checking every bound
    /// the vector kernels rely on (panics on a bug): rows of at least [`LANES`] outputs, a
    /// weight per tap, every row's windows inside the slab.
    pub(crate) fn pointers(&mut self) -> (*const f32, *const f32, *mut f32, usize) {
        let ow = self.ow;
        assert!(ow >= LANES && self.out.len().is_multiple_of(ow));
        assert!(self.taps.len() == self.starts.len());
        let rows = self.out.len() / ow;
        assert_windows(self.starts, (rows, self.step), ow, self.slab.len());
        (
            self.slab.as_ptr(),
            self.taps.as_ptr(),
            self.out.as_mut_ptr(),
            rows,
        )
    }
}

/// Panics (a bug, not a user error) unless, for every row `r < rows` and every start, the
/// window of `width` values from `r * step + start` lies inside a slab of `len` values.
fn assert_windows(starts: &[usize], (rows, step): (usize, usize), width: usize, len: usize) {
    if let (Some(&max), Some(last)) = (starts.iter().max(), rows.checked_sub(1)) {
        assert!(last * step + max + width <= len);
    }
}

/// Runs a band on the ISA [`isa`] selects: `f32` rows of [`LANES`] or more outputs on the
/// intrinsics kernels, the rest on [`band`] built for the ISA.
fn run<A: Accumulator>(job: &mut Band<'_, A>) {
    if job.g.ow >= LANES && tiled::has_kernel::<A>() {
        let (Some(slab), Some(taps), Some(out)) = (
            tiled::as_f32(&job.slab.data),
            tiled::as_f32(job.taps),
            tiled::as_f32_mut(job.out),
        ) else {
            unreachable!("has_kernel admits f32 only");
        };
        let mut rows = BandRows {
            slab,
            starts: job.starts,
            taps,
            init: tiled::as_f32(std::slice::from_ref(&job.init)).expect("f32")[0],
            out,
            ow: job.g.ow,
            // Saturating: a huge stride leaves one output row, and no second row to step to.
            step: job.g.stride.h.saturating_mul(job.slab.row_len()),
        };
        match isa() {
            // SAFETY: `isa()` returns a level only if the CPU supports it; `pointers`
            // checks the job's bounds.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { crate::arch::x86_64::direct_rows_f32_avx512(&mut rows) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { crate::arch::x86_64::direct_rows_f32_avx2(&mut rows) },
            _ => unreachable!("has_kernel admits AVX2 and AVX-512 only"),
        }
        return;
    }
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::arch::x86_64::direct_band_avx512(job) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::arch::x86_64::direct_band_avx2(job) },
        _ => band(job),
    }
}

/// The band kernel, inlined into each ISA's build of it. Rows of at least [`LANES`] pixels
/// go four vectors of sums at a time, kept in registers (fixed-size arrays the compiler
/// maps onto vector registers); the last vector overlaps the one before rather than leaving
/// a scalar tail. Narrower rows accumulate tap after tap in the output row itself. Either
/// way each output sums its taps in the same order.
#[inline(always)]
pub(crate) fn band<A: Accumulator>(job: &mut Band<'_, A>) {
    let g = job.g;
    let slab = job.slab;
    let (sh, row_len, starts) = (g.stride.h, slab.row_len(), job.starts);
    for (r, out_row) in job.out.chunks_exact_mut(g.ow).enumerate() {
        if g.ow < LANES {
            out_row.fill(job.init);
            for (&w, &start) in job.taps.iter().zip(starts) {
                let x = &slab.data[r * sh * row_len + start..];
                for (out, &v) in out_row.iter_mut().zip(x) {
                    *out += w * v;
                }
            }
            continue;
        }
        // Four vectors at once, so that independent sums hide the add latency; starts past
        // the row end repeat the last (overlapping) vector.
        let last = g.ow - LANES;
        let start = |i: usize| (i * LANES).min(last);
        for first in (0..g.ow.div_ceil(LANES)).step_by(4) {
            let o = [
                start(first),
                start(first + 1),
                start(first + 2),
                start(first + 3),
            ];
            let mut acc = [[job.init; LANES]; 4];
            let [a0, a1, a2, a3] = &mut acc;
            for (&w, &start) in job.taps.iter().zip(starts) {
                let x = &slab.data[r * sh * row_len + start..];
                // In bounds: each phase is as wide as the row's last tap reaches.
                multiply_add(a0, w, &x[o[0]..o[0] + LANES]);
                multiply_add(a1, w, &x[o[1]..o[1] + LANES]);
                multiply_add(a2, w, &x[o[2]..o[2] + LANES]);
                multiply_add(a3, w, &x[o[3]..o[3] + LANES]);
            }
            for (acc, &ox) in acc.iter().zip(&o) {
                out_row[ox..ox + LANES].copy_from_slice(acc);
            }
        }
    }
}

/// `acc[l] += w * x[l]` for the [`LANES`] pixels of one vector.
#[inline(always)]
fn multiply_add<A: Accumulator>(acc: &mut [A; LANES], w: A, x: &[A]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += w * v;
    }
}

/// `grad_w = sum conj(input) * grad_out`, overwriting every element: each task owns the
/// `kh * kw` taps of one (output channel, input channel) pair and, image by image, pads that
/// input channel into a slab and reduces each tap's window against the output gradient in
/// vectors of partial sums (a fixed order, whatever the thread count); the depthwise
/// shapes [`depthwise_channels`] applies to run there.
pub(crate) fn backward_weight<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    grad_out: &[A],
    grad_w: &mut [A],
    scratch: &Scratch,
) {
    let taps = g.kh * g.kw;
    if taps == 0 {
        return;
    }
    if depthwise_channels::weight_applies::<A>(g) {
        return depthwise_channels::backward_weight(g, input, grad_out, grad_w, scratch);
    }
    let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
    let cin_g = g.cin_per_group();
    // Each thread keeps one buffer of sums for its pairs (allocating it per pair was 12% of
    // a depthwise layer on 7x7 maps).
    let sums_buffer = || scratch.filled(taps, [A::ZERO; LANES]);
    let masks = in_place::WeightMasks::new::<A>(g);
    let in_place = in_place::weight_applies::<A>(g);
    for_each_chunk_init(grad_w, taps, sums_buffer, |sums, pair, gw| {
        let (co, ci_in_group) = (pair / cin_g, pair % cin_g);
        let ci = co / g.cout_per_group() * cin_g + ci_in_group;
        let Some(sums) = sums else {
            return;
        };
        sums.fill([A::ZERO; LANES]);
        if plane > 0 && in_plane > 0 {
            for n in 0..g.n {
                let x = &input[(n * g.cin + ci) * in_plane..][..in_plane];
                let gy = &grad_out[(n * g.cout + co) * plane..][..plane];
                if in_place {
                    in_place::add_weight_gradient(g, x, gy, sums, &masks);
                    continue;
                }
                let Some(slab) = padded_slab(g, x, 0, g.oh, 0, scratch) else {
                    return;
                };
                let mut job = WeightJob {
                    g,
                    starts: &slab.tap_starts(g),
                    slab: &slab,
                    grad_out: gy,
                    sums,
                };
                run_weight(&mut job);
            }
        }
        add_up_lanes(sums, gw);
    });
}

/// `out[t]` = the sum of `sums[t]`'s lanes in [`sum_lanes`]'s order; for `f32` on AVX-512
/// in vector registers, halving the width at each step (same bits: the same additions).
fn add_up_lanes<A: Accumulator>(sums: &[[A; LANES]], out: &mut [A]) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        if let (Some(flat), Some(out)) = (
            tiled::as_f32(sums.as_flattened()),
            tiled::as_f32_mut(&mut *out),
        ) {
            // SAFETY: `isa()` returns AVX-512 only if the CPU supports it.
            return unsafe { crate::arch::x86_64::lane_sums_f32_avx512(flat.as_chunks().0, out) };
        }
    }
    for (o, lanes) in out.iter_mut().zip(sums) {
        *o = sum_lanes(lanes);
    }
}

/// One image's contribution to one channel pair's weight gradient.
pub(crate) struct WeightJob<'a, A: 'static> {
    pub g: &'a Geometry,
    pub slab: &'a Slab<A>,
    pub starts: &'a [usize],
    /// The output-gradient plane of the pair's output channel.
    pub grad_out: &'a [A],
    /// Per tap: the vector of partial sums the job adds to.
    pub sums: &'a mut [[A; LANES]],
}

/// One pair's weight-gradient rows for the `f32` AVX-512 kernel: `sums[t][l] +=` the
/// products `slab[r * step + starts[t] + x] * grad_out[r * ow + x]` of the pixels `x` in
/// lane `l`, with fused multiply-adds.
pub(crate) struct WeightRows<'a> {
    pub slab: &'a [f32],
    pub starts: &'a [usize],
    pub grad_out: &'a [f32],
    pub ow: usize,
    /// Slab elements from one output row's windows to the next's.
    pub step: usize,
    pub sums: &'a mut [[f32; LANES]],
}

impl WeightRows<'_> {
    /// The slab, output-gradient and sums pointers and the row count, after checking every
    /// bound the kernel relies on (panics on a bug): a vector of sums per tap, every row's
    /// windows (`ow` values) inside the slab.
    pub(crate) fn pointers(&mut self) -> (*const f32, *const f32, *mut [f32; LANES], usize) {
        let ow = self.ow;
        assert!(ow > 0 && self.grad_out.len().is_multiple_of(ow));
        assert!(self.sums.len() == self.starts.len());
        let rows = self.grad_out.len() / ow;
        assert_windows(self.starts, (rows, self.step), ow, self.slab.len());
        let sums = self.sums.as_mut_ptr();
        (self.slab.as_ptr(), self.grad_out.as_ptr(), sums, rows)
    }
}

/// Runs a weight-gradient job on the ISA [`isa`] selects: `f32` on AVX-512 on the
/// intrinsics kernel, the rest on [`weight`] built for the ISA.
fn run_weight<A: Accumulator>(job: &mut WeightJob<'_, A>) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 && tiled::has_kernel::<A>() {
        let (Some(slab), Some(grad_out)) =
            (tiled::as_f32(&job.slab.data), tiled::as_f32(job.grad_out))
        else {
            unreachable!("has_kernel admits f32 only");
        };
        let flat = tiled::as_f32_mut(job.sums.as_flattened_mut()).expect("f32");
        let (sums, _) = flat.as_chunks_mut::<LANES>();
        let mut rows = WeightRows {
            slab,
            starts: job.starts,
            grad_out,
            ow: job.g.ow,
            // Saturating: a huge stride leaves one output row, and no second row to step to.
            step: job.g.stride.h.saturating_mul(job.slab.row_len()),
            sums,
        };
        // SAFETY: `isa()` returns AVX-512 only if the CPU supports it; `pointers` checks
        // the job's bounds.
        unsafe { crate::arch::x86_64::direct_weight_f32_avx512(&mut rows) };
        return;
    }
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::arch::x86_64::direct_weight_avx512(job) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::arch::x86_64::direct_weight_avx2(job) },
        _ => weight(job),
    }
}

/// The weight-gradient kernel, inlined into each ISA's build of it. Per tap, two vectors
/// of partial sums take alternate groups of [`LANES`] pixels (independent sums hide the add
/// latency); a row's last, partial group is zero-padded into a vector too.
#[inline(always)]
pub(crate) fn weight<A: Accumulator>(job: &mut WeightJob<'_, A>) {
    let g = job.g;
    let row_len = job.slab.row_len();
    let full = g.ow / LANES * LANES;
    for (sum, &start) in job.sums.iter_mut().zip(job.starts) {
        let mut acc = [[A::ZERO; LANES]; 2];
        let [a0, a1] = &mut acc;
        for (oy, gy) in job.grad_out.chunks_exact(g.ow).enumerate() {
            let x = &job.slab.data[oy * g.stride.h * row_len + start..][..g.ow];
            let mut xs = x[..full].chunks_exact(LANES);
            let mut ys = gy[..full].chunks_exact(LANES);
            while let (Some(x0), Some(y0)) = (xs.next(), ys.next()) {
                conj_multiply_add(a0, x0, y0);
                if let (Some(x1), Some(y1)) = (xs.next(), ys.next()) {
                    conj_multiply_add(a1, x1, y1);
                }
            }
            if full < g.ow && g.ow >= LANES {
                // The last vector overlaps the one before; its lanes already counted are
                // selected away (a select, not a multiply by zero, so that an infinity in
                // them cannot turn into a NaN).
                let tail = g.ow - LANES;
                conj_multiply_add_masked(a1, &x[tail..], &gy[tail..], full - tail);
            } else if full < g.ow {
                let (mut xt, mut yt) = ([A::ZERO; LANES], [A::ZERO; LANES]);
                xt[..g.ow - full].copy_from_slice(&x[full..]);
                yt[..g.ow - full].copy_from_slice(&gy[full..]);
                conj_multiply_add(a1, &xt, &yt);
            }
        }
        for l in 0..LANES {
            sum[l] += a0[l] + a1[l];
        }
    }
}

/// `acc[l] += conj(x[l]) * y[l]` for the lanes `l >= skip` of one vector.
#[inline(always)]
fn conj_multiply_add_masked<A: Accumulator>(acc: &mut [A; LANES], x: &[A], y: &[A], skip: usize) {
    for (l, ((a, &xv), &yv)) in acc.iter_mut().zip(x).zip(y).enumerate() {
        let product = xv.conj() * yv;
        *a += if l >= skip { product } else { A::ZERO };
    }
}

/// `acc[l] += conj(x[l]) * y[l]` for the [`LANES`] pixels of one vector.
#[inline(always)]
fn conj_multiply_add<A: Accumulator>(acc: &mut [A; LANES], x: &[A], y: &[A]) {
    for ((a, &xv), &yv) in acc.iter_mut().zip(x).zip(y) {
        *a += xv.conj() * yv;
    }
}

/// The sum of a vector of partial sums, in a fixed tree order (which
/// `lane_sums_f32_avx512` follows): lane `l` takes lane `l + width` for widths 8, 4, 2 and
/// 1 (constant widths, so that the steps unroll into vector adds: the loop over a halving
/// width was 30% of a depthwise weight gradient on 7x7 maps).
#[inline(always)]
fn sum_lanes<A: Accumulator>(lanes: &[A; LANES]) -> A {
    const { assert!(LANES == 16) };
    let mut v = *lanes;
    for width in [8, 4, 2, 1] {
        for l in 0..width {
            let upper = v[l + width];
            v[l] += upper;
        }
    }
    v[0]
}

/// The input gradient: with stride 1 it is a convolution of `grad_out` with the weight
/// flipped in space and transposed in channels, padded by `dilation*(k-1) - padding`, which
/// [`forward`] computes; other strides, padding beyond the kernel's reach, a flipped
/// convolution whose slab would not [`fit`](fits), and a non-finite weight (whose products
/// with the flipped convolution's zero padding would be NaN where the input gradient has no
/// such terms) run the row kernel. Overwrites every element of
/// `grad_in`; no conjugation (callers pass the conjugated weight).
pub(crate) fn backward_input<A: Accumulator>(
    g: &Geometry,
    grad_out: &[A],
    weight: &[A],
    grad_in: &mut [A],
    scratch: &Scratch,
) {
    let flipped = flipped_shape(g).map(|f| (f, flipped_weight(g, weight, scratch)));
    match flipped {
        Some((f, Some(Some(w)))) => forward(&f, grad_out, &w, None, grad_in, scratch),
        Some((_, None)) => {}
        None | Some((_, Some(None))) => {
            super::direct_rows::backward_input(g, grad_out, weight, grad_in)
        }
    }
}

/// The kernel that runs the flipped convolution of [`backward_input_flipped`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flipped {
    /// `direct-tiled`'s tiles.
    Tiles,
    /// `implicit-gemm`'s implicit GEMM.
    ImplicitGemm,
    /// `direct-small`'s kernel.
    Small,
}

/// The input gradient as [`backward_input`] computes it, with the flipped convolution run
/// by `kernel`; `false` (nothing written) where that kernel does not apply: other strides,
/// other types, other CPUs.
pub(crate) fn backward_input_flipped<A: Accumulator>(
    g: &Geometry,
    grad_out: &[A],
    weight: &[A],
    grad_in: &mut [A],
    scratch: &Scratch,
    kernel: Flipped,
) -> bool {
    let applies = |g: &Geometry| match kernel {
        Flipped::Tiles => tiles::<A>(g),
        Flipped::ImplicitGemm => implicit_gemm::applies::<A>(g),
        Flipped::Small => super::small::applies::<A>(g),
    };
    let Some(flipped) = flipped_shape(g).filter(applies) else {
        return false;
    };
    match flipped_weight(g, weight, scratch) {
        Some(Some(w)) => match kernel {
            Flipped::Tiles => tiled::forward(&flipped, grad_out, &w, None, grad_in, scratch),
            Flipped::ImplicitGemm => {
                implicit_gemm::forward(&flipped, grad_out, &w, None, grad_in, scratch)
            }
            Flipped::Small => super::small::forward(&flipped, grad_out, &w, None, grad_in),
        },
        Some(None) => return false,
        None => {}
    }
    true
}

/// The stride-1 convolution whose output is the input gradient of `g`, if it exists (see
/// [`backward_input`]; the caller checks that the weight is finite).
pub(crate) fn flipped_shape(g: &Geometry) -> Option<Geometry> {
    let reach = |k: usize, d: usize| (k - 1) * d;
    let flipped = match (
        g.stride.h == 1 && g.stride.w == 1 && g.kh > 0 && g.kw > 0,
        reach(g.kh.max(1), g.dilation.h).checked_sub(g.pad_top),
        reach(g.kw.max(1), g.dilation.w).checked_sub(g.pad_left),
    ) {
        (true, Some(pad_top), Some(pad_left)) => Some(Geometry {
            cin: g.cout,
            h: g.oh,
            w: g.ow,
            cout: g.cin,
            pad_top,
            pad_left,
            oh: g.h,
            ow: g.w,
            ..*g
        }),
        _ => None,
    };
    flipped.filter(fits)
}

/// The weight flipped in space and transposed in channels:
/// `w'[ci][co in group][ky'][kx'] = w[co][ci in group][kh-1-ky'][kw-1-kx']`, each input
/// channel's rows by a task; `Some(None)` if a weight is not finite (the flipped
/// convolution would not give the input gradient, see [`backward_input`]), `None` if the
/// buffer cannot be allocated.
#[allow(unsafe_code)] // raw-buffer code: a vector's capacity written, then its length set
fn flipped_weight<A: Accumulator>(
    g: &Geometry,
    weight: &[A],
    scratch: &Scratch,
) -> Option<Option<Vec<A>>> {
    let (cin_g, cout_g, taps) = (g.cin_per_group(), g.cout_per_group(), g.kh * g.kw);
    let mut w = Vec::new();
    scratch.ok(try_reserve(&mut w, weight.len()))?;
    let finite = AtomicBool::new(true);
    // Every element written once (no zeroing pass first): a chunk per run of input channels
    // of a group (a power of two dividing `cin_g`, up to its share of the threads), filled
    // output channel by output channel, so that each weight row's taps of the run are read
    // as one contiguous slice (reading one input channel's taps across output channels,
    // rows `cin_g * taps` apart, missed the cache on every row: 11% of a c128 input
    // gradient). Runs of a thread's share, not of 16 channels, with 3x3 taps reversed as
    // arrays: `bwd_input_3x3_c128` 1.12x as fast on one thread, 1.07x on two (Intel Xeon,
    // 2026-12-05; the flip was 6% of the call, the reads of short runs waiting on memory).
    let share = (cin_g / crate::threading::num_threads()).max(1);
    let run = 1 << cin_g.trailing_zeros().min(share.ilog2());
    let rows_len = cout_g * taps;
    for_each_chunk(
        &mut w.spare_capacity_mut()[..weight.len()],
        run * rows_len,
        |chunk, rows| {
            let (group, ci0) = (chunk * run / cin_g, chunk * run % cin_g);
            let mut ok = true;
            for co in 0..cout_g {
                let row = &weight[((group * cout_g + co) * cin_g + ci0) * taps..][..run * taps];
                ok &= row.iter().fold(true, |ok, v| ok & v.is_finite());
                let dsts = rows
                    .chunks_exact_mut(rows_len)
                    .map(|d| &mut d[co * taps..][..taps]);
                match taps {
                    9 => reverse_runs::<A, 9>(row, dsts),
                    _ => {
                        for (taps_of, dst) in row.chunks_exact(taps).zip(dsts) {
                            for (d, &v) in dst.iter_mut().zip(taps_of.iter().rev()) {
                                d.write(v);
                            }
                        }
                    }
                }
            }
            if !ok {
                finite.store(false, Ordering::Relaxed);
            }
        },
    );
    // SAFETY: the capacity holds `weight.len()` elements (reserved above), and every one
    // was written: the chunks (`run` input channels of a group each, `run` dividing `cin_g`
    // and `weight.len() = groups * cin_g * cout_g * taps`) are `run` rows of `cout_g` runs of
    // `taps`, each run written whole from its weight row (`for_each_chunk` returns once
    // every chunk is done).
    unsafe { w.set_len(weight.len()) };
    Some(finite.into_inner().then_some(w))
}

/// Each run of `T` values of `src` written reversed into the next of `dsts` (each `T`
/// long): as arrays, so that the reversal is a few shuffles, not a loop per value.
fn reverse_runs<'a, A: Copy + 'a, const T: usize>(
    src: &[A],
    dsts: impl Iterator<Item = &'a mut [std::mem::MaybeUninit<A>]>,
) {
    let (runs, _) = src.as_chunks::<T>();
    for (run, dst) in runs.iter().zip(dsts) {
        let mut run = *run;
        run.reverse();
        let dst: &mut [std::mem::MaybeUninit<A>; T] = dst.try_into().expect("T taps");
        *dst = run.map(std::mem::MaybeUninit::new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector reduction of `f32` lanes (AVX-512, where the CPU has it) gives
    /// `sum_lanes`'s bits: values of magnitudes 1e-6 to 1e5, so that another order of the
    /// additions rounds differently.
    #[test]
    fn lane_sums_keep_the_tree_order() {
        let mut state = 12345u32;
        let sums: Vec<[f32; LANES]> = (0..64)
            .map(|_| {
                std::array::from_fn(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let (digits, scale) = (state >> 16, (state >> 8) % 12);
                    (digits as f32 - 32768.0) * 10f32.powi(scale as i32 - 10)
                })
            })
            .collect();
        // Whole chunks of 16 vectors, and last ones of 9 (a 3x3 kernel's taps), 1 and 7.
        for len in [64, 9, 1, 23] {
            let sums = &sums[..len];
            let mut got = vec![0.0; len];
            add_up_lanes(sums, &mut got);
            let want: Vec<f32> = sums.iter().map(sum_lanes).collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{len} vectors");
        }
    }
}
