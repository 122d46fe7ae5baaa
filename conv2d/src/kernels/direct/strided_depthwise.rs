//! `direct`'s forward pass for 3x3 depthwise-style layers (one input channel per output
//! channel) with stride 2 on AVX-512, reading the input planes as they are: each tap's
//! window of 32 input columns is loaded (the lanes outside the image masked to zero, so
//! padding needs no copy) and its even columns picked in registers. `direct`'s slab would
//! split every input row into two column phases first, a pass over the whole input
//! (`mobilenet_dw_3x3s2`: 60% of the call).
//!
//! The sums take the taps in `direct`'s order with the same zeros for the padding, so both
//! give the same bits (and a non-finite weight meets the padding as `0 * weight`).

use super::tiled::as_type;
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};
use crate::kernels::rows::band_rows;
use crate::threading::for_each_chunk;

/// Output rows of one input plane: `out[r * ow + x] = init + sum over ky, kx of taps[3 * ky
/// + kx] * plane[(2 * (oy0 + r) + ky - pad_top, 2 * x + kx - pad_left)]`, zero outside the
/// `h x w` plane.
pub(crate) struct StridedRows<'a> {
    pub plane: &'a [f32],
    pub h: usize,
    pub w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    /// The first output row.
    pub oy0: usize,
    pub ow: usize,
    pub taps: &'a [f32; 9],
    pub init: f32,
    /// Whole rows of `ow` outputs.
    pub out: &'a mut [f32],
}

impl StridedRows<'_> {
    /// The plane and output pointers and the row count, after checking the bounds the
    /// kernel relies on (panics on a bug): a whole `h x w` plane and whole output rows.
    pub(crate) fn pointers(&mut self) -> (*const f32, *mut f32, usize) {
        assert!(self.plane.len() == self.h * self.w && self.ow > 0);
        assert!(self.out.len().is_multiple_of(self.ow));
        (
            self.plane.as_ptr(),
            self.out.as_mut_ptr(),
            self.out.len() / self.ow,
        )
    }
}

/// Whether this pass runs the shape in `A`: `f32` on AVX-512, a 3x3 kernel with stride 2
/// and dilation 1, one input channel per group, and padding narrower than the kernel.
pub(crate) fn applies<A: Accumulator>(g: &Geometry) -> bool {
    as_type::<A, f32>(&[]).is_some()
        && isa() == Isa::Avx512
        && (g.kh, g.kw) == (3, 3)
        && (g.stride.h, g.stride.w) == (2, 2)
        && (g.dilation.h, g.dilation.w) == (1, 1)
        && g.cin_per_group() == 1
        && g.pad_top < 3
        && g.pad_left < 3
}

/// `out = conv2d(input, weight) + bias` for a shape that [`applies`]: tasks of bands of
/// rows of each output plane.
pub(crate) fn forward<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    weight: &[A],
    bias: Option<&[A]>,
    out: &mut [A],
) {
    let (Some(input), Some(weight), Some(out)) = (
        as_type::<A, f32>(input),
        as_type::<A, f32>(weight),
        super::as_type_mut::<A, f32>(out),
    ) else {
        unreachable!("applies admits f32 only");
    };
    let bias = bias.map(|b| as_type::<A, f32>(b).expect("f32"));
    let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
    if plane == 0 {
        return;
    }
    let band = band_rows(g.n * g.cout, g.oh);
    for_each_chunk(out, plane, |p, out_plane| {
        let (n, co) = (p / g.cout, p % g.cout);
        let ci = co / g.cout_per_group();
        let x = &input[(n * g.cin + ci) * in_plane..][..in_plane];
        let taps: &[f32; 9] = weight[co * 9..][..9].try_into().expect("nine taps");
        for_each_chunk(out_plane, band * g.ow, |b, rows| {
            let mut job = StridedRows {
                plane: x,
                h: g.h,
                w: g.w,
                pad_top: g.pad_top,
                pad_left: g.pad_left,
                oy0: b * band,
                ow: g.ow,
                taps,
                init: bias.map_or(0.0, |b| b[co]),
                out: rows,
            };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `applies` admitted AVX-512, which `isa()` reports only where the CPU
            // has it; `pointers` checks the job's bounds.
            unsafe {
                crate::arch::x86_64::strided_depthwise_f32_avx512(&mut job)
            };
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("applies admits AVX-512 only {}", job.ow);
        });
    });
}
