//! Depthwise layers (one input and one output channel per group) vectorised over channels:
//! those the 3x3 per-plane kernels of [`in_place`](super::in_place) do not take (5x5, 7x7,
//! dilated, strided past 2) on any map up to [`MAX_PADDED_PIXELS`], and on AVX-512 those
//! they do take on small maps (see [`forward_applies`], [`weight_applies`]). Per task [`CHANNELS`] channels, their input planes transposed into one
//! zero-padded plane of pixels of [`CHANNELS`] values, so that every term is a
//! multiply-add of two whole vectors, with no lane left idle by a narrow row, no padding
//! mask and, for the weight gradient, no reduction across lanes at the end (on 7x7 maps
//! the per-plane kernels spent as long on those and on each plane's setup as on their
//! sums). The forward pass sums each output pixel's taps in order from the bias, as the
//! per-plane kernels do, into pixels of [`CHANNELS`] values transposed back into the
//! output planes; the weight gradient transposes the output gradient likewise and keeps
//! each tap's sums of the task's channels in one vector.
//!
//! The weight gradient's sums take their terms image by image, output pixel by pixel in
//! row-major order, whatever the thread count; padding terms are `0 * grad_out` (and
//! `0 * weight` forward), as in PyTorch.

use super::tiled::{as_f32, as_f32_mut};
use super::Scratch;
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};
use crate::threading::{for_each_chunk_init, for_each_item_init};

/// Channels per task: one vector of sums per tap.
pub(crate) const CHANNELS: usize = 16;
/// Output pixels per plane up to which the weight gradient runs here (see
/// [`weight_applies`]). Against the per-plane kernels (`in_place`'s flat runs and rows;
/// AMD Zen 5, one thread, three alternated rounds, 3x3 depthwise weight gradients): 7x7 to
/// 12x12 maps and 21x7 1.27-2.28x as fast (7x7 2.28x, 8x8 2.0x, 12x12 1.3x), 14x14, 20x10
/// and 27x9 0.97-1.05x, 20x12 0.86x.
const MAX_WEIGHT_PIXELS: usize = 160;
/// Output pixels per plane up to which the forward pass runs here (see
/// [`forward_applies`]), where it transposes the output back as well. Against the
/// per-plane kernels (the same machine and rounds, 3x3 depthwise layers): 5x5 to 8x8 maps
/// 1.35-1.77x as fast (7x7 1.73x), 6x6 and 8x8 outputs of stride 2 1.51x and 1.02x, 7x7 of
/// stride 2 1.16x; 9x9 0.98x, 10x10 0.85x.
const MAX_FORWARD_PIXELS: usize = 64;
/// Channels from which these kernels take the 3x3 layers the per-plane kernels also take:
/// on fewer the per-call setup (the padded plane's layout and buffer) outweighs what the
/// vectors gain (8x8 maps of 4 channels 0.33x, 7x7 of 1 channel 0.84x, of 8 channels
/// 1.07x forward and 1.47x as weight gradients; AMD Zen 5, one thread).
const MIN_GROUPS: usize = 8;
/// Pixels of the padded input plane up to which these kernels run: its buffer, one per
/// thread, holds 16 channels of each (1 MiB), the output's as many pixels at most. The
/// shapes the per-plane kernels do not take (kernels other than 3x3, dilated or strided
/// past 2) ran here 1.5-27x as fast as on the padded slab, whatever the map (5x5 and 7x7
/// depthwise layers of EfficientNet and ConvNeXt on 7x7-56x56 maps, forward and weight
/// gradient; 112x112 of 5x5 1.03x; AMD Zen 5, one thread): larger planes stay on the slab.
const MAX_PADDED_PIXELS: usize = 128 * 128;

/// One task's channels: `sums[t][c] += sum over output pixels (oy, ox) of x[((oy * sh) *
/// wp + ox * sw + offsets[t]) * CHANNELS + c] * grad_out[(oy * ow + ox) * CHANNELS + c]`.
pub(crate) struct ChannelWeightGrad<'a> {
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

impl ChannelWeightGrad<'_> {
    /// The input, output-gradient and sums pointers, after checking every bound the vector
    /// kernel relies on (panics on a bug): every output pixel's every tap inside `x`.
    pub(crate) fn pointers(&mut self) -> (*const f32, *const f32, *mut [f32; CHANNELS]) {
        let (oh, ow) = (self.oh, self.ow);
        assert!(oh > 0 && ow > 0 && self.sums.len() == self.offsets.len());
        assert!(self.grad_out.len() >= oh * ow * CHANNELS);
        check_reach(self.x, self.wp, (oh, ow), self.stride, self.offsets);
        let sums = self.sums.as_mut_ptr();
        (self.x.as_ptr(), self.grad_out.as_ptr(), sums)
    }
}

/// One forward task's channels: `out[(oy * ow + ox) * CHANNELS + c] = init[c] + sum over
/// taps t, in order, of x[((oy * sh) * wp + ox * sw + offsets[t]) * CHANNELS + c] *
/// weights[t][c]`.
pub(crate) struct ChannelForward<'a> {
    /// The padded input plane: rows of `wp` pixels of [`CHANNELS`] values.
    pub x: &'a [f32],
    pub wp: usize,
    pub oh: usize,
    pub ow: usize,
    /// Pixels from one output pixel's window to the next's: down, across.
    pub stride: (usize, usize),
    /// Per tap, its input pixel's offset in `x` from the window's first.
    pub offsets: &'a [usize],
    /// Per tap, the channels' weights.
    pub weights: &'a [[f32; CHANNELS]],
    /// The channels' biases (or zeros).
    pub init: [f32; CHANNELS],
    /// The output: `oh` rows of `ow` pixels of [`CHANNELS`] values.
    pub out: &'a mut [f32],
}

impl ChannelForward<'_> {
    /// The input, weight and output pointers, after checking every bound the vector kernel
    /// relies on (panics on a bug): every output pixel's every tap inside `x`.
    pub(crate) fn pointers(&mut self) -> (*const f32, *const [f32; CHANNELS], *mut f32) {
        let (oh, ow) = (self.oh, self.ow);
        assert!(oh > 0 && ow > 0 && self.weights.len() == self.offsets.len());
        assert!(self.out.len() >= oh * ow * CHANNELS);
        check_reach(self.x, self.wp, (oh, ow), self.stride, self.offsets);
        (
            self.x.as_ptr(),
            self.weights.as_ptr(),
            self.out.as_mut_ptr(),
        )
    }
}

/// Panics unless every tap of every output pixel of an `oh x ow` output lies inside the
/// padded plane `x` (rows of `wp` pixels of [`CHANNELS`] values).
fn check_reach(
    x: &[f32],
    wp: usize,
    (oh, ow): (usize, usize),
    stride: (usize, usize),
    offsets: &[usize],
) {
    let last = (oh - 1) * stride.0 * wp + (ow - 1) * stride.1;
    let reach = last + offsets.iter().max().copied().unwrap_or(0);
    assert!((reach + 1) * CHANNELS <= x.len());
}

/// Whether the forward pass runs the shape here in `A` (see [`suits`]): any size where the
/// per-plane kernels of [`in_place`](super::in_place) do not take it, else, on AVX-512,
/// [`MIN_GROUPS`] channels or more and output planes of at most [`MAX_FORWARD_PIXELS`]
/// pixels.
pub(crate) fn forward_applies<A: Accumulator>(g: &Geometry) -> bool {
    match super::in_place::forward_applies::<A>(g) {
        true => isa() == Isa::Avx512 && g.groups >= MIN_GROUPS && suits::<A>(g, MAX_FORWARD_PIXELS),
        false => suits::<A>(g, usize::MAX),
    }
}

/// Whether the weight gradient runs the shape here in `A` (see [`suits`]): any size where
/// the per-plane kernels of [`in_place`](super::in_place) do not take it, else, on
/// AVX-512, [`MIN_GROUPS`] channels or more and output planes of at most
/// [`MAX_WEIGHT_PIXELS`] pixels.
pub(crate) fn weight_applies<A: Accumulator>(g: &Geometry) -> bool {
    match super::in_place::weight_applies::<A>(g) {
        true => isa() == Isa::Avx512 && g.groups >= MIN_GROUPS && suits::<A>(g, MAX_WEIGHT_PIXELS),
        false => suits::<A>(g, usize::MAX),
    }
}

/// Whether these kernels suit the shape in `A`: `f32` on AVX-512 or AVX2 (whose per-plane
/// kernels these have not been measured against), one input and one output
/// channel per group, output planes of 1 to `max_pixels` pixels whose windows reach at most
/// [`MAX_PADDED_PIXELS`] pixels of the padded input, a non-empty input.
fn suits<A: Accumulator>(g: &Geometry, max_pixels: usize) -> bool {
    let (hp, wp) = padded_size(g);
    as_f32::<A>(&[]).is_some()
        && matches!(isa(), Isa::Avx512 | Isa::Avx2)
        && g.cin_per_group() == 1
        && g.cout_per_group() == 1
        && (1..=max_pixels).contains(&(g.oh * g.ow))
        && g.h * g.w > 0
        && hp.saturating_mul(wp) <= MAX_PADDED_PIXELS
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

/// Where a task's channels go: the padded input plane (as far as the windows reach: the
/// input pixels past it are never read), each tap's offset in it, each input pixel's place.
struct Layout {
    /// Rows and columns of the padded plane.
    hp: usize,
    wp: usize,
    /// Per tap, its input pixel's offset from a window's first.
    offsets: Vec<usize>,
    /// Per input pixel, its pixel in the padded plane, or `hp * wp` (a sink past the plane,
    /// overwritten by each pixel no window reads).
    x_dests: Vec<usize>,
}

impl Layout {
    fn new(g: &Geometry) -> Self {
        let (hp, wp) = padded_size(g);
        let offsets = (0..g.kh * g.kw)
            .map(|t| t / g.kw * g.dilation.h * wp + t % g.kw * g.dilation.w)
            .collect();
        let x_dests = (0..g.h * g.w)
            .map(|q| {
                let (iy, ix) = (q / g.w + g.pad_top, q % g.w + g.pad_left);
                match iy < hp && ix < wp {
                    true => iy * wp + ix,
                    false => hp * wp,
                }
            })
            .collect();
        Layout {
            hp,
            wp,
            offsets,
            x_dests,
        }
    }

    /// Values of the padded plane with its sink pixel.
    fn padded_len(&self) -> usize {
        (self.hp * self.wp + 1) * CHANNELS
    }

    /// Transposes planes `first..first + channels` of `input` into `padded` (whose padding
    /// stays as it was: zero, as first filled) and returns the plane without its sink.
    fn pad<'a>(
        &self,
        input: &[f32],
        first: usize,
        channels: usize,
        padded: &'a mut [f32],
    ) -> &'a [f32] {
        let plane = self.x_dests.len();
        transpose_planes(
            &input[first * plane..],
            plane,
            channels,
            &self.x_dests,
            padded,
        );
        &padded[..self.hp * self.wp * CHANNELS]
    }
}

/// `out = conv2d(input, weight) + bias` for a shape [`forward_applies`] to: tasks of
/// an image's block of [`CHANNELS`] channels.
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
        unreachable!("suits admits f32 only");
    };
    let bias = bias.map(|b| as_f32(b).expect("f32"));
    let (taps, out_plane) = (g.kh * g.kw, g.oh * g.ow);
    let layout = Layout::new(g);
    // Per thread: the padded input plane, the output pixels.
    let lens = [layout.padded_len(), out_plane * CHANNELS];
    let buffers = || scratch.filled_aligned(lens.iter().sum(), 0.0f32);
    let tasks: Vec<_> = out
        .chunks_mut(g.cout * out_plane)
        .enumerate()
        .flat_map(|(n, image)| {
            let blocks = image.chunks_mut(CHANNELS * out_plane).enumerate();
            blocks.map(move |(block, out)| (n, block * CHANNELS, out))
        })
        .collect();
    for_each_item_init(tasks, buffers, |buffers, (n, c0, out)| {
        let Some(buffers) = buffers else {
            return;
        };
        let (padded, pixels) = buffers.split_at_mut(lens[0]);
        let channels = out.len() / out_plane;
        // Lanes past the block's channels: zero weights, outputs dropped.
        let mut weights = vec![[0.0; CHANNELS]; taps];
        let mut init = [0.0; CHANNELS];
        for (c, row) in weight[c0 * taps..][..channels * taps]
            .chunks_exact(taps)
            .enumerate()
        {
            for (w, &v) in weights.iter_mut().zip(row) {
                w[c] = v;
            }
            init[c] = bias.map_or(0.0, |b| b[c0 + c]);
        }
        run_forward(&mut ChannelForward {
            x: layout.pad(input, n * g.cin + c0, channels, padded),
            wp: layout.wp,
            oh: g.oh,
            ow: g.ow,
            stride: (g.stride.h, g.stride.w),
            offsets: &layout.offsets,
            weights: &weights,
            init,
            out: pixels,
        });
        transpose_pixels(pixels, out_plane, channels, out);
    });
}

/// `grad_w = sum input * grad_out`, overwriting `grad_w`, for a shape [`weight_applies`]
/// to (the caller has returned on an empty kernel).
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
        unreachable!("suits admits f32 only");
    };
    let (taps, out_plane) = (g.kh * g.kw, g.oh * g.ow);
    let layout = Layout::new(g);
    let gy_dests: Vec<usize> = (0..out_plane).collect();
    // Per thread: the padded input plane, the output gradient, the sums.
    let lens = [layout.padded_len(), out_plane * CHANNELS, taps * CHANNELS];
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
                let gy = &grad_out[first * out_plane..];
                transpose_planes(gy, out_plane, channels, &gy_dests, gy_t);
                run(&mut ChannelWeightGrad {
                    x: layout.pad(input, first, channels, padded),
                    wp: layout.wp,
                    grad_out: gy_t,
                    oh: g.oh,
                    ow: g.ow,
                    stride: (g.stride.h, g.stride.w),
                    offsets: &layout.offsets,
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

/// Runs a weight-gradient task on the kernel of this CPU (see [`suits`]).
fn run(job: &mut ChannelWeightGrad<'_>) {
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it; `pointers` checks
        // the job's bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::arch::x86_64::depthwise_channels_weight_f32_avx512(job) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::arch::x86_64::depthwise_channels_weight_f32_avx2(job) },
        _ => unreachable!("suits admits AVX2 and AVX-512 only {}", job.wp),
    }
}

/// Runs a forward task on the kernel of this CPU (see [`suits`]).
fn run_forward(job: &mut ChannelForward<'_>) {
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it; `pointers` checks
        // the job's bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::arch::x86_64::depthwise_channels_forward_f32_avx512(job) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::arch::x86_64::depthwise_channels_forward_f32_avx2(job) },
        _ => unreachable!("suits admits AVX2 and AVX-512 only {}", job.wp),
    }
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
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it; the kernel checks
        // its bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            crate::arch::x86_64::transpose_planes_f32_avx512(planes, plane, channels, dests, out)
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            crate::arch::x86_64::transpose_planes_f32_avx2(planes, plane, channels, dests, out)
        },
        _ => unreachable!("suits admits AVX2 and AVX-512 only {}", planes.len()),
    }
}

/// `out[c * plane + q] = pixels[q * CHANNELS + c]` for the `plane` pixels `q` of the first
/// `channels` planes.
fn transpose_pixels(pixels: &[f32], plane: usize, channels: usize, out: &mut [f32]) {
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it; the kernel checks
        // its bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            crate::arch::x86_64::transpose_pixels_f32_avx512(pixels, plane, channels, out)
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            crate::arch::x86_64::transpose_pixels_f32_avx2(pixels, plane, channels, out)
        },
        _ => unreachable!("suits admits AVX2 and AVX-512 only {}", pixels.len()),
    }
}
