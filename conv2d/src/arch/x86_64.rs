//! The row kernels compiled with AVX2+FMA and with AVX-512 enabled: the same generic Rust,
//! inlined into functions carrying the target features, so the compiler vectorises it for
//! the wider registers. Callers must have checked the CPU (see `crate::isa`).

use crate::element::Accumulator;
use smallvec::SmallVec;
use std::arch::x86_64::*;

use crate::kernels::direct::{
    self, Band, BandRows, ChannelWeightTile, MaskedTile, PixelTile, PlaneRows, PlaneWeightRows,
    Tile, WeightJob, WeightRows, WeightTile, AVX2_CO, CCO, CO, CTAPS, TILE_PIXELS, WCO, WTAPS,
};
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

/// An AVX-512 register: [`Register`] with lane masks (bit `i` for lane `i`; an 8-lane
/// register reads the low 8 bits).
pub(crate) trait MaskedRegister: Register {
    /// `a * b + c` in the masked lanes, `c` in the others.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F.
    unsafe fn fmadd_where(a: Self, b: Self, c: Self, mask: u16) -> Self;
    /// The masked lanes of `p`, zeros in the others (which are not read).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `p`'s masked lanes are elements.
    unsafe fn load_where(p: *const Self::Elem, mask: u16) -> Self;
    /// Stores the masked lanes only.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `p`'s masked lanes are elements.
    unsafe fn store_where(p: *mut Self::Elem, v: Self, mask: u16);
    /// Whether every masked lane is finite.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and DQ.
    unsafe fn finite_where(v: Self, mask: u16) -> bool;
}

/// `fpclass` categories: quiet NaN, +infinity, -infinity, signalling NaN.
const NOT_FINITE: i32 = 0x01 | 0x08 | 0x10 | 0x80;

macro_rules! masked_register {
    ($reg:ty, $elem:ty, $mask:ty, $fmadd:ident, $load:ident, $store:ident, $class:ident) => {
        impl MaskedRegister for $reg {
            #[target_feature(enable = "avx512f")]
            #[inline]
            unsafe fn fmadd_where(a: Self, b: Self, c: Self, mask: u16) -> Self {
                $fmadd(a, b, c, mask as $mask)
            }
            #[target_feature(enable = "avx512f")]
            #[inline]
            unsafe fn load_where(p: *const $elem, mask: u16) -> Self {
                // SAFETY: the masked lanes of `p` are elements (the caller's contract); the
                // others are not accessed.
                unsafe { $load(mask as $mask, p) }
            }
            #[target_feature(enable = "avx512f")]
            #[inline]
            unsafe fn store_where(p: *mut $elem, v: Self, mask: u16) {
                // SAFETY: as above.
                unsafe { $store(p, mask as $mask, v) }
            }
            #[target_feature(enable = "avx512f,avx512dq")]
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
    _mm512_mask3_fmadd_ps,
    _mm512_maskz_loadu_ps,
    _mm512_mask_storeu_ps,
    _mm512_mask_fpclass_ps_mask
);
masked_register!(
    __m512d,
    f64,
    u8,
    _mm512_mask3_fmadd_pd,
    _mm512_maskz_loadu_pd,
    _mm512_mask_storeu_pd,
    _mm512_mask_fpclass_pd_mask
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

/// The direct tile kernel for `f32` and `f64` with AVX-512: the job's channels (2, 4, 6 or
/// [`CO`]) by 4 vectors of sums in registers (by 3 for [`CO`]: 24 of the 32 registers),
/// the pixel vectors loaded and each channel's weight broadcast per tap; a last run of
/// fewer vectors takes as many.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `Tile::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_tile_avx512<E: TileElement>(job: &mut Tile<'_, E>) {
    match job.channels {
        // SAFETY: this function's contract, which `tile_sweep` shares.
        2 => unsafe { tile_sweep::<E::Zmm, 4, 2>(job) },
        // SAFETY: see above.
        4 => unsafe { tile_sweep::<E::Zmm, 4, 4>(job) },
        // SAFETY: see above.
        6 => unsafe { tile_sweep::<E::Zmm, 4, 6>(job) },
        // SAFETY: see above.
        _ => unsafe { tile_sweep::<E::Zmm, 3, CO>(job) },
    }
}

/// [`direct_tile_avx512`] for `CH` channels, in runs of `VECTORS` registers.
///
/// # Safety
/// As [`direct_tile_avx512`].
#[inline(always)]
unsafe fn tile_sweep<R: Register, const VECTORS: usize, const CH: usize>(
    job: &mut Tile<'_, R::Elem>,
) {
    let (lanes, len) = (R::LANES, job.len);
    let full = len / (VECTORS * lanes) * (VECTORS * lanes);
    let pointers = job.pointers(CH);
    let job = &*job;
    for q in (0..full).step_by(VECTORS * lanes) {
        // SAFETY: `R`'s instructions are present (this function's contract); `q + VECTORS
        // * lanes <= full <= len`; `pointers` are the job's, checked.
        unsafe { tile::<R, VECTORS, CH>(job, pointers, q) };
    }
    // SAFETY (each arm): as above, with `full + lanes * vectors == len` (`len` is a
    // multiple of 16, hence of `lanes`).
    match (len - full) / lanes {
        0 => {}
        // SAFETY: see above.
        1 => unsafe { tile::<R, 1, CH>(job, pointers, full) },
        // SAFETY: see above.
        2 => unsafe { tile::<R, 2, CH>(job, pointers, full) },
        // SAFETY: see above.
        _ => unsafe { tile::<R, 3, CH>(job, pointers, full) },
    }
}

/// The masked tile kernel for `f32` and `f64` with AVX-512: the job's channels (2, 4, 6 or
/// [`CO`]) by 4 vectors of sums in registers (by 3 for [`CO`]), as
/// [`direct_tile_avx512`], the taps swept kernel column by kernel column with that
/// column's lane masks held; a last run of fewer vectors takes as many, and a last partial
/// vector stores only its own lanes. Returns whether every sum stored is finite (checked
/// only when `check`; `true` otherwise).
///
/// # Safety
/// The CPU must support AVX-512 F and DQ (the job's bounds are checked by
/// `MaskedTile::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn masked_tile_avx512<E: TileElement>(
    job: &mut MaskedTile<'_, E>,
    check: bool,
) -> bool {
    match job.tile.channels {
        // SAFETY: this function's contract, which `masked_sweep` shares.
        2 => unsafe { masked_sweep::<E::Zmm, 4, 2>(job, check) },
        // SAFETY: see above.
        4 => unsafe { masked_sweep::<E::Zmm, 4, 4>(job, check) },
        // SAFETY: see above.
        6 => unsafe { masked_sweep::<E::Zmm, 4, 6>(job, check) },
        // SAFETY: see above.
        _ => unsafe { masked_sweep::<E::Zmm, 3, CO>(job, check) },
    }
}

/// [`masked_tile_avx512`] for `CH` channels, in runs of `VECTORS` registers.
///
/// # Safety
/// As [`masked_tile_avx512`].
#[inline(always)]
unsafe fn masked_sweep<R: MaskedRegister, const VECTORS: usize, const CH: usize>(
    job: &mut MaskedTile<'_, R::Elem>,
    check: bool,
) -> bool {
    let lanes = R::LANES;
    let vectors = job.tile.len.div_ceil(lanes);
    let full = vectors / VECTORS * VECTORS * lanes;
    let pointers = job.pointers(lanes, CH);
    let job = &*job;
    let mut finite = true;
    for q in (0..full).step_by(VECTORS * lanes) {
        // SAFETY: AVX-512 F and DQ are present (this function's contract); the run's
        // vectors start below `len`; `pointers` are the job's, checked for `CH` channels.
        finite &= unsafe { masked_tile::<R, VECTORS, CH>(job, pointers, q, check) };
    }
    // SAFETY (each arm): as above, the run's vectors covering `full..len`.
    finite
        & match vectors % VECTORS {
            0 => true,
            // SAFETY: see above.
            1 => unsafe { masked_tile::<R, 1, CH>(job, pointers, full, check) },
            // SAFETY: see above.
            2 => unsafe { masked_tile::<R, 2, CH>(job, pointers, full, check) },
            // SAFETY: see above.
            _ => unsafe { masked_tile::<R, 3, CH>(job, pointers, full, check) },
        }
}

/// One run of `VECTORS` registers of outputs from `q` of the first `CH` channels, for
/// [`masked_tile_avx512`]; lanes at or past the tile's `len` are neither summed nor stored. Whether every stored sum is
/// finite (when `check`).
///
/// # Safety
/// The CPU must support AVX-512 F and DQ; `q + R::LANES * (VECTORS - 1) < len` (the
/// tile's), and `pointers` are the job's, checked by `MaskedTile::pointers` for `CH`
/// channels.
#[inline(always)]
unsafe fn masked_tile<R: MaskedRegister, const VECTORS: usize, const CH: usize>(
    job: &MaskedTile<'_, R::Elem>,
    (slab, rows, outs): (*const R::Elem, [*const R::Elem; CO], [*mut R::Elem; CO]),
    q: usize,
    check: bool,
) -> bool {
    let lanes = R::LANES;
    let (columns, tile) = (job.columns, &job.tile);
    // The lanes of each vector below `len`.
    let inside: [u16; VECTORS] = std::array::from_fn(|v| {
        let left = tile.len - q - lanes * v;
        if left >= lanes {
            u16::MAX
        } else {
            (1 << left) - 1
        }
    });
    // SAFETY: `R`'s instructions are present (this function's contract).
    let zero = unsafe { R::splat(tile.init[0]) };
    let mut acc = [[zero; VECTORS]; CH];
    for (c, acc_c) in acc.iter_mut().enumerate() {
        for (v, a) in acc_c.iter_mut().enumerate() {
            // SAFETY: as above; the masked lanes are inside channel `c`'s `len` sums, as for
            // the stores below.
            *a = unsafe {
                match tile.resume {
                    true => R::load_where(outs[c].add(q + lanes * v), inside[v]),
                    false => R::splat(tile.init[c]),
                }
            };
        }
    }
    if tile.resume {
        // The next run's sums, from L2 (the previous block swept every run), into L1 while
        // this run's taps go: its first multiply-adds would wait on them otherwise
        // (`deeplab_dil2_3x3` 1.02-1.04x, one and two threads). Its vectors span at most
        // one line more than their count; a prefetch never faults, even past a row's end.
        for out in &outs[..CH] {
            for line in 0..=VECTORS {
                let next = out.wrapping_add(q + lanes * (VECTORS + line));
                _mm_prefetch::<_MM_HINT_T0>(next.cast());
            }
        }
    }
    let first = q / lanes;
    for kx in 0..columns {
        let masks: [u16; VECTORS] =
            std::array::from_fn(|v| job.masks[(first + v) * columns + kx] & inside[v]);
        let x0 = slab.wrapping_add(q + job.column_offsets[kx]);
        let w0 = rows.map(|r| r.wrapping_add(kx));
        for (j, &row) in tile.starts.iter().enumerate() {
            // SAFETY: `row + column_offsets[kx] + q + lanes * VECTORS` is within the reach of
            // `len` rounded up to whole vectors, inside the slab; every channel's row holds
            // `starts.len() * columns` weights (`pointers` checked both).
            unsafe {
                let x = x0.add(row);
                let xs: [R; VECTORS] = std::array::from_fn(|v| R::load(x.add(lanes * v)));
                for (acc_c, w) in acc.iter_mut().zip(w0) {
                    let wc = R::splat(*w.add(j * columns));
                    for ((a, &xv), &m) in acc_c.iter_mut().zip(&xs).zip(&masks) {
                        *a = R::fmadd_where(wc, xv, *a, m);
                    }
                }
            }
        }
    }
    let mut finite = true;
    for (c, acc_c) in acc.iter().enumerate() {
        for (v, &a) in acc_c.iter().enumerate() {
            // SAFETY: the masked lanes are inside channel `c`'s `len` sums (`pointers`
            // checked it).
            unsafe {
                R::store_where(outs[c].add(q + lanes * v), a, inside[v]);
                if check {
                    finite &= R::finite_where(a, inside[v]);
                }
            }
        }
    }
    finite
}

/// `partial[c * 16 + l] += sum over t with t % lanes == l of weights[rows[c] + t] *
/// column[t]` for the [`CO`] channels `c` and the lanes `l` of a register, `f32` or `f64`,
/// with AVX-512: each channel's partial sums in a register, each column vector loaded once
/// for all channels (the last masked to the column's length).
///
/// # Safety
/// The CPU must support AVX-512 F and DQ (the bounds are checked: panics if a weight row
/// `rows[c]..rows[c] + column.len()` is not inside `weights` or `partial` holds fewer than
/// `16 * CO` values).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn dot_rows_avx512<E: TileElement>(
    weights: &[E],
    rows: &[usize; CO],
    column: &[E],
    partial: &mut [E],
) {
    let (lanes, len) = (E::Zmm::LANES, column.len());
    assert!(rows.iter().all(|&r| r + len <= weights.len()) && partial.len() >= 16 * CO);
    let w = rows.map(|r| weights[r..].as_ptr());
    // SAFETY: channel `c`'s partial sums are `partial[16 * c..][..lanes]`, inside (checked).
    let mut acc: [E::Zmm; CO] =
        std::array::from_fn(|c| unsafe { E::Zmm::load(partial.as_ptr().add(16 * c)) });
    for t in (0..len).step_by(lanes) {
        let mask = match len - t >= lanes {
            true => u16::MAX,
            false => (1 << (len - t)) - 1,
        };
        // SAFETY: the lanes loaded are below `len` (the mask): inside the column and every
        // weight row (checked above).
        unsafe {
            let x = E::Zmm::load_where(column.as_ptr().add(t), mask);
            for (a, w) in acc.iter_mut().zip(w) {
                *a = E::Zmm::fmadd_where(E::Zmm::load_where(w.add(t), mask), x, *a, mask);
            }
        }
    }
    for (c, a) in acc.into_iter().enumerate() {
        // SAFETY: as for the loads above.
        unsafe { E::Zmm::store(partial.as_mut_ptr().add(16 * c), a) };
    }
}

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
/// `e` of each lane of rows `4q..4q + 4`.
///
/// # Safety
/// The CPU must support `R`'s instructions.
#[inline(always)]
unsafe fn lane_quads<R: LaneQuads, const N: usize>(r: [R; N]) -> [R; N] {
    // t[2i], t[2i + 1]: elements 0-1 and 2-3 (of each lane) of rows 2i, 2i + 1 interleaved.
    let t: [R; N] = std::array::from_fn(|i| {
        // SAFETY: `R`'s instructions are present (this function's contract).
        unsafe {
            match i % 2 {
                0 => R::unpack_low(r[i], r[i + 1]),
                _ => R::unpack_high(r[i - 1], r[i]),
            }
        }
    });
    std::array::from_fn(|i| {
        let (q, e) = (i / 4, i % 4);
        let (a, b) = (t[4 * q + e / 2], t[4 * q + 2 + e / 2]);
        // SAFETY: as above.
        unsafe {
            match e % 2 {
                0 => R::pairs::<false>(a, b),
                _ => R::pairs::<true>(a, b),
            }
        }
    })
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
        let u = unsafe { lane_quads(r) };
        // v[8h + 4o + e]: lanes 0 and 2 (o = 0) or 1 and 3 (o = 1) of quads 2h and 2h + 1.
        let v: [__m512; 16] = std::array::from_fn(|i| {
            let (h, o, e) = (i / 8, (i / 4) % 2, i % 4);
            let (a, b) = (u[8 * h + e], u[8 * h + 4 + e]);
            match o {
                0 => _mm512_shuffle_f32x4::<0x88>(a, b),
                _ => _mm512_shuffle_f32x4::<0xDD>(a, b),
            }
        });
        for (j, out) in outs.iter().enumerate() {
            let (a, b) = (v[j % 8], v[8 + j % 8]);
            let column = match j / 8 {
                0 => _mm512_shuffle_f32x4::<0x88>(a, b),
                _ => _mm512_shuffle_f32x4::<0xDD>(a, b),
            };
            // SAFETY: every output row holds `starts.len() >= p0 + 16` values (checked).
            unsafe { _mm512_storeu_ps(out.add(p0), column) };
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
            let u = unsafe { lane_quads(r) };
            for (j, out) in outs[j0..j0 + 8].iter().enumerate() {
                // Column j: element j % 4 of lane j / 4 of rows 0-3, then of rows 4-7.
                let (a, b) = (u[j % 4], u[4 + j % 4]);
                let column = match j / 4 {
                    0 => _mm256_permute2f128_ps::<0x20>(a, b),
                    _ => _mm256_permute2f128_ps::<0x31>(a, b),
                };
                // SAFETY: every output row holds `starts.len() >= p0 + 8` values (checked).
                unsafe { _mm256_storeu_ps(out.add(p0), column) };
            }
        }
    }
}

/// The direct tile kernel for `f32` and `f64` with AVX2 and FMA: [`AVX2_CO`] x 2 vectors of
/// sums in 12 of the 16 registers, two pixel vectors loaded and each channel's weight
/// broadcast per tap (15 registers: a wider tile spills a sum to the stack, whose store and
/// reload then chain every tap).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `Tile::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn direct_tile_avx2<E: TileElement>(job: &mut Tile<'_, E>) {
    let step = 2 * E::Ymm::LANES;
    let pointers = job.pointers(AVX2_CO);
    let job = &*job;
    for q in (0..job.len).step_by(step) {
        // SAFETY: AVX2 and FMA are present (this function's contract); `q + step <= len`
        // (`pointers` checked that `len` is a multiple of 16, hence of `step`: 16 `f32` or
        // 8 `f64`); `pointers` are the job's, checked.
        unsafe { tile::<E::Ymm, 2, AVX2_CO>(job, pointers, q) };
    }
}

/// The first `CH` channels (at most [`CO`]) of one run of `VECTORS` registers of outputs
/// from `q`, for [`direct_tile_avx512`] and [`direct_tile_avx2`]: the sums in registers,
/// each tap's pixel vectors loaded once and each channel's weight broadcast.
///
/// # Safety
/// The CPU must support `R`'s instructions; `q + R::LANES * VECTORS <= job.len`, and
/// `pointers` are the job's, checked by `Tile::pointers` for `CH` channels.
#[inline(always)]
unsafe fn tile<R: Register, const VECTORS: usize, const CH: usize>(
    job: &Tile<'_, R::Elem>,
    (slab, rows, outs): (*const R::Elem, [*const R::Elem; CO], [*mut R::Elem; CO]),
    q: usize,
) {
    let lanes = R::LANES;
    // SAFETY: `R`'s instructions are present (this function's contract).
    let first = unsafe { R::splat(job.init[0]) };
    let mut acc = [[first; VECTORS]; CH];
    for (c, acc_c) in acc.iter_mut().enumerate() {
        for (v, a) in acc_c.iter_mut().enumerate() {
            // SAFETY: as above; the load is inside channel `c`'s sums, as for the stores
            // below.
            *a = unsafe {
                match job.resume {
                    true => R::load(outs[c].add(q + lanes * v)),
                    false => R::splat(job.init[c]),
                }
            };
        }
    }
    for (t, &start) in job.starts.iter().enumerate() {
        // SAFETY: `start + q + lanes * VECTORS <= start + len <= slab.len()`, and every
        // row holds a weight for tap `t` (`pointers` checked both).
        unsafe {
            let x = slab.add(start + q);
            let xs: [R; VECTORS] = std::array::from_fn(|v| R::load(x.add(lanes * v)));
            for (c, acc_c) in acc.iter_mut().enumerate() {
                let wc = R::splat(*rows[c].add(t));
                for (a, &xv) in acc_c.iter_mut().zip(&xs) {
                    *a = R::fmadd(wc, xv, *a);
                }
            }
        }
    }
    for (c, acc_c) in acc.iter().enumerate() {
        for (v, &a) in acc_c.iter().enumerate() {
            // SAFETY: `q + lanes * (v + 1) <= len`, and channel `c`'s sums hold `len` values
            // (`pointers` checked it).
            unsafe { R::store(outs[c].add(q + lanes * v), a) };
        }
    }
}

/// The tiled weight-gradient kernel for `f32` with AVX-512: per tile of [`WTAPS`] taps,
/// [`WCO`] x [`WTAPS`] vectors of partial sums, per 16 outputs four output-gradient vectors
/// and six input windows loaded.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `WeightTile::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_weight_tile_f32_avx512(job: &mut WeightTile<'_, f32>) {
    let len = job.len;
    let (slab, grad_out) = job.pointers();
    for t0 in (0..job.starts.len()).step_by(WTAPS) {
        let starts = job.tile_starts(t0);
        // SAFETY: AVX-512 F is present (this function's contract); every window and row
        // holds `len` values, which `pointers` checked.
        let sums = unsafe { weight_tile_avx512(slab, grad_out, &starts, len) };
        job.add(t0, &sums);
    }
}

/// The [`WCO`] x [`WTAPS`] dot products of one tap tile over `len` outputs.
///
/// # Safety
/// The CPU must support AVX-512 F; `slab[start..start + len]` for every start and
/// `grad_out[..WCO * len]` must be readable; `len` a multiple of 16.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn weight_tile_avx512(
    slab: *const f32,
    grad_out: *const f32,
    starts: &[usize; WTAPS],
    len: usize,
) -> [[f32; WTAPS]; WCO] {
    let mut acc = [[_mm512_setzero_ps(); WTAPS]; WCO];
    for q in (0..len).step_by(16) {
        // SAFETY: `q + 16 <= len`: inside a window or a row (this function's contract).
        unsafe {
            let mut ys = [_mm512_setzero_ps(); WCO];
            for (c, y) in ys.iter_mut().enumerate() {
                *y = _mm512_loadu_ps(grad_out.add(c * len + q));
            }
            for t in 0..WTAPS {
                let x = _mm512_loadu_ps(slab.add(starts[t] + q));
                for c in 0..WCO {
                    acc[c][t] = _mm512_fmadd_ps(ys[c], x, acc[c][t]);
                }
            }
        }
    }
    let mut sums = [[0.0f32; WTAPS]; WCO];
    for c in 0..WCO {
        for t in 0..WTAPS {
            sums[c][t] = _mm512_reduce_add_ps(acc[c][t]);
        }
    }
    sums
}

/// The tiled weight-gradient kernel for `f32` with AVX2 and FMA: as the AVX-512 one, in two
/// sweeps of half the channels (12 vectors of sums of the 16 registers).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `WeightTile::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn direct_weight_tile_f32_avx2(job: &mut WeightTile<'_, f32>) {
    const HALF: usize = WCO / 2;
    let len = job.len;
    let (slab, grad_out) = job.pointers();
    for t0 in (0..job.starts.len()).step_by(WTAPS) {
        let starts = job.tile_starts(t0);
        let mut sums = [[0.0f32; WTAPS]; WCO];
        for c0 in [0, HALF] {
            let mut acc = [[_mm256_setzero_ps(); WTAPS]; HALF];
            for q in (0..len).step_by(8) {
                // SAFETY: `q + 8 <= len` (`len` is a multiple of 16), so every load is inside
                // a tap's window or a channel's row, which `pointers` checked.
                unsafe {
                    let mut ys = [_mm256_setzero_ps(); HALF];
                    for (c, y) in ys.iter_mut().enumerate() {
                        *y = _mm256_loadu_ps(grad_out.add((c0 + c) * len + q));
                    }
                    // Constant trip counts: unrolled, so the sums stay in registers.
                    for t in 0..WTAPS {
                        let x = _mm256_loadu_ps(slab.add(starts[t] + q));
                        for c in 0..HALF {
                            acc[c][t] = _mm256_fmadd_ps(ys[c], x, acc[c][t]);
                        }
                    }
                }
            }
            for c in 0..HALF {
                for t in 0..WTAPS {
                    let mut lanes = [0.0f32; 8];
                    // SAFETY: `lanes` holds 8 floats.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[c][t]) };
                    sums[c0 + c][t] = lanes.iter().sum();
                }
            }
        }
        job.add(t0, &sums);
    }
}

/// The channel-vectorised weight-gradient kernel for `f32` with AVX-512: [`CTAPS`] taps x
/// 4 vectors of 16 output channels of sums (24 registers); per output pixel four
/// output-gradient vectors loaded and each tap's input value broadcast.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by
/// `ChannelWeightTile::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn channel_weight_tile_f32_avx512(job: &mut ChannelWeightTile<'_>) {
    const V: usize = CCO / 16;
    let (rows, width, row_step, pitch) = (job.rows, job.width, job.row_step, job.pitch);
    let (windows, grad_out, sums) = job.pointers();
    let mut acc = [[_mm512_setzero_ps(); V]; CTAPS];
    // SAFETY: AVX-512 F is present (this function's contract); `sums` holds CTAPS x CCO
    // values, output-gradient pixel `r * width + x` CCO values from its `pitch` multiple,
    // and every window `(rows - 1) * row_step + width` values (`pointers` checked all
    // three).
    unsafe {
        if job.resume {
            for (j, acc_j) in acc.iter_mut().enumerate() {
                for (v, a) in acc_j.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(sums.add(j * CCO + 16 * v));
                }
            }
        }
        for r in 0..rows {
            let row = grad_out.add(r * width * pitch);
            let inputs = windows.map(|w| w.add(r * row_step));
            for x in 0..width {
                let ys: [__m512; V] =
                    std::array::from_fn(|v| _mm512_loadu_ps(row.add(x * pitch + 16 * v)));
                for (acc_j, input) in acc.iter_mut().zip(inputs) {
                    let x = _mm512_set1_ps(*input.add(x));
                    for (a, &y) in acc_j.iter_mut().zip(&ys) {
                        *a = _mm512_fmadd_ps(y, x, *a);
                    }
                }
            }
        }
        for (j, acc_j) in acc.iter().enumerate() {
            for (v, &a) in acc_j.iter().enumerate() {
                _mm512_storeu_ps(sums.add(j * CCO + 16 * v), a);
            }
        }
    }
}

/// The channel-vectorised weight-gradient kernel for `f32` with AVX2 and FMA: as the
/// AVX-512 one, in four sweeps of 16 channels (2 vectors of 8 x [`CTAPS`] taps, 12 of
/// the 16 registers).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by
/// `ChannelWeightTile::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn channel_weight_tile_f32_avx2(job: &mut ChannelWeightTile<'_>) {
    let (rows, width, row_step, pitch) = (job.rows, job.width, job.row_step, job.pitch);
    let (windows, grad_out, sums) = job.pointers();
    for c0 in (0..CCO).step_by(16) {
        let mut acc = [[_mm256_setzero_ps(); 2]; CTAPS];
        // SAFETY: AVX2 and FMA are present (this function's contract); `c0 + 16 <= CCO`,
        // so every access is inside what `pointers` checked (as in the AVX-512 kernel).
        unsafe {
            if job.resume {
                for (j, acc_j) in acc.iter_mut().enumerate() {
                    for (v, a) in acc_j.iter_mut().enumerate() {
                        *a = _mm256_loadu_ps(sums.add(j * CCO + c0 + 8 * v));
                    }
                }
            }
            for r in 0..rows {
                let row = grad_out.add(r * width * pitch + c0);
                let inputs = windows.map(|w| w.add(r * row_step));
                for x in 0..width {
                    let at = row.add(x * pitch);
                    let ys = [_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8))];
                    for (acc_j, input) in acc.iter_mut().zip(inputs) {
                        let x = _mm256_set1_ps(*input.add(x));
                        for (a, &y) in acc_j.iter_mut().zip(&ys) {
                            *a = _mm256_fmadd_ps(y, x, *a);
                        }
                    }
                }
            }
            for (j, acc_j) in acc.iter().enumerate() {
                for (v, &a) in acc_j.iter().enumerate() {
                    _mm256_storeu_ps(sums.add(j * CCO + c0 + 8 * v), a);
                }
            }
        }
    }
}

/// The lanes of 16 values from column `c` of a row `w` long that lie in `0..w`.
#[inline(always)]
fn lanes_inside(c: isize, w: isize) -> __mmask16 {
    let (lo, hi) = ((-c).clamp(0, 16), (w - c).clamp(0, 16));
    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
}

/// The 3x3 depthwise kernels for `f32` with AVX-512 reading the input plane as it is (see
/// `kernels::direct::in_place`): [`rows_sweep_3x3`] for stride 1, [`strided_rows_3x3`]
/// for stride 2.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `PlaneRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn plane_rows_3x3_f32_avx512(job: &mut PlaneRows<'_>) {
    if job.stride == 2 {
        // SAFETY: AVX-512 F is present (this function's contract).
        unsafe { strided_rows_3x3(job) };
        return;
    }
    let (plane, out, rows) = job.pointers();
    let (h, w, ow) = (job.h as isize, job.w as isize, job.ow);
    let (pad_left, row0) = (
        job.pad_left as isize,
        job.oy0 as isize - job.pad_top as isize,
    );
    // Per output vector (as the sweep places them, the last overlapping the one before)
    // and kernel column: the lanes of its window inside the row.
    let masks = window_masks(ow, pad_left, w, |v| row_vector_start(v, ow));
    let windows = PlaneRowWindows {
        plane,
        h,
        w,
        row0,
        pad_left,
        masks: &masks,
    };
    // SAFETY: nine taps (the job's type), `rows` rows of `ow` outputs (`pointers`);
    // `windows` reads only inside the plane.
    unsafe { rows_sweep_3x3(out, rows, ow, job.init, job.taps.as_ptr(), &windows) };
}

/// Output vectors of 8 per strip of [`plane_strip_3x3_avx2`] at most: nine sums, three
/// windows and a weight in 13 of the 16 registers (fewer vectors leave the chains of three
/// fused multiply-adds per sum and input row waiting on their latency).
const AVX2_STRIP: usize = 3;

/// [`plane_rows_3x3_f32_avx512`]'s stride-1 kernel with AVX2 and FMA: strips of up to
/// [`AVX2_STRIP`] vectors of 8 outputs (the last vector of a row overlapping the one
/// before), input row after row, each row's windows loaded once and fused into the sums of
/// the three output rows that read them, the weights broadcast from memory; the lanes of a
/// window outside the image loaded as zeros, rows outside it all zeros. Every output sums
/// its taps in kernel-row order (same bits as the AVX-512 kernel and `direct`'s rows).
///
/// Stride 2: [`strided_rows_3x3_avx2`].
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `PlaneRows::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn plane_rows_3x3_f32_avx2(job: &mut PlaneRows<'_>) {
    if job.stride == 2 {
        // SAFETY: AVX2 and FMA are present (this function's contract).
        unsafe { strided_rows_3x3_avx2(job) };
        return;
    }
    let (plane, out, rows) = job.pointers();
    let ow = job.ow;
    let (h, w, pad_left) = (job.h as isize, job.w as isize, job.pad_left as isize);
    let windows = Avx2PlaneWindows {
        plane,
        h,
        w,
        row0: job.oy0 as isize - job.pad_top as isize,
        pad_left,
    };
    let (init, taps) = (job.init, job.taps.as_ptr());
    let start = |v: usize| (8 * v).min(ow.saturating_sub(8));
    for (first, count, interior) in strips(ow, AVX2_STRIP, |v| windows.interior(start(v))) {
        let strip = (out, rows, ow, init, taps, first);
        // SAFETY: AVX2 and FMA are present (this function's contract); nine taps (the
        // job's type), `rows` rows of `ow` outputs (`pointers`), `first + count` vectors of
        // the row at most, `interior` as `windows.interior` says.
        unsafe {
            match (count, interior, ow < 8) {
                (1, _, true) => plane_strip_3x3_avx2::<1, false, true>(strip, &windows),
                (1, false, false) => plane_strip_3x3_avx2::<1, false, false>(strip, &windows),
                (1, true, false) => plane_strip_3x3_avx2::<1, true, false>(strip, &windows),
                (2, false, _) => plane_strip_3x3_avx2::<2, false, false>(strip, &windows),
                (2, true, _) => plane_strip_3x3_avx2::<2, true, false>(strip, &windows),
                (_, false, _) => plane_strip_3x3_avx2::<AVX2_STRIP, false, false>(strip, &windows),
                (_, true, _) => plane_strip_3x3_avx2::<AVX2_STRIP, true, false>(strip, &windows),
            }
        }
    }
}

/// The strips of at most `len` vectors of 8 of a row of `ow` outputs, as `(first, count,
/// interior)`: the vectors before the first whose windows lie inside the row (`interior`,
/// true for a contiguous run of vectors), that run, then those after it, so that only the
/// row's edge vectors load their windows with masks.
fn strips(
    ow: usize,
    len: usize,
    interior: impl Fn(usize) -> bool,
) -> impl Iterator<Item = (usize, usize, bool)> {
    let vectors = ow.div_ceil(8);
    let lo = (0..vectors).find(|&v| interior(v)).unwrap_or(vectors);
    let hi = (lo..vectors).find(|&v| !interior(v)).unwrap_or(vectors);
    [(0, lo, false), (lo, hi, true), (hi, vectors, false)]
        .into_iter()
        .flat_map(move |(a, b, inside)| {
            (a..b)
                .step_by(len)
                .map(move |f| (f, (b - f).min(len), inside))
        })
}

/// Output vectors of 8 per strip of [`strided_strip_3x3_avx2`] at most: four chains of
/// nine fused multiply-adds in flight.
const AVX2_STRIDED_STRIP: usize = 4;

/// The stride-2 kernel of [`plane_rows_3x3_f32_avx2`]: per output row and strip of up to
/// [`AVX2_STRIDED_STRIP`] vectors of 8 outputs, each kernel row's input row read as 16
/// columns from the vector's first window (its even and odd columns picked by shuffles:
/// kernel columns 0 and 1) and 16 from two columns further (their even ones: kernel column
/// 2), the lanes outside the image loaded as zeros, a row outside it all zeros. Every output
/// sums its taps in kernel-row order from the bias, as `direct`'s rows do (same bits).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `PlaneRows::pointers`;
/// panics if the job's stride is not 2).
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn strided_rows_3x3_avx2(job: &mut PlaneRows<'_>) {
    let (plane, out, rows) = job.pointers();
    assert!(job.stride == 2);
    let ow = job.ow;
    let windows = Avx2PlaneWindows {
        plane,
        h: job.h as isize,
        w: job.w as isize,
        row0: 2 * job.oy0 as isize - job.pad_top as isize,
        pad_left: job.pad_left as isize,
    };
    let (init, taps) = (job.init, job.taps.as_ptr());
    let start = |v: usize| (8 * v).min(ow.saturating_sub(8));
    // Every window of a vector from `o` inside the row: from column `2 * o - pad_left`, 18
    // columns (two vectors of 8, and two more for kernel column 2).
    let interior = |v: usize| {
        let column = 2 * start(v) as isize - windows.pad_left;
        column >= 0 && column + 18 <= windows.w
    };
    for (first, count, interior) in strips(ow, AVX2_STRIDED_STRIP, interior) {
        let strip = (out, rows, ow, init, taps, first);
        // SAFETY: AVX2 and FMA are present (this function's contract); nine taps (the
        // job's type), `rows` rows of `ow` outputs (`pointers`), `first + count` vectors of
        // the row at most, `interior` as checked above.
        unsafe {
            match (count, interior, ow < 8) {
                (1, _, true) => strided_strip_3x3_avx2::<1, false, true>(strip, &windows),
                (1, i, false) => match i {
                    true => strided_strip_3x3_avx2::<1, true, false>(strip, &windows),
                    false => strided_strip_3x3_avx2::<1, false, false>(strip, &windows),
                },
                (2, i, _) => match i {
                    true => strided_strip_3x3_avx2::<2, true, false>(strip, &windows),
                    false => strided_strip_3x3_avx2::<2, false, false>(strip, &windows),
                },
                (3, i, _) => match i {
                    true => strided_strip_3x3_avx2::<3, true, false>(strip, &windows),
                    false => strided_strip_3x3_avx2::<3, false, false>(strip, &windows),
                },
                (_, i, _) => match i {
                    true => strided_strip_3x3_avx2::<4, true, false>(strip, &windows),
                    false => strided_strip_3x3_avx2::<4, false, false>(strip, &windows),
                },
            }
        }
    }
}

/// The even and odd elements of the 16 values `a`, `b`, each in order.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn even_odd(a: __m256, b: __m256) -> (__m256, __m256) {
    // In-lane picks give [0 2 8 10 | 4 6 12 14]; the 64-bit permute puts them in order.
    let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v)));
    (
        order(_mm256_shuffle_ps::<0x88>(a, b)),
        order(_mm256_shuffle_ps::<0xDD>(a, b)),
    )
}

/// `VECTORS` vectors of 8 outputs from vector `first` of every output row of
/// [`strided_rows_3x3_avx2`]; `INTERIOR` strips' windows all lie inside the rows; `NARROW`
/// rows of fewer than 8 outputs store only their own lanes.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `taps` holds nine weights, `out` `rows` rows of `ow`
/// outputs, `first + VECTORS` vectors are the row's at most, `INTERIOR` only where the 18
/// columns from `2 * o - pad_left` of every vector from `o` lie in the row, and `NARROW`
/// exactly when `ow < 8`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn strided_strip_3x3_avx2<const VECTORS: usize, const INTERIOR: bool, const NARROW: bool>(
    (out, rows, ow, init, taps, first): (*mut f32, usize, usize, f32, *const f32, usize),
    windows: &Avx2PlaneWindows,
) {
    let o: [usize; VECTORS] = std::array::from_fn(|v| (8 * (first + v)).min(ow.saturating_sub(8)));
    // A row of fewer than 8 outputs (`NARROW`) stores its `ow` lanes only.
    let live = lanes_between(0, ow as isize);
    for r in 0..rows {
        let mut acc = [_mm256_set1_ps(init); VECTORS];
        for ky in 0..3 {
            // SAFETY: `3 * ky + kx < 9` weights (this function's contract).
            let w: [__m256; 3] =
                std::array::from_fn(|kx| _mm256_broadcast_ss(unsafe { &*taps.add(3 * ky + kx) }));
            let mut xs = [[_mm256_setzero_ps(); 3]; VECTORS];
            if let Some(row) = windows.row(2 * r + ky) {
                for (x, &ov) in xs.iter_mut().zip(&o) {
                    // SAFETY: AVX2 is present; the four loads read columns `2 * ov -
                    // pad_left..` up to 18 further, inside the row where `INTERIOR` (this
                    // function's contract), else masked to those inside; `row` is
                    // `windows.row`'s.
                    unsafe {
                        let (even, odd) = even_odd(
                            windows.window::<INTERIOR>(row, 2 * ov, 0),
                            windows.window::<INTERIOR>(row, 2 * ov + 8, 0),
                        );
                        let (shifted, _) = even_odd(
                            windows.window::<INTERIOR>(row, 2 * ov + 2, 0),
                            windows.window::<INTERIOR>(row, 2 * ov + 10, 0),
                        );
                        *x = [even, odd, shifted];
                    }
                }
            }
            for (a, x) in acc.iter_mut().zip(&xs) {
                for (&wv, &xv) in w.iter().zip(x) {
                    *a = _mm256_fmadd_ps(wv, xv, *a);
                }
            }
        }
        for (a, &ov) in acc.iter().zip(&o) {
            let at = out.wrapping_add(r * ow + ov);
            // SAFETY: `r * ow + o[v] + min(8, ow) <= rows * ow`, the output's length; a row
            // of fewer than 8 (`NARROW`) stores `ow` lanes.
            unsafe {
                if NARROW {
                    _mm256_maskstore_ps(at, live, *a)
                } else {
                    _mm256_storeu_ps(at, *a)
                }
            };
        }
    }
}

/// The mask of the lanes `l` of an 8-lane vector with `lo <= l < hi` (bounds clamped to
/// `0..=8`, so that any `isize` is safe to pass).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn lanes_between(lo: isize, hi: isize) -> __m256i {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let bound = |b: isize| _mm256_set1_epi32(b.clamp(0, 8) as i32);
    _mm256_andnot_si256(
        _mm256_cmpgt_epi32(bound(lo), lane),
        _mm256_cmpgt_epi32(bound(hi), lane),
    )
}

/// The windows of [`plane_rows_3x3_f32_avx2`]: padded row `j` is image row `row0 + j`
/// (zeros outside the image), a window's lanes outside the row masked to zero.
struct Avx2PlaneWindows {
    plane: *const f32,
    h: isize,
    w: isize,
    row0: isize,
    pad_left: isize,
}

impl Avx2PlaneWindows {
    /// Padded row `j`'s first column (column `-pad_left`, not read as such) if it is an
    /// image row.
    #[inline(always)]
    fn row(&self, j: usize) -> Option<*const f32> {
        let iy = self.row0 + j as isize;
        (0..self.h)
            .contains(&iy)
            .then(|| self.plane.wrapping_offset(iy * self.w - self.pad_left))
    }

    /// Whether every window of the output vector from `o` lies inside the row.
    #[inline(always)]
    fn interior(&self, o: usize) -> bool {
        let column = o as isize - self.pad_left;
        column >= 0 && column + 10 <= self.w
    }

    /// Kernel column `kx`'s window of `row` (from [`row`](Self::row)) for the output
    /// vector from `o`: a plain load where `INTERIOR` (the vector is
    /// [`interior`](Self::interior)), else with the lanes outside the row masked to zero.
    ///
    /// # Safety
    /// The CPU must support AVX2; `row` is one of [`row`](Self::row)'s.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn window<const INTERIOR: bool>(&self, row: *const f32, o: usize, kx: usize) -> __m256 {
        let at = row.wrapping_add(o + kx);
        if INTERIOR {
            // SAFETY: columns `o + kx - pad_left..` up to 8 further lie in `0..w`
            // (`interior`) of an image row: inside the plane, which holds `h * w` values
            // (the job's `pointers` checked).
            return unsafe { _mm256_loadu_ps(at) };
        }
        // The lanes whose column `o + kx - pad_left + l` lies in `0..w`.
        let column = (o + kx) as isize - self.pad_left;
        let lanes = lanes_between(-column, self.w - column);
        // SAFETY: only those lanes are read (masked loads touch no other lane): inside the
        // plane (as above).
        unsafe { _mm256_maskload_ps(at, lanes) }
    }
}

/// `VECTORS` vectors of 8 outputs from vector `first` of every output row of
/// [`plane_rows_3x3_f32_avx2`] (as [`rows_strip_3x3`] does with 16); `INTERIOR` strips'
/// windows all lie inside the rows; `NARROW` rows of fewer than 8 outputs store only their
/// own lanes.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `taps` holds nine weights, `out` `rows` rows of `ow`
/// outputs, `first + VECTORS` vectors are the row's at most, `INTERIOR` only where every
/// vector of the strip is [`interior`](Avx2PlaneWindows::interior), and `NARROW` exactly
/// when `ow < 8`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn plane_strip_3x3_avx2<const VECTORS: usize, const INTERIOR: bool, const NARROW: bool>(
    (out, rows, ow, init, taps, first): (*mut f32, usize, usize, f32, *const f32, usize),
    windows: &Avx2PlaneWindows,
) {
    let init = [_mm256_set1_ps(init); VECTORS];
    let o: [usize; VECTORS] = std::array::from_fn(|v| (8 * (first + v)).min(ow.saturating_sub(8)));
    // A row of fewer than 8 outputs (`NARROW`) stores its `ow` lanes only.
    let live = lanes_between(0, ow as isize);
    // The sums of output rows j - 2, j - 1 and j (kernel rows 2, 1 and 0 read input row
    // j); rows outside 0..rows are summed and dropped.
    let mut acc = [init; 3];
    for j in 0..rows + 2 {
        let row = windows.row(j);
        for kx in 0..3 {
            let mut xs = [_mm256_setzero_ps(); VECTORS];
            if let Some(row) = row {
                for (x, &ov) in xs.iter_mut().zip(&o) {
                    // SAFETY: AVX2 is present and `INTERIOR` as `interior` says (this
                    // function's contract); `row` is `windows.row`'s.
                    *x = unsafe { windows.window::<INTERIOR>(row, ov, kx) };
                }
            }
            for (ky, acc_row) in acc.iter_mut().rev().enumerate() {
                // SAFETY: `3 * ky + kx < 9` weights (this function's contract).
                let wv = _mm256_broadcast_ss(unsafe { &*taps.add(3 * ky + kx) });
                for (a, &xv) in acc_row.iter_mut().zip(&xs) {
                    *a = _mm256_fmadd_ps(wv, xv, *a);
                }
            }
        }
        if j >= 2 {
            for (a, &ov) in acc[0].iter().zip(&o) {
                let at = out.wrapping_add((j - 2) * ow + ov);
                // SAFETY: `(j - 2) * ow + o[v] + min(8, ow) <= rows * ow`, the output's
                // length; a row of fewer than 8 (`NARROW`) stores `ow` lanes.
                unsafe {
                    if NARROW {
                        _mm256_maskstore_ps(at, live, *a)
                    } else {
                        _mm256_storeu_ps(at, *a)
                    }
                };
            }
        }
        acc = [acc[1], acc[2], init];
    }
}

/// [`plane_rows_3x3_f32_avx512`] with stride 1 for a whole output plane whose rows are as
/// wide as the input's (`kernels::direct::in_place::flat_masks`): the outputs taken as one
/// flat run of `oh * ow` pixels, 16 a vector, so that tap `t` of output `p` reads input
/// element `p + offset(t)` of the plane as it is, the lanes whose input lies outside the
/// image (`masks`: per vector, one per tap) loaded as zeros. Each output sums its taps in
/// kernel-row order from `init`, as the row kernel does (same bits).
///
/// # Safety
/// The CPU must support AVX-512 F; `masks` must clear every lane whose input is outside
/// the plane (the other bounds are checked here and by `PlaneRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn flat_rows_3x3_f32_avx512(job: &mut PlaneRows<'_>, masks: &[u16]) {
    let (plane, out, rows) = job.pointers();
    let pixels = rows * job.ow;
    let vectors = pixels.div_ceil(16);
    assert!(job.stride == 1 && job.oy0 == 0 && job.ow == job.w && masks.len() >= 9 * vectors);
    let offsets = flat_offsets(job.w, job.pad_top, job.pad_left);
    let taps: [__m512; 9] = std::array::from_fn(|t| _mm512_set1_ps(job.taps[t]));
    for (v, masks) in masks.chunks_exact(9).take(vectors).enumerate() {
        let p = 16 * v;
        // SAFETY: each tap's lanes are those `masks` keep, inside the plane (this function's
        // contract), masked loads touching no other lane; the stored lanes are below
        // `pixels`, inside the output rows (`pointers`).
        unsafe {
            let mut acc = _mm512_set1_ps(job.init);
            for ((&m, offset), w) in masks.iter().zip(offsets).zip(taps) {
                let x = _mm512_maskz_loadu_ps(m, plane.wrapping_offset(p as isize + offset));
                acc = _mm512_fmadd_ps(w, x, acc);
            }
            _mm512_mask_storeu_ps(out.add(p), live_lanes(pixels - p), acc);
        }
    }
}

/// Per tap `t` (kernel row `t / 3`, column `t % 3`) of a 3x3 stride-1 kernel on a plane of
/// width `w` as wide as its output rows: how far from output `p`'s index its input lies.
fn flat_offsets(w: usize, pad_top: usize, pad_left: usize) -> [isize; 9] {
    let (w, pad_top, pad_left) = (w as isize, pad_top as isize, pad_left as isize);
    std::array::from_fn(|t| ((t / 3) as isize - pad_top) * w + (t % 3) as isize - pad_left)
}

/// The lanes of a vector with `left` elements from its first to the end (all 16 if more).
fn live_lanes(left: usize) -> __mmask16 {
    match left {
        left if left >= 16 => !0,
        left => ((1u32 << left) - 1) as __mmask16,
    }
}

/// The windows a stacked 3x3 row kernel ([`rows_sweep_3x3`]) reads. A trait whose methods
/// always inline, not a closure: LLVM called such closures out of line as the kernels
/// around them grew (3-5x slower depthwise layers).
trait RowWindows {
    /// Kernel column `kx`'s window of padded input row `j` for output vector `v`, which
    /// starts at output `o`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `j` and `v` are a row and a vector of the sweep.
    unsafe fn window(&self, j: usize, v: usize, o: usize, kx: usize) -> __m512;
}

/// The windows of a padded slab: row `j` from `j * step`, kernel column `kx` from
/// `columns[kx]`.
struct SlabRowWindows {
    slab: *const f32,
    step: usize,
    columns: [usize; 3],
}

impl RowWindows for SlabRowWindows {
    #[inline(always)]
    unsafe fn window(&self, j: usize, _: usize, o: usize, kx: usize) -> __m512 {
        // SAFETY: a window of the sweep lies inside the slab (the caller's contract).
        unsafe { _mm512_loadu_ps(self.slab.wrapping_add(j * self.step + self.columns[kx] + o)) }
    }
}

/// The windows of an `h x w` input plane read as it is: padded row `j` is image row `row0 +
/// j` (zeros outside the image), a window's lanes outside the row masked to zero.
struct PlaneRowWindows<'a> {
    plane: *const f32,
    h: isize,
    w: isize,
    row0: isize,
    pad_left: isize,
    /// Per output vector and kernel column, the lanes of its window inside the row.
    masks: &'a [[__mmask16; 3]],
}

impl RowWindows for PlaneRowWindows<'_> {
    #[inline(always)]
    unsafe fn window(&self, j: usize, v: usize, o: usize, kx: usize) -> __m512 {
        let iy = self.row0 + j as isize;
        if !(0..self.h).contains(&iy) {
            // SAFETY: AVX-512 F is present (the caller's contract).
            return unsafe { _mm512_setzero_ps() };
        }
        let at = self
            .plane
            .wrapping_offset(iy * self.w + o as isize + kx as isize - self.pad_left);
        let lanes = self.masks[v][kx];
        // SAFETY: only lanes at columns in `0..w` of row `iy` (in `0..h`) are read (all 16
        // for a plain load, and masked loads touch no other lane): inside the plane, which
        // holds `h * w` values (the job's `pointers` checked).
        unsafe {
            if lanes == !0 {
                _mm512_loadu_ps(at)
            } else {
                _mm512_maskz_loadu_ps(lanes, at)
            }
        }
    }
}

/// Per vector `v` of a row of `ow` outputs (the vector starting at output `start(v)`) and
/// kernel column `kx`: the lanes of its window, from column `start(v) + kx - pad_left`,
/// that lie in a row `w` long. On the stack for rows of up to 256 outputs, filled in the
/// caller's kernel: a table collected into a `Vec` per plane, its closure called out of
/// line, took 10-20% of a depthwise weight gradient on 7x7 maps.
#[inline(always)]
fn window_masks(
    ow: usize,
    pad_left: isize,
    w: isize,
    start: impl Fn(usize) -> usize,
) -> SmallVec<[[__mmask16; 3]; 16]> {
    let mut masks = SmallVec::with_capacity(ow.div_ceil(16));
    for v in 0..ow.div_ceil(16) {
        let c = start(v) as isize - pad_left;
        masks.push([
            lanes_inside(c, w),
            lanes_inside(c + 1, w),
            lanes_inside(c + 2, w),
        ]);
    }
    masks
}

/// The stride-2 kernel of [`plane_rows_3x3_f32_avx512`]: [`strided_strip_3x3`] over
/// strips of two vectors of 16 outputs (a last one of one). Strips of four ran 8% slower
/// on `mobilenet_dw_3x3s2` (Zen 5: their 16 load masks do not fit the mask registers),
/// and a strip wider than the row computes vectors it drops.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `PlaneRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline(never)]
unsafe fn strided_rows_3x3(job: &mut PlaneRows<'_>) {
    let pointers = job.pointers();
    let vectors = job.ow.div_ceil(16);
    for first in (0..vectors).step_by(2) {
        // SAFETY: AVX-512 F is present (this function's contract); `pointers` are the
        // job's, checked.
        unsafe {
            if vectors - first == 1 {
                strided_strip_3x3::<1>(job, pointers, first)
            } else {
                strided_strip_3x3::<2>(job, pointers, first)
            }
        }
    }
}

/// `VECTORS` vectors of 16 outputs from vector `first` of every output row of
/// [`strided_rows_3x3`]: input row after input row, each row's three windows per vector
/// (32 input columns loaded with the lanes outside the image masked to zero, a row outside
/// it all zeros, their even or odd columns picked) fused into the sums of the one or two
/// output rows that read it (an even row: kernel row 2 of one output row and kernel row 0
/// of the next), so that output rows share the rows between them. Every output sums its
/// taps in kernel-row order, as the padded slab does (same bits); a last partial vector
/// stores only its own lanes.
///
/// # Safety
/// The CPU must support AVX-512 F; `pointers` are the job's, checked by
/// `PlaneRows::pointers`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn strided_strip_3x3<const VECTORS: usize>(
    job: &PlaneRows<'_>,
    (plane, out, rows): (*const f32, *mut f32, usize),
    first: usize,
) {
    let (h, w, ow) = (job.h as isize, job.w as isize, job.ow);
    let weights: [__m512; 9] = std::array::from_fn(|t| _mm512_set1_ps(job.taps[t]));
    let init = _mm512_set1_ps(job.init);
    let evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let odds = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    // Input row `j` of the sweep is image row `row0 + j`; output row `r` reads rows `2 * r
    // + ky`.
    let row0 = 2 * job.oy0 as isize - job.pad_top as isize;
    let inside = |c: isize| lanes_inside(c, w);
    // Per vector: its first output, the lanes it stores, the first input column of
    // kernel columns 0 and 1 (32 columns from `c`) and of column 2 (from `c + 2`), and
    // the lanes of those four halves inside the row (the same every row).
    let vectors: [(usize, __mmask16, isize, [__mmask16; 4]); VECTORS] = std::array::from_fn(|v| {
        let o = 16 * (first + v);
        let lanes = ow.saturating_sub(o).min(16);
        let c = 2 * o as isize - job.pad_left as isize;
        let masks = [inside(c), inside(c + 16), inside(c + 2), inside(c + 18)];
        (o.min(ow), ((1u32 << lanes) - 1) as __mmask16, c, masks)
    });
    // The three windows (kernel columns 0, 1, 2) of vector `v` in input row `j`.
    let windows = |j: usize, v: usize| -> [__m512; 3] {
        let iy = row0 + j as isize;
        if !(0..h).contains(&iy) {
            return [_mm512_setzero_ps(); 3];
        }
        let (_, _, c, m) = vectors[v];
        let at = plane.wrapping_offset(iy * w + c);
        // SAFETY: only lanes at columns in `0..w` of row `iy` (in `0..h`) are read
        // (masked loads touch no other lane): inside the plane, which holds `h * w`
        // values (`pointers` checked).
        unsafe {
            let (lo, hi) = (
                _mm512_maskz_loadu_ps(m[0], at),
                _mm512_maskz_loadu_ps(m[1], at.wrapping_add(16)),
            );
            let (lo2, hi2) = (
                _mm512_maskz_loadu_ps(m[2], at.wrapping_add(2)),
                _mm512_maskz_loadu_ps(m[3], at.wrapping_add(18)),
            );
            [
                _mm512_permutex2var_ps(lo, evens, hi),
                _mm512_permutex2var_ps(lo, odds, hi),
                _mm512_permutex2var_ps(lo2, evens, hi2),
            ]
        }
    };
    // `done`: output row `m - 1`, which still lacks kernel row 2 (input row `2 * m`);
    // `next`: output row `m`.
    let mut done = [init; VECTORS];
    for m in 0..=rows {
        let j = 2 * m;
        // Kernel row 2 of output row `m - 1` and row 0 of output row `m` both read
        // input row `j`: its windows are loaded once for both.
        let mut next = [init; VECTORS];
        for v in 0..VECTORS {
            let xs = windows(j, v);
            for (kx, &x) in xs.iter().enumerate() {
                done[v] = _mm512_fmadd_ps(weights[6 + kx], x, done[v]);
                next[v] = _mm512_fmadd_ps(weights[kx], x, next[v]);
            }
        }
        if m > 0 {
            for (a, &(o, mask, _, _)) in done.iter().zip(&vectors) {
                // SAFETY: the lanes of `mask` are outputs `o..` of row `m - 1 < rows`
                // before `ow`, which the output holds (`pointers` checked).
                unsafe { _mm512_mask_storeu_ps(out.add((m - 1) * ow + o), mask, *a) };
            }
        }
        if m < rows {
            // Kernel row 1 of output row `m`.
            for (v, a) in next.iter_mut().enumerate() {
                let xs = windows(j + 1, v);
                for (kx, &x) in xs.iter().enumerate() {
                    *a = _mm512_fmadd_ps(weights[3 + kx], x, *a);
                }
            }
        }
        done = next;
    }
}

/// The direct band kernel for `f32` rows of 16 or more outputs with AVX-512: two rows at
/// a time, four vectors of 16 sums per row (the last overlapping the one before rather
/// than leaving a tail; eight independent sums hide the FMA latency), tap after tap, each
/// tap's weight broadcast and fused into the sums.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `BandRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_rows_f32_avx512(job: &mut BandRows<'_>) {
    let pointers = job.pointers();
    let rows = pointers.3;
    if stacked_3x3(job.starts, job.step) {
        // SAFETY: AVX-512 F is present (this function's contract); the taps are stacked
        // 3 x 3 (checked); `pointers` are the job's, checked.
        unsafe { rows_3x3_avx512(job, pointers) };
        return;
    }
    for r in (0..rows).step_by(2) {
        // SAFETY: AVX-512 F is present (this function's contract); `r + 2 <= rows` (or
        // `r + 1`); `pointers` are the job's, checked.
        unsafe {
            if r + 2 <= rows {
                rows_avx512::<2>(job, pointers, r);
            } else {
                rows_avx512::<1>(job, pointers, r);
            }
        }
    }
}

/// Whether the taps are 3 x 3, each kernel row one output row's `step` below the one
/// before (`starts[3 * ky + kx] == starts[kx] + ky * step`: a vertical stride and dilation
/// of 1), so that neighbouring output rows read the same input rows.
fn stacked_3x3(starts: &[usize], step: usize) -> bool {
    starts.len() == 9
        && (0..9).all(|t| Some(starts[t]) == (t / 3).checked_mul(step).map(|d| d + starts[t % 3]))
}

/// Every output row of [`direct_rows_f32_avx512`] for [`stacked_3x3`] taps, by
/// [`rows_sweep_3x3`].
///
/// # Safety
/// The CPU must support AVX-512 F; the taps are [`stacked_3x3`], and `pointers` are the
/// job's, checked by `BandRows::pointers`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn rows_3x3_avx512(
    job: &BandRows<'_>,
    (slab, taps, out, rows): (*const f32, *const f32, *mut f32, usize),
) {
    let step = job.step;
    let columns = [job.starts[0], job.starts[1], job.starts[2]];
    // SAFETY: input row j at `column` is the window of tap `3 * ky + kx` of an output row
    // `j - ky` in `0..rows` (`stacked_3x3`; every j in `0..rows + 2` has one), and `o + 16
    // <= ow`: inside the slab (`pointers` checked every row's windows); nine taps, `rows`
    // rows of `ow >= 16` outputs (`pointers`).
    unsafe {
        rows_sweep_3x3(
            out,
            rows,
            job.ow,
            job.init,
            taps,
            &SlabRowWindows {
                slab,
                step,
                columns,
            },
        )
    };
}

/// Where output vector `v` of a row of `ow` outputs starts in the stacked 3x3 row kernels:
/// `16 * v`, the last of a row of 16 or more overlapping the one before rather than
/// leaving a tail (a row of fewer is one vector from 0).
fn row_vector_start(v: usize, ow: usize) -> usize {
    (16 * v).min(ow.saturating_sub(16))
}

/// The loop of the stacked 3x3 row kernels: [`rows_strip_3x3`] over strips of two
/// vectors of columns (a last one of one: strips of four ran `mobilenet_dw_3x3` 7%, a
/// 28x28 map 1.8x slower on Zen 5, their sums, windows and load masks beyond the
/// registers, and a 28-wide row computing two vectors it drops).
///
/// # Safety
/// The CPU must support AVX-512 F; `taps` holds nine weights, `out` `rows` rows of `ow`
/// outputs, and `windows` may be called for any `j < rows + 2` and output vector.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn rows_sweep_3x3(
    out: *mut f32,
    rows: usize,
    ow: usize,
    init: f32,
    taps: *const f32,
    windows: &impl RowWindows,
) {
    // SAFETY: there are nine weights (this function's contract).
    let w: [__m512; 9] = std::array::from_fn(|t| unsafe { _mm512_set1_ps(*taps.add(t)) });
    let vectors = ow.div_ceil(16);
    for first in (0..vectors).step_by(2) {
        let strip = (out, rows, ow, init, first);
        // SAFETY: as this function's contract.
        unsafe {
            match (vectors - first, ow < 16) {
                (1, true) => rows_strip_3x3::<1, true>(strip, &w, windows),
                (1, false) => rows_strip_3x3::<1, false>(strip, &w, windows),
                _ => rows_strip_3x3::<2, false>(strip, &w, windows),
            }
        }
    }
}

/// `VECTORS` vectors of columns from vector `first` of [`rows_sweep_3x3`]: padded input row
/// after row `j`, its windows (`windows(j, v, o, kx)` for vector `v` of outputs from `o`,
/// [`row_vector_start`]; a row of fewer than 16 stores only its own lanes) loaded
/// once and fused into the sums of the three output rows that read them (held in registers
/// and passed on as the rows advance), the nine weights in registers. Every output sums its
/// taps in kernel-row order, as `rows_avx512` does (same bits).
///
/// # Safety
/// As [`rows_sweep_3x3`]; `first < ow.div_ceil(16)`, and `NARROW` exactly when `ow < 16`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn rows_strip_3x3<const VECTORS: usize, const NARROW: bool>(
    (out, rows, ow, init, first): (*mut f32, usize, usize, f32, usize),
    w: &[__m512; 9],
    windows: &impl RowWindows,
) {
    let init = [_mm512_set1_ps(init); VECTORS];
    let o: [usize; VECTORS] = std::array::from_fn(|v| row_vector_start(first + v, ow));
    // The sums of output rows j - 2, j - 1 and j (kernel rows 2, 1 and 0 read input row
    // j); rows outside 0..rows are summed and dropped.
    let mut acc = [init; 3];
    for j in 0..rows + 2 {
        for kx in 0..3 {
            // A loop, not `array::from_fn`: a closure here may be called out of line.
            let mut xs = [_mm512_setzero_ps(); VECTORS];
            for (v, x) in xs.iter_mut().enumerate() {
                // SAFETY: `j < rows + 2` and vector `first + v` of the row (this
                // function's contract).
                *x = unsafe { windows.window(j, first + v, o[v], kx) };
            }
            for (ky, acc_row) in acc.iter_mut().rev().enumerate() {
                for (a, &xv) in acc_row.iter_mut().zip(&xs) {
                    *a = _mm512_fmadd_ps(w[3 * ky + kx], xv, *a);
                }
            }
        }
        if j >= 2 {
            for (a, &ov) in acc[0].iter().zip(&o) {
                let at = out.wrapping_add((j - 2) * ow + ov);
                // SAFETY: `(j - 2) * ow + o[v] + min(16, ow) <= rows * ow`, the output's
                // length; a row of fewer than 16 (`NARROW`) stores `ow` lanes.
                unsafe {
                    if NARROW {
                        _mm512_mask_storeu_ps(at, ((1u32 << ow) - 1) as __mmask16, *a)
                    } else {
                        _mm512_storeu_ps(at, *a)
                    }
                };
            }
        }
        acc = [acc[1], acc[2], init];
    }
}

/// Output rows `r..r + ROWS` of [`direct_rows_f32_avx512`].
///
/// # Safety
/// The CPU must support AVX-512 F; `r + ROWS <= rows`, and `pointers` are the job's,
/// checked by `BandRows::pointers`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn rows_avx512<const ROWS: usize>(
    job: &BandRows<'_>,
    (slab, taps, out, _): (*const f32, *const f32, *mut f32, usize),
    r: usize,
) {
    let (ow, step) = (job.ow, job.step);
    for first in (0..ow.div_ceil(16)).step_by(4) {
        let o: [usize; 4] = std::array::from_fn(|v| ((first + v) * 16).min(ow - 16));
        let mut acc = [[_mm512_set1_ps(job.init); 4]; ROWS];
        for (t, &start) in job.starts.iter().enumerate() {
            // SAFETY: `o[v] + 16 <= ow` and `r + ROWS <= rows`, so every load is inside
            // the slab and `t` inside the taps (`pointers` checked both).
            unsafe {
                let w = _mm512_set1_ps(*taps.add(t));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let x = slab.add((r + i) * step + start);
                    for (a, &ov) in acc_i.iter_mut().zip(&o) {
                        *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(x.add(ov)), *a);
                    }
                }
            }
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (a, &ov) in acc_i.iter().zip(&o) {
                // SAFETY: `(r + i) * ow + o[v] + 16 <= rows * ow`, the output's length.
                unsafe { _mm512_storeu_ps(out.add((r + i) * ow + ov), *a) };
            }
        }
    }
}

/// The direct band kernel for `f32` rows of 16 or more outputs with AVX2 and FMA: as the
/// AVX-512 one, two rows of two vectors of 16 (as four of 8) at a time.
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `BandRows::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn direct_rows_f32_avx2(job: &mut BandRows<'_>) {
    let pointers = job.pointers();
    let rows = pointers.3;
    for r in (0..rows).step_by(2) {
        // SAFETY: AVX2 and FMA are present (this function's contract); `r + 2 <= rows`
        // (or `r + 1`); `pointers` are the job's, checked.
        unsafe {
            if r + 2 <= rows {
                rows_avx2::<2>(job, pointers, r);
            } else {
                rows_avx2::<1>(job, pointers, r);
            }
        }
    }
}

/// Output rows `r..r + ROWS` of [`direct_rows_f32_avx2`].
///
/// # Safety
/// The CPU must support AVX2 and FMA; `r + ROWS <= rows`, and `pointers` are the job's,
/// checked by `BandRows::pointers`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn rows_avx2<const ROWS: usize>(
    job: &BandRows<'_>,
    (slab, taps, out, _): (*const f32, *const f32, *mut f32, usize),
    r: usize,
) {
    let (ow, step) = (job.ow, job.step);
    for first in (0..ow.div_ceil(16)).step_by(2) {
        let o: [usize; 4] =
            std::array::from_fn(|v| ((first + v / 2) * 16).min(ow - 16) + v % 2 * 8);
        let mut acc = [[_mm256_set1_ps(job.init); 4]; ROWS];
        for (t, &start) in job.starts.iter().enumerate() {
            // SAFETY: `o[v] + 8 <= ow` and `r + ROWS <= rows`, so every load is inside the
            // slab and `t` inside the taps (`pointers` checked both).
            unsafe {
                let w = _mm256_set1_ps(*taps.add(t));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let x = slab.add((r + i) * step + start);
                    for (a, &ov) in acc_i.iter_mut().zip(&o) {
                        *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.add(ov)), *a);
                    }
                }
            }
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (a, &ov) in acc_i.iter().zip(&o) {
                // SAFETY: `(r + i) * ow + o[v] + 8 <= rows * ow`, the output's length.
                unsafe { _mm256_storeu_ps(out.add((r + i) * ow + ov), *a) };
            }
        }
    }
}

/// The direct weight-gradient kernel for `f32` with AVX-512: taps in tiles of
/// [`WEIGHT_TAPS`], each tap's vector of partial sums in a register while the rows pass,
/// per 16 pixels one output-gradient vector loaded and fused with each tap's window; a
/// row's last partial vector masked (masked-off lanes keep their sums, so an infinite input
/// there adds nothing).
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `WeightRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_weight_f32_avx512(job: &mut WeightRows<'_>) {
    let (ow, step) = (job.ow, job.step);
    let (slab, grad_out, sums, rows) = job.pointers();
    if stacked_3x3(job.starts, step) {
        // SAFETY: AVX-512 F is present (this function's contract); the taps are stacked
        // 3 x 3 (checked); the pointers are the job's, checked.
        unsafe { weight_3x3_avx512(job, (slab, grad_out, sums, rows)) };
        return;
    }
    let taps = job.starts.len();
    let full = ow / 16 * 16;
    let tail: __mmask16 = (1u32 << (ow - full)).wrapping_sub(1) as __mmask16;
    for t0 in (0..taps).step_by(WEIGHT_TAPS) {
        let count = WEIGHT_TAPS.min(taps - t0);
        // Past the last tap, the tile repeats it; those sums are not stored.
        let starts: [usize; WEIGHT_TAPS] =
            std::array::from_fn(|j| job.starts[t0 + j.min(count - 1)]);
        // SAFETY: AVX-512 F is present (this function's contract); tap `t0 + j` has a
        // vector of sums for `j < count`, read and written only then; every load of row
        // `r < rows` is at most `ow` values from `r * step + start` (the tail masked), and
        // `pointers` checked that those lie inside the slab and the output gradient.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); WEIGHT_TAPS];
            for (j, a) in acc.iter_mut().enumerate().take(count) {
                *a = _mm512_loadu_ps((*sums.add(t0 + j)).as_ptr());
            }
            for r in 0..rows {
                let gy = grad_out.add(r * ow);
                let base = slab.add(r * step);
                for o in (0..full).step_by(16) {
                    let y = _mm512_loadu_ps(gy.add(o));
                    for (a, &start) in acc.iter_mut().zip(&starts) {
                        *a = _mm512_fmadd_ps(_mm512_loadu_ps(base.add(start + o)), y, *a);
                    }
                }
                if full < ow {
                    let y = _mm512_maskz_loadu_ps(tail, gy.add(full));
                    for (a, &start) in acc.iter_mut().zip(&starts) {
                        let x = _mm512_maskz_loadu_ps(tail, base.add(start + full));
                        *a = _mm512_mask3_fmadd_ps(x, y, *a, tail);
                    }
                }
            }
            for (j, a) in acc.iter().enumerate().take(count) {
                _mm512_storeu_ps((*sums.add(t0 + j)).as_mut_ptr(), *a);
            }
        }
    }
}

/// [`direct_weight_f32_avx512`] for [`stacked_3x3`] taps: input row after input row, each
/// row's three windows loaded once per 16 pixels and fused with the output-gradient rows of
/// the (up to three) output rows that read them. Each tap's sums take the same terms in
/// the same order as the general kernel (output row by output row), so the two give the
/// same bits.
///
/// # Safety
/// The CPU must support AVX-512 F; the taps are [`stacked_3x3`], and the pointers are the
/// job's, checked by `WeightRows::pointers`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn weight_3x3_avx512(
    job: &WeightRows<'_>,
    (slab, grad_out, sums, rows): (*const f32, *const f32, *mut [f32; 16], usize),
) {
    let step = job.step;
    let columns = [job.starts[0], job.starts[1], job.starts[2]];
    // SAFETY: input row j at `column` is the window of tap `3 * ky + kx` of an output row
    // `j - ky` in `0..rows` (every j in `0..rows + 2` has one), and a window's loads stay
    // within `ow` values of its start (the tail masked): inside the slab (`pointers`
    // checked); the rest as the sweep requires (`pointers`).
    unsafe {
        let windows = SlabRowWindows {
            slab,
            step,
            columns,
        };
        weight_sweep_3x3(sums, grad_out, rows, job.ow, &windows)
    };
}

/// The loop of the stacked 3x3 weight-gradient kernels: padded input row after row `j`,
/// its three windows from output `o` (`windows(j, o, lanes)`, `lanes` those up to the
/// row's end) fused with the output-gradient rows of the (up to three) output rows that
/// meet them; each tap's sums take their terms output row by output row, a row's last
/// partial vector last.
///
/// # Safety
/// The CPU must support AVX-512 F; `sums` holds nine vectors, `grad_out` `rows` rows of
/// `ow` values, and `windows` may be called for any `j < rows + 2` and `o < ow`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn weight_sweep_3x3(
    sums: *mut [f32; 16],
    grad_out: *const f32,
    rows: usize,
    ow: usize,
    windows: &impl WeightWindows,
) {
    let full = ow / 16 * 16;
    let tail: __mmask16 = (1u32 << (ow - full)).wrapping_sub(1) as __mmask16;
    // SAFETY: there are nine vectors of sums (this function's contract).
    let mut acc: [__m512; 9] =
        std::array::from_fn(|t| unsafe { _mm512_loadu_ps((*sums.add(t)).as_ptr()) });
    for j in 0..rows + 2 {
        // Kernel row ky meets padded row j for output row j - ky, where that row exists.
        let live: [bool; 3] = std::array::from_fn(|ky| j >= ky && j - ky < rows);
        // Rows 2..rows meet every kernel row: `all` lets their loop run without the checks
        // (1.06-1.27x on depthwise layers; passing `[true; 3]` to a closure ran slower).
        let all = live == [true; 3];
        let gy: [*const f32; 3] =
            std::array::from_fn(|ky| grad_out.wrapping_add(j.wrapping_sub(ky).wrapping_mul(ow)));
        // SAFETY: output-gradient row `j - ky` is read only when live (in `0..rows`), at
        // most `ow` values from its start (the tail masked): inside the output gradient.
        unsafe {
            for o in (0..full).step_by(16) {
                let xs = windows.windows(j, o, !0);
                for ky in 0..3 {
                    if all || live[ky] {
                        let y = _mm512_loadu_ps(gy[ky].add(o));
                        for (kx, &x) in xs.iter().enumerate() {
                            acc[3 * ky + kx] = _mm512_fmadd_ps(x, y, acc[3 * ky + kx]);
                        }
                    }
                }
            }
            if full < ow {
                let xs = windows.windows(j, full, tail);
                for ky in 0..3 {
                    if live[ky] {
                        let y = _mm512_maskz_loadu_ps(tail, gy[ky].add(full));
                        for (kx, &x) in xs.iter().enumerate() {
                            let a = &mut acc[3 * ky + kx];
                            *a = _mm512_mask3_fmadd_ps(x, y, *a, tail);
                        }
                    }
                }
            }
        }
    }
    for (t, a) in acc.iter().enumerate() {
        // SAFETY: tap `t < 9` has a vector of sums.
        unsafe { _mm512_storeu_ps((*sums.add(t)).as_mut_ptr(), *a) };
    }
}

/// The stride-1 3x3 weight-gradient kernel for `f32` with AVX-512 reading the input plane
/// as it is (see `kernels::direct::in_place`): [`weight_3x3_avx512`]'s loop, each window
/// loaded with the lanes outside the image masked to zero and rows outside it taken as
/// zeros (the values a padded slab holds there).
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by
/// `PlaneWeightRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn plane_weight_3x3_f32_avx512(job: &mut PlaneWeightRows<'_>) {
    let (plane, grad_out, sums, rows) = job.pointers();
    let (h, w, ow) = (job.h as isize, job.w as isize, job.ow);
    let pad_left = job.pad_left as isize;
    // Per vector of outputs (the partial last one included) and kernel column: the lanes
    // of its window inside the row (working them out per load ran 1.3x slower).
    let masks = window_masks(ow, pad_left, w, |v| 16 * v);
    let windows = PlaneRowWindows {
        plane,
        h,
        w,
        row0: -(job.pad_top as isize),
        pad_left,
        masks: &masks,
    };
    // SAFETY: nine vectors of sums (the job's type) and `rows` rows of output gradient
    // (`pointers`); `windows` reads only inside the plane, for any row and output.
    unsafe { weight_sweep_3x3(sums, grad_out, rows, ow, &windows) };
}

/// The stride-1 3x3 weight-gradient kernel for `f32` with AVX-512 on planes whose output
/// rows are as wide as the input's (`kernels::direct::in_place::flat_weight_masks`): the
/// output gradient taken as one flat run of `oh * ow` pixels, 16 a vector, so that tap `t`
/// of output pixel `p` reads input element `p + offset(t)` of the plane as it is; the lanes
/// whose input lies outside the image (a padding row or column) load as zeros (`masks`:
/// per vector, one per tap). Lane `l` of a tap's sums adds the pixels `p` with `p % 16 ==
/// l`, in order.
///
/// # Safety
/// The CPU must support AVX-512 F; `masks` must clear every lane whose input is outside
/// the plane (the other bounds are checked here and by `PlaneWeightRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn flat_weight_3x3_f32_avx512(job: &mut PlaneWeightRows<'_>, masks: &[u16]) {
    let (plane, grad_out, sums, rows) = job.pointers();
    let pixels = rows * job.ow;
    let vectors = pixels.div_ceil(16);
    assert!(job.ow == job.w && masks.len() >= 9 * vectors);
    let offsets = flat_offsets(job.w, job.pad_top, job.pad_left);
    // SAFETY: there are nine vectors of sums (`pointers`).
    let mut acc: [__m512; 9] =
        std::array::from_fn(|t| unsafe { _mm512_loadu_ps((*sums.add(t)).as_ptr()) });
    for (v, masks) in masks.chunks_exact(9).take(vectors).enumerate() {
        let p = 16 * v;
        let live = live_lanes(pixels - p);
        // SAFETY: the output gradient's lanes below `pixels` (`rows` whole rows, checked by
        // `pointers`); each tap's lanes are those `masks` keep, inside the plane (this
        // function's contract); masked loads touch no other lane.
        unsafe {
            let y = _mm512_maskz_loadu_ps(live, grad_out.add(p));
            for (t, (a, &m)) in acc.iter_mut().zip(masks).enumerate() {
                let x = _mm512_maskz_loadu_ps(m, plane.wrapping_offset(p as isize + offsets[t]));
                *a = _mm512_fmadd_ps(x, y, *a);
            }
        }
    }
    for (t, a) in acc.iter().enumerate() {
        // SAFETY: tap `t < 9` has a vector of sums.
        unsafe { _mm512_storeu_ps((*sums.add(t)).as_mut_ptr(), *a) };
    }
}

/// The three windows (kernel columns 0, 1, 2) of a stacked 3x3 weight-gradient kernel
/// ([`weight_sweep_3x3`]), a trait for the reason [`RowWindows`] is.
trait WeightWindows {
    /// The windows of padded input row `j` from output `o`; `lanes`: those up to the row's
    /// end.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `j` and `o` are a row and an output of the sweep.
    unsafe fn windows(&self, j: usize, o: usize, lanes: __mmask16) -> [__m512; 3];
}

impl WeightWindows for SlabRowWindows {
    #[inline(always)]
    unsafe fn windows(&self, j: usize, o: usize, lanes: __mmask16) -> [__m512; 3] {
        let at = self.slab.wrapping_add(j * self.step + o);
        // SAFETY: a window's lanes up to the row's end lie inside the slab (the caller's
        // contract); masked loads touch no other lane.
        unsafe {
            [
                _mm512_maskz_loadu_ps(lanes, at.wrapping_add(self.columns[0])),
                _mm512_maskz_loadu_ps(lanes, at.wrapping_add(self.columns[1])),
                _mm512_maskz_loadu_ps(lanes, at.wrapping_add(self.columns[2])),
            ]
        }
    }
}

/// Zeros outside the image (lanes past the row's end are left out of the sums by the
/// sweep); plain loads where the three windows lie inside the row (1.16x on
/// `bwd_weight_dw_3x3`).
impl WeightWindows for PlaneRowWindows<'_> {
    #[inline(always)]
    unsafe fn windows(&self, j: usize, o: usize, _: __mmask16) -> [__m512; 3] {
        let iy = self.row0 + j as isize;
        // SAFETY (each block): AVX-512 F is present (the caller's contract).
        if !(0..self.h).contains(&iy) {
            // SAFETY: see above.
            return unsafe { [_mm512_setzero_ps(); 3] };
        }
        let c = o as isize - self.pad_left;
        let row = self.plane.wrapping_offset(iy * self.w + c);
        if c >= 0 && c + 18 <= self.w {
            // SAFETY: columns `c..c + 18` of row `iy` (in `0..h`) lie in `0..w`: inside
            // the plane, which holds `h * w` values (the job's `pointers` checked).
            return unsafe {
                [
                    _mm512_loadu_ps(row),
                    _mm512_loadu_ps(row.wrapping_add(1)),
                    _mm512_loadu_ps(row.wrapping_add(2)),
                ]
            };
        }
        let masks = self.masks[o / 16];
        // SAFETY: only lanes at columns in `0..w` of row `iy` (in `0..h`) are read (masked
        // loads touch no other lane): inside the plane (as above).
        unsafe {
            [
                _mm512_maskz_loadu_ps(masks[0], row),
                _mm512_maskz_loadu_ps(masks[1], row.wrapping_add(1)),
                _mm512_maskz_loadu_ps(masks[2], row.wrapping_add(2)),
            ]
        }
    }
}

/// [`plane_weight_3x3_f32_avx512`]'s sums with AVX2 and FMA: kernel row after kernel row,
/// output row after row, each vector of 8 outputs fused with its three windows, the
/// vectors alternating between the two halves of each tap's 16 lanes of sums (six vectors
/// of sums in registers). Every lane takes the terms the AVX-512 kernel gives it in the same
/// order (output row by row), the windows and output-gradient vectors loaded with the lanes
/// outside the image or past the row's end zeroed (a lane past the end adds `0 * 0`, which
/// leaves its zero sum as it is): the same bits.
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by
/// `PlaneWeightRows::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn plane_weight_3x3_f32_avx2(job: &mut PlaneWeightRows<'_>) {
    let (plane, grad_out, sums, rows) = job.pointers();
    let (h, w, ow) = (job.h as isize, job.w as isize, job.ow);
    let (pad_top, pad_left) = (job.pad_top as isize, job.pad_left as isize);
    let mask = |lanes: [bool; 8]| {
        let m = lanes.map(|inside| -i32::from(inside));
        _mm256_setr_epi32(m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7])
    };
    // Per vector of 8 outputs that has a lane past the row's end or a window lane outside
    // the image row: its live lanes and each kernel column's window lanes.
    let edges: Vec<Option<(__m256i, [__m256i; 3])>> = (0..ow.div_ceil(8))
        .map(|v| {
            let live = |l: usize| 8 * v + l < ow;
            let inside = |l: usize, kx: usize| {
                live(l) && (0..w).contains(&((8 * v + l + kx) as isize - pad_left))
            };
            let interior = (0..8).all(|l| (0..3).all(|kx| inside(l, kx)));
            (!interior).then(|| {
                let windows =
                    std::array::from_fn(|kx| mask(std::array::from_fn(|l| inside(l, kx))));
                (mask(std::array::from_fn(live)), windows)
            })
        })
        .collect();
    for ky in 0..3 {
        let [mut even, mut odd]: [[__m256; 3]; 2] = std::array::from_fn(|half| {
            std::array::from_fn(|kx| {
                // SAFETY: taps `3 * ky..3 * ky + 3` have 16 sums each (`pointers`).
                unsafe { _mm256_loadu_ps((*sums.add(3 * ky + kx)).as_ptr().add(8 * half)) }
            })
        });
        for r in 0..rows {
            let iy = (r + ky) as isize - pad_top;
            let inside_rows = (0..h).contains(&iy);
            let row = plane.wrapping_offset(iy * w - pad_left);
            let gy = grad_out.wrapping_add(r * ow);
            // Vector `v` of the row fused into its half's sums `a`.
            let fuse = |v: usize, a: &mut [__m256; 3]| {
                let o = 8 * v;
                // SAFETY: the loads touch only lanes at columns `0..w` of row `iy` (read
                // only when in `0..h`) and at outputs `0..ow` of output-gradient row
                // `r < rows`, inside the plane and the output gradient (`pointers`):
                // masked loads touch no other lane, whole ones load only such lanes.
                unsafe {
                    let (y, xs): (__m256, [__m256; 3]) = match &edges[v] {
                        None => (
                            _mm256_loadu_ps(gy.add(o)),
                            std::array::from_fn(|kx| match inside_rows {
                                true => _mm256_loadu_ps(row.wrapping_add(o + kx)),
                                false => _mm256_setzero_ps(),
                            }),
                        ),
                        Some((live, windows)) => (
                            _mm256_maskload_ps(gy.add(o), *live),
                            std::array::from_fn(|kx| match inside_rows {
                                true => _mm256_maskload_ps(row.wrapping_add(o + kx), windows[kx]),
                                false => _mm256_setzero_ps(),
                            }),
                        ),
                    };
                    for (a, x) in a.iter_mut().zip(xs) {
                        *a = _mm256_fmadd_ps(x, y, *a);
                    }
                }
            };
            // Even vectors into lanes 0-7 of the sums, odd ones into lanes 8-15.
            for v in (0..edges.len()).step_by(2) {
                fuse(v, &mut even);
                if v + 1 < edges.len() {
                    fuse(v + 1, &mut odd);
                }
            }
        }
        for (half, a) in [even, odd].iter().enumerate() {
            for (kx, &a) in a.iter().enumerate() {
                // SAFETY: tap `3 * ky + kx` has 16 sums; this writes half `half` of them.
                unsafe { _mm256_storeu_ps((*sums.add(3 * ky + kx)).as_mut_ptr().add(8 * half), a) };
            }
        }
    }
}

/// Taps per tile of [`direct_weight_f32_avx512`]: a 3x3 kernel in one.
const WEIGHT_TAPS: usize = 9;

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
    let multiples: [u16; 32] = std::array::from_fn(|j| (j * taps) as u16);
    // SAFETY: AVX-512 F and BW are present (this function's contract); `multiples` holds
    // 32 values.
    let multiples = unsafe { _mm512_loadu_epi16(multiples.as_ptr().cast()) };
    let window = |start: usize| {
        let valid = len.saturating_sub(start).min(32);
        let mask = ((1u64 << valid) - 1) as u32;
        // SAFETY: as above; the masked load reads only the `valid` values from `start`,
        // inside the row's first `len`.
        unsafe { _mm512_maskz_loadu_epi16(mask, row.as_ptr().wrapping_add(start).cast()) }
    };
    for t in 0..taps {
        let mut run = _mm512_setzero_si512();
        for w in (0..len).step_by(64) {
            let offset = _mm512_set1_epi16((t as i32 - w as i32) as i16);
            let index = _mm512_add_epi16(multiples, offset);
            let inside = _mm512_cmplt_epu16_mask(index, _mm512_set1_epi16(64));
            let picked = _mm512_permutex2var_epi16(window(w), index, window(w + 32));
            // The windows' picks are disjoint: merged without waiting on each other.
            run = _mm512_or_si512(run, _mm512_maskz_mov_epi16(inside, picked));
        }
        // SAFETY: as above; `t * stride + 32 <= out.len()` (checked).
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(t * stride).cast(), run) };
    }
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
