//! The implicit GEMM's pixel tile and the register transposes around it (its weight panels,
//! its sums' write-out, the AMX weight rows' taps).

use std::arch::x86_64::*;

use crate::kernels::direct::{PixelTile, TILE_PIXELS};

use super::{Avx2F32, MaskedRegister, Register};

/// The implicit-GEMM kernel for `f32` with AVX-512: per tile of [`TILE_PIXELS`] pixels,
/// the pixels x `width / 16` vectors of channel sums in registers (24 of the 32 at full
/// width), each step's panel row loaded and each pixel's input broadcast; a last tile of
/// fewer pixels repeats its last pixel and stores only its own.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `PixelTile::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn pixel_tile_f32_avx512(job: &mut PixelTile<'_>) {
    let pointers = job.pointers();
    let job = &*job;
    for p0 in (0..job.pixels.len()).step_by(TILE_PIXELS) {
        // SAFETY (each arm): AVX-512 F is present (this function's contract); `p0` is a
        // pixel of the job, the arm's vectors span the job's `width` from channel 0, and
        // `pointers` are the job's, checked.
        match job.width / 16 {
            // SAFETY: see above.
            1 => unsafe { pixel_tile::<__m512, 1>(job, pointers, p0, 0) },
            // SAFETY: see above.
            2 => unsafe { pixel_tile::<__m512, 2>(job, pointers, p0, 0) },
            // SAFETY: see above.
            3 => unsafe { pixel_tile::<__m512, 3>(job, pointers, p0, 0) },
            // SAFETY: see above.
            _ => unsafe { pixel_tile::<__m512, 4>(job, pointers, p0, 0) },
        }
    }
}

/// The implicit-GEMM kernel for `f32` with AVX2 and FMA: per tile of [`TILE_PIXELS`]
/// pixels and 16 channels, 12 of the 16 registers of sums (two per pixel), as
/// [`pixel_tile_f32_avx512`] otherwise.
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by
/// `PixelTile::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn pixel_tile_f32_avx2(job: &mut PixelTile<'_>) {
    let pointers = job.pointers();
    let job = &*job;
    for p0 in (0..job.pixels.len()).step_by(TILE_PIXELS) {
        for j0 in (0..job.width).step_by(16) {
            // SAFETY: AVX2 and FMA are present (this function's contract); `p0` is a pixel
            // of the job, `j0 + 16 <= width` (`pointers` checked that `width` is a multiple
            // of 16) and `pointers` are the job's, checked.
            unsafe { pixel_tile::<__m256, 2>(job, pointers, p0, j0) };
        }
    }
}

/// The tile of pixels from `p0` and channels from `j0`, `VECTORS` registers wide, for
/// [`pixel_tile_f32_avx512`] and [`pixel_tile_f32_avx2`].
///
/// # Safety
/// The CPU must support `R`'s instructions; `p0 < job.pixels.len()`, `j0 + R::LANES *
/// VECTORS <= job.width`, and `pointers` are the job's, checked by `PixelTile::pointers`.
#[inline(always)]
unsafe fn pixel_tile<R: Register<Elem = f32>, const VECTORS: usize>(
    job: &PixelTile<'_>,
    (slab, panel, init, sums): (*const f32, *const f32, *const f32, *mut f32),
    p0: usize,
    j0: usize,
) {
    let (width, lanes) = (job.width, R::LANES);
    let count = (job.pixels.len() - p0).min(TILE_PIXELS);
    // The tile's pixels' origins (a short last tile repeats its last pixel).
    let origins: [*const f32; TILE_PIXELS] =
        std::array::from_fn(|p| slab.wrapping_add(job.pixels[p0 + p.min(count - 1)]));
    // SAFETY: `R`'s instructions are present (this function's contract).
    let mut acc = [[unsafe { R::splat(0.0) }; VECTORS]; TILE_PIXELS];
    for (p, acc_p) in acc.iter_mut().enumerate() {
        for (v, a) in acc_p.iter_mut().enumerate() {
            let j = j0 + lanes * v;
            // SAFETY: `init` holds `width` values; pixel `p0 + p` (for `p < count`) has a
            // row of `width` sums (`pointers` checked both), and `j + lanes <= width`.
            *a = unsafe {
                if job.resume && p < count {
                    R::load(sums.add((p0 + p) * width + j))
                } else {
                    R::load(init.add(j))
                }
            };
        }
    }
    for (k, &start) in job.starts.iter().enumerate() {
        // SAFETY: the panel holds a row of `width` weights per step, and every pixel's
        // origin plus every start is inside the slab (`pointers` checked both).
        unsafe {
            let row = panel.add(k * width + j0);
            let w: [R; VECTORS] = std::array::from_fn(|v| R::load(row.add(lanes * v)));
            for (acc_p, origin) in acc.iter_mut().zip(origins) {
                let x = R::splat(*origin.add(start));
                for (a, &wv) in acc_p.iter_mut().zip(&w) {
                    *a = R::fmadd(wv, x, *a);
                }
            }
        }
    }
    for (p, acc_p) in acc.iter().enumerate().take(count) {
        for (v, &a) in acc_p.iter().enumerate() {
            // SAFETY: pixel `p0 + p < pixels.len()` has a row of `width` sums.
            unsafe { R::store(sums.add((p0 + p) * width + j0 + lanes * v), a) };
        }
    }
}

/// The output rows' pointers of a transpose of 16 values from each of `starts` in `values`,
/// after checking its bounds: panics if `starts.len()` is not a multiple of 16, a row
/// `starts[p]..starts[p] + 16` is not inside `values` or an output row holds fewer than
/// `starts.len()` values.
fn transpose_rows(values: &[f32], starts: &[usize], outs: [&mut [f32]; 16]) -> [*mut f32; 16] {
    assert!(starts.len().is_multiple_of(16));
    assert!(starts.iter().all(|&s| s + 16 <= values.len()));
    assert!(outs.iter().all(|o| o.len() >= starts.len()));
    outs.map(|o| o.as_mut_ptr())
}

/// A register of 128-bit lanes of four `f32`, with the in-lane steps of a transpose.
trait LaneQuads: Copy {
    /// Elements 0, 1 of each lane of `a` and `b`, interleaved.
    ///
    /// # Safety
    /// The CPU must support the register's instructions.
    unsafe fn unpack_low(a: Self, b: Self) -> Self;
    /// Elements 2, 3 of each lane of `a` and `b`, interleaved.
    ///
    /// # Safety
    /// As above.
    unsafe fn unpack_high(a: Self, b: Self) -> Self;
    /// Elements 0, 1 of each lane of `a`, then of `b` (`HIGH`: elements 2, 3).
    ///
    /// # Safety
    /// As above.
    unsafe fn pairs<const HIGH: bool>(a: Self, b: Self) -> Self;
}

macro_rules! lane_quads {
    ($reg:ty, $features:literal, $low:ident, $high:ident, $shuffle:ident) => {
        impl LaneQuads for $reg {
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn unpack_low(a: Self, b: Self) -> Self {
                $low(a, b)
            }
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn unpack_high(a: Self, b: Self) -> Self {
                $high(a, b)
            }
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn pairs<const HIGH: bool>(a: Self, b: Self) -> Self {
                match HIGH {
                    false => $shuffle::<0x44>(a, b),
                    true => $shuffle::<0xEE>(a, b),
                }
            }
        }
    };
}

lane_quads!(
    __m256,
    "avx2",
    _mm256_unpacklo_ps,
    _mm256_unpackhi_ps,
    _mm256_shuffle_ps
);
lane_quads!(
    __m512,
    "avx512f",
    _mm512_unpacklo_ps,
    _mm512_unpackhi_ps,
    _mm512_shuffle_ps
);

/// The in-lane steps of transposing `N` rows (a multiple of 4): `u[4q + e]` holds element
/// `e` of each lane of rows `4q..4q + 4`. Plain loops, no closures: inlined into a caller
/// with the target features, a closure may still run out of line, a call per shuffle.
///
/// # Safety
/// The CPU must support `R`'s instructions.
#[inline(always)]
unsafe fn lane_quads<R: LaneQuads, const N: usize>(r: [R; N]) -> [R; N] {
    // t[2i], t[2i + 1]: elements 0-1 and 2-3 (of each lane) of rows 2i, 2i + 1 interleaved.
    let mut t = r;
    let mut u = r;
    // SAFETY: `R`'s instructions are present (this function's contract).
    unsafe {
        for i in (0..N).step_by(2) {
            t[i] = R::unpack_low(r[i], r[i + 1]);
            t[i + 1] = R::unpack_high(r[i], r[i + 1]);
        }
        for (i, u) in u.iter_mut().enumerate() {
            let (q, e) = (i / 4, i % 4);
            let (a, b) = (t[4 * q + e / 2], t[4 * q + 2 + e / 2]);
            *u = match e % 2 {
                0 => R::pairs::<false>(a, b),
                _ => R::pairs::<true>(a, b),
            };
        }
    }
    u
}

/// Transposes in blocks of 16 x 16: `outs[j][p] = values[starts[p] + j]` for `j < 16`
/// and every `p < starts.len()` (a multiple of 16), each block in registers (in-lane
/// unpacks and shuffles, then 128-bit lane shuffles); the bounds checked once for all
/// blocks.
///
/// # Safety
/// The CPU must support AVX-512 F (the bounds are checked: panics if `starts.len()` is not
/// a multiple of 16, a row `starts[p]..starts[p] + 16` is not inside `values` or an output
/// row holds fewer than `starts.len()` values).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn transpose16_f32_avx512(
    values: &[f32],
    starts: &[usize],
    outs: [&mut [f32]; 16],
) {
    let outs = transpose_rows(values, starts, outs);
    for (p0, block) in (0..starts.len()).step_by(16).zip(starts.chunks_exact(16)) {
        // SAFETY: row `p < 16` reads `values[block[p]..][..16]`, inside `values` (checked).
        let r: [__m512; 16] =
            std::array::from_fn(|p| unsafe { _mm512_loadu_ps(values.as_ptr().add(block[p])) });
        // SAFETY: AVX-512 F is present (this function's contract).
        let columns = unsafe { transpose_16x16(r) };
        for (out, column) in outs.iter().zip(columns) {
            // SAFETY: every output row holds `starts.len() >= p0 + 16` values (checked).
            unsafe { _mm512_storeu_ps(out.add(p0), column) };
        }
    }
}

/// The columns of the 16 x 16 matrix whose rows are `r`: in-lane unpacks and shuffles
/// ([`lane_quads`]), then 128-bit lane shuffles.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[inline(always)]
unsafe fn transpose_16x16(r: [__m512; 16]) -> [__m512; 16] {
    // SAFETY: AVX-512 F is present (this function's contract).
    unsafe {
        let u = lane_quads(r);
        // v[8h + 4o + e]: lanes 0 and 2 (o = 0) or 1 and 3 (o = 1) of quads 2h and 2h + 1.
        let mut v = u;
        for (i, v) in v.iter_mut().enumerate() {
            let (h, o, e) = (i / 8, (i / 4) % 2, i % 4);
            let (a, b) = (u[8 * h + e], u[8 * h + 4 + e]);
            *v = match o {
                0 => _mm512_shuffle_f32x4::<0x88>(a, b),
                _ => _mm512_shuffle_f32x4::<0xDD>(a, b),
            };
        }
        let mut columns = v;
        for (j, column) in columns.iter_mut().enumerate() {
            let (a, b) = (v[j % 8], v[8 + j % 8]);
            *column = match j / 8 {
                0 => _mm512_shuffle_f32x4::<0x88>(a, b),
                _ => _mm512_shuffle_f32x4::<0xDD>(a, b),
            };
        }
        columns
    }
}

/// Transposes the first `channels` (1 to 16) planes of `plane` values of `planes` into
/// pixels of 16 channels: `out[dests[q] * 16 + c] = planes[c * plane + q]` for every pixel
/// `q < plane`, lanes `channels..16` zero; 16 pixels at a time, transposed in registers
/// ([`transpose_16x16`]), a last partial block's loads masked.
///
/// # Safety
/// The CPU must support AVX-512 F (the bounds are checked: panics unless `channels` is 1 to
/// 16, `planes` holds them, `dests` has a destination per pixel and each lies in `out`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn transpose_planes_f32_avx512(
    planes: &[f32],
    plane: usize,
    channels: usize,
    dests: &[usize],
    out: &mut [f32],
) {
    assert!((1..=16).contains(&channels) && planes.len() >= channels * plane);
    assert!(dests.len() == plane && dests.iter().all(|&d| (d + 1) * 16 <= out.len()));
    let (planes, out) = (planes.as_ptr(), out.as_mut_ptr());
    for (q0, dests) in (0..plane).step_by(16).zip(dests.chunks(16)) {
        let live = ((1u32 << dests.len()) - 1) as __mmask16;
        let r: [__m512; 16] = std::array::from_fn(|c| match c < channels {
            // SAFETY: AVX-512 F is present (this function's contract); the lanes of pixels
            // `q0..q0 + dests.len()` of plane `c < channels`, inside `planes` (checked);
            // masked loads touch no other lane.
            true => unsafe { _mm512_maskz_loadu_ps(live, planes.add(c * plane + q0)) },
            false => _mm512_setzero_ps(),
        });
        // SAFETY: AVX-512 F is present (this function's contract).
        let pixels = unsafe { transpose_16x16(r) };
        for (&d, pixel) in dests.iter().zip(pixels) {
            // SAFETY: `(d + 1) * 16 <= out.len()` (checked).
            unsafe { _mm512_storeu_ps(out.add(d * 16), pixel) };
        }
    }
}

/// [`transpose16_f32_avx512`] with AVX2: each block of 16 x 16 as four of 8 x 8 in
/// registers (in-lane unpacks and shuffles, then 128-bit lane permutes).
///
/// # Safety
/// The CPU must support AVX2 (the bounds are checked as by [`transpose16_f32_avx512`]).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn transpose16_f32_avx2(
    values: &[f32],
    starts: &[usize],
    outs: [&mut [f32]; 16],
) {
    let outs = transpose_rows(values, starts, outs);
    for (p0, block) in (0..starts.len()).step_by(8).zip(starts.chunks_exact(8)) {
        for j0 in [0, 8] {
            // SAFETY: row `p < 8` reads `values[block[p] + j0..][..8]`, inside `values`
            // (checked: `j0 + 8 <= 16`).
            let r: [__m256; 8] = std::array::from_fn(|p| unsafe {
                _mm256_loadu_ps(values.as_ptr().add(block[p] + j0))
            });
            // SAFETY: AVX2 is present (this function's contract).
            let columns = unsafe { transpose_8x8(r) };
            for (out, column) in outs[j0..j0 + 8].iter().zip(columns) {
                // SAFETY: every output row holds `starts.len() >= p0 + 8` values (checked).
                unsafe { _mm256_storeu_ps(out.add(p0), column) };
            }
        }
    }
}

/// The columns of the 8 x 8 matrix whose rows are `r`: in-lane unpacks and shuffles
/// ([`lane_quads`]), then 128-bit lane permutes.
///
/// # Safety
/// The CPU must support AVX2.
#[inline(always)]
unsafe fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: AVX2 is present (this function's contract).
    unsafe {
        let u = lane_quads(r);
        let mut columns = u;
        for (j, column) in columns.iter_mut().enumerate() {
            // Column j: element j % 4 of lane j / 4 of rows 0-3, then of rows 4-7.
            let (a, b) = (u[j % 4], u[4 + j % 4]);
            *column = match j / 4 {
                0 => _mm256_permute2f128_ps::<0x20>(a, b),
                _ => _mm256_permute2f128_ps::<0x31>(a, b),
            };
        }
        columns
    }
}

/// [`transpose_planes_f32_avx512`] with AVX2: 8 pixels at a time, each half of the 16
/// channels an 8 x 8 block ([`transpose_8x8`]), a last partial block's loads masked.
///
/// # Safety
/// The CPU must support AVX2 (the bounds are checked as by
/// [`transpose_planes_f32_avx512`]).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn transpose_planes_f32_avx2(
    planes: &[f32],
    plane: usize,
    channels: usize,
    dests: &[usize],
    out: &mut [f32],
) {
    assert!((1..=16).contains(&channels) && planes.len() >= channels * plane);
    assert!(dests.len() == plane && dests.iter().all(|&d| (d + 1) * 16 <= out.len()));
    let (planes, out) = (planes.as_ptr(), out.as_mut_ptr());
    for (q0, dests) in (0..plane).step_by(8).zip(dests.chunks(8)) {
        let live = (1u16 << dests.len()) - 1;
        for half in [0, 8] {
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, row) in r.iter_mut().enumerate() {
                if half + i < channels {
                    // SAFETY: AVX2 is present (this function's contract); the lanes of
                    // pixels `q0..q0 + dests.len()` of plane `half + i < channels`, inside
                    // `planes` (checked); masked loads touch no other lane.
                    *row =
                        unsafe { Avx2F32::load_where(planes.add((half + i) * plane + q0), live).0 };
                }
            }
            // SAFETY: AVX2 is present (this function's contract).
            let pixels = unsafe { transpose_8x8(r) };
            for (&d, pixel) in dests.iter().zip(pixels) {
                // SAFETY: `(d + 1) * 16 <= out.len()` (checked) and `half + 8 <= 16`.
                unsafe { _mm256_storeu_ps(out.add(d * 16 + half), pixel) };
            }
        }
    }
}

/// [`transpose_pixels_f32_avx512`] with AVX2: 8 pixels at a time, each half of the 16
/// channels an 8 x 8 block ([`transpose_8x8`]), a last partial block's stores masked.
///
/// # Safety
/// The CPU must support AVX2 (the bounds are checked as by
/// [`transpose_pixels_f32_avx512`]).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn transpose_pixels_f32_avx2(
    pixels: &[f32],
    plane: usize,
    channels: usize,
    out: &mut [f32],
) {
    assert!((1..=16).contains(&channels) && pixels.len() >= plane * 16);
    assert!(out.len() >= channels * plane);
    let (pixels, out) = (pixels.as_ptr(), out.as_mut_ptr());
    for q0 in (0..plane).step_by(8) {
        let count = 8.min(plane - q0);
        let live = (1u16 << count) - 1;
        for half in [0, 8] {
            let mut r = [_mm256_setzero_ps(); 8];
            for (q, row) in r.iter_mut().enumerate().take(count) {
                // SAFETY: AVX2 is present (this function's contract); pixel `q0 + q <
                // plane` lies inside `pixels` (checked), `half + 8 <= 16`.
                *row = unsafe { _mm256_loadu_ps(pixels.add((q0 + q) * 16 + half)) };
            }
            // SAFETY: AVX2 is present (this function's contract).
            let planes = unsafe { transpose_8x8(r) };
            for (i, row) in planes
                .into_iter()
                .enumerate()
                .take(channels.saturating_sub(half))
            {
                // SAFETY: lanes `q0..q0 + count` of plane `half + i < channels`, inside
                // `out` (checked); masked stores touch no other lane.
                unsafe {
                    Avx2F32::store_where(out.add((half + i) * plane + q0), Avx2F32(row), live)
                };
            }
        }
    }
}

/// The most taps [`transpose_taps_avx512`] takes: a window's index `j * taps + t - start`
/// must wrap, when negative, to 64 or more in 16 bits.
pub(crate) const MAX_TRANSPOSED_TAPS: usize = 2046;

/// `out[t * stride + j] = row[j * taps + t]` for `t < taps` and `j < 32`: the taps of 32
/// consecutive input channels of a weight row, transposed into one run of 32 channels per
/// tap. Each run gathers its 32 values from windows of 64 values of the row, one
/// two-register permutation per window.
///
/// # Safety
/// The CPU must support AVX-512 F and BW (the bounds are checked here, and `taps` is at most
/// [`MAX_TRANSPOSED_TAPS`]: the indices are 16-bit).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn transpose_taps_avx512(
    row: &[u16],
    taps: usize,
    out: &mut [u16],
    stride: usize,
) {
    let len = 32 * taps;
    assert!(taps > 0 && taps <= MAX_TRANSPOSED_TAPS && row.len() >= len);
    assert!(out.len() >= (taps - 1) * stride + 32);
    macro_rules! fixed {
        ($($t:literal),*) => {
            match taps {
                // SAFETY: AVX-512 F and BW are present (this function's contract); the
                // bounds are checked above.
                $($t => return unsafe { transpose_fixed::<$t>(row, out, stride) },)*
                _ => {}
            }
        };
    }
    fixed!(2, 3, 4, 5, 6, 7, 8, 9);
    let multiples = channel_starts(taps);
    // Windows start at multiples of 32 and `len` is one: each is whole or past the end.
    let window = |start: usize| match start < len {
        // SAFETY: as above; `start + 32 <= len <= row.len()`.
        true => unsafe { _mm512_loadu_si512(row.as_ptr().add(start).cast()) },
        false => _mm512_setzero_si512(),
    };
    for t in 0..taps {
        let mut run = _mm512_setzero_si512();
        for w in (0..len).step_by(64) {
            // The windows' picks are disjoint: merged without waiting on each other.
            let picked = window_picks(multiples, [window(w), window(w + 32)], t, w);
            run = _mm512_or_si512(run, picked);
        }
        // SAFETY: as above; `t * stride + 32 <= out.len()` (checked).
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(t * stride).cast(), run) };
    }
}

/// [`transpose_taps_avx512`] for `T` taps known at compile time: the row's `T` registers
/// loaded once, and each run's window indices and masks constants (2026-12-07, AMD Zen 4,
/// one thread: its share of `bf16` `resnet_3x3_c256`, whose weights it packs per call,
/// 9.5% -> 7.7% of the samples, the rest mostly the wait for the row's loads).
///
/// # Safety
/// The CPU must support AVX-512 F and BW; `row` holds `32 * T` values and `out` `(T - 1) *
/// stride + 32`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn transpose_fixed<const T: usize>(row: &[u16], out: &mut [u16], stride: usize) {
    // SAFETY: `row` holds `32 * T` values (this function's contract).
    let windows: [__m512i; T] =
        std::array::from_fn(|i| unsafe { _mm512_loadu_si512(row.as_ptr().add(32 * i).cast()) });
    let multiples = channel_starts(T);
    let zero = _mm512_setzero_si512();
    for t in 0..T {
        let mut run = zero;
        for w in (0..T).step_by(2) {
            let high = windows.get(w + 1).copied().unwrap_or(zero);
            run = _mm512_or_si512(run, window_picks(multiples, [windows[w], high], t, 32 * w));
        }
        // SAFETY: `t * stride + 32 <= out.len()` (this function's contract).
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(t * stride).cast(), run) };
    }
}

/// Where each of 32 channels' taps start in a row of `taps` a channel: `j * taps` in lane
/// `j` (16-bit: `taps` is at most [`MAX_TRANSPOSED_TAPS`]).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
fn channel_starts(taps: usize) -> __m512i {
    let starts: [u16; 32] = std::array::from_fn(|j| (j * taps) as u16);
    // SAFETY: `starts` holds 32 values.
    unsafe { _mm512_loadu_epi16(starts.as_ptr().cast()) }
}

/// The values of tap `t`'s run (lane `j`: value `j * taps + t` of the row, from the
/// `starts` of [`channel_starts`]) that the two windows of 32 values from value `from`
/// hold; zero in the other lanes.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
fn window_picks(starts: __m512i, [low, high]: [__m512i; 2], t: usize, from: usize) -> __m512i {
    let index = _mm512_add_epi16(starts, _mm512_set1_epi16((t as i32 - from as i32) as i16));
    let inside = _mm512_cmplt_epu16_mask(index, _mm512_set1_epi16(64));
    _mm512_maskz_permutex2var_epi16(inside, low, index, high)
}

/// The inverse of [`transpose_planes_f32_avx512`]: `out[c * plane + q] = pixels[q * 16 +
/// c]` for every pixel `q < plane` and channel `c < channels` (1 to 16); 16 pixels at a
/// time, transposed in registers, a last partial block's stores masked.
///
/// # Safety
/// The CPU must support AVX-512 F (the bounds are checked: panics unless `channels` is 1 to
/// 16, `pixels` holds `plane` pixels and `out` the channels' planes).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn transpose_pixels_f32_avx512(
    pixels: &[f32],
    plane: usize,
    channels: usize,
    out: &mut [f32],
) {
    assert!((1..=16).contains(&channels) && pixels.len() >= plane * 16);
    assert!(out.len() >= channels * plane);
    let (pixels, out) = (pixels.as_ptr(), out.as_mut_ptr());
    for q0 in (0..plane).step_by(16) {
        let count = 16.min(plane - q0);
        let live = ((1u32 << count) - 1) as __mmask16;
        let r: [__m512; 16] = std::array::from_fn(|q| match q < count {
            // SAFETY: AVX-512 F is present (this function's contract); pixel `q0 + q <
            // plane` lies inside `pixels` (checked).
            true => unsafe { _mm512_loadu_ps(pixels.add((q0 + q) * 16)) },
            false => _mm512_setzero_ps(),
        });
        // SAFETY: AVX-512 F is present (this function's contract).
        let planes = unsafe { transpose_16x16(r) };
        for (c, row) in planes.iter().enumerate().take(channels) {
            // SAFETY: lanes `q0..q0 + count` of plane `c < channels`, inside `out`
            // (checked); masked stores touch no other lane.
            unsafe { _mm512_mask_storeu_ps(out.add(c * plane + q0), live, *row) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tap count from 1 to 12 (the compiled-in ones among them) and 25 and 49, into
    /// runs wider apart than 32: each run holds its tap of the 32 channels, and nothing
    /// between the runs is written.
    #[test]
    fn taps_transpose_into_runs() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
            return;
        }
        for taps in (1..=12).chain([25, 49]) {
            let row: Vec<u16> = (0..32 * taps as u16).collect();
            let stride = 37;
            let mut out = vec![u16::MAX; (taps - 1) * stride + 32];
            // SAFETY: AVX-512 F and BW are present (checked above).
            unsafe { transpose_taps_avx512(&row, taps, &mut out, stride) };
            for (i, &v) in out.iter().enumerate() {
                let (t, j) = (i / stride, i % stride);
                let want = if j < 32 { row[j * taps + t] } else { u16::MAX };
                assert_eq!(v, want, "{taps} taps, run {t}, channel {j}");
            }
        }
    }
}
