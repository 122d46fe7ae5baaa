//! The direct row kernels for `f32` with AVX-512: stacked 3x3 sweeps over a padded slab or
//! the input plane as it is (masked windows), flat runs of a plane, and bands of rows.

use std::arch::x86_64::*;

use crate::kernels::direct::{BandRows, PlaneRows};

use super::windows::{
    flat_offsets, lanes_inside, live_lanes, stacked_3x3, window_masks, PlaneRowWindows, RowWindows,
    SlabRowWindows,
};
use super::MaskedRegister;

/// The 3x3 depthwise kernels for `f32` with AVX-512 reading the input plane as it is (see
/// `kernels::direct::in_place`): [`rows_sweep_3x3`] for stride 1, [`strided_rows_3x3`]
/// for stride 2.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `PlaneRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn plane_rows_3x3_f32_avx512(job: &mut PlaneRows<'_>) {
    if job.stride == 2 {
        // SAFETY: AVX-512 F is present (this function's contract).
        unsafe { strided_rows_3x3(job) };
        return;
    }
    let (plane, out, rows) = job.pointers();
    let (h, w, ow) = (job.h as isize, job.w as isize, job.ow);
    let (pad_left, row0) = (
        job.pad_left as isize,
        job.oy0 as isize - job.pad_top as isize,
    );
    let windows = PlaneRowWindows {
        plane,
        h,
        w,
        row0,
        pad_left,
        masks: job.masks,
    };
    // SAFETY: nine taps (the job's type), `rows` rows of `ow` outputs (`pointers`);
    // `windows` reads only inside the plane.
    unsafe { rows_sweep_3x3(out, rows, ow, job.init, job.taps.as_ptr(), &windows) };
}

/// [`plane_rows_3x3_f32_avx512`] with stride 1 for a whole output plane whose rows are as
/// wide as the input's (`kernels::direct::in_place::flat_masks`): the outputs taken as one
/// flat run of `oh * ow` pixels, 16 a vector, so that tap `t` of output `p` reads input
/// element `p + offset(t)` of the plane as it is, the lanes whose input lies outside the
/// image (`masks`: per vector, one per tap) loaded as zeros. Each output sums its taps in
/// kernel-row order from `init`, as the row kernel does (same bits).
///
/// # Safety
/// The CPU must support AVX-512 F; `masks` must clear every lane whose input is outside
/// the plane (the other bounds are checked here and by `PlaneRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn flat_rows_3x3_f32_avx512(job: &mut PlaneRows<'_>, masks: &[u16]) {
    let (plane, out, rows) = job.pointers();
    let pixels = rows * job.ow;
    let vectors = pixels.div_ceil(16);
    assert!(job.stride == 1 && job.oy0 == 0 && job.ow == job.w && masks.len() >= 9 * vectors);
    let offsets = flat_offsets(job.w, job.pad_top, job.pad_left);
    let taps: [__m512; 9] = std::array::from_fn(|t| _mm512_set1_ps(job.taps[t]));
    for (v, masks) in masks.chunks_exact(9).take(vectors).enumerate() {
        let p = 16 * v;
        // SAFETY: each tap's lanes are those `masks` keep, inside the plane (this function's
        // contract), masked loads touching no other lane; the stored lanes are below
        // `pixels`, inside the output rows (`pointers`).
        unsafe {
            let mut acc = _mm512_set1_ps(job.init);
            for ((&m, offset), w) in masks.iter().zip(offsets).zip(taps) {
                let x = _mm512_maskz_loadu_ps(m, plane.wrapping_offset(p as isize + offset));
                acc = _mm512_fmadd_ps(w, x, acc);
            }
            _mm512_mask_storeu_ps(out.add(p), live_lanes(pixels - p), acc);
        }
    }
}

/// The stride-2 kernel of [`plane_rows_3x3_f32_avx512`]: [`strided_strip_3x3`] over
/// strips of four vectors of 16 outputs ([`strips_of_four`]) while four remain, then of two
/// (a last one of one). Against strips of two throughout (Zen 4, one thread, alternated
/// rounds): rows of 49 to 112 outputs (four vectors or more) 1.06-1.20x as fast (a batch of
/// 4 on 112x112 maps 1.29x), narrower rows unchanged; a strip wider than the row would
/// compute vectors it drops.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `PlaneRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline(never)]
unsafe fn strided_rows_3x3(job: &mut PlaneRows<'_>) {
    let pointers = job.pointers();
    let vectors = job.ow.div_ceil(16);
    let first = match vectors >= 4 {
        // SAFETY: AVX-512 F is present (this function's contract); `pointers` are the
        // job's, checked.
        true => unsafe { strips_of_four(job, pointers) },
        false => 0,
    };
    for first in (first..vectors).step_by(2) {
        // SAFETY: AVX-512 F is present (this function's contract); `pointers` are the
        // job's, checked.
        unsafe {
            if vectors - first == 1 {
                strided_strip_3x3::<1, true, true>(job, pointers, first)
            } else {
                strided_strip_3x3::<2, true, true>(job, pointers, first)
            }
        }
    }
}

/// The strips of four vectors of [`strided_rows_3x3`], from vector 0 while four remain;
/// returns the first vector left. Out of line: inlined beside the narrower strips, it ran
/// rows of one vector 3-5% slower. Each strip's loads and stores are masked only for the
/// vectors that reach past an edge of the row (the row's first, for the left padding, and
/// its last, for the right padding or a partial vector): against masks on every vector,
/// rows of 5-10 vectors (the strips between the edges unmasked) ran 1.18-1.31x as fast
/// (AMD Zen 5, one thread, where masked loads and stores are dear). With padding under 3
/// (`in_place::suits`) no other vector reaches past an edge; were one to, the rest of the
/// row would be left to the narrower strips, masked throughout.
///
/// # Safety
/// As [`strided_rows_3x3`]; `pointers` are the job's, checked by `PlaneRows::pointers`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline(never)]
unsafe fn strips_of_four(job: &PlaneRows<'_>, pointers: (*const f32, *mut f32, usize)) -> usize {
    let vectors = job.ow.div_ceil(16);
    let edge = |v: usize| strided_vector_at_edge(job, v);
    let mut first = 0;
    while vectors - first >= 4 && !edge(first + 1) && !edge(first + 2) {
        // SAFETY: AVX-512 F is present (this function's contract); the strip's vectors are
        // the row's, those that reach past an edge of the row masked by the variant called
        // (`edge`: its first or its last); `pointers` are the job's, checked.
        unsafe {
            match (edge(first), edge(first + 3)) {
                (false, false) => strip_of_four::<false, false>(job, pointers, first),
                (true, false) => strip_of_four::<true, false>(job, pointers, first),
                (false, true) => strip_of_four::<false, true>(job, pointers, first),
                (true, true) => strip_of_four::<true, true>(job, pointers, first),
            }
        }
        first += 4;
    }
    first
}

/// [`strided_strip_3x3`] for a strip of four vectors, out of line: inlined into
/// [`strips_of_four`], the strips between the row's edges ran 1.11x slower (AMD Zen 5).
///
/// # Safety
/// As [`strided_strip_3x3`].
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline(never)]
unsafe fn strip_of_four<const LEFT: bool, const RIGHT: bool>(
    job: &PlaneRows<'_>,
    pointers: (*const f32, *mut f32, usize),
    first: usize,
) {
    // SAFETY: as this function's contract.
    unsafe { strided_strip_3x3::<4, LEFT, RIGHT>(job, pointers, first) }
}

/// Whether vector `v` of 16 outputs of a row of [`strided_rows_3x3`] reads a column outside
/// the row (its 32 columns from `32 * v - pad_left`, or the one after them: kernel column
/// 2 of its last output) or has fewer than 16 outputs.
fn strided_vector_at_edge(job: &PlaneRows<'_>, v: usize) -> bool {
    let c = 32 * v as isize - job.pad_left as isize;
    c < 0 || c + 33 > job.w as isize || 16 * (v + 1) > job.ow
}

/// `VECTORS` vectors of 16 outputs from vector `first` of every output row of
/// [`strided_rows_3x3`]: input row after input row, each row's three windows per vector
/// (32 input columns loaded, with the lanes outside the image masked to zero in the
/// strip's first vector where `LEFT` and its last where `RIGHT` (the others' columns must
/// lie inside the row), a row outside the image all zeros, their even and odd columns
/// picked, and kernel column 2's the even ones shifted down a lane with the next vector's
/// first even column after them: against a third permute and a one-lane load merged into
/// it, stride-2 depthwise layers ran 1.05-1.28x as fast on Zen 4, one thread; loading
/// kernel column 2's 32 columns too ran them 1.08x slower still) fused into the sums of the
/// one or two output rows that read it (an even row: kernel row 2 of one output row and
/// kernel row 0 of the next), so that output rows share the rows between them. Every
/// output sums its taps in kernel-row order, as the padded slab does (same bits); a last
/// partial vector (only where `RIGHT`) stores only its own lanes.
///
/// # Safety
/// The CPU must support AVX-512 F; `pointers` are the job's, checked by
/// `PlaneRows::pointers`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn strided_strip_3x3<const VECTORS: usize, const LEFT: bool, const RIGHT: bool>(
    job: &PlaneRows<'_>,
    (plane, out, rows): (*const f32, *mut f32, usize),
    first: usize,
) {
    let (h, w, ow) = (job.h as isize, job.w as isize, job.ow);
    let weights: [__m512; 9] = std::array::from_fn(|t| _mm512_set1_ps(job.taps[t]));
    let init = _mm512_set1_ps(job.init);
    let evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let odds = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    // Input row `j` of the sweep is image row `row0 + j`; output row `r` reads rows `2 * r
    // + ky`.
    let row0 = 2 * job.oy0 as isize - job.pad_top as isize;
    let inside = |c: isize| lanes_inside(c, w);
    // The vectors that may reach past an edge of the row: the strip's first (`LEFT`) and
    // last (`RIGHT`); the others' 33 columns and 16 outputs lie inside the row
    // (`strips_of_four`).
    let masked = |v: usize| (LEFT && v == 0) || (RIGHT && v + 1 == VECTORS);
    // Per vector: its first output, the lanes it stores, the first input column of its
    // windows (`c`: 33 columns from there) and the lanes of its two halves inside the row
    // (the same every row).
    let vectors: [(usize, __mmask16, isize, [__mmask16; 2]); VECTORS] = std::array::from_fn(|v| {
        let o = 16 * (first + v);
        let lanes = ow.saturating_sub(o).min(16);
        let c = 2 * o as isize - job.pad_left as isize;
        (
            o.min(ow),
            ((1u32 << lanes) - 1) as __mmask16,
            c,
            [inside(c), inside(c + 16)],
        )
    });
    // Column `c + 32` of the last vector (kernel column 2 of its last output), as lane 0,
    // where it is inside the row.
    let after = vectors[VECTORS - 1].2 + 32;
    let after_mask = inside(after) & 1;
    // The three windows (kernel columns 0, 1, 2) of every vector in input row `j`: the even
    // and odd columns of its 32, and the even ones shifted down a lane, the next vector's
    // first even column (or column `after`) in lane 15.
    let windows = |j: usize| -> [[__m512; 3]; VECTORS] {
        let iy = row0 + j as isize;
        if !(0..h).contains(&iy) {
            return [[_mm512_setzero_ps(); 3]; VECTORS];
        }
        let line = plane.wrapping_offset(iy * w);
        // SAFETY: only lanes at columns in `0..w` of row `iy` (in `0..h`) are read: the
        // masked vectors' loads touch no other lane, the others' 32 columns and column
        // `after` (unless `RIGHT`) lie inside the row (`strips_of_four` checks); inside the
        // plane, which holds `h * w` values (`pointers` checked).
        unsafe {
            let halves: [(__m512, __m512); VECTORS] = std::array::from_fn(|v| {
                let (_, _, c, m) = vectors[v];
                let at = line.wrapping_offset(c);
                match masked(v) {
                    true => (
                        _mm512_maskz_loadu_ps(m[0], at),
                        _mm512_maskz_loadu_ps(m[1], at.wrapping_add(16)),
                    ),
                    false => (_mm512_loadu_ps(at), _mm512_loadu_ps(at.wrapping_add(16))),
                }
            });
            let even: [__m512; VECTORS] =
                std::array::from_fn(|v| _mm512_permutex2var_ps(halves[v].0, evens, halves[v].1));
            let last = match RIGHT {
                true => _mm512_maskz_loadu_ps(after_mask, line.wrapping_offset(after)),
                false => _mm512_zextps128_ps512(_mm_load_ss(line.wrapping_offset(after))),
            };
            std::array::from_fn(|v| {
                let next = if v + 1 < VECTORS { even[v + 1] } else { last };
                let shifted = _mm512_alignr_epi32::<1>(
                    _mm512_castps_si512(next),
                    _mm512_castps_si512(even[v]),
                );
                [
                    even[v],
                    _mm512_permutex2var_ps(halves[v].0, odds, halves[v].1),
                    _mm512_castsi512_ps(shifted),
                ]
            })
        }
    };
    // `done`: output row `m - 1`, which still lacks kernel row 2 (input row `2 * m`);
    // `next`: output row `m`.
    let mut done = [init; VECTORS];
    for m in 0..=rows {
        let j = 2 * m;
        // Kernel row 2 of output row `m - 1` and row 0 of output row `m` both read
        // input row `j`: its windows are loaded once for both.
        let mut next = [init; VECTORS];
        let row = windows(j);
        for (v, xs) in row.iter().enumerate() {
            for (kx, &x) in xs.iter().enumerate() {
                done[v] = _mm512_fmadd_ps(weights[6 + kx], x, done[v]);
                next[v] = _mm512_fmadd_ps(weights[kx], x, next[v]);
            }
        }
        if m > 0 {
            for (v, (a, &(o, mask, _, _))) in done.iter().zip(&vectors).enumerate() {
                // SAFETY: the lanes of `mask` are outputs `o..` of row `m - 1 < rows`
                // before `ow`, which the output holds (`pointers` checked).
                unsafe {
                    let at = out.add((m - 1) * ow + o);
                    match masked(v) {
                        true => _mm512_mask_storeu_ps(at, mask, *a),
                        false => _mm512_storeu_ps(at, *a),
                    }
                };
            }
        }
        if m < rows {
            // Kernel row 1 of output row `m`.
            for (a, xs) in next.iter_mut().zip(windows(j + 1)) {
                for (kx, &x) in xs.iter().enumerate() {
                    *a = _mm512_fmadd_ps(weights[3 + kx], x, *a);
                }
            }
        }
        done = next;
    }
}

/// The direct band kernel for `f32` rows of 16 or more outputs with AVX-512: two rows at
/// a time, four vectors of 16 sums per row (the last overlapping the one before rather
/// than leaving a tail; eight independent sums hide the FMA latency), tap after tap, each
/// tap's weight broadcast and fused into the sums.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `BandRows::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_rows_f32_avx512(job: &mut BandRows<'_>) {
    let pointers = job.pointers();
    let rows = pointers.3;
    if stacked_3x3(job.starts, job.step) {
        // SAFETY: AVX-512 F is present (this function's contract); the taps are stacked
        // 3 x 3 (checked); `pointers` are the job's, checked.
        unsafe { rows_3x3_avx512(job, pointers) };
        return;
    }
    for r in (0..rows).step_by(2) {
        // SAFETY: AVX-512 F is present (this function's contract); `r + 2 <= rows` (or
        // `r + 1`); `pointers` are the job's, checked.
        unsafe {
            if r + 2 <= rows {
                rows_avx512::<2>(job, pointers, r);
            } else {
                rows_avx512::<1>(job, pointers, r);
            }
        }
    }
}

/// Every output row of [`direct_rows_f32_avx512`] for [`stacked_3x3`] taps, by
/// [`rows_sweep_3x3`].
///
/// # Safety
/// The CPU must support AVX-512 F; the taps are [`stacked_3x3`], and `pointers` are the
/// job's, checked by `BandRows::pointers`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn rows_3x3_avx512(
    job: &BandRows<'_>,
    (slab, taps, out, rows): (*const f32, *const f32, *mut f32, usize),
) {
    let step = job.step;
    let columns = [job.starts[0], job.starts[1], job.starts[2]];
    // SAFETY: input row j at `column` is the window of tap `3 * ky + kx` of an output row
    // `j - ky` in `0..rows` (`stacked_3x3`; every j in `0..rows + 2` has one), and a vector
    // from `o` ends by `ow` (`o + 16 <= ow`, `o + 8` for a row's vector of 8, see
    // `row_vectors`): inside the slab (`pointers` checked every row's windows); nine taps,
    // `rows` rows of `ow >= 16` outputs (`pointers`).
    unsafe {
        rows_sweep_3x3(
            out,
            rows,
            job.ow,
            job.init,
            taps,
            &SlabRowWindows {
                slab,
                step,
                columns,
            },
        )
    };
}

/// How the stacked 3x3 row kernels cover a row of `ow` outputs: `(wide, tail)`, `wide`
/// vectors of 16 from output 0 (the last of a row of 16 or more overlapping the one before
/// rather than leaving a tail; a row of fewer is one vector storing only its own lanes),
/// then, where `tail`, one vector of 8 ending the row. A row whose last 1 to 8 outputs
/// follow whole vectors of 16 ends in a vector of 8: as many instructions as an
/// overlapping vector of 16, half the multiply-adds where the CPU splits 16 lanes into two
/// halves (Zen 4, one thread: 20- to 56-wide depthwise layers 1.04-1.12x as fast; two
/// overlapping vectors of 8 for a 14-wide row instead of one of 16 ran 1.3x slower).
fn row_vectors(ow: usize) -> (usize, bool) {
    let tail = ow > 16 && (1..=8).contains(&(ow % 16));
    (if tail { ow / 16 } else { ow.div_ceil(16) }, tail)
}

/// [`plane_rows_3x3_f32_avx512`]'s window masks with stride 1 ([`window_masks`]): per output
/// vector as the sweep places them ([`row_vector_start`]) and kernel column, the lanes of its
/// window inside a row `w` long.
pub(crate) fn plane_row_masks(ow: usize, pad_left: usize, w: usize) -> Vec<[__mmask16; 3]> {
    let (wide, tail) = row_vectors(ow);
    window_masks(wide + usize::from(tail), pad_left, w, |v| {
        row_vector_start(v, ow)
    })
}

/// Where output vector `v` of a row of `ow` outputs starts in the stacked 3x3 row kernels
/// (see [`row_vectors`]).
fn row_vector_start(v: usize, ow: usize) -> usize {
    match row_vectors(ow) {
        (wide, true) if v == wide => ow - 8,
        _ => (16 * v).min(ow.saturating_sub(16)),
    }
}

/// The loop of the stacked 3x3 row kernels: [`rows_strip_3x3`] over the whole row where
/// it holds one or two vectors of 16 columns (with the row's vector of 8 after them),
/// [`wide_strips`] for wider rows.
///
/// # Safety
/// The CPU must support AVX-512 F and VL; `taps` holds nine weights, `out` `rows` rows of
/// `ow` outputs, and `windows` may be called for any `j < rows + 2` and output vector.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn rows_sweep_3x3(
    out: *mut f32,
    rows: usize,
    ow: usize,
    init: f32,
    taps: *const f32,
    windows: &(impl RowWindows + Copy),
) {
    // SAFETY: there are nine weights (this function's contract).
    let taps: [f32; 9] = std::array::from_fn(|t| unsafe { *taps.add(t) });
    let (wide, tail) = row_vectors(ow);
    let strip = (out, rows, ow, 0);
    // SAFETY: as this function's contract.
    unsafe {
        match (wide, tail, ow < 16) {
            (1, _, true) => rows_strip_3x3::<1, 0, true, EDGES_ALL>(strip, init, &taps, windows),
            (1, false, false) => {
                rows_strip_3x3::<1, 0, false, EDGES_ALL>(strip, init, &taps, windows)
            }
            (1, true, _) => rows_strip_3x3::<1, 1, false, EDGES_ALL>(strip, init, &taps, windows),
            (2, false, _) => rows_strip_3x3::<2, 0, false, EDGES_ALL>(strip, init, &taps, windows),
            _ => wide_strips((out, rows, ow), init, &taps, *windows),
        }
    }
}

/// [`rows_strip_3x3`]'s `EDGES`: the strip's first vector reads past the row (its left
/// padding), its last does (the right padding), both, or (`EDGES_ALL`) any may.
const EDGES_FIRST: u8 = 1;
const EDGES_LAST: u8 = 2;
const EDGES_BOTH: u8 = EDGES_FIRST | EDGES_LAST;
const EDGES_ALL: u8 = 4;

/// The rows of [`rows_sweep_3x3`] of three vectors or more (its vector of 8 counted as
/// one): in as few strips of at most four vectors as hold them, as even as they go, wider
/// ones last, the vector of 8 in the last (not strips of two: every strip sweeps the
/// plane's rows again, and the CPU's prefetchers follow whole rows better than pieces).
/// Against strips of two (Intel Xeon, one thread, 2026-12-05, alternated rounds, the
/// machine noisy to about 10%): `mobilenet_dw_3x3` (56x56) 1.24-1.33x as fast (1.14x on two
/// threads), depthwise layers 48 to 150 wide 0.88-1.34x across rounds (most 1.0-1.33x
/// whether their planes stream from L3 or stay in L2). Strips of four with a vector of 8
/// after them ran out of registers (72-wide rows in L2 0.89x). Out of line, with the
/// windows by value (their masks read per strip): inlined beside the narrower strips, it
/// ran 14x14 and 28x28 layers 4-12% slower; out of line with the windows by reference,
/// 48-72-wide rows 0.80-0.90x.
///
/// # Safety
/// As [`rows_sweep_3x3`].
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline(never)]
unsafe fn wide_strips(
    (out, rows, ow): (*mut f32, usize, usize),
    init: f32,
    taps: &[f32; 9],
    windows: impl RowWindows + Copy,
) {
    let windows = &windows;
    let (wide, tail) = row_vectors(ow);
    let vectors = wide + usize::from(tail);
    let strips = vectors.div_ceil(4);
    let mut first = 0;
    for strip in 0..strips {
        let width = vectors / strips + usize::from(strips - strip <= vectors % strips);
        let with_tail = tail && strip + 1 == strips;
        let whole = width - usize::from(with_tail);
        let at = (out, rows, ow, first);
        // Which of the strip's vectors may read past the row: its first, its last, or (were
        // one between them to) all (`EDGES_ALL`, their lanes read per strip).
        let reaches = |v: usize| {
            let all = match with_tail && v + 1 == first + width {
                true => 0xff,
                false => !0,
            };
            (0..3).any(|kx| windows.lanes(v, kx) & all != all)
        };
        let edges = match (first + 1..first + width - 1).any(reaches) {
            true => EDGES_ALL,
            false => {
                (u8::from(reaches(first)) * EDGES_FIRST)
                    | (u8::from(reaches(first + width - 1)) * EDGES_LAST)
            }
        };
        macro_rules! strip {
            ($wide:literal, $tail:literal) => {
                match edges {
                    0 => wide_strip::<$wide, $tail, 0>(at, init, taps, windows),
                    EDGES_FIRST => wide_strip::<$wide, $tail, EDGES_FIRST>(at, init, taps, windows),
                    EDGES_LAST => wide_strip::<$wide, $tail, EDGES_LAST>(at, init, taps, windows),
                    EDGES_BOTH => wide_strip::<$wide, $tail, EDGES_BOTH>(at, init, taps, windows),
                    _ => wide_strip::<$wide, $tail, EDGES_ALL>(at, init, taps, windows),
                }
            };
        }
        // SAFETY: as this function's contract; the vectors that may read past the row read
        // their lanes (`edges`).
        unsafe {
            match (whole, with_tail) {
                (1, _) => strip!(1, 1),
                (2, false) => strip!(2, 0),
                (2, true) => strip!(2, 1),
                (3, false) => strip!(3, 0),
                (3, true) => strip!(3, 1),
                _ => strip!(4, 0),
            }
        }
        first += whole;
    }
}

/// [`rows_strip_3x3`] for [`wide_strips`], out of line: inlined there, the strips with
/// their edges known ran 64-300-wide depthwise layers 1.1-1.24x slower, 40- and 56-wide
/// ones alike (AMD Zen 5, one thread).
///
/// # Safety
/// As [`rows_strip_3x3`].
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline(never)]
unsafe fn wide_strip<const WIDE: usize, const TAIL: usize, const EDGES: u8>(
    strip: (*mut f32, usize, usize, usize),
    init: f32,
    taps: &[f32; 9],
    windows: &impl RowWindows,
) {
    // SAFETY: as this function's contract.
    unsafe { rows_strip_3x3::<WIDE, TAIL, false, EDGES>(strip, init, taps, windows) }
}

/// `WIDE` vectors of 16 columns from vector `first` of [`rows_sweep_3x3`], then `TAIL` (0
/// or 1) vectors of 8 (the row's last, vector `first + WIDE`): padded input row after row
/// `j`, its windows (`windows.window(j, o, kx, lanes)` for the vector of outputs from `o`,
/// [`row_vector_start`], with its lanes read once a strip; a row of fewer than 16 stores
/// only its own lanes) loaded once and
/// fused into the sums of the output rows that read them (held in registers and passed on
/// as the rows advance), the nine weights in registers. Every output sums its taps in
/// kernel-row order, as `rows_avx512` does (same bits). `EDGES` ([`EDGES_FIRST`] and the
/// others): the vectors whose windows may reach past the row, which read their lanes; the
/// others load whole windows.
///
/// # Safety
/// As [`rows_sweep_3x3`]; `first + WIDE + TAIL <=` the row's vectors, `NARROW` exactly
/// when `ow < 16`, and every vector whose windows reach past the row is one of `EDGES`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn rows_strip_3x3<
    const WIDE: usize,
    const TAIL: usize,
    const NARROW: bool,
    const EDGES: u8,
>(
    (out, rows, ow, first): (*mut f32, usize, usize, usize),
    init: f32,
    taps: &[f32; 9],
    windows: &impl RowWindows,
) {
    // SAFETY: AVX-512 F and VL are present (this function's contract).
    let (mut wide, mut tail) = unsafe {
        (
            StripSums::<__m512, WIDE>::new(first, ow, init, taps, windows),
            StripSums::<__m256, TAIL>::new(first + WIDE, ow, init, taps, windows),
        )
    };
    // Which vectors read their lanes (`StripSums::add_row`): the wide ones' first and
    // last, the vector of 8 (the strip's last where there is one).
    let all = EDGES == EDGES_ALL;
    let wide_edges = [
        all || EDGES & EDGES_FIRST != 0,
        all || (TAIL == 0 && EDGES & EDGES_LAST != 0),
        all,
    ];
    let tail_edges = [false, all || EDGES & EDGES_LAST != 0, all];
    // Output rows outside `0..rows` (those of the first two and last two input rows) are
    // summed and dropped: skipping them (3.6% of a 56-row plane's multiply-adds) with a
    // test per row ran 56x56 and 112x112 planes 6-14% slower.
    for j in 0..rows + 2 {
        // SAFETY: `j < rows + 2` and the vectors of the strip (this function's contract);
        // the stored output row `j - 2 < rows`.
        unsafe {
            wide.add_row(j, windows, wide_edges);
            tail.add_row(j, windows, tail_edges);
            if j >= 2 {
                wide.store::<NARROW>(out, j - 2, ow);
                tail.store::<false>(out, j - 2, ow);
            }
        }
        wide.advance();
        tail.advance();
    }
}

/// The sums of [`rows_strip_3x3`] in registers `R` (16 or 8 lanes): `V` vectors of columns
/// from vector `first` for the three output rows that read the current input row `j` (rows
/// `j - 2`, `j - 1` and `j`, kernel rows 2, 1 and 0).
struct StripSums<R, const V: usize> {
    sums: [[R; V]; 3],
    init: R,
    weights: [R; 9],
    starts: [usize; V],
    /// Per vector and kernel column, the lanes of its window ([`RowWindows::lanes`]).
    lanes: [[__mmask16; 3]; V],
}

impl<R: MaskedRegister<Elem = f32>, const V: usize> StripSums<R, V> {
    /// # Safety
    /// The CPU must support AVX-512 F and VL.
    #[inline(always)]
    unsafe fn new(
        first: usize,
        ow: usize,
        init: f32,
        taps: &[f32; 9],
        windows: &impl RowWindows,
    ) -> Self {
        // SAFETY: the CPU supports `R` (this function's contract).
        let init = unsafe { R::splat(init) };
        Self {
            sums: [[init; V]; 3],
            init,
            // SAFETY: as above.
            weights: std::array::from_fn(|t| unsafe { R::splat(taps[t]) }),
            starts: std::array::from_fn(|v| row_vector_start(first + v, ow)),
            lanes: std::array::from_fn(|v| std::array::from_fn(|kx| windows.lanes(first + v, kx))),
        }
    }

    /// Input row `j`'s windows fused into the sums of the three output rows that read it.
    /// `edges`: whether the first vector, the last, and every vector read their windows'
    /// lanes; the others read whole windows (constants where the strip's edges are known,
    /// so that their loads are plain ones, unchecked: against masked loads, or a check per
    /// window, 28x28-112x112 depthwise layers ran 1.10-1.20x as fast on AMD Zen 5, one
    /// thread).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and VL; `j` and the vectors are the sweep's; every
    /// vector whose windows reach past the row reads its lanes (`edges`).
    #[inline(always)]
    unsafe fn add_row(&mut self, j: usize, windows: &impl RowWindows, edges: [bool; 3]) {
        let reads_lanes = |v: usize| edges[2] || (v == 0 && edges[0]) || (v + 1 == V && edges[1]);
        for kx in 0..3 {
            // A loop, not `array::from_fn`: a closure here may be called out of line.
            let mut xs = self.init_row();
            for (v, x) in xs.iter_mut().enumerate() {
                let lanes = match reads_lanes(v) {
                    true => self.lanes[v][kx],
                    false => !0,
                };
                // SAFETY: `j` and vector `first + v` are the sweep's, `lanes` its own where
                // its windows reach past the row (this function's contract).
                *x = unsafe { windows.window(j, self.starts[v], kx, lanes) };
            }
            for (ky, sums) in self.sums.iter_mut().rev().enumerate() {
                for (a, &x) in sums.iter_mut().zip(&xs) {
                    // SAFETY: the CPU supports `R` (this function's contract).
                    *a = unsafe { R::fmadd(self.weights[3 * ky + kx], x, *a) };
                }
            }
        }
    }

    /// A row of vectors of the starting sums.
    #[inline(always)]
    fn init_row(&self) -> [R; V] {
        [self.init; V]
    }

    /// Stores the finished sums of output row `r` (a row of fewer than 16, `NARROW`, only
    /// its own lanes).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and VL; `r` is a row of `out`, which holds rows of
    /// `ow` outputs, and the vectors lie in the row.
    #[inline(always)]
    unsafe fn store<const NARROW: bool>(&self, out: *mut f32, r: usize, ow: usize) {
        for (a, &o) in self.sums[0].iter().zip(&self.starts) {
            let at = out.wrapping_add(r * ow + o);
            // SAFETY: `r * ow + o + min(LANES, ow) <= rows * ow`, the output's length (the
            // vectors lie in the row); a row of fewer than 16 (`NARROW`) stores `ow` lanes.
            unsafe {
                if NARROW {
                    R::store_where(at, *a, ((1u32 << ow) - 1) as u16)
                } else {
                    R::store(at, *a)
                }
            };
        }
    }

    /// Passes the sums on to the next input row: the oldest row is done.
    #[inline(always)]
    fn advance(&mut self) {
        self.sums = [self.sums[1], self.sums[2], self.init_row()];
    }
}

/// Output rows `r..r + ROWS` of [`direct_rows_f32_avx512`].
///
/// # Safety
/// The CPU must support AVX-512 F; `r + ROWS <= rows`, and `pointers` are the job's,
/// checked by `BandRows::pointers`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[inline]
unsafe fn rows_avx512<const ROWS: usize>(
    job: &BandRows<'_>,
    (slab, taps, out, _): (*const f32, *const f32, *mut f32, usize),
    r: usize,
) {
    let (ow, step) = (job.ow, job.step);
    for first in (0..ow.div_ceil(16)).step_by(4) {
        let o: [usize; 4] = std::array::from_fn(|v| ((first + v) * 16).min(ow - 16));
        let mut acc = [[_mm512_set1_ps(job.init); 4]; ROWS];
        for (t, &start) in job.starts.iter().enumerate() {
            // SAFETY: `o[v] + 16 <= ow` and `r + ROWS <= rows`, so every load is inside
            // the slab and `t` inside the taps (`pointers` checked both).
            unsafe {
                let w = _mm512_set1_ps(*taps.add(t));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let x = slab.add((r + i) * step + start);
                    for (a, &ov) in acc_i.iter_mut().zip(&o) {
                        *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(x.add(ov)), *a);
                    }
                }
            }
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (a, &ov) in acc_i.iter().zip(&o) {
                // SAFETY: `(r + i) * ow + o[v] + 16 <= rows * ow`, the output's length.
                unsafe { _mm512_storeu_ps(out.add((r + i) * ow + ov), *a) };
            }
        }
    }
}
