//! Architecture-specific builds of the portable row kernels.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use half::bf16;

use crate::element::{narrow_bf16_portable, widen_bf16_portable};

/// `element::narrow_bf16`, compiled for AVX-512 or AVX2 where the CPU has them (the same
/// integer arithmetic, so the same bits, more values per instruction).
pub(crate) fn narrow_bf16(wide: &[f32], out: &mut [bf16]) {
    #[cfg(target_arch = "x86_64")]
    match crate::isa::isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it.
        crate::isa::Isa::Avx512 => return unsafe { x86_64::narrow_bf16_avx512(wide, out) },
        // SAFETY: as above.
        crate::isa::Isa::Avx2 => return unsafe { x86_64::narrow_bf16_avx2(wide, out) },
        _ => {}
    }
    narrow_bf16_portable(wide, out);
}

/// `element::widen_bf16`, compiled as [`narrow_bf16`].
pub(crate) fn widen_bf16(values: &[bf16], wide: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    match crate::isa::isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it.
        crate::isa::Isa::Avx512 => return unsafe { x86_64::widen_bf16_avx512(values, wide) },
        // SAFETY: as above.
        crate::isa::Isa::Avx2 => return unsafe { x86_64::widen_bf16_avx2(values, wide) },
        _ => {}
    }
    widen_bf16_portable(values, wide);
}
