//! [`Algorithm::DirectSmall`](crate::Algorithm::DirectSmall): small convolutions read
//! straight from the caller's buffers, nothing staged or allocated (the kernel is
//! `crate::arch::x86_64::small`).

use crate::element::Accumulator;
use crate::geometry::Geometry;

/// Whether the kernel runs shape `g` in `A` on this CPU: `f32` with AVX2 or AVX-512, and a
/// shape the kernel applies to.
pub(crate) fn applies<A: Accumulator>(g: &Geometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::isa::{isa, Isa};
        crate::kernels::direct::as_type::<A, f32>(&[]).is_some()
            && matches!(isa(), Isa::Avx2 | Isa::Avx512)
            && crate::arch::x86_64::small_applies(g)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// `out = conv2d(input, weight) + bias` for a shape that [`applies`], overwriting `out`.
pub(crate) fn forward<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    weight: &[A],
    bias: Option<&[A]>,
    out: &mut [A],
) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::arch::x86_64::{small_forward_f32_avx2, small_forward_f32_avx512};
        use crate::isa::{isa, Isa};
        use crate::kernels::direct::{as_type, as_type_mut};
        let (Some(x), Some(w), Some(o)) = (
            as_type::<A, f32>(input),
            as_type::<A, f32>(weight),
            as_type_mut::<A, f32>(out),
        ) else {
            unreachable!("applies() requires f32");
        };
        let b = bias.and_then(as_type::<A, f32>);
        match isa() {
            // SAFETY: `isa()` returns a level only if the CPU supports it.
            Isa::Avx512 => unsafe { small_forward_f32_avx512(g, x, w, b, o) },
            // SAFETY: as above.
            Isa::Avx2 => unsafe { small_forward_f32_avx2(g, x, w, b, o) },
            Isa::Scalar => unreachable!("applies() requires AVX2"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, input, weight, bias, out);
        unreachable!("applies() requires x86-64");
    }
}
