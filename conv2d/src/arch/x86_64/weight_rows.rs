//! The direct weight-gradient row kernels for `f32`: taps' sums in registers while rows of
//! the padded slab or of the input plane as it is pass (AVX-512; the 3x3 plane with AVX2).

use std::arch::x86_64::*;

use crate::kernels::direct::{PlaneWeightRows, WeightRows};

use super::windows::{
    flat_offsets, live_lanes, stacked_3x3, window_masks, PlaneRowWindows, SlabRowWindows,
};
use super::{Avx2F32, MaskedRegister, Register};

/// The direct weight-gradient kernel for `f32` with AVX-512: taps in tiles of
/// [`WEIGHT_TAPS`], each tap's vector of partial sums in a register while the rows pass,
/// per 16 pixels one output-gradient vector loaded and fused with each tap's window; a
/// row's last partial vector masked (masked-off lanes keep their sums, so an infinite input
/// there adds nothing).
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `WeightRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_weight_f32_avx512(job: &mut WeightRows<'_>) {
    let (ow, step) = (job.ow, job.step);
    let (slab, grad_out, sums, rows) = job.pointers();
    if stacked_3x3(job.starts, step) {
        // SAFETY: AVX-512 F is present (this function's contract); the taps are stacked
        // 3 x 3 (checked); the pointers are the job's, checked.
        unsafe { weight_3x3_avx512(job, (slab, grad_out, sums, rows)) };
        return;
    }
    let taps = job.starts.len();
    let full = ow / 16 * 16;
    let tail: __mmask16 = (1u32 << (ow - full)).wrapping_sub(1) as __mmask16;
    for t0 in (0..taps).step_by(WEIGHT_TAPS) {
        let count = WEIGHT_TAPS.min(taps - t0);
        // Past the last tap, the tile repeats it; those sums are not stored.
        let starts: [usize; WEIGHT_TAPS] =
            std::array::from_fn(|j| job.starts[t0 + j.min(count - 1)]);
        // SAFETY: AVX-512 F is present (this function's contract); tap `t0 + j` has a
        // vector of sums for `j < count`, read and written only then; every load of row
        // `r < rows` is at most `ow` values from `r * step + start` (the tail masked), and
        // `pointers` checked that those lie inside the slab and the output gradient.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); WEIGHT_TAPS];
            for (j, a) in acc.iter_mut().enumerate().take(count) {
                *a = _mm512_loadu_ps((*sums.add(t0 + j)).as_ptr());
            }
            for r in 0..rows {
                let gy = grad_out.add(r * ow);
                let base = slab.add(r * step);
                for o in (0..full).step_by(16) {
                    let y = _mm512_loadu_ps(gy.add(o));
                    for (a, &start) in acc.iter_mut().zip(&starts) {
                        *a = _mm512_fmadd_ps(_mm512_loadu_ps(base.add(start + o)), y, *a);
                    }
                }
                if full < ow {
                    let y = _mm512_maskz_loadu_ps(tail, gy.add(full));
                    for (a, &start) in acc.iter_mut().zip(&starts) {
                        let x = _mm512_maskz_loadu_ps(tail, base.add(start + full));
                        *a = _mm512_mask3_fmadd_ps(x, y, *a, tail);
                    }
                }
            }
            for (j, a) in acc.iter().enumerate().take(count) {
                _mm512_storeu_ps((*sums.add(t0 + j)).as_mut_ptr(), *a);
            }
        }
    }
}

/// [`direct_weight_f32_avx512`] for [`stacked_3x3`] taps: input row after input row, each
/// row's three windows loaded once per 16 pixels and fused with the output-gradient rows of
/// the (up to three) output rows that read them. On rows of [`BLOCKED_WIDTH`] outputs or
/// more each tap's sums take the same terms in the same order as the general kernel
/// (output row by output row), so the two give the same bits; narrower rows take them in
/// blocks of rows ([`weight_blocks_3x3`]), so their last bits differ.
///
/// # Safety
/// The CPU must support AVX-512 F; the taps are [`stacked_3x3`], and the pointers are the
/// job's, checked by `WeightRows::pointers`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn weight_3x3_avx512(
    job: &WeightRows<'_>,
    (slab, grad_out, sums, rows): (*const f32, *const f32, *mut [f32; 16], usize),
) {
    let step = job.step;
    let columns = [job.starts[0], job.starts[1], job.starts[2]];
    // SAFETY: input row j at `column` is the window of tap `3 * ky + kx` of an output row
    // `j - ky` in `0..rows` (every j in `0..rows + 2` has one), and a window's loads stay
    // within `ow` values of its start (the tail masked): inside the slab (`pointers`
    // checked); the rest as the sweep requires (`pointers`).
    unsafe {
        let windows = SlabRowWindows {
            slab,
            step,
            columns,
        };
        weight_sweep_3x3(sums, grad_out, rows, job.ow, &windows, (0, 0))
    };
}

/// The loop of the stacked 3x3 weight-gradient kernels: [`weight_blocks_3x3`] on rows
/// narrower than [`BLOCKED_WIDTH`], else [`weight_rows_3x3`].
///
/// # Safety
/// The CPU must support AVX-512 F; `sums` holds nine vectors, `grad_out` `rows` rows of
/// `ow` values, and `windows` may be called for any `j < rows + 2` and `o < ow`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn weight_sweep_3x3(
    sums: *mut [f32; 16],
    grad_out: *const f32,
    rows: usize,
    ow: usize,
    windows: &impl WeightWindows,
    ahead: (isize, usize),
) {
    // SAFETY: there are nine vectors of sums (this function's contract).
    let mut acc: [__m512; 9] =
        std::array::from_fn(|t| unsafe { _mm512_loadu_ps((*sums.add(t)).as_ptr()) });
    // SAFETY: this function's contract, which both share.
    unsafe {
        match ow < BLOCKED_WIDTH {
            true => weight_blocks_3x3(&mut acc, grad_out, rows, ow, windows, ahead),
            false => weight_rows_3x3(&mut acc, grad_out, rows, ow, windows),
        }
    }
    for (t, a) in acc.iter().enumerate() {
        // SAFETY: tap `t < 9` has a vector of sums.
        unsafe { _mm512_storeu_ps((*sums.add(t)).as_mut_ptr(), *a) };
    }
}

/// [`weight_sweep_3x3`] on rows narrower than [`BLOCKED_WIDTH`]: blocks of [`ROW_BLOCK`]
/// padded input rows, in each column after column of 16 outputs (a last partial one
/// masked, or summed in 8 lanes where it has 8 or fewer), down the column input row after
/// row `j`,
/// its three windows (`windows(j, o, lanes)`, `lanes` those up to the row's end) fused with
/// the output-gradient vectors of the (up to three) output rows that meet them, each
/// loaded once for the block and kept in registers for the rows after. Lane `l` of a tap's
/// sums takes the terms of output column `o + l` block by block, column by column, and down
/// a column input row by input row.
///
/// # Safety
/// As [`weight_sweep_3x3`] (`acc`: the nine taps' sums).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn weight_blocks_3x3(
    acc: &mut [__m512; 9],
    grad_out: *const f32,
    rows: usize,
    ow: usize,
    windows: &impl WeightWindows,
    ahead: (isize, usize),
) {
    let full = ow / 16 * 16;
    let tail = (1u32 << (ow - full)).wrapping_sub(1) as u16;
    for block in row_blocks(grad_out, rows, ow, ahead) {
        // SAFETY (each call): the block's rows and the columns are the sweep's, their lanes
        // up to the row's end (this function's contract).
        for o in (0..full).step_by(16) {
            // SAFETY: see above.
            unsafe { weight_column(acc, block.clone(), windows, o, u16::MAX) };
        }
        if ow - full > 8 {
            // SAFETY: see above.
            unsafe { weight_column(acc, block, windows, full, tail) };
        } else if full < ow {
            // A tail of 8 lanes or fewer in the sums' low half: the same terms in the same
            // lanes, half the work where the CPU splits 16 lanes into two halves (Zen 4,
            // one thread: 20- to 56-wide depthwise layers 1.06-1.11x as fast).
            // Plain loops: `map` and `from_fn` here were calls per register, outlined
            // (their closures carry this function's target features, `map` does not).
            let mut low = [_mm256_setzero_ps(); 9];
            for (l, a) in low.iter_mut().zip(acc.iter()) {
                *l = _mm512_castps512_ps256(*a);
            }
            // SAFETY: see above.
            unsafe { weight_column(&mut low, block, windows, full, tail) };
            for (a, l) in acc.iter_mut().zip(low) {
                *a = _mm512_insertf32x8::<0>(*a, l);
            }
        }
    }
}

/// [`weight_sweep_3x3`] on rows of [`BLOCKED_WIDTH`] outputs or more: padded input row
/// after row `j`, its three windows from output `o` (`windows(j, o, lanes)`, `lanes` those up to the
/// row's end) fused with the output-gradient rows of the (up to three) output rows that
/// meet them; each tap's sums take their terms output row by output row, a row's last
/// partial vector last.
///
/// # Safety
/// As [`weight_sweep_3x3`] (`acc`: the nine taps' sums).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn weight_rows_3x3(
    acc: &mut [__m512; 9],
    grad_out: *const f32,
    rows: usize,
    ow: usize,
    windows: &impl WeightWindows,
) {
    let full = ow / 16 * 16;
    let tail: __mmask16 = (1u32 << (ow - full)).wrapping_sub(1) as __mmask16;
    for j in 0..rows + 2 {
        // Kernel row ky meets padded row j for output row j - ky, where that row exists.
        let live: [bool; 3] = std::array::from_fn(|ky| j >= ky && j - ky < rows);
        // Rows 2..rows meet every kernel row: `all` lets their loop run without the checks
        // (1.06-1.27x on depthwise layers; passing `[true; 3]` to a closure ran slower).
        let all = live == [true; 3];
        let gy: [*const f32; 3] =
            std::array::from_fn(|ky| grad_out.wrapping_add(j.wrapping_sub(ky).wrapping_mul(ow)));
        // SAFETY: output-gradient row `j - ky` is read only when live (in `0..rows`), at
        // most `ow` values from its start (the tail masked): inside the output gradient.
        unsafe {
            for o in (0..full).step_by(16) {
                let xs: [__m512; 3] = windows.windows(j, o, !0);
                for ky in 0..3 {
                    if all || live[ky] {
                        let y = _mm512_loadu_ps(gy[ky].add(o));
                        for (kx, &x) in xs.iter().enumerate() {
                            acc[3 * ky + kx] = _mm512_fmadd_ps(x, y, acc[3 * ky + kx]);
                        }
                    }
                }
            }
            if ow - full > 8 {
                let xs: [__m512; 3] = windows.windows(j, full, tail);
                for ky in 0..3 {
                    if live[ky] {
                        let y = _mm512_maskz_loadu_ps(tail, gy[ky].add(full));
                        for (kx, &x) in xs.iter().enumerate() {
                            let a = &mut acc[3 * ky + kx];
                            *a = _mm512_mask3_fmadd_ps(x, y, *a, tail);
                        }
                    }
                }
            } else if full < ow {
                // A tail of 8 lanes or fewer in the sums' low half: the same terms in the
                // same lanes, half the work where the CPU splits 16 lanes into two halves
                // (Zen 4, one thread: 20- to 56-wide depthwise layers 1.06-1.11x as fast).
                let xs: [__m256; 3] = windows.windows(j, full, tail);
                for ky in 0..3 {
                    if live[ky] {
                        let y = _mm256_maskz_loadu_ps(tail as __mmask8, gy[ky].add(full));
                        for (kx, &x) in xs.iter().enumerate() {
                            let a = &mut acc[3 * ky + kx];
                            let low = _mm512_castps512_ps256(*a);
                            let low = _mm256_mask3_fmadd_ps(x, y, low, tail as __mmask8);
                            *a = _mm512_insertf32x8::<0>(*a, low);
                        }
                    }
                }
            }
        }
    }
}

/// A block of [`weight_column`]: the output gradient, its rows and their length, the
/// block's padded input rows, how far on to prefetch.
type ColumnBlock = (
    *const f32,
    usize,
    usize,
    std::ops::Range<usize>,
    (isize, usize),
);

/// The blocks of [`ROW_BLOCK`] padded input rows of a sweep of `rows` output rows.
fn row_blocks(
    grad_out: *const f32,
    rows: usize,
    ow: usize,
    ahead: (isize, usize),
) -> impl Iterator<Item = ColumnBlock> {
    (0..rows + 2).step_by(ROW_BLOCK).map(move |j0| {
        (
            grad_out,
            rows,
            ow,
            j0..(j0 + ROW_BLOCK).min(rows + 2),
            ahead,
        )
    })
}

/// One column of a block of [`weight_sweep_3x3`]: input rows `js`, the outputs from `o`
/// of the lanes of `lanes` (the others keep their sums, so an infinite input there adds
/// nothing). The rows that meet all three kernel rows and lie inside the image run a loop
/// of their own, the windows' lanes worked out once for the column and no row checked
/// (1.05-1.23x on 28x28-80x80 depthwise layers over checking each row, AMD Zen 5,
/// one thread).
///
/// # Safety
/// As [`weight_sweep_3x3`]; `js` lie below `rows + 2`, `o` is an output of a row and
/// `lanes` holds no lane at or past the row's end.
#[inline(always)]
unsafe fn weight_column<R: MaskedRegister<Elem = f32>>(
    acc: &mut [R; 9],
    (grad_out, rows, ow, js, ahead): ColumnBlock,
    windows: &impl WeightWindows,
    o: usize,
    lanes: u16,
) {
    // SAFETY: the CPU supports `R` (this function's contract); output-gradient
    // row `r < rows` is read at `lanes` of its outputs from `o`, inside the output
    // gradient; `j` and `o` are the sweep's, and the rows of `body` lie inside the image.
    unsafe {
        let zero = R::splat(0.0);
        // (Wrapping: no row is read when there are none.)
        let gy = grad_out.wrapping_add(o);
        // The output-gradient vector of output row `r`; zeros outside `0..rows`, whose
        // terms are left out.
        let y = |r: usize| match r < rows {
            true => R::load_where(gy.add(r * ow), lanes),
            false => zero,
        };
        // `ys[ky]`: that of output row `j - ky` (`j`: the next input row, shifted in).
        let before = |back: usize| js.start.checked_sub(back).map_or(zero, y);
        let mut ys = [before(1), before(2), zero];
        let mut fuse = |ys: &[R; 3], xs: [R; 3], live: [bool; 3]| {
            for (ky, &y) in ys.iter().enumerate() {
                if live[ky] {
                    for (kx, &x) in xs.iter().enumerate() {
                        acc[3 * ky + kx] = R::fmadd_where(x, y, acc[3 * ky + kx], lanes);
                    }
                }
            }
        };
        // Rows 2..rows meet every kernel row.
        let inside = windows.inside_rows();
        let body_start = inside.start.max(2).clamp(js.start, js.end);
        let body_end = inside.end.min(rows).clamp(body_start, js.end);
        let general = |j: usize| std::array::from_fn(|ky| j >= ky && j - ky < rows);
        for j in js.start..body_start {
            ys = [y(j), ys[0], ys[1]];
            fuse(&ys, windows.windows(j, o, lanes), general(j));
        }
        // Masked loads throughout (plain ones where all lanes are inside, in a loop of
        // their own, ran 1.02x as fast; switching per row 0.8x).
        let columns = windows.column_lanes::<R>(o, lanes).unwrap_or([!0; 3]);
        for j in body_start..body_end {
            // The same lines `ahead` values on (of the planes after these in memory, the
            // next channel's or image's, which the next job likely reads), on their way
            // from L3; a plain prefetch of the lines read here where that is (0, 0) (a
            // branch on it cost the loop its registers).
            windows.prefetch(j, o, ahead.0);
            _mm_prefetch::<_MM_HINT_T0>(gy.wrapping_add(j * ow + ahead.1).cast());
            ys = [R::load_where(gy.add(j * ow), lanes), ys[0], ys[1]];
            fuse(&ys, windows.windows_inside(j, o, columns), [true; 3]);
        }
        for j in body_end..js.end {
            ys = [y(j), ys[0], ys[1]];
            fuse(&ys, windows.windows(j, o, lanes), general(j));
        }
    }
}

/// The stride-1 3x3 weight-gradient kernel for `f32` with AVX-512 reading the input plane
/// as it is (see `kernels::direct::in_place`): [`weight_3x3_avx512`]'s loop, each window
/// loaded with the lanes outside the image masked to zero and rows outside it taken as
/// zeros (the values a padded slab holds there).
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by
/// `PlaneWeightRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn plane_weight_3x3_f32_avx512(job: &mut PlaneWeightRows<'_>) {
    let (plane, grad_out, sums, rows) = job.pointers();
    let windows = plane_windows(job, plane);
    let ahead = prefetch_ahead(job, rows);
    // SAFETY: nine vectors of sums (the job's type) and `rows` rows of output gradient
    // (`pointers`); `windows` reads only inside the plane, for any row and output.
    unsafe { weight_sweep_3x3(sums, grad_out, rows, job.ow, &windows, ahead) };
}

/// The windows of the job's input plane (at `plane`) for the stacked 3x3 weight-gradient
/// kernels, with the job's masks ([`plane_weight_masks`]; working them out per load ran 1.3x
/// slower; [`PlaneRowWindows::column_lanes`] reads them).
#[inline(always)]
fn plane_windows<'a>(job: &PlaneWeightRows<'a>, plane: *const f32) -> PlaneRowWindows<'a> {
    PlaneRowWindows {
        plane,
        h: job.h as isize,
        w: job.w as isize,
        row0: -(job.pad_top as isize),
        pad_left: job.pad_left as isize,
        masks: job.masks,
    }
}

/// The window masks of the stacked 3x3 weight-gradient kernels ([`window_masks`]): per 8
/// outputs of a row of `ow` (so that the 16- and 8-lane columns find theirs at `o / 8`) and
/// kernel column, the lanes of its window inside a row `w` long.
pub(crate) fn plane_weight_masks(ow: usize, pad_left: usize, w: usize) -> Vec<[__mmask16; 3]> {
    window_masks(ow.div_ceil(8), pad_left, w, |v| 8 * v)
}

/// How far on [`weight_column`] prefetches the input plane's and the output gradient's
/// lines: the next plane's ([`PREFETCHED_PLANE`]), else its own (0, 0).
fn prefetch_ahead(job: &PlaneWeightRows<'_>, rows: usize) -> (isize, usize) {
    match job.h * job.w <= PREFETCHED_PLANE {
        true => ((job.h * job.w) as isize, rows * job.ow),
        false => (0, 0),
    }
}

/// The stride-1 3x3 weight-gradient kernel for `f32` with AVX-512 on planes whose output
/// rows are as wide as the input's (`kernels::direct::in_place::flat_masks`): the
/// output gradient taken as one flat run of `oh * ow` pixels, 16 a vector, so that tap `t`
/// of output pixel `p` reads input element `p + offset(t)` of the plane as it is; the lanes
/// whose input lies outside the image (a padding row or column) load as zeros (`masks`:
/// per vector, one per tap). Lane `l` of a tap's sums adds the pixels `p` with `p % 16 ==
/// l`, in order. The vectors whose taps all read rows of the image ([`flat_interior`])
/// use two masks, not nine: kernel row 0's of columns 0 and 2, the same in every kernel
/// row there, column 1 reading every lane (a mask register loaded per tap and vector was
/// most of the kernel's time: 21x7 to 48x8 depthwise layers 1.12-1.28x as fast, 7x7 and
/// 8x8 1.0-1.04x; AMD Zen 5, one thread, three and five alternated rounds).
///
/// # Safety
/// The CPU must support AVX-512 F; `masks` must clear every lane whose input is outside
/// the plane (the other bounds are checked here and by `PlaneWeightRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn flat_weight_3x3_f32_avx512(job: &mut PlaneWeightRows<'_>, masks: &[u16]) {
    let (plane, grad_out, sums, rows) = job.pointers();
    let pixels = rows * job.ow;
    let vectors = pixels.div_ceil(16);
    assert!(job.ow == job.w && masks.len() >= 9 * vectors);
    let offsets = flat_offsets(job.w, job.pad_top, job.pad_left);
    let interior = flat_interior(job.h, job.w, job.pad_top, job.pad_left, pixels);
    let masks: &[[u16; 9]] = &masks.as_chunks().0[..vectors];
    // SAFETY: there are nine vectors of sums (`pointers`).
    let mut acc: [__m512; 9] =
        std::array::from_fn(|t| unsafe { _mm512_loadu_ps((*sums.add(t)).as_ptr()) });
    for (v, masks) in masks.iter().enumerate() {
        let p = 16 * v;
        // SAFETY: the output gradient's lanes below `pixels` (`rows` whole rows, checked by
        // `pointers`); each tap's lanes are those `masks` keep, inside the plane (this
        // function's contract); masked loads touch no other lane. An interior vector's 16
        // pixels lie below `pixels` and their taps read rows of the image
        // (`flat_interior`): a lane's input is outside the plane only in a padding column,
        // which the masks of kernel row 0's taps clear in every kernel row (kernel column 1
        // reads none there, `pad_left` being 1).
        unsafe {
            let (y, columns) = match interior.contains(&v) {
                true => (_mm512_loadu_ps(grad_out.add(p)), [masks[0], !0, masks[2]]),
                false => {
                    let y = _mm512_maskz_loadu_ps(live_lanes(pixels - p), grad_out.add(p));
                    (y, [0; 3])
                }
            };
            // (A mask array of nine built per vector ran 1.07x slower than this choice.)
            for (t, (a, &offset)) in acc.iter_mut().zip(&offsets).enumerate() {
                let m = match interior.contains(&v) {
                    true => columns[t % 3],
                    false => masks[t],
                };
                let x = _mm512_maskz_loadu_ps(m, plane.wrapping_offset(p as isize + offset));
                *a = _mm512_fmadd_ps(x, y, *a);
            }
        }
    }
    for (t, a) in acc.iter().enumerate() {
        // SAFETY: tap `t < 9` has a vector of sums.
        unsafe { _mm512_storeu_ps((*sums.add(t)).as_mut_ptr(), *a) };
    }
}

/// The vectors of [`flat_weight_3x3_f32_avx512`]'s run of `pixels` output pixels (rows of
/// `w`, as wide as the input's, padded by `pad_top` and `pad_left`) whose 16 pixels all lie
/// inside the run and whose taps all read rows of the image; empty unless `pad_left` is 1
/// (so that kernel column 1 reads inside the row).
fn flat_interior(
    h: usize,
    w: usize,
    pad_top: usize,
    pad_left: usize,
    pixels: usize,
) -> std::ops::Range<usize> {
    // Output row `oy` reads input rows `oy - pad_top .. oy - pad_top + 3`.
    let first = (pad_top * w).div_ceil(16);
    let end = ((h + pad_top).saturating_sub(2) * w).min(pixels) / 16;
    match pad_left == 1 {
        true => first..end.max(first),
        false => 0..0,
    }
}

/// The three windows (kernel columns 0, 1, 2) of a stacked 3x3 weight-gradient kernel
/// ([`weight_sweep_3x3`]), a trait for the reason [`RowWindows`](super::windows::RowWindows) is.
trait WeightWindows {
    /// The padded rows that lie inside the image (those outside read as zeros).
    fn inside_rows(&self) -> std::ops::Range<usize>;

    /// Prefetches the line `ahead` values on from the first of
    /// [`windows_inside`](Self::windows_inside)`(j, o)` (nothing for a slab).
    #[inline(always)]
    fn prefetch(&self, _j: usize, _o: usize, _ahead: isize) {}

    /// Per kernel column, the lanes of the windows from output `o` to load (`lanes`: those
    /// up to the row's end); `None` where every lane of the three lies inside the row.
    fn column_lanes<R: MaskedRegister<Elem = f32>>(&self, o: usize, lanes: u16)
        -> Option<[u16; 3]>;

    /// The windows of padded input row `j` (one of [`inside_rows`](Self::inside_rows))
    /// from output `o`, loading `columns` ([`column_lanes`](Self::column_lanes) for `o`,
    /// all lanes where that is `None`: a constant, so that the loads are plain ones).
    ///
    /// # Safety
    /// The CPU must support `R`'s instructions; `j` and `o` are a row and an output of the
    /// sweep, `j` in `inside_rows`.
    unsafe fn windows_inside<R: MaskedRegister<Elem = f32>>(
        &self,
        j: usize,
        o: usize,
        columns: [u16; 3],
    ) -> [R; 3];

    /// The windows of padded input row `j` from output `o`; `lanes`: those up to the row's
    /// end.
    ///
    /// # Safety
    /// The CPU must support `R`'s instructions; `j` and `o` are a row and an output of the
    /// sweep.
    #[inline(always)]
    unsafe fn windows<R: MaskedRegister<Elem = f32>>(
        &self,
        j: usize,
        o: usize,
        lanes: __mmask16,
    ) -> [R; 3] {
        // SAFETY: `R`'s instructions are present, `j` and `o` are the sweep's (the
        // caller's contract); `j` is checked to lie inside the image.
        unsafe {
            match (
                self.inside_rows().contains(&j),
                self.column_lanes::<R>(o, lanes),
            ) {
                (false, _) => [R::splat(0.0); 3],
                (true, None) => self.windows_inside(j, o, [!0; 3]),
                (true, Some(columns)) => self.windows_inside(j, o, columns),
            }
        }
    }
}

impl WeightWindows for SlabRowWindows {
    fn inside_rows(&self) -> std::ops::Range<usize> {
        0..usize::MAX
    }

    fn column_lanes<R: MaskedRegister<Elem = f32>>(
        &self,
        _: usize,
        lanes: u16,
    ) -> Option<[u16; 3]> {
        Some([lanes; 3])
    }

    #[inline(always)]
    unsafe fn windows_inside<R: MaskedRegister<Elem = f32>>(
        &self,
        j: usize,
        o: usize,
        columns: [u16; 3],
    ) -> [R; 3] {
        let at = self.slab.wrapping_add(j * self.step + o);
        // SAFETY: a window's lanes up to the row's end lie inside the slab (the caller's
        // contract; `columns` are those lanes); masked loads touch no other lane.
        unsafe {
            [
                R::load_where(at.wrapping_add(self.columns[0]), columns[0]),
                R::load_where(at.wrapping_add(self.columns[1]), columns[1]),
                R::load_where(at.wrapping_add(self.columns[2]), columns[2]),
            ]
        }
    }
}

/// Zeros outside the image (lanes past the row's end are left out of the sums by the
/// sweep); every lane where the three windows lie inside the row (plain loads there ran
/// `bwd_weight_dw_3x3` 1.16x as fast as the edge masks).
impl WeightWindows for PlaneRowWindows<'_> {
    fn inside_rows(&self) -> std::ops::Range<usize> {
        let first = (-self.row0).max(0) as usize;
        first..((self.h - self.row0).max(0) as usize).max(first)
    }

    #[inline(always)]
    fn prefetch(&self, j: usize, o: usize, ahead: isize) {
        let at = self.window_start(j, o).wrapping_offset(ahead);
        // SAFETY: a prefetch accesses no memory architecturally and never faults, whatever
        // the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
    }

    #[inline(always)]
    fn column_lanes<R: MaskedRegister<Elem = f32>>(&self, o: usize, _: u16) -> Option<[u16; 3]> {
        let c = o as isize - self.pad_left;
        match c >= 0 && c + R::LANES as isize + 2 <= self.w {
            true => None,
            false => Some(self.masks[o / 8]),
        }
    }

    #[inline(always)]
    unsafe fn windows_inside<R: MaskedRegister<Elem = f32>>(
        &self,
        j: usize,
        o: usize,
        columns: [u16; 3],
    ) -> [R; 3] {
        let row = self.window_start(j, o);
        // SAFETY: row `row0 + j` lies in `0..h` (`j` in `inside_rows`, the caller's contract);
        // `columns` keeps only lanes at columns in `0..w` (`column_lanes`): inside the
        // plane, which holds `h * w` values (the job's `pointers` checked); masked loads
        // touch no other lane.
        unsafe {
            [
                R::load_where(row, columns[0]),
                R::load_where(row.wrapping_add(1), columns[1]),
                R::load_where(row.wrapping_add(2), columns[2]),
            ]
        }
    }
}

/// [`plane_weight_3x3_f32_avx512`]'s sums with AVX2 and FMA: [`weight_blocks_3x3`]'s
/// blocks and columns, each column 8 outputs ([`Avx2F32`]) whose nine taps' sums are held
/// in registers down the block, the columns alternating between the two halves of each
/// tap's 16 lanes of sums. Every lane takes the terms [`weight_blocks_3x3`] gives it, in its
/// order (on rows of [`BLOCKED_WIDTH`] or more, where the AVX-512 kernel goes row by row,
/// the last bits differ).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by
/// `PlaneWeightRows::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn plane_weight_3x3_f32_avx2(job: &mut PlaneWeightRows<'_>) {
    let (plane, grad_out, sums, rows) = job.pointers();
    let ow = job.ow;
    let windows = plane_windows(job, plane);
    let ahead = prefetch_ahead(job, rows);
    for block in row_blocks(grad_out, rows, ow, ahead) {
        for o in (0..ow).step_by(8) {
            let half = 8 * (o / 8 % 2);
            let mut acc = [Avx2F32::splat(0.0); 9];
            // Plain loops: see `weight_blocks_3x3`.
            for (t, a) in acc.iter_mut().enumerate() {
                // SAFETY: tap `t < 9` has 16 sums (`pointers`); this reads half `half`.
                *a = unsafe { Avx2F32::load((*sums.add(t)).as_ptr().add(half)) };
            }
            // SAFETY: AVX2 and FMA are present (this function's contract); the block's rows
            // and the column's lanes (those before the row's end) are the sweep's.
            unsafe {
                // All lanes as a constant where the row has 8 more outputs: no masks.
                match ow - o >= 8 {
                    true => weight_column(&mut acc, block.clone(), &windows, o, !0),
                    false => {
                        weight_column(&mut acc, block.clone(), &windows, o, live_lanes(ow - o))
                    }
                }
            }
            for (t, a) in acc.iter().enumerate() {
                // SAFETY: as above.
                unsafe { Avx2F32::store((*sums.add(t)).as_mut_ptr().add(half), *a) };
            }
        }
    }
}

/// Padded input rows per block of [`weight_blocks_3x3`]: each output-gradient vector
/// loaded once for the three input rows that meet it, not once for each, and a column's
/// loop long. Blocks of 8 ran 20- to 72-wide depthwise layers 1.01-1.29x as fast as
/// [`weight_rows_3x3`] (Zen 4, 2026-12-05); on AMD Zen 5 (2026-12-06, one thread, three
/// alternated rounds, `bwd_weight_dw_3x3` and 14 depthwise layers 7x7 to 150x150) blocks of
/// 64 ran 1.0-1.28x as fast as blocks of 8 (16: 1.06x), and of 256 like 64 where both hold
/// the whole plane.
const ROW_BLOCK: usize = 256;
/// Input planes of at most this many values have [`weight_blocks_3x3`] prefetch the next
/// plane's lines as it sweeps theirs (the next job's, as a rule, where the input is
/// contiguous): 20x20-64x64 depthwise layers streamed from L3 1.05-1.21x as fast; 80x80 and
/// 112x112 (whose two planes fill L1) ran 0.89-0.92x with it (AMD Zen 5, one thread, three
/// to five alternated rounds).
const PREFETCHED_PLANE: usize = 4096;
/// Output-row width from which [`weight_sweep_3x3`] runs [`weight_rows_3x3`]: with whole
/// columns ([`ROW_BLOCK`]) the blocks ran 64- to 255-wide depthwise layers 1.05-1.31x as
/// fast as the rows, 256- and 512-wide ones 0.61-0.83x (rows of whole KiB, whose column's
/// lines share a few cache sets; AMD Zen 5, one thread, three alternated rounds).
const BLOCKED_WIDTH: usize = 256;

/// Taps per tile of [`direct_weight_f32_avx512`]: a 3x3 kernel in one.
const WEIGHT_TAPS: usize = 9;
