//! What the AVX-512 3x3 row kernels of `rows` and `weight_rows` share: the windows they
//! read (from a padded slab, or from the input plane as it is with masked lanes) and the
//! lane masks and offsets of those windows.

use std::arch::x86_64::*;

use super::MaskedRegister;

/// The lanes of 16 values from column `c` of a row `w` long that lie in `0..w`.
#[inline(always)]
pub(super) fn lanes_inside(c: isize, w: isize) -> __mmask16 {
    let (lo, hi) = ((-c).clamp(0, 16), (w - c).clamp(0, 16));
    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
}

/// Per tap `t` (kernel row `t / 3`, column `t % 3`) of a 3x3 stride-1 kernel on a plane of
/// width `w` as wide as its output rows: how far from output `p`'s index its input lies.
pub(super) fn flat_offsets(w: usize, pad_top: usize, pad_left: usize) -> [isize; 9] {
    let (w, pad_top, pad_left) = (w as isize, pad_top as isize, pad_left as isize);
    std::array::from_fn(|t| ((t / 3) as isize - pad_top) * w + (t % 3) as isize - pad_left)
}

/// The lanes of a vector with `left` elements from its first to the end (all 16 if more).
pub(super) fn live_lanes(left: usize) -> __mmask16 {
    match left {
        left if left >= 16 => !0,
        left => ((1u32 << left) - 1) as __mmask16,
    }
}

/// The windows a stacked 3x3 row kernel (`rows::rows_sweep_3x3`) reads, 16 or 8 lanes
/// (`R`) at a time. A trait whose methods always inline, not a closure: LLVM called such
/// closures out of line as the kernels around them grew (3-5x slower depthwise layers).
pub(super) trait RowWindows {
    /// The lanes of output vector `v`'s window in kernel column `kx` that [`window`]
    /// reads (the others zero).
    ///
    /// [`window`]: RowWindows::window
    fn lanes(&self, v: usize, kx: usize) -> __mmask16;

    /// Kernel column `kx`'s window of padded input row `j` for the output vector that
    /// starts at output `o`, whose [`lanes`](RowWindows::lanes) there are `lanes`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and VL; `j` and `o` are a row and a vector of the
    /// sweep, `lanes` that vector's.
    unsafe fn window<R: MaskedRegister<Elem = f32>>(
        &self,
        j: usize,
        o: usize,
        kx: usize,
        lanes: __mmask16,
    ) -> R;
}

/// The windows of a padded slab: row `j` from `j * step`, kernel column `kx` from
/// `columns[kx]`.
#[derive(Clone, Copy)]
pub(super) struct SlabRowWindows {
    pub(super) slab: *const f32,
    pub(super) step: usize,
    pub(super) columns: [usize; 3],
}

impl RowWindows for SlabRowWindows {
    #[inline(always)]
    fn lanes(&self, _: usize, _: usize) -> __mmask16 {
        !0
    }

    #[inline(always)]
    unsafe fn window<R: MaskedRegister<Elem = f32>>(
        &self,
        j: usize,
        o: usize,
        kx: usize,
        _: __mmask16,
    ) -> R {
        // SAFETY: a window of the sweep lies inside the slab (the caller's contract).
        unsafe { R::load(self.slab.wrapping_add(j * self.step + self.columns[kx] + o)) }
    }
}

/// The windows of an `h x w` input plane read as it is: padded row `j` is image row `row0 +
/// j` (zeros outside the image), a window's lanes outside the row masked to zero.
#[derive(Clone, Copy)]
pub(super) struct PlaneRowWindows<'a> {
    pub(super) plane: *const f32,
    pub(super) h: isize,
    pub(super) w: isize,
    pub(super) row0: isize,
    pub(super) pad_left: isize,
    /// Per output vector and kernel column, the lanes of its window inside the row (the
    /// forward kernels: per vector of their rows; the weight kernels: per 8 outputs, so that
    /// their 16- and 8-lane columns find theirs at `o / 8`).
    pub(super) masks: &'a [[__mmask16; 3]],
}

impl PlaneRowWindows<'_> {
    /// Where kernel column 0's window of padded row `j` for output `o` starts (outside the
    /// plane where that row or column is padding; not read there).
    #[inline(always)]
    pub(super) fn window_start(&self, j: usize, o: usize) -> *const f32 {
        let iy = self.row0 + j as isize;
        self.plane
            .wrapping_offset(iy * self.w + o as isize - self.pad_left)
    }
}

impl RowWindows for PlaneRowWindows<'_> {
    #[inline(always)]
    fn lanes(&self, v: usize, kx: usize) -> __mmask16 {
        self.masks[v][kx]
    }

    #[inline(always)]
    unsafe fn window<R: MaskedRegister<Elem = f32>>(
        &self,
        j: usize,
        o: usize,
        kx: usize,
        lanes: __mmask16,
    ) -> R {
        let iy = self.row0 + j as isize;
        if !(0..self.h).contains(&iy) {
            // SAFETY: AVX-512 F is present (the caller's contract).
            return unsafe { R::splat(0.0) };
        }
        let at = self.window_start(j, o).wrapping_add(kx);
        let all = ((1u32 << R::LANES) - 1) as __mmask16;
        let lanes = lanes & all;
        // SAFETY: only lanes at columns in `0..w` of row `iy` (in `0..h`) are read (all of
        // them for a plain load, and masked loads touch no other lane): inside the plane,
        // which holds `h * w` values (the job's `pointers` checked).
        unsafe {
            if lanes == all {
                R::load(at)
            } else {
                R::load_where(at, lanes)
            }
        }
    }
}

/// Per vector `v < vectors` of a row of outputs (the vector starting at output `start(v)`)
/// and kernel column `kx`, the lanes of its window, from column `start(v) + kx -
/// pad_left`, that lie in a row `w` long (an 8-lane vector reads the low 8). Worked out
/// once a call by the front end and read by every plane's kernel: filled per plane in the
/// kernel it was 3-4% of a depthwise layer on 56x56 maps (Zen 4, one thread, the forward
/// pass and the weight gradient), and before that, collected into a `Vec` per plane with
/// its closure called out of line, 10-20% of a depthwise weight gradient on 7x7 maps.
pub(super) fn window_masks(
    vectors: usize,
    pad_left: usize,
    w: usize,
    start: impl Fn(usize) -> usize,
) -> Vec<[__mmask16; 3]> {
    let (pad_left, w) = (pad_left as isize, w as isize);
    (0..vectors)
        .map(|v| {
            let c = start(v) as isize - pad_left;
            [
                lanes_inside(c, w),
                lanes_inside(c + 1, w),
                lanes_inside(c + 2, w),
            ]
        })
        .collect()
}

/// Whether the taps are 3 x 3, each kernel row one output row's `step` below the one
/// before (`starts[3 * ky + kx] == starts[kx] + ky * step`: a vertical stride and dilation
/// of 1), so that neighbouring output rows read the same input rows.
pub(super) fn stacked_3x3(starts: &[usize], step: usize) -> bool {
    starts.len() == 9
        && (0..9).all(|t| Some(starts[t]) == (t / 3).checked_mul(step).map(|d| d + starts[t % 3]))
}
