//! `direct`'s 3x3 kernels that read the input planes as they are, on AVX-512 (the weight
//! gradient and the forward pass also on AVX2, in vectors of 8): each window is
//! loaded with the lanes outside the image masked to zero (and rows outside it taken as
//! zeros), so padding needs no copy into a slab.
//!
//! - The forward pass of depthwise-style layers (one input channel per output channel).
//!   Stride 1: input row after input row, each window fused into the three output rows
//!   that read it (the slab copy was 30% of `mobilenet_dw_3x3`). Stride 2: input row after
//!   input row too, each row's 32 columns per 16 outputs loaded, their even and odd columns
//!   picked in registers (the slab would split every input row into two column phases
//!   first, 60% of `mobilenet_dw_3x3s2`), each row's windows fused into the one or two
//!   output rows that read it (2x as fast as loading every tap's windows per output row).
//!   Whole stride-1 planes whose output rows are as wide as the input's and under 8 pixels
//!   (7x7 maps with padding 1) run as one flat run of the plane's pixels instead, 16 to a
//!   vector whatever their rows (see `FLAT_FORWARD_WIDTH`).
//! - The weight gradient with stride 1: each input row's three windows loaded once per 16
//!   pixels for the output-gradient rows that meet them. The slab copy was a third of
//!   `bwd_weight_dw_3x3`. Output rows as wide as the input's and narrower than a vector
//!   (7x7 and 14x14 maps with padding 1) run as one flat run of the plane's pixels instead,
//!   16 to a vector whatever their rows (`conv2d-bench`, the weight gradients of
//!   `sweeps/depthwise.json`, one thread: 7x7 1.7x, 14x14 1.2x as fast; 28x28 even, 56x56
//!   0.8x, so wider rows keep the row kernel).
//!
//! The sums take the same terms in `direct`'s order with the same zeros for the padding, so
//! both give the same bits (and a non-finite weight or output gradient meets the padding
//! as `0 * value`), but for the flat weight gradient: its lanes take other pixels (the
//! same zeros for the padding; a layer's bits depend on its shape, never on the thread
//! count).

use super::tiled::as_type;
use super::LANES;
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};

/// Output rows of one input plane: `out[r * ow + x] = init + sum over ky, kx of taps[3 * ky
/// + kx] * plane[(stride * (oy0 + r) + ky - pad_top, stride * x + kx - pad_left)]`, zero
/// outside the `h x w` plane.
pub(crate) struct PlaneRows<'a> {
    /// 1 or 2.
    pub stride: usize,
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
    /// The AVX-512 stride-1 kernel's window masks (`plane_row_masks`), else empty.
    pub masks: &'a [[u16; 3]],
    /// Whole rows of `ow` outputs.
    pub out: &'a mut [f32],
}

impl PlaneRows<'_> {
    /// The plane and output pointers and the row count, after checking the bounds the
    /// kernel relies on (panics on a bug): a whole `h x w` plane and whole output rows.
    pub(crate) fn pointers(&mut self) -> (*const f32, *mut f32, usize) {
        assert!(self.plane.len() == self.h * self.w && self.ow > 0);
        assert!(self.stride == 1 || self.stride == 2);
        assert!(self.out.len().is_multiple_of(self.ow));
        (
            self.plane.as_ptr(),
            self.out.as_mut_ptr(),
            self.out.len() / self.ow,
        )
    }
}

/// One image's contribution to one channel pair's 3x3 weight gradient with stride 1:
/// `sums[3 * ky + kx][l] +=` the products `plane[(oy + ky - pad_top, ox + kx - pad_left)] *
/// grad_out[oy * ow + ox]` (zero outside the `h x w` plane) of the outputs `ox` in lane `l`
/// of their row's vectors, row by row, a row's last partial vector last.
pub(crate) struct PlaneWeightRows<'a> {
    pub plane: &'a [f32],
    pub h: usize,
    pub w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub ow: usize,
    /// Whole rows of `ow` values.
    pub grad_out: &'a [f32],
    pub sums: &'a mut [[f32; LANES]; 9],
    /// The row kernels' window masks (`plane_weight_masks`).
    pub masks: &'a [[u16; 3]],
}

impl PlaneWeightRows<'_> {
    /// The plane, output-gradient and sums pointers and the output row count, after
    /// checking the bounds the kernel relies on (panics on a bug).
    pub(crate) fn pointers(&mut self) -> (*const f32, *const f32, *mut [f32; LANES], usize) {
        assert!(self.plane.len() == self.h * self.w && self.ow > 0);
        assert!(self.grad_out.len().is_multiple_of(self.ow));
        (
            self.plane.as_ptr(),
            self.grad_out.as_ptr(),
            self.sums.as_mut_ptr(),
            self.grad_out.len() / self.ow,
        )
    }
}

/// Whether a 3x3 shape with `stride` and dilation 1 and padding narrower than the kernel
/// suits these kernels in `A` (`f32`), whatever the CPU.
fn suits<A: Accumulator>(g: &Geometry, stride: usize) -> bool {
    as_type::<A, f32>(&[]).is_some()
        && (g.kh, g.kw) == (3, 3)
        && (g.stride.h, g.stride.w) == (stride, stride)
        && (g.dilation.h, g.dilation.w) == (1, 1)
        && g.pad_top < 3
        && g.pad_left < 3
}

/// Whether [`forward`] runs the shape in `A`: one input channel per group, stride 1 or 2,
/// on AVX-512 or AVX2.
pub(crate) fn forward_applies<A: Accumulator>(g: &Geometry) -> bool {
    g.cin_per_group() == 1
        && matches!(isa(), Isa::Avx2 | Isa::Avx512)
        && (suits::<A>(g, 1) || suits::<A>(g, 2))
}

/// Whether [`add_weight_gradient`] runs the shape in `A`: stride 1, on AVX-512 or AVX2.
pub(crate) fn weight_applies<A: Accumulator>(g: &Geometry) -> bool {
    matches!(isa(), Isa::Avx2 | Isa::Avx512) && suits::<A>(g, 1)
}

/// Output rows narrower than this many pixels, as wide as the input's, run the weight
/// gradient as one flat run of pixels (see [`flat_masks`]): it loads each tap's window for
/// every vector (ten loads to nine multiply-adds) where the row kernel loads an input row's
/// three windows once for three output rows, so it wins only where the row kernel leaves
/// most lanes idle or its rows are few. AMD Zen 5, one thread, three to five alternated
/// rounds, depthwise layers of 7- to 15-wide maps 1 to 6 times as tall as wide: under 9
/// columns the flat run 1.0-1.35x as fast (7x7 1.33x, 48x8 1.0x), from 13 columns 0.83-0.86x
/// (14x14 0.83x); 9 to 12 columns 1.07-1.17x on square maps but 0.51-0.9x on taller ones.
const FLAT_WEIGHT_WIDTH: usize = 9;
/// [`FLAT_WEIGHT_WIDTH`] for planes no taller than wide.
const FLAT_WEIGHT_WIDTH_SHORT: usize = 13;
/// Output rows narrower than this many pixels, as wide as the input's, run the forward
/// pass as one flat run of pixels (see [`flat_masks`]): 7x7 depthwise layers 1.5x as fast
/// on one thread (`sweeps/depthwise.json`), 14x14 ones 0.86x (where the row kernel loads
/// each input row's windows once for three output rows and the flat run loads every tap's).
const FLAT_FORWARD_WIDTH: usize = 8;

/// For a shape [`weight_applies`] to on AVX-512 whose output rows are as wide as the
/// input's and narrower than `width`: per vector of 16 pixels of the flattened output
/// plane and tap, the lanes whose input lies inside the image (see
/// `flat_weight_3x3_f32_avx512`): rows of 7 or 14 pixels fill whole vectors so, where the
/// row kernels leave 9 or 2 of 16 lanes idle. `None` for other shapes.
fn flat_masks<A: Accumulator>(g: &Geometry, width: usize) -> Option<Vec<u16>> {
    if !(isa() == Isa::Avx512 && suits::<A>(g, 1) && g.ow == g.w && g.ow < width) {
        return None;
    }
    let pixels = g.oh * g.ow;
    let mut masks = vec![0u16; pixels.div_ceil(LANES) * 9];
    for p in 0..pixels {
        let (oy, ox) = (p / g.ow, p % g.ow);
        for t in 0..9 {
            let iy = (oy + t / 3).checked_sub(g.pad_top).filter(|&iy| iy < g.h);
            let ix = (ox + t % 3).checked_sub(g.pad_left).filter(|&ix| ix < g.w);
            if iy.is_some() && ix.is_some() {
                masks[p / LANES * 9 + t] |= 1 << (p % LANES);
            }
        }
    }
    Some(masks)
}

/// The lane masks of a call's weight-gradient kernels, worked out once for all its planes:
/// the flat run's ([`flat_masks`]) where it runs, else the row kernels' windows'.
pub(crate) struct WeightMasks {
    flat: Option<Vec<u16>>,
    windows: Vec<[u16; 3]>,
}

impl WeightMasks {
    /// The masks of a shape [`weight_applies`] to (nothing otherwise).
    pub(crate) fn new<A: Accumulator>(g: &Geometry) -> Self {
        let width = match g.oh <= g.ow {
            true => FLAT_WEIGHT_WIDTH_SHORT,
            false => FLAT_WEIGHT_WIDTH,
        };
        let flat = flat_masks::<A>(g, width);
        #[cfg(target_arch = "x86_64")]
        let windows = match flat.is_none() && weight_applies::<A>(g) {
            true => crate::arch::x86_64::plane_weight_masks(g.ow, g.pad_left, g.w),
            false => Vec::new(),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let windows = Vec::new();
        WeightMasks { flat, windows }
    }
}

/// Adds image `x`'s (one input plane) contribution against `grad_out` (the pair's output
/// gradient plane) to a pair's weight-gradient `sums`, for a shape [`weight_applies`] to,
/// with the call's `masks`; as one flat run of pixels where they have [`flat_masks`].
pub(crate) fn add_weight_gradient<A: Accumulator>(
    g: &Geometry,
    x: &[A],
    grad_out: &[A],
    sums: &mut [[A; LANES]],
    masks: &WeightMasks,
) {
    let (Some(plane), Some(grad_out)) = (as_type::<A, f32>(x), as_type::<A, f32>(grad_out)) else {
        unreachable!("weight_applies admits f32 only");
    };
    let flat = super::as_type_mut::<A, f32>(sums.as_flattened_mut()).expect("f32");
    let (sums, _) = flat.as_chunks_mut::<LANES>();
    let sums: &mut [[f32; LANES]; 9] = sums.try_into().expect("nine taps");
    let mut job = PlaneWeightRows {
        plane,
        h: g.h,
        w: g.w,
        pad_top: g.pad_top,
        pad_left: g.pad_left,
        ow: g.ow,
        grad_out,
        sums,
        masks: &masks.windows,
    };
    #[cfg(target_arch = "x86_64")]
    match (isa(), masks.flat.as_deref()) {
        // SAFETY: `flat_masks` returns masks only on AVX-512, which `isa()` reports
        // only where the CPU has it, and clears each lane whose input is outside the image
        // (`flat_masks`); the kernel checks the other bounds.
        (_, Some(masks)) => unsafe {
            crate::arch::x86_64::flat_weight_3x3_f32_avx512(&mut job, masks)
        },
        // SAFETY: `isa()` reports a level only where the CPU has it; `pointers` checks the
        // job's bounds.
        (Isa::Avx512, None) => unsafe {
            crate::arch::x86_64::plane_weight_3x3_f32_avx512(&mut job)
        },
        // SAFETY: as above.
        (Isa::Avx2, None) => unsafe { crate::arch::x86_64::plane_weight_3x3_f32_avx2(&mut job) },
        _ => unreachable!("weight_applies admits AVX2 and AVX-512 only"),
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "weight_applies admits AVX2 and AVX-512 only {} {:?}",
        job.ow, masks.flat
    );
}

/// `out = conv2d(input, weight) + bias` for a shape that [`forward_applies`]: tasks of
/// bands of rows of each output plane (the caller has returned on an empty output).
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
        unreachable!("forward_applies admits f32 only");
    };
    let bias = bias.map(|b| as_type::<A, f32>(b).expect("f32"));
    let flat_masks = flat_masks::<A>(g, FLAT_FORWARD_WIDTH);
    #[cfg(target_arch = "x86_64")]
    let row_masks = match isa() == Isa::Avx512 && g.stride.w == 1 {
        true => crate::arch::x86_64::plane_row_masks(g.ow, g.pad_left, g.w),
        false => Vec::new(),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let row_masks = Vec::new();
    super::for_each_band(g, input, out, |co, x, oy0, rows| {
        let taps: &[f32; 9] = weight[co * 9..][..9].try_into().expect("nine taps");
        let whole_plane = rows.len() == g.oh * g.ow;
        let mut job = PlaneRows {
            stride: g.stride.h,
            plane: x,
            h: g.h,
            w: g.w,
            pad_top: g.pad_top,
            pad_left: g.pad_left,
            oy0,
            ow: g.ow,
            taps,
            init: bias.map_or(0.0, |b| b[co]),
            masks: &row_masks,
            out: rows,
        };
        #[cfg(target_arch = "x86_64")]
        match &flat_masks {
            // SAFETY: `flat_masks` returns masks only on AVX-512, which `isa()` reports
            // only where the CPU has it, each clearing the lanes whose input is outside the
            // image; the kernel checks the other bounds.
            Some(masks) if whole_plane => unsafe {
                crate::arch::x86_64::flat_rows_3x3_f32_avx512(&mut job, masks)
            },
            // SAFETY: `isa()` reports a level only where the CPU has it; `pointers` checks
            // the job's bounds.
            _ if isa() == Isa::Avx512 => unsafe {
                crate::arch::x86_64::plane_rows_3x3_f32_avx512(&mut job)
            },
            // SAFETY: as above.
            _ => unsafe { crate::arch::x86_64::plane_rows_3x3_f32_avx2(&mut job) },
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("forward_applies admits AVX2 and AVX-512 only {}", job.ow);
    });
}
