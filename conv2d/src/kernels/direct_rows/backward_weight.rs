//! Gradient with respect to the weight: each task owns the `kh*kw` taps of one
//! `(out channel, in channel)` pair and reduces over the batch and the output plane.

use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::kernels::rows::{dot_conj, valid_range};
use crate::threading::for_each_chunk;

/// `grad_w[co, ci, ky, kx] = sum conj(input[n, ci, iy, ix]) * grad_out[n, co, oy, ox]`,
/// overwriting every element of `grad_w`.
pub(crate) fn backward_weight<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    grad_out: &[A],
    grad_w: &mut [A],
) {
    let taps = g.kh * g.kw;
    if taps == 0 {
        return;
    }
    let cin_g = g.cin_per_group();
    for_each_chunk(grad_w, taps, |pair, w_taps| {
        let (co, ci_in_group) = (pair / cin_g, pair % cin_g);
        let ci = (co / g.cout_per_group()) * cin_g + ci_in_group;
        for (t, gw) in w_taps.iter_mut().enumerate() {
            *gw = tap_gradient(g, input, grad_out, co, ci, t / g.kw, t % g.kw);
        }
    });
}

fn tap_gradient<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    grad_out: &[A],
    co: usize,
    ci: usize,
    ky: usize,
    kx: usize,
) -> A {
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    let tap = kx * g.dilation.w;
    let (lo, hi) = valid_range(g.ow, g.stride.w, tap, g.pad_left, g.w);
    let mut acc = A::ZERO;
    if lo == hi {
        return acc;
    }
    let ix = lo * g.stride.w + tap - g.pad_left;
    for n in 0..g.n {
        let x_c = &input[(n * g.cin + ci) * in_plane..][..in_plane];
        let gy_c = &grad_out[(n * g.cout + co) * out_plane..][..out_plane];
        for (oy, gy_row) in gy_c.chunks_exact(g.ow).enumerate() {
            let Some(iy) = (oy * g.stride.h + ky * g.dilation.h).checked_sub(g.pad_top) else {
                continue;
            };
            if iy >= g.h {
                continue;
            }
            let x_row = &x_c[iy * g.w + ix..(iy + 1) * g.w];
            acc += dot_conj(x_row, g.stride.w, &gy_row[lo..hi]);
        }
    }
    acc
}
