//! The depthwise kernels for `f32` on planes transposed to pixels of 16 channels
//! (`kernels::direct::depthwise_channels`): every term a multiply-add of two whole vectors
//! of channels, 16 a register with AVX-512, the two halves of a pixel one after the other
//! with AVX2. Written once over [`Register`], built for each ISA by its wrapper.

use std::arch::x86_64::*;

use super::Register;
use crate::kernels::direct::{ChannelForward, ChannelWeightGrad, DEPTHWISE_CHANNELS as CHANNELS};

/// The depthwise forward kernel with AVX-512 (see [`forward_channels`]).
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by
/// `ChannelForward::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn depthwise_channels_forward_f32_avx512(job: &mut ChannelForward<'_>) {
    // SAFETY: AVX-512 F is present (this function's contract).
    unsafe { forward_channels::<__m512>(job) }
}

/// The depthwise forward kernel with AVX2 and FMA (see [`forward_channels`]).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by
/// `ChannelForward::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn depthwise_channels_forward_f32_avx2(job: &mut ChannelForward<'_>) {
    // SAFETY: AVX2 and FMA are present (this function's contract).
    unsafe { forward_channels::<__m256>(job) }
}

/// The depthwise forward kernel: each output pixel's channels summed in a register from
/// the biases, tap after tap in order, [`FORWARD_PIXELS`] pixels of a row at a time (their
/// sums independent, so that multiply-adds overlap; a row's last few in one step of as
/// many), the taps' weight vectors loaded from L1; per `R::LANES` channels of the 16.
///
/// # Safety
/// The CPU must support `R`'s instructions (the job's bounds are checked by `pointers`).
#[inline(always)]
unsafe fn forward_channels<R: Register<Elem = f32>>(job: &mut ChannelForward<'_>) {
    let (x, weights, out) = job.pointers();
    let (oh, ow, wp, (sh, sw)) = (job.oh, job.ow, job.wp, job.stride);
    let job = ForwardPixels {
        x,
        weights,
        out,
        offsets: job.offsets,
        step: (sh * wp * CHANNELS, sw * CHANNELS),
        ow,
        init: job.init,
    };
    for half in (0..CHANNELS).step_by(R::LANES) {
        // SAFETY: `R`'s instructions are present (this function's contract); every output
        // pixel's taps and the weights lie inside the buffers, its output too
        // (`pointers`), and `half + R::LANES <= CHANNELS`.
        unsafe {
            for oy in 0..oh {
                let whole = ow / FORWARD_PIXELS * FORWARD_PIXELS;
                for ox in (0..whole).step_by(FORWARD_PIXELS) {
                    job.sum::<R, FORWARD_PIXELS>(oy, ox, half);
                }
                match ow - whole {
                    7 => job.sum::<R, 7>(oy, whole, half),
                    6 => job.sum::<R, 6>(oy, whole, half),
                    5 => job.sum::<R, 5>(oy, whole, half),
                    4 => job.sum::<R, 4>(oy, whole, half),
                    3 => job.sum::<R, 3>(oy, whole, half),
                    2 => job.sum::<R, 2>(oy, whole, half),
                    1 => job.sum::<R, 1>(oy, whole, half),
                    _ => {}
                }
            }
        }
    }
}

/// The pointers and steps of [`forward_channels`].
struct ForwardPixels<'a> {
    x: *const f32,
    weights: *const [f32; CHANNELS],
    out: *mut f32,
    offsets: &'a [usize],
    /// Values from one output row's windows to the next's, from one pixel's to the next's.
    step: (usize, usize),
    ow: usize,
    init: [f32; CHANNELS],
}

impl ForwardPixels<'_> {
    /// Sums channels `half..half + R::LANES` of output pixels `ox..ox + P` of row `oy` from
    /// `init`, tap after tap (a count known at compile time, so that the sums stay in
    /// registers).
    ///
    /// # Safety
    /// The CPU must support `R`'s instructions; the pixels are the job's, checked by its
    /// `pointers`, and `half + R::LANES <= CHANNELS`.
    #[inline(always)]
    unsafe fn sum<R: Register<Elem = f32>, const P: usize>(
        &self,
        oy: usize,
        ox: usize,
        half: usize,
    ) {
        // SAFETY: the caller's contract: every tap of these pixels, the weights and the
        // outputs lie inside the buffers.
        unsafe {
            let mut acc = [R::load(self.init.as_ptr().add(half)); P];
            let window = self.x.add(oy * self.step.0 + ox * self.step.1 + half);
            for (t, &offset) in self.offsets.iter().enumerate() {
                let w = R::load((*self.weights.add(t)).as_ptr().add(half));
                for (p, a) in acc.iter_mut().enumerate() {
                    let v = R::load(window.add(p * self.step.1 + offset * CHANNELS));
                    *a = R::fmadd(v, w, *a);
                }
            }
            for (p, a) in acc.iter().enumerate() {
                R::store(self.out.add((oy * self.ow + ox + p) * CHANNELS + half), *a);
            }
        }
    }
}

/// Output pixels [`forward_channels`] sums at a time: 8 ran 7x7 and 5x5 depthwise layers
/// 1.08-1.13x as fast as 4 (AMD Zen 5, one thread, three alternated rounds).
const FORWARD_PIXELS: usize = 8;

/// The depthwise weight-gradient kernel with AVX-512 (see [`weight_channels`]).
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by
/// `ChannelWeightGrad::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn depthwise_channels_weight_f32_avx512(job: &mut ChannelWeightGrad<'_>) {
    // SAFETY: AVX-512 F is present (this function's contract).
    unsafe { weight_channels::<__m512>(job) }
}

/// The depthwise weight-gradient kernel with AVX2 and FMA (see [`weight_channels`]).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by
/// `ChannelWeightGrad::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn depthwise_channels_weight_f32_avx2(job: &mut ChannelWeightGrad<'_>) {
    // SAFETY: AVX2 and FMA are present (this function's contract).
    unsafe { weight_channels::<__m256>(job) }
}

/// The depthwise weight-gradient kernel: taps in tiles of [`CHANNEL_TAPS`], each tap's
/// channels' sums in a register while the output pixels pass, per pixel one
/// output-gradient vector loaded and fused with each tap's input vector; per `R::LANES`
/// channels of the 16.
///
/// # Safety
/// The CPU must support `R`'s instructions (the job's bounds are checked by `pointers`).
#[inline(always)]
unsafe fn weight_channels<R: Register<Elem = f32>>(job: &mut ChannelWeightGrad<'_>) {
    const C: usize = CHANNELS;
    let (x, grad_out, sums) = job.pointers();
    let taps = job.offsets.len();
    let (oh, ow, wp, (sh, sw)) = (job.oh, job.ow, job.wp, job.stride);
    for half in (0..C).step_by(R::LANES) {
        for t0 in (0..taps).step_by(CHANNEL_TAPS) {
            let count = CHANNEL_TAPS.min(taps - t0);
            // Past the last tap, the tile repeats it; those sums are not stored.
            let mut offsets = [0; CHANNEL_TAPS];
            for (j, o) in offsets.iter_mut().enumerate() {
                *o = job.offsets[t0 + j.min(count - 1)] * C + half;
            }
            // SAFETY: `R`'s instructions are present (this function's contract); tap `t0 +
            // j` has a vector of sums for `j < count`, read and written only then (lanes
            // `half..half + R::LANES` of its 16); output pixel (oy, ox)'s gradient and its
            // taps' inputs lie inside the buffers (`pointers`).
            unsafe {
                let mut acc = [R::splat(0.0); CHANNEL_TAPS];
                for (j, a) in acc.iter_mut().enumerate().take(count) {
                    *a = R::load((*sums.add(t0 + j)).as_ptr().add(half));
                }
                for oy in 0..oh {
                    let gy = grad_out.add(oy * ow * C + half);
                    let row = x.add(oy * sh * wp * C);
                    for ox in 0..ow {
                        let y = R::load(gy.add(ox * C));
                        let window = row.add(ox * sw * C);
                        for (a, &offset) in acc.iter_mut().zip(&offsets) {
                            *a = R::fmadd(R::load(window.add(offset)), y, *a);
                        }
                    }
                }
                for (j, a) in acc.iter().enumerate().take(count) {
                    R::store((*sums.add(t0 + j)).as_mut_ptr().add(half), *a);
                }
            }
        }
    }
}

/// Taps per tile of [`weight_channels`]: a 3x3 kernel in one (nine sums and two operands
/// in AVX2's 16 registers too).
const CHANNEL_TAPS: usize = 9;
