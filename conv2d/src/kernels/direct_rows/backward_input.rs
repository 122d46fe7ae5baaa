//! Gradient with respect to the input (also the forward pass of a transposed convolution):
//! each task fills a band of rows of one input-gradient plane, gathering from every output
//! row that a kernel tap connects to it.

use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::kernels::rows::{axpy_scattered, band_rows, valid_range};
use crate::threading::for_each_chunk;

/// `grad_in[n, ci, iy, ix] = sum weight[co, ci, ky, kx] * grad_out[n, co, oy, ox]` over the
/// taps with `iy = oy*stride + ky*dilation - pad`, overwriting every element of `grad_in`.
///
/// No conjugation happens here: callers pass the conjugated weight for complex gradients.
pub(crate) fn backward_input<A: Accumulator>(
    g: &Geometry,
    grad_out: &[A],
    weight: &[A],
    grad_in: &mut [A],
) {
    let plane = g.h * g.w;
    if plane == 0 || grad_in.is_empty() {
        return;
    }
    let band = band_rows(g.n * g.cin, g.h) * g.w;
    for_each_chunk(grad_in, plane, |p, in_plane| {
        let (n, ci) = (p / g.cin, p % g.cin);
        for_each_chunk(in_plane, band, |b, rows| {
            backward_input_band(g, grad_out, weight, n, ci, b * band / g.w, rows);
        });
    });
}

/// Input-gradient rows `iy0..` of plane `(n, ci)`.
fn backward_input_band<A: Accumulator>(
    g: &Geometry,
    grad_out: &[A],
    weight: &[A],
    n: usize,
    ci: usize,
    iy0: usize,
    rows: &mut [A],
) {
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let out_plane = g.oh * g.ow;
    let taps = g.kh * g.kw;
    let (group, ci_in_group) = (ci / cin_g, ci % cin_g);
    let co_range = group * cout_g..(group + 1) * cout_g;
    for (r, in_row) in rows.chunks_mut(g.w).enumerate() {
        let iy = iy0 + r;
        in_row.fill(A::ZERO);
        for co in co_range.clone() {
            let gy_plane = &grad_out[(n * g.cout + co) * out_plane..][..out_plane];
            let w_taps = &weight[(co * cin_g + ci_in_group) * taps..][..taps];
            for (ky, w_row) in w_taps.chunks_exact(g.kw).enumerate() {
                // The output row oy with oy*stride + ky*dilation - pad_top == iy, if any.
                let Some(t) = (iy + g.pad_top).checked_sub(ky * g.dilation.h) else {
                    continue;
                };
                if t % g.stride.h != 0 || t / g.stride.h >= g.oh {
                    continue;
                }
                let gy_row = &gy_plane[(t / g.stride.h) * g.ow..][..g.ow];
                for (kx, &wv) in w_row.iter().enumerate() {
                    let tap = kx * g.dilation.w;
                    let (lo, hi) = valid_range(g.ow, g.stride.w, tap, g.pad_left, g.w);
                    if lo == hi {
                        continue;
                    }
                    let ix = lo * g.stride.w + tap - g.pad_left;
                    axpy_scattered(&mut in_row[ix..], wv, &gy_row[lo..hi], g.stride.w);
                }
            }
        }
    }
}
