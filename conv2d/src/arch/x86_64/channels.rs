//! The depthwise kernels for `f32` with AVX-512 on planes transposed to pixels of 16
//! channels (`kernels::direct::depthwise_channels`): every term a multiply-add of two
//! whole vectors of 16 channels.

use std::arch::x86_64::*;

use crate::kernels::direct::{ChannelForward, ChannelPlanes, DEPTHWISE_CHANNELS as CHANNELS};

/// The depthwise forward kernel: each output pixel's 16 channels summed in a register from
/// the biases, tap after tap in order, [`FORWARD_PIXELS`] pixels of a row at a time (their
/// sums independent, so that multiply-adds overlap), the taps' weight vectors loaded from
/// L1.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by
/// `ChannelForward::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn depthwise_channels_forward_f32_avx512(job: &mut ChannelForward<'_>) {
    const C: usize = CHANNELS;
    let (x, weights, out) = job.pointers();
    let (oh, ow, wp, (sh, sw)) = (job.oh, job.ow, job.wp, job.stride);
    let (offsets, init) = (job.offsets, job.init);
    let job = ForwardPixels {
        x,
        weights,
        out,
        offsets,
        step: (sh * wp * C, sw * C),
        ow,
    };
    // SAFETY: AVX-512 F is present (this function's contract); every output pixel's taps
    // and the weights lie inside the buffers, its output too (`pointers`).
    unsafe {
        let init = _mm512_loadu_ps(init.as_ptr());
        for oy in 0..oh {
            let whole = ow / FORWARD_PIXELS * FORWARD_PIXELS;
            for ox in (0..whole).step_by(FORWARD_PIXELS) {
                job.sum::<FORWARD_PIXELS>(init, oy, ox);
            }
            match ow - whole {
                7 => job.sum::<7>(init, oy, whole),
                6 => job.sum::<6>(init, oy, whole),
                5 => job.sum::<5>(init, oy, whole),
                4 => job.sum::<4>(init, oy, whole),
                3 => job.sum::<3>(init, oy, whole),
                2 => job.sum::<2>(init, oy, whole),
                1 => job.sum::<1>(init, oy, whole),
                _ => {}
            }
        }
    }
}

/// The pointers and steps of [`depthwise_channels_forward_f32_avx512`].
struct ForwardPixels<'a> {
    x: *const f32,
    weights: *const [f32; CHANNELS],
    out: *mut f32,
    offsets: &'a [usize],
    /// Values from one output row's windows to the next's, from one pixel's to the next's.
    step: (usize, usize),
    ow: usize,
}

impl ForwardPixels<'_> {
    /// Sums output pixels `ox..ox + P` of row `oy` from `init`, tap after tap (a count known
    /// at compile time, so that the sums stay in registers).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; the pixels are the job's, checked by its `pointers`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    #[inline]
    unsafe fn sum<const P: usize>(&self, init: __m512, oy: usize, ox: usize) {
        const C: usize = CHANNELS;
        let mut acc = [init; P];
        // SAFETY: the caller's contract: every tap of these pixels, the weights and the
        // outputs lie inside the buffers.
        unsafe {
            let window = self.x.add(oy * self.step.0 + ox * self.step.1);
            for (t, &offset) in self.offsets.iter().enumerate() {
                let w = _mm512_loadu_ps((*self.weights.add(t)).as_ptr());
                for (p, a) in acc.iter_mut().enumerate() {
                    let v = _mm512_loadu_ps(window.add(p * self.step.1 + offset * C));
                    *a = _mm512_fmadd_ps(v, w, *a);
                }
            }
            for (p, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(self.out.add((oy * self.ow + ox + p) * C), *a);
            }
        }
    }
}

/// Output pixels [`depthwise_channels_forward_f32_avx512`] sums at a time.
const FORWARD_PIXELS: usize = 8;

/// The depthwise weight-gradient kernel for `f32` with AVX-512 on planes transposed to
/// pixels of 16 channels (`kernels::direct::depthwise_channels`): taps in tiles of
/// [`CHANNEL_TAPS`], each tap's 16 channels' sums in a register while the output pixels
/// pass, per pixel one output-gradient vector loaded and fused with each tap's input
/// vector.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by
/// `ChannelPlanes::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn depthwise_channels_weight_f32_avx512(job: &mut ChannelPlanes<'_>) {
    const C: usize = CHANNELS;
    let (x, grad_out, sums) = job.pointers();
    let taps = job.offsets.len();
    let (oh, ow, wp, (sh, sw)) = (job.oh, job.ow, job.wp, job.stride);
    for t0 in (0..taps).step_by(CHANNEL_TAPS) {
        let count = CHANNEL_TAPS.min(taps - t0);
        // Past the last tap, the tile repeats it; those sums are not stored.
        let offsets: [usize; CHANNEL_TAPS] =
            std::array::from_fn(|j| job.offsets[t0 + j.min(count - 1)] * C);
        // SAFETY: AVX-512 F is present (this function's contract); tap `t0 + j` has a
        // vector of sums for `j < count`, read and written only then; output pixel (oy,
        // ox)'s gradient and its taps' inputs lie inside the buffers (`pointers`).
        unsafe {
            let mut acc = [_mm512_setzero_ps(); CHANNEL_TAPS];
            for (j, a) in acc.iter_mut().enumerate().take(count) {
                *a = _mm512_loadu_ps((*sums.add(t0 + j)).as_ptr());
            }
            for oy in 0..oh {
                let gy = grad_out.add(oy * ow * C);
                let row = x.add(oy * sh * wp * C);
                for ox in 0..ow {
                    let y = _mm512_loadu_ps(gy.add(ox * C));
                    let window = row.add(ox * sw * C);
                    for (a, &offset) in acc.iter_mut().zip(&offsets) {
                        *a = _mm512_fmadd_ps(_mm512_loadu_ps(window.add(offset)), y, *a);
                    }
                }
            }
            for (j, a) in acc.iter().enumerate().take(count) {
                _mm512_storeu_ps((*sums.add(t0 + j)).as_mut_ptr(), *a);
            }
        }
    }
}

/// Taps per tile of [`depthwise_channels_weight_f32_avx512`]: a 3x3 kernel in one.
const CHANNEL_TAPS: usize = 9;
