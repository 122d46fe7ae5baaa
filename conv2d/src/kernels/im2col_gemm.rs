//! Forward convolution as GEMM: for each image, group and block of output pixels, the input
//! patches are unrolled into a `K x block` column buffer (`K = cin/groups * kh * kw`) and
//! multiplied by the group's `cout/groups x K` weight panel, straight into the output.
//!
//! The column buffer holds one block, never a whole image or batch: at most
//! [`COLUMN_BUDGET`] elements (or one kernel's worth of rows for one pixel, if larger) per
//! task. Block sizes depend on the shape only, not on the thread count, so every output
//! element is summed in the same order for any number of threads.

use super::rows::valid_range;
use super::{add_into, every_nth, Scratch};
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::options::Pair;
use crate::threading::{for_each_chunk_init, for_each_index_init, for_each_item};

/// Tasks a pass is split into at least, where the shape allows (independent of the thread
/// count, so that results are too).
const MIN_TASKS: usize = 4;

/// Elements of one task's column buffer (512 KiB of `f32`, half a Zen 4 core's L2).
pub(crate) const COLUMN_BUDGET: usize = 128 * 1024;

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

/// Whether the columns are the input planes themselves: a 1x1 kernel with stride 1 and no
/// padding, read in place (no column buffer).
fn reads_in_place(g: &Geometry) -> bool {
    g.kh == 1
        && g.kw == 1
        && g.stride == Pair::new(1, 1)
        && g.pad_top == 0
        && g.pad_left == 0
        && g.oh == g.h
        && g.ow == g.w
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
    scratch: &Scratch,
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
    // Few pixel blocks (small maps with many channels): split the output channels too, so
    // that there are tasks for every core. A function of the shape only, like the blocks.
    let spatial_tasks = g.n * g.groups * blocks;
    let co_chunks = MIN_TASKS
        .div_ceil(spatial_tasks)
        .min(cout_g.div_ceil(8))
        .max(1);
    let co_block = cout_g.div_ceil(co_chunks);
    let co_chunks = cout_g.div_ceil(co_block);
    let pointwise = reads_in_place(g);
    for_each_index_init(
        spatial_tasks * co_chunks,
        || scratch.filled(if pointwise { 0 } else { k * block }, A::ZERO),
        |col, task| {
            let Some(col) = col.as_mut() else {
                return;
            };
            let (spatial, chunk) = (task / co_chunks, task % co_chunks);
            let (image, rest) = (spatial / (g.groups * blocks), spatial % (g.groups * blocks));
            let (group, b) = (rest / blocks, rest % blocks);
            let p0 = b * block;
            let width = block.min(plane - p0);
            let co0 = chunk * co_block;
            let rows = co_block.min(cout_g - co0);
            let x = &input[(image * g.cin + group * cin_g) * g.h * g.w..][..cin_g * g.h * g.w];
            let (columns, col_row_stride) = if pointwise {
                (&x[p0..], plane)
            } else {
                fill_columns(g, x, p0, width, &mut col[..k * width]);
                (&col[..], width)
            };
            let w = &weight[(group * cout_g + co0) * k..][..rows * k];
            let dst_offset = (image * g.cout + group * cout_g + co0) * plane + p0;
            // SAFETY: `dst` addresses rows `co0..co0+rows` of the group's output channels and
            // columns `p0..p0+width` of image `image`'s planes: inside `out` (its length is
            // `output_len`, asserted above), and disjoint from every other task's elements
            // since tasks differ in image, group, pixel block or channel chunk. `w` is
            // `rows x k` with row stride `k`; `columns` is `k x width` with row stride
            // `col_row_stride` (the column buffer, or the input planes themselves, whose
            // last row ends at `(k-1)*plane + p0 + width <= k*plane`). The accumulator
            // types are exactly the ones `gemm` supports.
            unsafe {
                gemm::gemm(
                    rows,
                    width,
                    k,
                    out_ptr.get().add(dst_offset),
                    1,
                    plane as isize,
                    true,
                    w.as_ptr(),
                    1,
                    k as isize,
                    columns.as_ptr(),
                    1,
                    col_row_stride as isize,
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

/// Blocking of the backward passes: output pixels per block, and input channels per task
/// (a divisor of `cin/groups`, so that tasks own whole, aligned channel ranges).
fn backward_blocking(g: &Geometry) -> (usize, usize) {
    let taps = (g.kh * g.kw).max(1);
    let block = ((COLUMN_BUDGET / taps).max(16) / 16 * 16)
        .min(g.oh * g.ow)
        .max(1);
    let cin_g = g.cin_per_group();
    // At least two blocks of channels in all, where they allow: a 1x1 layer of 128 channels
    // on 28x28 fits the budget whole, which left one thread idle (0.80x PyTorch). Four ran
    // layers of 24-64 channels on 56x56 0.65-0.79x as fast (thinner GEMMs).
    let spread = (cin_g.saturating_mul(g.groups) / 2).max(1);
    let target = (COLUMN_BUDGET / (taps * block)).clamp(1, spread);
    let ci_block = (1..=target.min(cin_g))
        .rev()
        .find(|d| cin_g.is_multiple_of(*d))
        .unwrap_or(1);
    (block, ci_block)
}

/// The input gradient by GEMM and col2im: each task owns `ci_block` input-gradient planes of
/// one image, and for each block of output pixels computes their column rows
/// (`weight^T * grad_out`) and adds them back into the pixels they came from. Overwrites
/// every element of `grad_in`; no conjugation (callers pass the conjugated weight).
pub(crate) fn backward_input<A: Accumulator>(
    g: &Geometry,
    grad_out: &[A],
    weight: &[A],
    grad_in: &mut [A],
    scratch: &Scratch,
) {
    let in_plane = g.h * g.w;
    let plane = g.oh * g.ow;
    if in_plane == 0 || grad_in.is_empty() {
        return;
    }
    assert_eq!(
        grad_out.len(),
        g.output_len(),
        "grad_output length checked by the plan"
    );
    assert_eq!(
        weight.len(),
        g.weight_len(),
        "weight length checked by the plan"
    );
    let (cin_g, cout_g, taps) = (g.cin_per_group(), g.cout_per_group(), g.kh * g.kw);
    let k = cin_g * taps;
    let (block, ci_block) = backward_blocking(g);
    let rows = ci_block * taps;
    for_each_chunk_init(
        grad_in,
        ci_block * in_plane,
        || scratch.filled(rows * block, A::ZERO),
        |col, task, gx| {
            let Some(col) = col.as_mut() else {
                return;
            };
            gx.fill(A::ZERO);
            let (image, ci0) = (task * ci_block / g.cin, task * ci_block % g.cin);
            let (group, ci_in_group) = (ci0 / cin_g, ci0 % cin_g);
            for p0 in (0..plane).step_by(block) {
                let width = block.min(plane - p0);
                let gy = &grad_out[(image * g.cout + group * cout_g) * plane + p0..];
                let w = &weight[group * cout_g * k + ci_in_group * taps..];
                // SAFETY: `col` holds `rows * width` elements written with row stride
                // `width`. `w` reads `(kk, co)` at `kk + co*k` for `kk < rows`,
                // `co < cout_g`: inside the group's `cout_g x k` panel from its column
                // `ci_in_group*taps`, since `ci_in_group*taps + rows <= k`. `gy` reads
                // `(co, j)` at `co*plane + j` for `j < width <= plane - p0`: inside the
                // group's output-gradient planes of `image`. Lengths asserted above.
                unsafe {
                    gemm::gemm(
                        rows,
                        width,
                        cout_g,
                        col.as_mut_ptr(),
                        1,
                        width as isize,
                        false,
                        w.as_ptr(),
                        k as isize,
                        1,
                        gy.as_ptr(),
                        1,
                        plane as isize,
                        A::ZERO,
                        A::ONE,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                scatter_columns(g, &col[..rows * width], p0, width, gx);
            }
        },
    );
}

/// The weight gradient by im2col and GEMM: each task owns the columns of `ci_block` input
/// channels of one group's `cout/groups x K` gradient and sums `grad_out * conj(col)^T` over
/// the batch and the pixel blocks, in a fixed order. Overwrites every element of `grad_w`.
pub(crate) fn backward_weight<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    grad_out: &[A],
    grad_w: &mut [A],
    scratch: &Scratch,
) {
    let plane = g.oh * g.ow;
    let in_plane = g.h * g.w;
    if g.n == 0 || plane == 0 || in_plane == 0 {
        grad_w.fill(A::ZERO);
        return;
    }
    assert_eq!(
        grad_w.len(),
        g.weight_len(),
        "grad_weight length checked by the plan"
    );
    assert_eq!(
        grad_out.len(),
        g.output_len(),
        "grad_output length checked by the plan"
    );
    assert_eq!(
        input.len(),
        g.input_len(),
        "input length checked by the plan"
    );
    let (cin_g, cout_g, taps) = (g.cin_per_group(), g.cout_per_group(), g.kh * g.kw);
    let in_place = reads_in_place(g);
    if in_place && cin_g < WIDE_CHANNELS {
        return pointwise_weight_by_pixels(g, input, grad_out, grad_w, scratch);
    }
    let k = cin_g * taps;
    let (block, ci_block) = backward_blocking(g);
    let rows = ci_block * taps;
    let per_group = cin_g / ci_block;
    let gw_ptr = OutPtr(grad_w.as_mut_ptr());
    for_each_index_init(
        g.groups * per_group,
        || scratch.filled(if in_place { 0 } else { rows * block }, A::ZERO),
        |col, task| {
            let Some(col) = col.as_mut() else {
                return;
            };
            let (group, ci_in_group) = (task / per_group, task % per_group * ci_block);
            let mut first = true;
            for image in 0..g.n {
                let x = &input[(image * g.cin + group * cin_g + ci_in_group) * in_plane..]
                    [..ci_block * in_plane];
                for p0 in (0..plane).step_by(block) {
                    let width = block.min(plane - p0);
                    let (columns, col_row_stride) = if in_place {
                        (&x[p0..], plane)
                    } else {
                        fill_columns(g, x, p0, width, &mut col[..rows * width]);
                        (&col[..], width)
                    };
                    let gy = &grad_out[(image * g.cout + group * cout_g) * plane + p0..];
                    let dst = group * cout_g * k + ci_in_group * taps;
                    // SAFETY: `dst` addresses rows `group*cout_g..+cout_g` (stride `k`) and
                    // columns `ci_in_group*taps..+rows` of `grad_w` (length asserted): inside
                    // it, and disjoint from every other task's, which differ in group or
                    // channel block. `gy` reads `(co, j)` at `co*plane + j`, `j < width`:
                    // inside the group's planes of `image`. `columns` is `rows x width` with
                    // row stride `col_row_stride`, read transposed (the column buffer, or the
                    // block's input planes, whose last row ends at `(rows-1)*plane + p0 +
                    // width <= rows*plane`). The first product overwrites, later ones
                    // accumulate.
                    unsafe {
                        weight_product(
                            (gw_ptr.get().add(dst), k),
                            (cout_g, rows, width),
                            !first,
                            (gy.as_ptr(), plane),
                            (columns.as_ptr(), col_row_stride),
                        );
                    }
                    first = false;
                }
            }
        },
    );
}

/// One weight-gradient product with the `gemm` crate: `dst[co * dst_row + t] (+)= sum over
/// j < width of gy[co * gy_row + j] * conj(columns[t * col_row + j])` for `co < couts` and
/// `t < taps`, added to `dst` when `accumulate`, else overwriting it.
///
/// # Safety
/// Every element named is inside its buffer, and no other thread touches `dst`'s meanwhile.
unsafe fn weight_product<A: Accumulator>(
    (dst, dst_row): (*mut A, usize),
    (couts, taps, width): (usize, usize, usize),
    accumulate: bool,
    (gy, gy_row): (*const A, usize),
    (columns, col_row): (*const A, usize),
) {
    // SAFETY: this function's contract; the accumulator types are exactly the ones `gemm`
    // supports.
    unsafe {
        gemm::gemm(
            couts,
            taps,
            width,
            dst,
            1,
            dst_row as isize,
            accumulate,
            gy,
            1,
            gy_row as isize,
            columns,
            col_row as isize,
            1,
            A::ONE,
            A::ONE,
            false,
            false,
            true,
            gemm::Parallelism::None,
        );
    }
}

/// Input channels per group from which a pointwise weight gradient splits over its input
/// channels (each task a GEMM as wide as its block); below, over its pixels.
const WIDE_CHANNELS: usize = 128;
/// Parts a pointwise weight gradient's pixels split into at most, and pixels per part at
/// least.
const PARTS: usize = 4;
const PART_PIXELS: usize = 1024;

/// A pointwise weight gradient of fewer than [`WIDE_CHANNELS`] input channels per group:
/// split over its pixels (every image's, in order) into up to [`PARTS`] parts, each part's
/// tasks one GEMM per group and image as wide as all the group's input channels, reading
/// the input planes and the output gradient once; the parts' sums then added in order.
/// Split over channels instead, each task re-read the whole output gradient and its GEMMs
/// were thin: `sweeps/pointwise_weight.json`'s layers of 16-64 channels on 56x56-112x112
/// maps ran 0.40-0.95x PyTorch on one thread.
fn pointwise_weight_by_pixels<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    grad_out: &[A],
    grad_w: &mut [A],
    scratch: &Scratch,
) {
    let plane = g.oh * g.ow;
    let total = g.n * plane;
    // A power of two, so that two threads share the parts evenly.
    let parts = 1 << (total / PART_PIXELS).clamp(1, PARTS).ilog2();
    let per_part = total.div_ceil(parts);
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let Some(mut later) = scratch.filled((parts - 1) * grad_w.len(), A::ZERO) else {
        return;
    };
    let sums: Vec<(usize, &mut [A])> = std::iter::once(&mut *grad_w)
        .chain(later.chunks_exact_mut(g.weight_len()))
        .enumerate()
        .collect();
    for_each_item(sums, |(part, gw)| {
        let pixels = part * per_part..((part + 1) * per_part).min(total);
        for (group, gw) in gw.chunks_exact_mut(cout_g * cin_g).enumerate() {
            let mut first = true;
            let mut at = pixels.start;
            while at < pixels.end {
                let (image, p0) = (at / plane, at % plane);
                let width = (plane - p0).min(pixels.end - at);
                let x = &input[(image * g.cin + group * cin_g) * plane + p0..];
                let gy = &grad_out[(image * g.cout + group * cout_g) * plane + p0..];
                // SAFETY: `gw` is this group's `cout_g x cin_g` sums (row stride `cin_g`), a
                // slice of its own; `gy` reads `(co, j)` at `co * plane + j` and `x` reads
                // `(ci, j)` at `ci * plane + j`, `j < width <= plane - p0`: inside the
                // group's planes of `image`. The first product overwrites, later ones
                // accumulate.
                unsafe {
                    weight_product(
                        (gw.as_mut_ptr(), cin_g),
                        (cout_g, cin_g, width),
                        !first,
                        (gy.as_ptr(), plane),
                        (x.as_ptr(), plane),
                    );
                }
                first = false;
                at += width;
            }
        }
    });
    for part in later.chunks_exact(g.weight_len()) {
        add_into(grad_w, part);
    }
}

/// Visits the pixels `p0..p0+width` of the output plane for tap `(ky, kx)` in row segments:
/// `visit(j, len, source)` covers block columns `j..j+len`, whose taps read input row `iy`
/// from column `ix` on with the stride (`source = Some((iy, ix))`), or fall in the padding
/// (`None`).
fn for_each_segment(
    g: &Geometry,
    p0: usize,
    width: usize,
    (ky, kx): (usize, usize),
    mut visit: impl FnMut(usize, usize, Option<(usize, usize)>),
) {
    let tap = kx * g.dilation.w;
    let (lo, hi) = valid_range(g.ow, g.stride.w, tap, g.pad_left, g.w);
    let mut j = 0;
    while j < width {
        let (oy, ox0) = ((p0 + j) / g.ow, (p0 + j) % g.ow);
        let seg = (g.ow - ox0).min(width - j);
        let iy = (oy * g.stride.h + ky * g.dilation.h)
            .checked_sub(g.pad_top)
            .filter(|&iy| iy < g.h);
        let (a, b) = (lo.clamp(ox0, ox0 + seg), hi.clamp(ox0, ox0 + seg));
        match iy.filter(|_| a < b) {
            None => visit(j, seg, None),
            Some(iy) => {
                visit(j, a - ox0, None);
                let ix = a * g.stride.w + tap - g.pad_left;
                visit(j + a - ox0, b - a, Some((iy, ix)));
                visit(j + b - ox0, ox0 + seg - b, None);
            }
        }
        j += seg;
    }
}

/// Unrolls the patches of output pixels `p0..p0+width` of input planes `x` (one per input
/// channel) into `col`, row `(ci, ky, kx)`, zeros where a tap falls in the padding.
fn fill_columns<A: Accumulator>(g: &Geometry, x: &[A], p0: usize, width: usize, col: &mut [A]) {
    let in_plane = g.h * g.w;
    let mut rows = col.chunks_exact_mut(width);
    for x_c in x.chunks_exact(in_plane) {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let Some(row) = rows.next() else { return };
                for_each_segment(g, p0, width, (ky, kx), |j, len, source| {
                    let dst = &mut row[j..j + len];
                    match source {
                        None => dst.fill(A::ZERO),
                        Some((iy, ix)) if g.stride.w == 1 => {
                            dst.copy_from_slice(&x_c[iy * g.w + ix..][..len]);
                        }
                        Some((iy, ix)) => every_nth(dst, &x_c[iy * g.w + ix..], g.stride.w),
                    }
                });
            }
        }
    }
}

/// The adjoint of [`fill_columns`]: adds each column entry into the input pixel it was
/// read from, for input-gradient planes `gx` (one per input channel).
fn scatter_columns<A: Accumulator>(g: &Geometry, col: &[A], p0: usize, width: usize, gx: &mut [A]) {
    let in_plane = g.h * g.w;
    let mut rows = col.chunks_exact(width);
    for gx_c in gx.chunks_exact_mut(in_plane) {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let Some(row) = rows.next() else { return };
                for_each_segment(g, p0, width, (ky, kx), |j, len, source| {
                    let Some((iy, ix)) = source else { return };
                    let src = &row[j..j + len];
                    if g.stride.w == 1 {
                        for (d, &s) in gx_c[iy * g.w + ix..][..len].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        add_every_nth(&mut gx_c[iy * g.w + ix..], src, g.stride.w);
                    }
                });
            }
        }
    }
}

/// `dst[i * step] += src[i]` for every `i`; `dst` holds `(src.len() - 1) * step + 1` values
/// or more. Steps of 2 (the common stride) take whole pairs, which the compiler vectorises.
fn add_every_nth<A: Accumulator>(dst: &mut [A], src: &[A], step: usize) {
    if step == 2 {
        let pairs = src.len().min(dst.len() / 2);
        for (pair, &s) in dst.chunks_exact_mut(2).zip(&src[..pairs]) {
            pair[0] += s;
        }
        if let (Some(d), Some(&s)) = (dst.get_mut(2 * pairs), src.get(pairs)) {
            *d += s;
        }
        return;
    }
    for (d, &s) in dst.iter_mut().step_by(step).zip(src) {
        *d += s;
    }
}
