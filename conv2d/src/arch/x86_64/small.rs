//! The kernel of [`Algorithm::DirectSmall`](crate::Algorithm::DirectSmall): the convolution
//! read straight from the caller's input, output row by output row, sums of a few channels
//! by a few vectors in registers, every term (padding ones too, as zeros) added tap after
//! tap. Nothing is staged or allocated, so a call costs little more than its multiply-adds.

use std::arch::x86_64::*;

use super::{Avx2F32, MaskedRegister};
use crate::geometry::Geometry;

/// Kernel columns the kernel holds masks for (see [`applies`]).
pub(crate) const MAX_KW: usize = 16;

/// Whether the kernel runs shape `g`: rows read contiguously (column stride 1) and at
/// most [`MAX_KW`] kernel columns.
pub(crate) fn applies(g: &Geometry) -> bool {
    g.stride.w == 1 && g.kw <= MAX_KW
}

/// `out = conv2d(input, weight) + bias` for a shape that [`applies`], with AVX-512.
///
/// # Safety
/// The CPU must support AVX-512 F (the slices' lengths are checked: panics if they are not
/// the ones `g` implies, or `g` does not [`apply`](applies)).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn small_forward_f32_avx512(
    g: &Geometry,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let call = Call::new(g, input, weight, bias, out);
    // Up to 8 channels by 3 vectors: 24 sums, 3 pixel vectors and a weight in 28 of the
    // 32 registers.
    // SAFETY: AVX-512 F is present (this function's contract).
    unsafe { runs::<__m512, 3, 8>(&call, out) }
}

/// [`small_forward_f32_avx512`] with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA (the slices' lengths are checked, as there).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn small_forward_f32_avx2(
    g: &Geometry,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let call = Call::new(g, input, weight, bias, out);
    // Up to 6 channels by 2 vectors: 12 sums, 2 pixel vectors and a weight in 15 of the
    // 16 registers.
    // SAFETY: AVX2 and FMA are present (this function's contract).
    unsafe { runs::<Avx2F32, 2, 6>(&call, out) }
}

/// Every output row of the call in runs of `V` vectors (2 or 3), a row's last run of
/// fewer vectors taking as many, with register `R` and tiles of up to `CH` channels.
///
/// # Safety
/// The CPU must support `R`'s instructions.
#[inline(always)]
unsafe fn runs<R: MaskedRegister<Elem = f32>, const V: usize, const CH: usize>(
    call: &Call<'_>,
    out: &mut [f32],
) {
    let vectors = call.g.ow.div_ceil(R::LANES);
    let full = vectors / V * V * R::LANES;
    for s in (0..full).step_by(V * R::LANES) {
        // SAFETY: `R`'s instructions are present (this function's contract).
        unsafe { run::<R, V, CH>(call, s, out) };
    }
    match vectors % V {
        0 => {}
        // SAFETY: as above.
        1 => unsafe { run::<R, 1, CH>(call, full, out) },
        // SAFETY: as above.
        _ => unsafe { run::<R, 2, CH>(call, full, out) },
    }
}

/// A call's shape and operands, checked against each other.
struct Call<'a> {
    g: &'a Geometry,
    input: &'a [f32],
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
}

impl<'a> Call<'a> {
    /// Panics unless the kernel [`applies`] to `g` and the slices have the lengths `g`
    /// implies.
    fn new(
        g: &'a Geometry,
        input: &'a [f32],
        weight: &'a [f32],
        bias: Option<&'a [f32]>,
        out: &[f32],
    ) -> Self {
        assert!(applies(g));
        assert_eq!(input.len(), g.input_len());
        assert_eq!(weight.len(), g.weight_len());
        assert_eq!(out.len(), g.output_len());
        assert!(bias.is_none_or(|b| b.len() == g.cout));
        Call {
            g,
            input,
            weight,
            bias,
        }
    }
}

/// The lanes of a vector whose first output column is `first` that are outputs (below
/// `ow`) and read input columns `0..w` through kernel column offset `offset` (input column
/// `first + lane + offset`).
fn lanes_inside(first: usize, offset: isize, w: usize, ow: usize, lanes: usize) -> u16 {
    (0..lanes)
        .filter(|&lane| {
            let column = (first + lane) as isize + offset;
            first + lane < ow && (0..w as isize).contains(&column)
        })
        .fold(0, |mask, lane| mask | 1 << lane)
}

/// One run of `V` vectors from output column `s` of every output row: where each kernel
/// column reads relative to the output column, the lanes that read inside the input row
/// per kernel column, and the lanes that are outputs.
struct Run<const V: usize> {
    s: usize,
    offsets: [isize; MAX_KW],
    masks: [[u16; V]; MAX_KW],
    stored: [u16; V],
}

impl<const V: usize> Run<V> {
    fn new(g: &Geometry, s: usize, lanes: usize) -> Self {
        let offsets = std::array::from_fn(|kx| (kx * g.dilation.w) as isize - g.pad_left as isize);
        let inside = |offset, w| {
            std::array::from_fn(|v| lanes_inside(s + lanes * v, offset, w, g.ow, lanes))
        };
        Run {
            s,
            offsets,
            masks: std::array::from_fn(|kx| inside(offsets[kx], g.w)),
            stored: inside(0, g.ow),
        }
    }
}

/// The run of `V` vectors from output column `s` of every output row of the call, with
/// register `R`, in tiles of up to `CH` output channels (of 1, 2 or 4 where a group has
/// no more left).
///
/// # Safety
/// The CPU must support `R`'s instructions.
#[inline(always)]
unsafe fn run<R: MaskedRegister<Elem = f32>, const V: usize, const CH: usize>(
    call: &Call<'_>,
    s: usize,
    out: &mut [f32],
) {
    let g = call.g;
    let (cin_g, cout_g, plane) = (g.cin_per_group(), g.cout_per_group(), g.h * g.w);
    let run = Run::<V>::new(g, s, R::LANES);
    for n in 0..g.n {
        for group in 0..g.groups {
            let x = &call.input[(n * g.cin + group * cin_g) * plane..][..cin_g * plane];
            for c0 in (0..cout_g).step_by(CH) {
                let (co0, count) = (group * cout_g + c0, CH.min(cout_g - c0));
                let out = &mut out[(n * g.cout + co0) * g.oh * g.ow..][..count * g.oh * g.ow];
                let tile = Tile { x, co0, count };
                // SAFETY: `R`'s instructions are present (this function's contract);
                // `count` is at most the arm's channels.
                unsafe {
                    match count {
                        1 => channels::<R, V, 1>(call, &run, tile, out),
                        2 => channels::<R, V, 2>(call, &run, tile, out),
                        3 | 4 => channels::<R, V, 4>(call, &run, tile, out),
                        _ => channels::<R, V, CH>(call, &run, tile, out),
                    }
                }
            }
        }
    }
}

/// `count` output channels from `co0` of one image and group, whose input channels are
/// `x`.
struct Tile<'a> {
    x: &'a [f32],
    co0: usize,
    count: usize,
}

/// The run `run` of `tile`'s channels (at most `C`) in every output row, into `out`, their
/// output planes. Each output sums its bias, then every term in the order of the weight's
/// layout (input channel, kernel row, kernel column); a padding row's terms add zeros.
///
/// # Safety
/// The CPU must support `R`'s instructions; `tile.count <= C`.
#[inline(always)]
unsafe fn channels<R: MaskedRegister<Elem = f32>, const V: usize, const C: usize>(
    call: &Call<'_>,
    run: &Run<V>,
    Tile { x, co0, count }: Tile<'_>,
    out: &mut [f32],
) {
    let (g, s, lanes) = (call.g, run.s, R::LANES);
    let taps = g.cin_per_group() * g.kh * g.kw;
    // Channels past `count` repeat the last one (their sums are not stored).
    let channel = |c: usize| co0 + c.min(count - 1);
    let rows: [&[f32]; C] = std::array::from_fn(|c| &call.weight[channel(c) * taps..][..taps]);
    let init: [f32; C] = std::array::from_fn(|c| call.bias.map_or(0.0, |b| b[channel(c)]));
    let columns = &run.masks[..g.kw];
    for oy in 0..g.oh {
        // SAFETY: `R`'s instructions are present (this function's contract).
        let mut acc: [[R; V]; C] = init.map(|b| [unsafe { R::splat(b) }; V]);
        // Each channel's weights of one input channel and kernel row at a time.
        let mut weights = rows.map(|r| r.chunks_exact(g.kw));
        for x_c in x.chunks_exact(g.h * g.w) {
            for ky in 0..g.kh {
                let iy = (oy * g.stride.h + ky * g.dilation.h).checked_sub(g.pad_top);
                let row = iy.filter(|&iy| iy < g.h).map(|iy| &x_c[iy * g.w..][..g.w]);
                let w: [&[f32]; C] = std::array::from_fn(|c| weights[c].next().unwrap_or_default());
                for (kx, (masks, &offset)) in columns.iter().zip(&run.offsets).enumerate() {
                    // SAFETY: `R`'s instructions are present; a masked lane reads input
                    // column `s + lanes * v + lane + offset`, inside the row
                    // (`lanes_inside`), the others are not read. A padding row adds zeros.
                    let xs: [R; V] = std::array::from_fn(|v| unsafe {
                        match row {
                            Some(row) => {
                                let at = (s + lanes * v) as isize + offset;
                                R::load_where(row.as_ptr().wrapping_offset(at), masks[v])
                            }
                            None => R::splat(0.0),
                        }
                    });
                    for (acc_c, w_c) in acc.iter_mut().zip(&w) {
                        // SAFETY: `kx < kw`, the length of every channel's `w_c`; `R`'s
                        // instructions are present.
                        let wc = unsafe { R::splat(*w_c.get_unchecked(kx)) };
                        for (a, &xv) in acc_c.iter_mut().zip(&xs) {
                            // SAFETY: `R`'s instructions are present.
                            *a = unsafe { R::fmadd(wc, xv, *a) };
                        }
                    }
                }
            }
        }
        for (c, acc_c) in acc.iter().enumerate().take(count) {
            let o = &mut out[c * g.oh * g.ow + oy * g.ow..][..g.ow];
            for (v, &a) in acc_c.iter().enumerate() {
                // SAFETY: `R`'s instructions are present; the stored lanes are output
                // columns below `ow`, inside the row `o`.
                unsafe {
                    R::store_where(o.as_mut_ptr().wrapping_add(s + lanes * v), a, run.stored[v])
                };
            }
        }
    }
}
