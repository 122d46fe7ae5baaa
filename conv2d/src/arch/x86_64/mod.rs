//! The kernels compiled with AVX2+FMA and with AVX-512 enabled: the vector registers
//! that kernels written once for several widths use, the portable row kernels inlined into
//! functions carrying the target features (so the compiler vectorises them for the wider
//! registers), and the intrinsics kernels, one module per kind. Callers must have checked
//! the CPU (see `crate::isa`).

mod bf16_dot;
mod channels;
mod phases;
mod pixel_tile;
mod rows;
mod rows_avx2;
mod small;
mod tiles;
mod weight_rows;
mod windows;

pub(crate) use bf16_dot::{bf16_dot_available, bf16_dot_tiles, PAIR_GAPS};
pub(crate) use channels::{
    depthwise_channels_forward_f32_avx2, depthwise_channels_forward_f32_avx512,
    depthwise_channels_weight_f32_avx2, depthwise_channels_weight_f32_avx512,
};
pub(crate) use phases::split_rows_f32_avx512;
pub(crate) use pixel_tile::{
    pixel_tile_f32_avx2, pixel_tile_f32_avx512, transpose16_f32_avx2, transpose16_f32_avx512,
    transpose_pixels_f32_avx2, transpose_pixels_f32_avx512, transpose_planes_f32_avx2,
    transpose_planes_f32_avx512, transpose_taps_avx512, MAX_TRANSPOSED_TAPS,
};
pub(crate) use rows::{
    direct_rows_f32_avx512, flat_rows_3x3_f32_avx512, plane_row_masks, plane_rows_3x3_f32_avx512,
};
pub(crate) use rows_avx2::{direct_rows_f32_avx2, plane_rows_3x3_f32_avx2};
pub(crate) use small::{
    applies as small_applies, small_forward_f32_avx2, small_forward_f32_avx512,
};
pub(crate) use tiles::{
    channel_weight_tile_f32_avx2, channel_weight_tile_f32_avx512, direct_tile_avx2,
    direct_tile_avx512, direct_weight_tile_f32_avx2, direct_weight_tile_f32_avx512,
    dot_rows_avx512, masked_tile_avx512,
};
pub(crate) use weight_rows::{
    direct_weight_f32_avx512, flat_weight_3x3_f32_avx512, plane_weight_3x3_f32_avx2,
    plane_weight_3x3_f32_avx512, plane_weight_masks,
};

use std::arch::x86_64::*;

use crate::element::Accumulator;
use crate::kernels::direct::{self, Band, WeightJob};
use crate::kernels::rows::generic;

/// One vector register of `Elem`s, for kernels written once for `f32` and `f64`: unaligned
/// loads and stores, a broadcast, a fused multiply-add (each needs its instruction set).
pub(crate) trait Register: Copy {
    type Elem: Copy;
    /// Elements per register.
    const LANES: usize;
    /// # Safety
    /// The CPU must support the register's instructions; `p` points to `LANES` elements.
    unsafe fn load(p: *const Self::Elem) -> Self;
    /// # Safety
    /// The CPU must support the register's instructions.
    unsafe fn splat(v: Self::Elem) -> Self;
    /// `a * b + c`, rounded once.
    ///
    /// # Safety
    /// The CPU must support the register's instructions.
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    /// # Safety
    /// The CPU must support the register's instructions; `p` points to `LANES` elements.
    unsafe fn store(p: *mut Self::Elem, v: Self);
}

macro_rules! register {
    ($reg:ty, $elem:ty, $lanes:literal, $features:literal,
     $load:ident, $splat:ident, $fmadd:ident, $store:ident) => {
        impl Register for $reg {
            type Elem = $elem;
            const LANES: usize = $lanes;
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn load(p: *const $elem) -> Self {
                // SAFETY: `p` points to `LANES` elements (the caller's contract).
                unsafe { $load(p) }
            }
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn splat(v: $elem) -> Self {
                $splat(v)
            }
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
                $fmadd(a, b, c)
            }
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn store(p: *mut $elem, v: Self) {
                // SAFETY: `p` points to `LANES` elements (the caller's contract).
                unsafe { $store(p, v) }
            }
        }
    };
}

register!(
    __m512,
    f32,
    16,
    "avx512f",
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps
);
register!(
    __m512d,
    f64,
    8,
    "avx512f",
    _mm512_loadu_pd,
    _mm512_set1_pd,
    _mm512_fmadd_pd,
    _mm512_storeu_pd
);
register!(
    __m256,
    f32,
    8,
    "avx2,fma",
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps
);
register!(
    __m256d,
    f64,
    4,
    "avx2,fma",
    _mm256_loadu_pd,
    _mm256_set1_pd,
    _mm256_fmadd_pd,
    _mm256_storeu_pd
);

/// A register with AVX-512's lane masks: [`Register`] with masked operations (bit `i` for
/// lane `i`; an 8-lane register reads the low 8 bits; `__m256` with AVX-512 VL, [`Avx2F32`]
/// with AVX2 alone).
pub(crate) trait MaskedRegister: Register {
    /// `a * b + c` in the masked lanes, `c` in the others.
    ///
    /// # Safety
    /// The CPU must support the register's instructions.
    unsafe fn fmadd_where(a: Self, b: Self, c: Self, mask: u16) -> Self;
    /// The masked lanes of `p`, zeros in the others (which are not read).
    ///
    /// # Safety
    /// The CPU must support the register's instructions; `p`'s masked lanes are elements.
    unsafe fn load_where(p: *const Self::Elem, mask: u16) -> Self;
    /// Stores the masked lanes only.
    ///
    /// # Safety
    /// The CPU must support the register's instructions; `p`'s masked lanes are elements.
    unsafe fn store_where(p: *mut Self::Elem, v: Self, mask: u16);
    /// Whether every masked lane is finite.
    ///
    /// # Safety
    /// The CPU must support the register's instructions (AVX-512 DQ too for AVX-512's).
    unsafe fn finite_where(v: Self, mask: u16) -> bool;
}

/// Eight `f32` lanes with AVX2 and FMA alone, as a [`MaskedRegister`]: each lane mask
/// widened into a vector mask (a constant one folds away: all lanes give plain loads and
/// multiply-adds), so that kernels written for AVX-512's masks run on AVX2 too.
#[derive(Clone, Copy)]
pub(crate) struct Avx2F32(__m256);

impl Avx2F32 {
    /// The vector mask of `mask`'s low 8 bits: all ones in lane `i` where bit `i` is set.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn lanes(mask: u16) -> __m256i {
        let bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let bits = _mm256_and_si256(_mm256_set1_epi32(i32::from(mask)), bit);
        _mm256_cmpeq_epi32(bits, bit)
    }
}

impl Register for Avx2F32 {
    type Elem = f32;
    const LANES: usize = 8;
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: `p` points to 8 elements (the caller's contract).
        Self(unsafe { _mm256_loadu_ps(p) })
    }
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn splat(v: f32) -> Self {
        Self(_mm256_set1_ps(v))
    }
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        Self(_mm256_fmadd_ps(a.0, b.0, c.0))
    }
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: `p` points to 8 elements (the caller's contract).
        unsafe { _mm256_storeu_ps(p, v.0) }
    }
}

impl MaskedRegister for Avx2F32 {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn fmadd_where(a: Self, b: Self, c: Self, mask: u16) -> Self {
        let sum = _mm256_fmadd_ps(a.0, b.0, c.0);
        Self(_mm256_blendv_ps(
            c.0,
            sum,
            _mm256_castsi256_ps(Self::lanes(mask)),
        ))
    }
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load_where(p: *const f32, mask: u16) -> Self {
        // SAFETY: the masked lanes of `p` are elements (the caller's contract); the others
        // are not accessed.
        Self(unsafe { _mm256_maskload_ps(p, Self::lanes(mask)) })
    }
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store_where(p: *mut f32, v: Self, mask: u16) {
        // SAFETY: as above.
        unsafe { _mm256_maskstore_ps(p, Self::lanes(mask), v.0) }
    }
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn finite_where(v: Self, mask: u16) -> bool {
        // `v - v` is NaN exactly where `v` is not finite.
        let zero_or_nan = _mm256_sub_ps(v.0, v.0);
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(zero_or_nan, zero_or_nan);
        _mm256_testz_si256(_mm256_castps_si256(nan), Self::lanes(mask)) == 1
    }
}

/// `fpclass` categories: quiet NaN, +infinity, -infinity, signalling NaN.
const NOT_FINITE: i32 = 0x01 | 0x08 | 0x10 | 0x80;

macro_rules! masked_register {
    ($reg:ty, $elem:ty, $mask:ty, $features:literal,
     $fmadd:ident, $load:ident, $store:ident, $class:ident) => {
        impl MaskedRegister for $reg {
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn fmadd_where(a: Self, b: Self, c: Self, mask: u16) -> Self {
                $fmadd(a, b, c, mask as $mask)
            }
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn load_where(p: *const $elem, mask: u16) -> Self {
                // SAFETY: the masked lanes of `p` are elements (the caller's contract); the
                // others are not accessed.
                unsafe { $load(mask as $mask, p) }
            }
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn store_where(p: *mut $elem, v: Self, mask: u16) {
                // SAFETY: as above.
                unsafe { $store(p, mask as $mask, v) }
            }
            #[target_feature(enable = $features, enable = "avx512dq")]
            #[inline]
            unsafe fn finite_where(v: Self, mask: u16) -> bool {
                $class::<NOT_FINITE>(mask as $mask, v) == 0
            }
        }
    };
}

masked_register!(
    __m512,
    f32,
    u16,
    "avx512f",
    _mm512_mask3_fmadd_ps,
    _mm512_maskz_loadu_ps,
    _mm512_mask_storeu_ps,
    _mm512_mask_fpclass_ps_mask
);
masked_register!(
    __m512d,
    f64,
    u8,
    "avx512f",
    _mm512_mask3_fmadd_pd,
    _mm512_maskz_loadu_pd,
    _mm512_mask_storeu_pd,
    _mm512_mask_fpclass_pd_mask
);
masked_register!(
    __m256,
    f32,
    u8,
    "avx512f,avx512vl",
    _mm256_mask3_fmadd_ps,
    _mm256_maskz_loadu_ps,
    _mm256_mask_storeu_ps,
    _mm256_mask_fpclass_ps_mask
);

/// An element type with tile kernels: its AVX-512 and AVX2 registers.
pub(crate) trait TileElement: Copy {
    type Zmm: MaskedRegister<Elem = Self>;
    type Ymm: Register<Elem = Self>;
}

impl TileElement for f32 {
    type Zmm = __m512;
    type Ymm = __m256;
}

impl TileElement for f64 {
    type Zmm = __m512d;
    type Ymm = __m256d;
}

macro_rules! stamp {
    ($features:literal, $axpy_strided:ident, $axpy_scattered:ident, $dot_conj:ident) => {
        /// `generic::axpy_strided` with these target features.
        ///
        /// # Safety
        /// The CPU must support the features.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $axpy_strided<A: Accumulator>(
            dst: &mut [A],
            a: A,
            src: &[A],
            stride: usize,
        ) {
            generic::axpy_strided(dst, a, src, stride)
        }

        /// `generic::axpy_scattered` with these target features.
        ///
        /// # Safety
        /// The CPU must support the features.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $axpy_scattered<A: Accumulator>(
            dst: &mut [A],
            a: A,
            src: &[A],
            stride: usize,
        ) {
            generic::axpy_scattered(dst, a, src, stride)
        }

        /// `generic::dot_conj` with these target features.
        ///
        /// # Safety
        /// The CPU must support the features.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $dot_conj<A: Accumulator>(x: &[A], stride: usize, y: &[A]) -> A {
            generic::dot_conj(x, stride, y)
        }
    };
}

stamp!(
    "avx2,fma",
    axpy_strided_avx2,
    axpy_scattered_avx2,
    dot_conj_avx2
);
stamp!(
    "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma",
    axpy_strided_avx512,
    axpy_scattered_avx512,
    dot_conj_avx512
);

/// The direct band kernel with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn direct_band_avx2<A: Accumulator>(job: &mut Band<'_, A>) {
    direct::band(job)
}

/// The direct band kernel with AVX-512.
///
/// # Safety
/// The CPU must support AVX-512 F/VL/BW/DQ.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_band_avx512<A: Accumulator>(job: &mut Band<'_, A>) {
    direct::band(job)
}

/// The direct weight-gradient kernel with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn direct_weight_avx2<A: Accumulator>(job: &mut WeightJob<'_, A>) {
    direct::weight(job)
}

/// `out[t]` = the sum of the 16 lanes of `sums[t]` in `sum_lanes`'s order (lane `l` takes
/// lane `l + w` for `w` = 8, 4, 2, 1), 16 vectors at a time transposed: each step adds
/// the upper lanes of two vectors' live lanes to their lower ones in one register (the
/// same additions, operands in the same order: the same bits), so that 16 sums take 15
/// adds where one at a time took 60; a last chunk of fewer vectors is padded with zeros.
///
/// # Safety
/// The CPU must support AVX-512 F and DQ.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn lane_sums_f32_avx512(sums: &[[f32; 16]], out: &mut [f32]) {
    // After the four steps, lane `4 * k + j` holds the sum of vector `k + 4 * [0, 2, 1,
    // 3][j]`; `order` picks vector `t`'s for lane `t`.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15);
    for (chunk, out) in sums.chunks(16).zip(out.chunks_mut(16)) {
        // SAFETY (each block): AVX-512 F and DQ are present (this function's contract).
        let v: [__m512; 16] = std::array::from_fn(|t| match chunk.get(t) {
            // SAFETY: see above; `lanes` holds 16 values.
            Some(lanes) => unsafe { _mm512_loadu_ps(lanes.as_ptr()) },
            None => _mm512_setzero_ps(),
        });
        // Width 8: [a_lo + a_hi, b_lo + b_hi] per pair of vectors (128-bit blocks 0-1 of
        // each plus 2-3).
        let eights: [__m512; 8] = std::array::from_fn(|i| {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
            )
        });
        // Width 4: block 0 + block 1 of each vector's 8 lanes, four vectors a register.
        let fours: [__m512; 4] = std::array::from_fn(|i| {
            let (c, d) = (eights[2 * i], eights[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(c, d),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(c, d),
            )
        });
        // Width 2 then 1, within each 128-bit block.
        let twos: [__m512; 2] = std::array::from_fn(|i| {
            let (g, h) = (fours[i], fours[i + 2]);
            _mm512_add_ps(
                _mm512_shuffle_ps::<0b01_00_01_00>(g, h),
                _mm512_shuffle_ps::<0b11_10_11_10>(g, h),
            )
        });
        let ones = _mm512_add_ps(
            _mm512_shuffle_ps::<0b10_00_10_00>(twos[0], twos[1]),
            _mm512_shuffle_ps::<0b11_01_11_01>(twos[0], twos[1]),
        );
        let sums = _mm512_permutexvar_ps(order, ones);
        let live = ((1u32 << out.len()) - 1) as __mmask16;
        // SAFETY: the stored lanes are `out`'s (`live`); AVX-512 F is present.
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), live, sums) };
    }
}

/// The direct weight-gradient kernel with AVX-512.
///
/// # Safety
/// The CPU must support AVX-512 F/VL/BW/DQ.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_weight_avx512<A: Accumulator>(job: &mut WeightJob<'_, A>) {
    direct::weight(job)
}

macro_rules! bf16_conversions {
    ($features:literal, $narrow:ident, $widen:ident) => {
        /// `element::narrow_bf16` compiled with these target features.
        ///
        /// # Safety
        /// The CPU must support the features.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $narrow(wide: &[f32], out: &mut [half::bf16]) {
            crate::element::narrow_bf16_portable(wide, out);
        }

        /// `element::widen_bf16` compiled with these target features.
        ///
        /// # Safety
        /// The CPU must support the features.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $widen(values: &[half::bf16], wide: &mut Vec<f32>) {
            crate::element::widen_bf16_portable(values, wide);
        }
    };
}

bf16_conversions!("avx2,fma", narrow_bf16_avx2, widen_bf16_avx2);
bf16_conversions!(
    "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma",
    narrow_bf16_avx512,
    widen_bf16_avx512
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mask of 8 lanes: loads read the masked lanes only (the others zero), stores
    /// write them only, multiply-adds change them only, and a non-finite lane counts only
    /// where masked.
    #[test]
    fn avx2_masks_act_on_their_lanes_only() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let values: [f32; 8] = std::array::from_fn(|l| l as f32 + 1.0);
        for mask in 0..=u8::MAX {
            let masked = |l: usize| mask >> l & 1 == 1;
            let mut stored = [-1.0f32; 8];
            let mut summed = [0.0f32; 8];
            let mut with_inf = values;
            with_inf[3] = f32::INFINITY;
            // SAFETY: AVX2 and FMA are present (checked above); each pointer holds 8 values.
            let (loaded, finite, finite_inf) = unsafe {
                let m = u16::from(mask);
                let x = Avx2F32::load_where(values.as_ptr(), m);
                Avx2F32::store_where(stored.as_mut_ptr(), x, m);
                let two = Avx2F32::splat(2.0);
                let y = Avx2F32::fmadd_where(two, Avx2F32::load(values.as_ptr()), two, m);
                Avx2F32::store(summed.as_mut_ptr(), y);
                let mut loaded = [0.0f32; 8];
                Avx2F32::store(loaded.as_mut_ptr(), x);
                let inf = Avx2F32::load(with_inf.as_ptr());
                (
                    loaded,
                    Avx2F32::finite_where(x, m),
                    Avx2F32::finite_where(inf, m),
                )
            };
            for l in 0..8 {
                let (v, on) = (values[l], masked(l));
                assert_eq!(
                    loaded[l],
                    if on { v } else { 0.0 },
                    "mask {mask:#x} lane {l}"
                );
                assert_eq!(
                    stored[l],
                    if on { v } else { -1.0 },
                    "mask {mask:#x} lane {l}"
                );
                assert_eq!(
                    summed[l],
                    if on { 2.0 * v + 2.0 } else { 2.0 },
                    "mask {mask:#x}"
                );
            }
            assert!(finite);
            assert_eq!(finite_inf, !masked(3), "mask {mask:#x}");
        }
    }
}
