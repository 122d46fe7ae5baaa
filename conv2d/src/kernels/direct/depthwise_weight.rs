//! The weight gradient of depthwise layers (one input and one output channel per group) on
//! small maps, vectorised over channels: per task [`CHANNELS`] channels, their input planes
//! transposed into one zero-padded plane of pixels of [`CHANNELS`] values and their
//! output-gradient planes likewise, so that each tap's sums of all the task's channels are
//! one vector and every term is a multiply-add of two whole vectors, with no lane of a sum
//! left idle by a narrow row, no padding mask and no reduction across lanes at the end
//! (on 7x7 maps the per-plane row kernels spent as long on those as on their sums).
//!
//! Each channel's tap sums its terms image by image, output pixel by pixel in row-major
//! order, whatever the thread count; padding terms are `0 * grad_out`, as in PyTorch.

use super::tiled::{as_f32, as_f32_mut};
use super::Scratch;
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};
use crate::threading::for_each_chunk_init;

/// Channels per task: one vector of sums per tap.
pub(crate) const CHANNELS: usize = 16;
/// Output pixels per plane up to which this kernel runs (see [`applies`]). Against the
/// per-plane kernels (`in_place`'s flat runs and rows; AMD Zen 5, one thread, three
/// alternated rounds, 3x3 depthwise weight gradients): 7x7 to 12x12 maps and 21x7
/// 1.27-2.28x as fast (7x7 2.28x, 8x8 2.0x, 12x12 1.3x), 14x14, 20x10 and 27x9 0.97-1.05x,
/// 20x12 0.86x.
const MAX_PIXELS: usize = 160;
/// Pixels of the padded input plane up to which this kernel runs (its buffer, per thread,
/// holds 16 channels of each): a strided or dilated window reaching far across a large
/// input is left to the per-plane kernels.
const MAX_PADDED_PIXELS: usize = 1024;

/// One task's channels: `sums[t][c] += sum over output pixels (oy, ox) of x[((oy * sh) *
/// wp + ox * sw + offsets[t]) * CHANNELS + c] * grad_out[(oy * ow + ox) * CHANNELS + c]`.
pub(crate) struct ChannelPlanes<'a> {
    /// The padded input plane: rows of `wp` pixels of [`CHANNELS`] values.
    pub x: &'a [f32],
    pub wp: usize,
    /// The output gradient: `oh` rows of `ow` pixels of [`CHANNELS`] values.
    pub grad_out: &'a [f32],
    pub oh: usize,
    pub ow: usize,
    /// Pixels from one output pixel's window to the next's: down, across.
    pub stride: (usize, usize),
    /// Per tap, its input pixel's offset in `x` from the window's first.
    pub offsets: &'a [usize],
    /// Per tap, the vector of sums it adds to.
    pub sums: &'a mut [[f32; CHANNELS]],
}

impl ChannelPlanes<'_> {
    /// The input, output-gradient and sums pointers, after checking every bound the vector
    /// kernel relies on (panics on a bug): every output pixel's every tap inside `x`.
    pub(crate) fn pointers(&mut self) -> (*const f32, *const f32, *mut [f32; CHANNELS]) {
        let (oh, ow) = (self.oh, self.ow);
        assert!(oh > 0 && ow > 0 && self.sums.len() == self.offsets.len());
        assert!(self.grad_out.len() >= oh * ow * CHANNELS);
        let last = (oh - 1) * self.stride.0 * self.wp + (ow - 1) * self.stride.1;
        let reach = last + self.offsets.iter().max().copied().unwrap_or(0);
        assert!((reach + 1) * CHANNELS <= self.x.len());
        let sums = self.sums.as_mut_ptr();
        (self.x.as_ptr(), self.grad_out.as_ptr(), sums)
    }
}

/// Whether this kernel runs the shape in `A`: `f32` on AVX-512, one input and one output
/// channel per group, output planes of 1 to [`MAX_PIXELS`] pixels whose windows reach at
/// most [`MAX_PADDED_PIXELS`] pixels of the padded input, a non-empty input.
pub(crate) fn applies<A: Accumulator>(g: &Geometry) -> bool {
    as_f32::<A>(&[]).is_some()
        && isa() == Isa::Avx512
        && g.cin_per_group() == 1
        && g.cout_per_group() == 1
        && (1..=MAX_PIXELS).contains(&(g.oh * g.ow))
        && g.h * g.w > 0
        && padded_size(g).0.saturating_mul(padded_size(g).1) <= MAX_PADDED_PIXELS
}

/// The rows and columns of the padded input plane that the windows of a non-empty output
/// reach.
fn padded_size(g: &Geometry) -> (usize, usize) {
    let reach = |out: usize, stride: usize, k: usize, dilation: usize| {
        (out.max(1) - 1)
            .saturating_mul(stride)
            .saturating_add((k.max(1) - 1).saturating_mul(dilation))
            .saturating_add(1)
    };
    (
        reach(g.oh, g.stride.h, g.kh, g.dilation.h),
        reach(g.ow, g.stride.w, g.kw, g.dilation.w),
    )
}

/// `grad_w = sum input * grad_out`, overwriting `grad_w`, for a shape this kernel
/// [`applies`] to (the caller has returned on an empty kernel).
pub(crate) fn backward_weight<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    grad_out: &[A],
    grad_w: &mut [A],
    scratch: &Scratch,
) {
    let (Some(input), Some(grad_out), Some(grad_w)) =
        (as_f32(input), as_f32(grad_out), as_f32_mut(grad_w))
    else {
        unreachable!("applies admits f32 only");
    };
    let taps = g.kh * g.kw;
    let (plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    // The padded plane as far as the windows reach: the input pixels past it are never read.
    let (hp, wp) = padded_size(g);
    let offsets: Vec<usize> = (0..taps)
        .map(|t| t / g.kw * g.dilation.h * wp + t % g.kw * g.dilation.w)
        .collect();
    // Where each input pixel goes in the padded plane: past its end (a pixel no window
    // reads, overwritten by each such) where no window reaches it.
    let sink = hp * wp;
    let x_dests: Vec<usize> = (0..plane)
        .map(|q| {
            let (iy, ix) = (q / g.w + g.pad_top, q % g.w + g.pad_left);
            match iy < hp && ix < wp {
                true => iy * wp + ix,
                false => sink,
            }
        })
        .collect();
    let gy_dests: Vec<usize> = (0..out_plane).collect();
    // Per thread: the padded input plane (its padding zero for good) and a sink pixel, the
    // output gradient, the sums.
    let lens = [sink + 1, out_plane, taps].map(|pixels| pixels * CHANNELS);
    let buffers = || scratch.filled_aligned(lens.iter().sum(), 0.0f32);
    for_each_chunk_init(
        grad_w,
        CHANNELS * taps,
        buffers,
        |buffers, block, grad_w| {
            let Some(buffers) = buffers else {
                return;
            };
            let (padded, rest) = buffers.split_at_mut(lens[0]);
            let (gy_t, sums) = rest.split_at_mut(lens[1]);
            let (sums, _) = sums.as_chunks_mut::<CHANNELS>();
            sums.fill([0.0; CHANNELS]);
            let channels = grad_w.len() / taps;
            for n in 0..g.n {
                let first = n * g.cin + block * CHANNELS;
                transpose_planes(&input[first * plane..], plane, channels, &x_dests, padded);
                transpose_planes(
                    &grad_out[first * out_plane..],
                    out_plane,
                    channels,
                    &gy_dests,
                    gy_t,
                );
                run(&mut ChannelPlanes {
                    x: &padded[..sink * CHANNELS],
                    wp,
                    grad_out: gy_t,
                    oh: g.oh,
                    ow: g.ow,
                    stride: (g.stride.h, g.stride.w),
                    offsets: &offsets,
                    sums,
                });
            }
            for (c, taps) in grad_w.chunks_exact_mut(taps).enumerate() {
                for (w, sums) in taps.iter_mut().zip(&*sums) {
                    *w = sums[c];
                }
            }
        },
    );
}

/// Runs a task on the AVX-512 kernel (see [`applies`]).
fn run(job: &mut ChannelPlanes<'_>) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `applies` admits AVX-512 only, which `isa()` reports only where the CPU has
    // it; `pointers` checks the job's bounds.
    unsafe {
        crate::arch::x86_64::depthwise_channels_weight_f32_avx512(job)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("applies admits AVX-512 only {}", job.wp);
}

/// `out[dests[q] * CHANNELS + c] = planes[c * plane + q]` for the `plane` pixels `q` of
/// the first `channels` planes (the other lanes zero).
fn transpose_planes(
    planes: &[f32],
    plane: usize,
    channels: usize,
    dests: &[usize],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `applies` admits AVX-512 only, which `isa()` reports only where the CPU has
    // it; the kernel checks its bounds.
    unsafe {
        crate::arch::x86_64::transpose_planes_f32_avx512(planes, plane, channels, dests, out)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "applies admits AVX-512 only {plane} {channels} {}",
        dests.len() + out.len()
    );
}
