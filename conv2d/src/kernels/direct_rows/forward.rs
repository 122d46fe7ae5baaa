//! Forward convolution: each task fills a band of rows of one output plane.

use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::kernels::rows::{axpy_strided, band_rows, valid_range};
use crate::threading::for_each_chunk;

/// `out = conv2d(input, weight) + bias`, overwriting every element of `out`.
///
/// Slices are NCHW-contiguous with the lengths `g` implies.
pub(crate) fn forward<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    weight: &[A],
    bias: Option<&[A]>,
    out: &mut [A],
) {
    let plane = g.oh * g.ow;
    if plane == 0 || out.is_empty() {
        return;
    }
    let band = band_rows(g.n * g.cout, g.oh) * g.ow;
    for_each_chunk(out, plane, |p, out_plane| {
        let (n, co) = (p / g.cout, p % g.cout);
        for_each_chunk(out_plane, band, |b, rows| {
            let init = bias.map_or(A::ZERO, |b| b[co]);
            forward_band(g, input, weight, init, n, co, b * band / g.ow, rows);
        });
    });
}

/// Output rows `oy0..` of plane `(n, co)`.
#[allow(clippy::too_many_arguments)]
fn forward_band<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    weight: &[A],
    init: A,
    n: usize,
    co: usize,
    oy0: usize,
    rows: &mut [A],
) {
    let cin_g = g.cin_per_group();
    let in_plane = g.h * g.w;
    let group = co / g.cout_per_group();
    let x_n = &input[(n * g.cin + group * cin_g) * in_plane..][..cin_g * in_plane];
    let w_co = &weight[co * cin_g * g.kh * g.kw..][..cin_g * g.kh * g.kw];
    for (r, out_row) in rows.chunks_mut(g.ow).enumerate() {
        let oy = oy0 + r;
        out_row.fill(init);
        for (x_c, w_c) in x_n
            .chunks_exact(in_plane)
            .zip(w_co.chunks_exact(g.kh * g.kw))
        {
            for (ky, w_row) in w_c.chunks_exact(g.kw).enumerate() {
                let Some(iy) = (oy * g.stride.h + ky * g.dilation.h).checked_sub(g.pad_top) else {
                    continue;
                };
                if iy >= g.h {
                    continue;
                }
                let x_row = &x_c[iy * g.w..][..g.w];
                for (kx, &wv) in w_row.iter().enumerate() {
                    let tap = kx * g.dilation.w;
                    let (lo, hi) = valid_range(g.ow, g.stride.w, tap, g.pad_left, g.w);
                    if lo == hi {
                        continue;
                    }
                    let ix = lo * g.stride.w + tap - g.pad_left;
                    axpy_strided(&mut out_row[lo..hi], wv, &x_row[ix..], g.stride.w);
                }
            }
        }
    }
}
