//! Forward convolution as GEMM: for each image, group and block of output pixels, the input
//! patches are unrolled into a `K x block` column buffer (`K = cin/groups * kh * kw`) and
//! multiplied by the group's `cout/groups x K` weight panel, straight into the output.
//!
//! The column buffer holds one block, never a whole image or batch: at most
//! [`COLUMN_BUDGET`] elements (or one kernel's worth of rows for one pixel, if larger) per
//! task. Block sizes depend on the shape only, not on the thread count, so every output
//! element is summed in the same order for any number of threads.

use rayon::prelude::*;

use super::rows::valid_range;
use crate::element::Accumulator;
use crate::geometry::Geometry;

/// Elements of one task's column buffer (256 KiB of `f32`, within a Zen 4 core's L2).
pub(crate) const COLUMN_BUDGET: usize = 64 * 1024;

/// A raw output pointer that tasks writing disjoint elements share.
#[derive(Clone, Copy)]
struct OutPtr<A>(*mut A);
// SAFETY: the pointer is only dereferenced (by `gemm`) inside tasks that write pairwise
// disjoint sets of elements of one live `&mut [A]`, for the duration of that borrow.
unsafe impl<A: Send> Send for OutPtr<A> {}
// SAFETY: as above; sharing the pointer value between threads creates no aliasing writes.
unsafe impl<A: Send> Sync for OutPtr<A> {}

impl<A> OutPtr<A> {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    fn get(self) -> *mut A {
        self.0
    }
}

/// Output pixels per block for a shape: as many as fit the budget, a multiple of 16.
fn block_pixels(g: &Geometry) -> usize {
    let k = g.cin_per_group() * g.kh * g.kw;
    let plane = g.oh * g.ow;
    let fit = (COLUMN_BUDGET / k.max(1)).max(16) / 16 * 16;
    fit.min(plane).max(1)
}

/// `out = conv2d(input, weight) + bias` by im2col + GEMM, overwriting every element of `out`.
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
    assert_eq!(
        out.len(),
        g.output_len(),
        "output length checked by the plan"
    );
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let k = cin_g * g.kh * g.kw;
    let block = block_pixels(g);
    let blocks = plane.div_ceil(block);
    // Bias first: the GEMM then accumulates onto it.
    for (p, out_plane) in out.chunks_mut(plane).enumerate() {
        out_plane.fill(bias.map_or(A::ZERO, |b| b[p % g.cout]));
    }
    let out_ptr = OutPtr(out.as_mut_ptr());
    let tasks = g.n * g.groups * blocks;
    (0..tasks).into_par_iter().for_each_init(
        || vec![A::ZERO; k * block],
        |col, task| {
            let (image, rest) = (task / (g.groups * blocks), task % (g.groups * blocks));
            let (group, b) = (rest / blocks, rest % blocks);
            let p0 = b * block;
            let width = block.min(plane - p0);
            let x = &input[(image * g.cin + group * cin_g) * g.h * g.w..][..cin_g * g.h * g.w];
            fill_columns(g, x, p0, width, &mut col[..k * width]);
            let w = &weight[group * cout_g * k..][..cout_g * k];
            let dst_offset = (image * g.cout + group * cout_g) * plane + p0;
            // SAFETY: `dst` addresses rows `group*cout_g..(group+1)*cout_g` and columns
            // `p0..p0+width` of image `image`'s output planes: inside `out` (its length is
            // `output_len`, asserted above), and disjoint from every other task's elements
            // since tasks differ in image, group or pixel block. `w` is `cout_g x k` with row
            // stride `k`, `col` is `k x width` with row stride `width`; both are live slices
            // of those lengths. The accumulator types are exactly the ones `gemm` supports.
            unsafe {
                gemm::gemm(
                    cout_g,
                    width,
                    k,
                    out_ptr.get().add(dst_offset),
                    1,
                    plane as isize,
                    true,
                    w.as_ptr(),
                    1,
                    k as isize,
                    col.as_ptr(),
                    1,
                    width as isize,
                    A::ONE,
                    A::ONE,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
}

/// Unrolls the patches of output pixels `p0..p0+width` of one group's input `x`
/// (`cin_g` planes) into `col`, row `(ci, ky, kx)`, zeros where a tap falls in the padding.
fn fill_columns<A: Accumulator>(g: &Geometry, x: &[A], p0: usize, width: usize, col: &mut [A]) {
    let in_plane = g.h * g.w;
    let mut rows = col.chunks_exact_mut(width);
    for x_c in x.chunks_exact(in_plane) {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let Some(row) = rows.next() else { return };
                let tap = kx * g.dilation.w;
                let (lo, hi) = valid_range(g.ow, g.stride.w, tap, g.pad_left, g.w);
                let mut j = 0;
                while j < width {
                    let (oy, ox0) = ((p0 + j) / g.ow, (p0 + j) % g.ow);
                    let seg = (g.ow - ox0).min(width - j);
                    let dst = &mut row[j..j + seg];
                    j += seg;
                    let iy = (oy * g.stride.h + ky * g.dilation.h)
                        .checked_sub(g.pad_top)
                        .filter(|&iy| iy < g.h);
                    let (a, b) = (lo.clamp(ox0, ox0 + seg), hi.clamp(ox0, ox0 + seg));
                    let Some(iy) = iy.filter(|_| a < b) else {
                        dst.fill(A::ZERO);
                        continue;
                    };
                    dst[..a - ox0].fill(A::ZERO);
                    dst[b - ox0..].fill(A::ZERO);
                    let x_row = &x_c[iy * g.w..][..g.w];
                    let start = a * g.stride.w + tap - g.pad_left;
                    let src = x_row[start..].iter().step_by(g.stride.w);
                    for (d, &s) in dst[a - ox0..b - ox0].iter_mut().zip(src) {
                        *d = s;
                    }
                }
            }
        }
    }
}
