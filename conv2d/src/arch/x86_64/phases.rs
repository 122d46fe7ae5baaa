//! Splitting rows of `f32` into their even and odd columns (the stride-2 column phases of
//! `kernels::direct::masked`'s unpadded slab) with AVX-512: 32 values a step, two permutes.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::windows::live_lanes;

/// `even[r * step_out + i] = src[r * step_in + 2 * i]` and `odd[r * step_out + i] =
/// src[r * step_in + 2 * i + 1]` for `r < rows` and `i < half`: per row, 16 outputs of each
/// phase a step from two loads of 16 (masked at the row's end) and two permutes. One call
/// for a channel's rows: a call per row (the generic loop's) cost as much as its copying on
/// 14- to 28-wide rows.
///
/// # Safety
/// The CPU must support AVX-512 F (the bounds are checked: panics unless `src` holds every
/// row's `2 * half` values and `even` and `odd` every row's `half`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn split_rows_f32_avx512(
    src: &[f32],
    step_in: usize,
    rows: usize,
    half: usize,
    (even, odd): (&mut [MaybeUninit<f32>], &mut [MaybeUninit<f32>]),
    step_out: usize,
) {
    if rows == 0 || half == 0 {
        return;
    }
    assert!((rows - 1) * step_in + 2 * half <= src.len());
    assert!((rows - 1) * step_out + half <= even.len().min(odd.len()));
    let picks = [
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31),
    ];
    let (src, even, odd) = (
        src.as_ptr(),
        even.as_mut_ptr().cast::<f32>(),
        odd.as_mut_ptr().cast::<f32>(),
    );
    for r in 0..rows {
        for i0 in (0..half).step_by(16) {
            let n = 16.min(half - i0);
            // SAFETY: the row's values `2 * i0..2 * (i0 + n)` and outputs `i0..i0 + n` lie
            // inside the buffers (checked above); masked loads and stores touch no other
            // lane.
            unsafe {
                let s = src.add(r * step_in + 2 * i0);
                let low = _mm512_maskz_loadu_ps(live_lanes(2 * n), s);
                let high = _mm512_maskz_loadu_ps(live_lanes((2 * n).saturating_sub(16)), s.add(16));
                let at = r * step_out + i0;
                let live = live_lanes(n);
                _mm512_mask_storeu_ps(
                    even.add(at),
                    live,
                    _mm512_permutex2var_ps(low, picks[0], high),
                );
                _mm512_mask_storeu_ps(
                    odd.add(at),
                    live,
                    _mm512_permutex2var_ps(low, picks[1], high),
                );
            }
        }
    }
}
