//! The direct row kernels for `f32` with AVX2 and FMA: the 3x3 depthwise strips on the
//! input plane as it is (strides 1 and 2) and bands of rows.

use std::arch::x86_64::*;

use crate::kernels::direct::{BandRows, PlaneRows};

/// Output vectors of 8 per strip of [`plane_strip_3x3_avx2`] at most: nine sums, three
/// windows and a weight in 13 of the 16 registers (fewer vectors leave the chains of three
/// fused multiply-adds per sum and input row waiting on their latency; four spill, 1.1x the
/// instructions under `valgrind --tool=cachegrind`).
const AVX2_STRIP: usize = 3;

/// [`plane_rows_3x3_f32_avx512`](super::plane_rows_3x3_f32_avx512)'s stride-1 kernel with
/// AVX2 and FMA: strips of up to [`AVX2_STRIP`] vectors of 8 outputs (the last vector of a
/// row overlapping the one before), input row after row, each row's windows loaded once and
/// fused into the sums of the three output rows that read them (three rows a round, the
/// three sets of sums changing roles instead of moving), the weights broadcast from
/// memory; the lanes of a window outside the image loaded as zeros (only in a strip's first
/// or last vector, see [`edge_strips`]: a 56-wide row is strips of 2, 2 and 3 vectors, not
/// 1, 3, 2 and 1 with a masked strip at each end), rows outside it all zeros. Every output
/// sums its taps in kernel-row order (same bits as the AVX-512 kernel and `direct`'s
/// rows).
///
/// Stride 2: [`strided_rows_3x3_avx2`].
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `PlaneRows::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn plane_rows_3x3_f32_avx2(job: &mut PlaneRows<'_>) {
    if job.stride == 2 {
        // SAFETY: AVX2 and FMA are present (this function's contract).
        unsafe { strided_rows_3x3_avx2(job) };
        return;
    }
    let (plane, out, rows) = job.pointers();
    let ow = job.ow;
    let (h, w, pad_left) = (job.h as isize, job.w as isize, job.pad_left as isize);
    let windows = Avx2PlaneWindows {
        plane,
        h,
        w,
        row0: job.oy0 as isize - job.pad_top as isize,
        pad_left,
    };
    let (init, taps) = (job.init, job.taps.as_ptr());
    let start = |v: usize| (8 * v).min(ow.saturating_sub(8));
    for (first, count, edges) in edge_strips(ow, AVX2_STRIP, &|v| windows.interior(start(v))) {
        let strip = (out, rows, ow, init, taps, first);
        // SAFETY: AVX2 and FMA are present (this function's contract); nine taps (the
        // job's type), `rows` rows of `ow` outputs (`pointers`), `first + count` vectors of
        // the row at most, `edges` as `edge_strips` says.
        unsafe {
            match (count, edges, ow < 8) {
                (1, _, true) => plane_strip_3x3_avx2::<1, true, false, true>(strip, &windows),
                (1, (false, false), _) => {
                    plane_strip_3x3_avx2::<1, false, false, false>(strip, &windows)
                }
                (1, _, _) => plane_strip_3x3_avx2::<1, true, false, false>(strip, &windows),
                (2, e, _) => strip_with_edges::<2>(e, strip, &windows),
                (_, e, _) => strip_with_edges::<AVX2_STRIP>(e, strip, &windows),
            }
        }
    }
}

/// [`plane_strip_3x3_avx2`] of `VECTORS` vectors (at least 2) whose first and last load
/// their windows masked as `(left, right)` says.
///
/// # Safety
/// As [`plane_strip_3x3_avx2`], with `LEFT`, `RIGHT` = `left`, `right` and rows of at least
/// 8 outputs.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn strip_with_edges<const VECTORS: usize>(
    (left, right): (bool, bool),
    strip: (*mut f32, usize, usize, f32, *const f32, usize),
    windows: &Avx2PlaneWindows,
) {
    // SAFETY: this function's contract.
    unsafe {
        match (left, right) {
            (false, false) => plane_strip_3x3_avx2::<VECTORS, false, false, false>(strip, windows),
            (true, false) => plane_strip_3x3_avx2::<VECTORS, true, false, false>(strip, windows),
            (false, true) => plane_strip_3x3_avx2::<VECTORS, false, true, false>(strip, windows),
            (true, true) => plane_strip_3x3_avx2::<VECTORS, true, true, false>(strip, windows),
        }
    }
}

/// The strips of at most `len` vectors of 8 of a row of `ow` outputs, as `(first, count,
/// (left, right))`: the row's vectors in runs of as even a length as `len` allows, in
/// which only the first (`left`) and the last (`right`) may have a window that is not
/// [`interior`](Avx2PlaneWindows::interior); a run with another such vector is split
/// into single vectors (`left` where not interior).
fn edge_strips<'a>(
    ow: usize,
    len: usize,
    interior: &'a impl Fn(usize) -> bool,
) -> impl Iterator<Item = (usize, usize, (bool, bool))> + 'a {
    let vectors = ow.div_ceil(8);
    let runs = vectors.div_ceil(len);
    (0..runs).flat_map(move |r| {
        let (a, b) = (r * vectors / runs, (r + 1) * vectors / runs);
        let whole = (a + 1..b.saturating_sub(1)).all(interior);
        let count = if whole { b - a } else { 1 };
        (a..b).step_by(count).map(move |f| match whole {
            true => (f, count, (!interior(a), !interior(b - 1))),
            false => (f, 1, (!interior(f), false)),
        })
    })
}

/// The strips of at most `len` vectors of 8 of a row of `ow` outputs, as `(first, count,
/// interior)`: the vectors before the first whose windows lie inside the row (`interior`,
/// true for a contiguous run of vectors), that run, then those after it, so that only the
/// row's edge vectors load their windows with masks.
fn strips(
    ow: usize,
    len: usize,
    interior: impl Fn(usize) -> bool,
) -> impl Iterator<Item = (usize, usize, bool)> {
    let vectors = ow.div_ceil(8);
    let lo = (0..vectors).find(|&v| interior(v)).unwrap_or(vectors);
    let hi = (lo..vectors).find(|&v| !interior(v)).unwrap_or(vectors);
    [(0, lo, false), (lo, hi, true), (hi, vectors, false)]
        .into_iter()
        .flat_map(move |(a, b, inside)| {
            (a..b)
                .step_by(len)
                .map(move |f| (f, (b - f).min(len), inside))
        })
}

/// Output vectors of 8 per strip of [`strided_strip_3x3_avx2`] at most: four chains of
/// nine fused multiply-adds in flight.
const AVX2_STRIDED_STRIP: usize = 4;

/// The stride-2 kernel of [`plane_rows_3x3_f32_avx2`]: per strip of up to
/// [`AVX2_STRIDED_STRIP`] vectors of 8 outputs, input row after input row, each read as 16
/// columns from the vector's first window (its even and odd columns picked by shuffles:
/// kernel columns 0 and 1) and 16 from two columns further (their even ones: kernel column
/// 2), the lanes outside the image loaded as zeros, a row outside it all zeros, and fused
/// into the one or two output rows that read it. Every output sums its taps in kernel-row
/// order from the bias, as `direct`'s rows do (same bits).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `PlaneRows::pointers`;
/// panics if the job's stride is not 2).
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn strided_rows_3x3_avx2(job: &mut PlaneRows<'_>) {
    let (plane, out, rows) = job.pointers();
    assert!(job.stride == 2);
    let ow = job.ow;
    let windows = Avx2PlaneWindows {
        plane,
        h: job.h as isize,
        w: job.w as isize,
        row0: 2 * job.oy0 as isize - job.pad_top as isize,
        pad_left: job.pad_left as isize,
    };
    let (init, taps) = (job.init, job.taps.as_ptr());
    let start = |v: usize| (8 * v).min(ow.saturating_sub(8));
    // Every window of a vector from `o` inside the row: from column `2 * o - pad_left`, 18
    // columns (two vectors of 8, and two more for kernel column 2).
    let interior = |v: usize| {
        let column = 2 * start(v) as isize - windows.pad_left;
        column >= 0 && column + 18 <= windows.w
    };
    for (first, count, interior) in strips(ow, AVX2_STRIDED_STRIP, interior) {
        let strip = (out, rows, ow, init, taps, first);
        // SAFETY: AVX2 and FMA are present (this function's contract); nine taps (the
        // job's type), `rows` rows of `ow` outputs (`pointers`), `first + count` vectors of
        // the row at most, `interior` as checked above.
        unsafe {
            match (count, interior, ow < 8) {
                (1, _, true) => strided_strip_3x3_avx2::<1, false, true>(strip, &windows),
                (1, i, false) => match i {
                    true => strided_strip_3x3_avx2::<1, true, false>(strip, &windows),
                    false => strided_strip_3x3_avx2::<1, false, false>(strip, &windows),
                },
                (2, i, _) => match i {
                    true => strided_strip_3x3_avx2::<2, true, false>(strip, &windows),
                    false => strided_strip_3x3_avx2::<2, false, false>(strip, &windows),
                },
                (3, i, _) => match i {
                    true => strided_strip_3x3_avx2::<3, true, false>(strip, &windows),
                    false => strided_strip_3x3_avx2::<3, false, false>(strip, &windows),
                },
                (_, i, _) => match i {
                    true => strided_strip_3x3_avx2::<4, true, false>(strip, &windows),
                    false => strided_strip_3x3_avx2::<4, false, false>(strip, &windows),
                },
            }
        }
    }
}

/// The even and odd elements of the 16 values `a`, `b`, each in the order [`in_order`]
/// undoes: elements 0, 2, 8, 10, 4, 6, 12, 14 (and 1, 3, 9, 11, ...), picked within each
/// 128-bit half.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn even_odd(a: __m256, b: __m256) -> (__m256, __m256) {
    (
        _mm256_shuffle_ps::<0x88>(a, b),
        _mm256_shuffle_ps::<0xDD>(a, b),
    )
}

/// The lanes of an [`even_odd`] pick (or of sums of such) in order: its 64-bit quarters
/// 0, 2, 1, 3.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn in_order(v: __m256) -> __m256 {
    _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v)))
}

/// `VECTORS` vectors of 8 outputs from vector `first` of every output row of
/// [`strided_rows_3x3_avx2`]; `INTERIOR` strips' windows all lie inside the rows; `NARROW`
/// rows of fewer than 8 outputs store only their own lanes.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `taps` holds nine weights, `out` `rows` rows of `ow`
/// outputs, `first + VECTORS` vectors are the row's at most, `INTERIOR` only where the 18
/// columns from `2 * o - pad_left` of every vector from `o` lie in the row, and `NARROW`
/// exactly when `ow < 8`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn strided_strip_3x3_avx2<const VECTORS: usize, const INTERIOR: bool, const NARROW: bool>(
    (out, rows, ow, init, taps, first): (*mut f32, usize, usize, f32, *const f32, usize),
    windows: &Avx2PlaneWindows,
) {
    let o: [usize; VECTORS] = std::array::from_fn(|v| (8 * (first + v)).min(ow.saturating_sub(8)));
    // A row of fewer than 8 outputs (`NARROW`) stores its `ow` lanes only.
    let live = lanes_between(0, ow as isize);
    // Input row `j`'s three windows of each vector (kernel columns 0, 1, 2), zeros for a
    // row outside the image.
    let row_windows = |j: usize| -> [[__m256; 3]; VECTORS] {
        let mut xs = [[_mm256_setzero_ps(); 3]; VECTORS];
        if let Some(row) = windows.row(j) {
            for (x, &ov) in xs.iter_mut().zip(&o) {
                // SAFETY: AVX2 is present; the four loads read columns `2 * ov -
                // pad_left..` up to 18 further, inside the row where `INTERIOR` (this
                // function's contract), else masked to those inside; `row` is
                // `windows.row`'s.
                unsafe {
                    let (even, odd) = even_odd(
                        windows.window::<INTERIOR>(row, 2 * ov, 0),
                        windows.window::<INTERIOR>(row, 2 * ov + 8, 0),
                    );
                    let (shifted, _) = even_odd(
                        windows.window::<INTERIOR>(row, 2 * ov + 2, 0),
                        windows.window::<INTERIOR>(row, 2 * ov + 10, 0),
                    );
                    *x = [even, odd, shifted];
                }
            }
        }
        xs
    };
    // Kernel row `ky`'s three weights, broadcast.
    let weights = |ky: usize| -> [__m256; 3] {
        std::array::from_fn(|kx| {
            // SAFETY: `3 * ky + kx < 9` weights (this function's contract).
            _mm256_broadcast_ss(unsafe { &*taps.add(3 * ky + kx) })
        })
    };
    let add = |acc: &mut [__m256; VECTORS], w: [__m256; 3], xs: &[[__m256; 3]; VECTORS]| {
        for (a, x) in acc.iter_mut().zip(xs) {
            for (&wv, &xv) in w.iter().zip(x) {
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
        }
    };
    // Input row `2 * m` is kernel row 2 of output row `m - 1` (`done`) and kernel row 0 of
    // output row `m` (`next`): its windows are loaded once for both (over loading every
    // kernel row's windows per output row, the stride-2 layers of `sweeps/depthwise.json`
    // with `CONV2D_ISA=avx2` on Zen 4, one thread: 1.12-1.35x on 28x28-112x112 inputs,
    // `mobilenet_dw_3x3s2` 1.10x).
    let mut done = [_mm256_set1_ps(init); VECTORS];
    for m in 0..=rows {
        let xs = row_windows(2 * m);
        let mut next = [_mm256_set1_ps(init); VECTORS];
        if m > 0 {
            add(&mut done, weights(2), &xs);
            for (a, &ov) in done.iter().zip(&o) {
                let at = out.wrapping_add((m - 1) * ow + ov);
                // SAFETY: `(m - 1) * ow + o[v] + min(8, ow) <= rows * ow`, the output's
                // length; a row of fewer than 8 (`NARROW`) stores `ow` lanes.
                unsafe {
                    if NARROW {
                        _mm256_maskstore_ps(at, live, in_order(*a))
                    } else {
                        _mm256_storeu_ps(at, in_order(*a))
                    }
                };
            }
        }
        if m < rows {
            add(&mut next, weights(0), &xs);
            add(&mut next, weights(1), &row_windows(2 * m + 1));
        }
        done = next;
    }
}

/// The mask of the lanes `l` of an 8-lane vector with `lo <= l < hi` (bounds clamped to
/// `0..=8`, so that any `isize` is safe to pass).
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) fn lanes_between(lo: isize, hi: isize) -> __m256i {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let bound = |b: isize| _mm256_set1_epi32(b.clamp(0, 8) as i32);
    _mm256_andnot_si256(
        _mm256_cmpgt_epi32(bound(lo), lane),
        _mm256_cmpgt_epi32(bound(hi), lane),
    )
}

/// The windows of [`plane_rows_3x3_f32_avx2`]: padded row `j` is image row `row0 + j`
/// (zeros outside the image), a window's lanes outside the row masked to zero.
struct Avx2PlaneWindows {
    plane: *const f32,
    h: isize,
    w: isize,
    row0: isize,
    pad_left: isize,
}

impl Avx2PlaneWindows {
    /// Padded row `j`'s first column (column `-pad_left`, not read as such) if it is an
    /// image row.
    #[inline(always)]
    fn row(&self, j: usize) -> Option<*const f32> {
        let iy = self.row0 + j as isize;
        (0..self.h)
            .contains(&iy)
            .then(|| self.plane.wrapping_offset(iy * self.w - self.pad_left))
    }

    /// Whether every window of the output vector from `o` lies inside the row.
    #[inline(always)]
    fn interior(&self, o: usize) -> bool {
        let column = o as isize - self.pad_left;
        column >= 0 && column + 10 <= self.w
    }

    /// Kernel column `kx`'s window of `row` (from [`row`](Self::row)) for the output
    /// vector from `o`: a plain load where `INTERIOR` (the vector is
    /// [`interior`](Self::interior)), else with the lanes outside the row masked to zero.
    ///
    /// # Safety
    /// The CPU must support AVX2; `row` is one of [`row`](Self::row)'s.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn window<const INTERIOR: bool>(&self, row: *const f32, o: usize, kx: usize) -> __m256 {
        let at = row.wrapping_add(o + kx);
        if INTERIOR {
            // SAFETY: columns `o + kx - pad_left..` up to 8 further lie in `0..w`
            // (`interior`) of an image row: inside the plane, which holds `h * w` values
            // (the job's `pointers` checked).
            return unsafe { _mm256_loadu_ps(at) };
        }
        // The lanes whose column `o + kx - pad_left + l` lies in `0..w`.
        let column = (o + kx) as isize - self.pad_left;
        let lanes = lanes_between(-column, self.w - column);
        // SAFETY: only those lanes are read (masked loads touch no other lane): inside the
        // plane (as above).
        unsafe { _mm256_maskload_ps(at, lanes) }
    }
}

/// `VECTORS` vectors of 8 outputs from vector `first` of every output row of
/// [`plane_rows_3x3_f32_avx2`] (as `rows::rows_strip_3x3` does with 16); a `LEFT` strip
/// loads its first vector's windows masked to the row, a `RIGHT` strip its last vector's,
/// every other window is loaded whole; `NARROW` rows of fewer than 8 outputs store only
/// their own lanes.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `taps` holds nine weights, `out` `rows` rows of `ow`
/// outputs, `first + VECTORS` vectors are the row's at most, every vector of the strip but
/// a `LEFT` strip's first and a `RIGHT` strip's last is
/// [`interior`](Avx2PlaneWindows::interior), and `NARROW` exactly when `ow < 8` (then
/// with `LEFT`).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn plane_strip_3x3_avx2<
    const VECTORS: usize,
    const LEFT: bool,
    const RIGHT: bool,
    const NARROW: bool,
>(
    (out, rows, ow, init, taps, first): (*mut f32, usize, usize, f32, *const f32, usize),
    windows: &Avx2PlaneWindows,
) {
    let strip = PlaneStrip {
        out,
        ow,
        taps,
        o: std::array::from_fn(|v| (8 * (first + v)).min(ow.saturating_sub(8))),
        live: lanes_between(0, ow as isize),
        init: [_mm256_set1_ps(init); VECTORS],
    };
    // Three input rows a round, the three sets of sums changing roles in turn (no moves):
    // input row `j`'s sums of output rows `j`, `j - 1` and `j - 2`.
    let (mut a, mut b, mut c) = (strip.init, strip.init, strip.init);
    let mut j = 0;
    // SAFETY: each call's as this function's contract says, with `j < rows + 2`.
    unsafe {
        while j + 3 <= rows + 2 {
            strip.step::<LEFT, RIGHT, NARROW>(windows, j, [&mut c, &mut b, &mut a]);
            strip.step::<LEFT, RIGHT, NARROW>(windows, j + 1, [&mut a, &mut c, &mut b]);
            strip.step::<LEFT, RIGHT, NARROW>(windows, j + 2, [&mut b, &mut a, &mut c]);
            j += 3;
        }
        if j < rows + 2 {
            strip.step::<LEFT, RIGHT, NARROW>(windows, j, [&mut c, &mut b, &mut a]);
        }
        if j + 1 < rows + 2 {
            strip.step::<LEFT, RIGHT, NARROW>(windows, j + 1, [&mut a, &mut c, &mut b]);
        }
    }
}

/// What every input row of a strip of [`plane_strip_3x3_avx2`] shares.
struct PlaneStrip<const VECTORS: usize> {
    out: *mut f32,
    ow: usize,
    taps: *const f32,
    /// Each vector's first output column.
    o: [usize; VECTORS],
    /// The lanes of a row of fewer than 8 outputs.
    live: __m256i,
    /// The bias, each output's first term.
    init: [__m256; VECTORS],
}

impl<const VECTORS: usize> PlaneStrip<VECTORS> {
    /// Input row `j`'s windows fused into the sums of output rows `j` (`sums[0]`, kernel
    /// row 0, started here), `j - 1` and `j - 2` (`sums[2]`, then stored; rows outside
    /// `0..rows` are summed and dropped).
    ///
    /// # Safety
    /// As [`plane_strip_3x3_avx2`], and `j < rows + 2`.
    // `inline(always)`, no `target_feature`: inlined into the strip's AVX2 code. With the
    // feature and `#[inline]`, LLVM kept it a call (2.4x the kernel's instructions).
    #[inline(always)]
    unsafe fn step<const LEFT: bool, const RIGHT: bool, const NARROW: bool>(
        &self,
        windows: &Avx2PlaneWindows,
        j: usize,
        sums: [&mut [__m256; VECTORS]; 3],
    ) {
        let [new, mid, done] = sums;
        *new = self.init;
        match windows.row(j) {
            Some(row) => {
                for kx in 0..3 {
                    let xs = std::array::from_fn(|v| {
                        // SAFETY: AVX2 is present, and vectors other than a `LEFT` strip's
                        // first and a `RIGHT` strip's last are interior (this function's
                        // contract); `row` is `windows.row`'s.
                        unsafe {
                            match (LEFT && v == 0) || (RIGHT && v == VECTORS - 1) {
                                true => windows.window::<false>(row, self.o[v], kx),
                                false => windows.window::<true>(row, self.o[v], kx),
                            }
                        }
                    });
                    // SAFETY: as above.
                    unsafe { self.fuse(kx, xs, [&mut *new, &mut *mid, &mut *done]) };
                }
            }
            None => {
                for kx in 0..3 {
                    let xs = [_mm256_setzero_ps(); VECTORS];
                    // SAFETY: as above.
                    unsafe { self.fuse(kx, xs, [&mut *new, &mut *mid, &mut *done]) };
                }
            }
        }
        if j >= 2 {
            for (a, &ov) in done.iter().zip(&self.o) {
                let at = self.out.wrapping_add((j - 2) * self.ow + ov);
                // SAFETY: `(j - 2) * ow + o[v] + min(8, ow) <= rows * ow`, the output's
                // length; a row of fewer than 8 (`NARROW`) stores `ow` lanes.
                unsafe {
                    if NARROW {
                        _mm256_maskstore_ps(at, self.live, *a)
                    } else {
                        _mm256_storeu_ps(at, *a)
                    }
                };
            }
        }
    }

    /// Kernel column `kx`'s windows `xs` of an input row times its weights of kernel row
    /// `ky`, added to `sums[ky]`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `taps` holds nine weights.
    #[inline(always)]
    unsafe fn fuse(&self, kx: usize, xs: [__m256; VECTORS], sums: [&mut [__m256; VECTORS]; 3]) {
        for (ky, acc_row) in sums.into_iter().enumerate() {
            // SAFETY: `3 * ky + kx < 9` weights (this function's contract).
            let wv = _mm256_broadcast_ss(unsafe { &*self.taps.add(3 * ky + kx) });
            for (a, &xv) in acc_row.iter_mut().zip(&xs) {
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
        }
    }
}

/// The direct band kernel for `f32` rows of 16 or more outputs with AVX2 and FMA: as the
/// AVX-512 one, two rows of two vectors of 16 (as four of 8) at a time.
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `BandRows::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn direct_rows_f32_avx2(job: &mut BandRows<'_>) {
    let pointers = job.pointers();
    let rows = pointers.3;
    for r in (0..rows).step_by(2) {
        // SAFETY: AVX2 and FMA are present (this function's contract); `r + 2 <= rows`
        // (or `r + 1`); `pointers` are the job's, checked.
        unsafe {
            if r + 2 <= rows {
                rows_avx2::<2>(job, pointers, r);
            } else {
                rows_avx2::<1>(job, pointers, r);
            }
        }
    }
}

/// Output rows `r..r + ROWS` of [`direct_rows_f32_avx2`].
///
/// # Safety
/// The CPU must support AVX2 and FMA; `r + ROWS <= rows`, and `pointers` are the job's,
/// checked by `BandRows::pointers`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn rows_avx2<const ROWS: usize>(
    job: &BandRows<'_>,
    (slab, taps, out, _): (*const f32, *const f32, *mut f32, usize),
    r: usize,
) {
    let (ow, step) = (job.ow, job.step);
    for first in (0..ow.div_ceil(16)).step_by(2) {
        let o: [usize; 4] =
            std::array::from_fn(|v| ((first + v / 2) * 16).min(ow - 16) + v % 2 * 8);
        let mut acc = [[_mm256_set1_ps(job.init); 4]; ROWS];
        for (t, &start) in job.starts.iter().enumerate() {
            // SAFETY: `o[v] + 8 <= ow` and `r + ROWS <= rows`, so every load is inside the
            // slab and `t` inside the taps (`pointers` checked both).
            unsafe {
                let w = _mm256_set1_ps(*taps.add(t));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let x = slab.add((r + i) * step + start);
                    for (a, &ov) in acc_i.iter_mut().zip(&o) {
                        *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.add(ov)), *a);
                    }
                }
            }
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (a, &ov) in acc_i.iter().zip(&o) {
                // SAFETY: `(r + i) * ow + o[v] + 8 <= rows * ow`, the output's length.
                unsafe { _mm256_storeu_ps(out.add((r + i) * ow + ov), *a) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::edge_strips;

    /// Every vector of the row in exactly one strip, in order, strips of at most `len`, and
    /// every vector whose windows leave the row masked: a strip's first (`left`) or last
    /// (`right`), or alone.
    #[test]
    fn edge_strips_mask_every_edge_vector() {
        for ow in 1usize..80 {
            for len in 1..5 {
                for (lo, hi) in [
                    (0, usize::MAX),
                    (1, usize::MAX),
                    (0, ow.div_ceil(8) - 1),
                    (1, 2),
                    (2, 3),
                ] {
                    let interior = |v: usize| (lo..hi).contains(&v);
                    let mut next = 0;
                    for (first, count, (left, right)) in edge_strips(ow, len, &interior) {
                        assert_eq!(first, next, "ow {ow} len {len}");
                        assert!((1..=len).contains(&count));
                        for v in first..first + count {
                            let masked = (left && v == first) || (right && v == first + count - 1);
                            assert!(interior(v) || masked, "ow {ow} len {len} vector {v}");
                        }
                        next = first + count;
                    }
                    assert_eq!(next, ow.div_ceil(8), "ow {ow} len {len}");
                }
            }
        }
    }
}
