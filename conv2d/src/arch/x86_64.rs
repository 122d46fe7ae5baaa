//! The row kernels compiled with AVX2+FMA and with AVX-512 enabled: the same generic Rust,
//! inlined into functions carrying the target features, so the compiler vectorises it for
//! the wider registers. Callers must have checked the CPU (see `crate::isa`).

use crate::element::Accumulator;
use std::arch::x86_64::*;

use crate::kernels::direct::{self, Band, Tile, WeightJob, CO, PIXELS};
use crate::kernels::rows::generic;

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

/// The direct weight-gradient kernel with AVX-512.
///
/// # Safety
/// The CPU must support AVX-512 F/VL/BW/DQ.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_weight_avx512<A: Accumulator>(job: &mut WeightJob<'_, A>) {
    direct::weight(job)
}

/// The direct tile kernel for `f32` with AVX-512: the [`CO`] x 3 vectors of sums in 24 of
/// the 32 registers, three pixel vectors loaded and each channel's weight broadcast per tap.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `Tile::pointers`).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn direct_tile_f32_avx512(job: &mut Tile<'_, f32>) {
    const VECTORS: usize = crate::kernels::direct::V;
    let len = job.len;
    const _: () = assert!(PIXELS == 16 * VECTORS);
    let (slab, weights, flat) = job.pointers();
    for q in (0..len).step_by(PIXELS) {
        let mut acc = [_mm512_setzero_ps(); CO * VECTORS];
        for (c, init) in job.init.iter().enumerate() {
            for v in 0..VECTORS {
                acc[c * VECTORS + v] = if job.resume {
                    // SAFETY: inside `flat`, as for the stores below.
                    unsafe { _mm512_loadu_ps(flat.add(c * len + q + 16 * v)) }
                } else {
                    _mm512_set1_ps(*init)
                };
            }
        }
        for (t, &start) in job.starts.iter().enumerate() {
            // SAFETY: `start + q + PIXELS <= start + len <= slab.len()`, and tap `t`'s CO
            // weights are inside `weights` (`pointers` checked both).
            unsafe {
                let x = slab.add(start + q);
                let xs: [__m512; VECTORS] = std::array::from_fn(|v| _mm512_loadu_ps(x.add(16 * v)));
                let w = weights.add(t * CO);
                for c in 0..CO {
                    let wc = _mm512_set1_ps(*w.add(c));
                    for v in 0..VECTORS {
                        acc[c * VECTORS + v] = _mm512_fmadd_ps(wc, xs[v], acc[c * VECTORS + v]);
                    }
                }
            }
        }
        for c in 0..CO {
            for v in 0..VECTORS {
                // SAFETY: `c * len + q + 16 * v + 16 <= CO * len <= flat.len()`
                // (`pointers` checked it).
                unsafe { _mm512_storeu_ps(flat.add(c * len + q + 16 * v), acc[c * VECTORS + v]) };
            }
        }
    }
}

/// The direct tile kernel for `f32` with AVX2 and FMA: the [`CO`] x [`PIXELS`] tile in
/// sweeps of 3 channels x 4 vectors of 8 pixels (12 of the 16 registers).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `Tile::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn direct_tile_f32_avx2(job: &mut Tile<'_, f32>) {
    const VECTORS: usize = 4;
    const CH: usize = 3;
    const _: () = assert!(CO.is_multiple_of(CH) && PIXELS.is_multiple_of(8 * VECTORS));
    let len = job.len;
    let (slab, weights, flat) = job.pointers();
    for q in (0..len).step_by(8 * VECTORS) {
        for c0 in (0..CO).step_by(CH) {
            let mut acc = [_mm256_setzero_ps(); CH * VECTORS];
            for c in 0..CH {
                for v in 0..VECTORS {
                    acc[c * VECTORS + v] = if job.resume {
                        // SAFETY: inside `flat`, as for the stores below.
                        unsafe { _mm256_loadu_ps(flat.add((c0 + c) * len + q + 8 * v)) }
                    } else {
                        _mm256_set1_ps(job.init[c0 + c])
                    };
                }
            }
            for (t, &start) in job.starts.iter().enumerate() {
                // SAFETY: `start + q + 32 <= start + len <= slab.len()`; tap `t`'s weights
                // `c0..c0 + 3` are inside `weights` (`pointers` checked both).
                unsafe {
                    let x = slab.add(start + q);
                    let xs: [__m256; VECTORS] =
                        std::array::from_fn(|v| _mm256_loadu_ps(x.add(8 * v)));
                    let w = weights.add(t * CO + c0);
                    for c in 0..CH {
                        let wc = _mm256_set1_ps(*w.add(c));
                        for v in 0..VECTORS {
                            acc[c * VECTORS + v] = _mm256_fmadd_ps(wc, xs[v], acc[c * VECTORS + v]);
                        }
                    }
                }
            }
            for c in 0..CH {
                for v in 0..VECTORS {
                    // SAFETY: `(c0 + c) * len + q + 8 * v + 8 <= CO * len <= flat.len()`
                    // (`pointers` checked it).
                    unsafe {
                        _mm256_storeu_ps(flat.add((c0 + c) * len + q + 8 * v), acc[c * VECTORS + v])
                    };
                }
            }
        }
    }
}
