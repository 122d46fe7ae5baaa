//! The row kernels compiled with AVX2+FMA and with AVX-512 enabled: the same generic Rust,
//! inlined into functions carrying the target features, so the compiler vectorises it for
//! the wider registers. Callers must have checked the CPU (see `crate::isa`).

use crate::element::Accumulator;
use crate::kernels::direct::{self, Band, WeightJob};
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
