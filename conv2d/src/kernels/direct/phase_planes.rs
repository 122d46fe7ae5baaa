//! A band's input as the tiled forward pass reads it: each input channel of the group
//! zero-padded and split into stride phases of rows and of columns. Phase plane
//! `(py, px)` holds padded rows `py, py + stride.h, ...` and, in each, padded columns
//! `px, px + stride.w, ...`, so every tap of output pixel `(r, x)` of the band reads
//! element `r * width + x` of one phase plane, from an offset fixed per tap: the band's
//! pixels are one contiguous run for any stride (with stride 1 there is one phase, the
//! padded rows themselves).

use super::{every_nth, slab_len, Aligned, Scratch};
use crate::element::Accumulator;
use crate::geometry::Geometry;

/// One band's phase planes.
pub(crate) struct PhasePlanes<A: 'static> {
    pub data: Aligned<A>,
    /// Elements of a phase row: from one output row's windows to the next's (with stride 1
    /// fewer than a padded row's, see `phase_planes`).
    pub width: usize,
    /// Where each tap `(ci, ky, kx)` of the band's output pixel `(0, 0)` starts in `data`,
    /// taps in the weight's order.
    pub starts: Vec<usize>,
}

/// The layout of the phase planes of `rows` output rows: `(height, width, row phases,
/// column phases)`, saturating (only planes that [`fits`](super::fits) are allocated).
/// A phase index past the kernel's reach would hold nothing a tap reads, so there are at
/// most as many phases as the kernel reaches pixels.
fn extents(g: &Geometry, rows: usize) -> (usize, usize, usize, usize) {
    let reach_h = (g.kh.max(1) - 1).saturating_mul(g.dilation.h);
    let reach_w = (g.kw.max(1) - 1).saturating_mul(g.dilation.w);
    (
        rows.saturating_add(reach_h / g.stride.h),
        g.ow.saturating_add(reach_w / g.stride.w),
        g.stride.h.min(reach_h.saturating_add(1)),
        g.stride.w.min(reach_w.saturating_add(1)),
    )
}

/// The phase row length and the output rows per band: as many rows as keep a band's
/// planes (every input channel of the group) within `budget` elements, at least one.
pub(crate) fn bands(g: &Geometry, budget: usize) -> (usize, usize) {
    let (height, width, row_phases, column_phases) = extents(g, 0);
    let per_row = g
        .cin_per_group()
        .saturating_mul(row_phases.saturating_mul(column_phases))
        .saturating_mul(width);
    let band = (budget / per_row.max(1))
        .saturating_sub(height)
        .clamp(1, g.oh.max(1));
    (width, band)
}

/// The phase planes of output rows `oy0..oy0 + rows` for the input planes `x` of one
/// group, with `tail` zeros after them (for vector reads past the last window); `None` if
/// the buffer cannot be allocated.
pub(crate) fn phase_planes<A: Accumulator>(
    g: &Geometry,
    x: &[A],
    oy0: usize,
    rows: usize,
    tail: usize,
    scratch: &Scratch,
) -> Option<PhasePlanes<A>> {
    let (height, padded, row_phases, column_phases) = extents(g, rows);
    // With stride 1 a row's right padding and the next row's left padding are one run of
    // zeros: a row reads `padded` slots, its last `shared` the next row's first (padding
    // there too), so that the tiles compute `shared` fewer dropped columns a row
    // (`resnet_3x3_c128`'s 28-wide rows 1.048x, 56-wide 1.019x, 40-wide 1.013x; AVX2 on
    // Zen 3, one thread, 30 alternated rounds in one process; the same sums). At most the
    // kernel's reach, so that a row still holds its `ow` outputs.
    let shared = match g.stride.w == 1 {
        true => g
            .pad_left
            .min(padded - g.ow)
            .min(padded.saturating_sub(g.w + g.pad_left)),
        false => 0,
    };
    let width = padded - shared;
    let (sh, sw) = (g.stride.h, g.stride.w);
    let planes = x.len() / (g.h * g.w).max(1);
    let extents = [planes, row_phases, column_phases, height, width];
    let len = scratch.ok(slab_len(&extents, tail, "the phase planes"))?;
    // Saturating: with no channel `slab_len` bounds neither, and the tail is one chunk.
    let phase_len = height.saturating_mul(width);
    let plane_len = row_phases
        .saturating_mul(column_phases)
        .saturating_mul(phase_len);
    let zero = std::mem::MaybeUninit::new(A::ZERO);
    // Each input channel by a task: zeros first, then each phase row's input pixels.
    let pad_plane = |c: usize, chunk: &mut [std::mem::MaybeUninit<A>]| {
        chunk.fill(zero);
        // SAFETY: every element of `chunk` was just written.
        let chunk = unsafe { chunk.assume_init_mut() };
        if c >= planes {
            return;
        }
        let x_c = &x[c * g.h * g.w..][..g.h * g.w];
        for (p, phase) in chunk.chunks_exact_mut(phase_len).enumerate() {
            let (py, px) = (p / column_phases, p % column_phases);
            // Slot i holds padded column i * sw + px, input column i * sw + px - pad_left:
            // inside the image for slots first..end.
            let first = g.pad_left.saturating_sub(px).div_ceil(sw);
            let end = (g.w + g.pad_left)
                .saturating_sub(px)
                .div_ceil(sw)
                .min(width);
            if first >= end {
                continue;
            }
            let column = first * sw + px - g.pad_left;
            for (j, row) in phase.chunks_exact_mut(width).enumerate() {
                // Slot row j holds padded row (oy0 + j) * sh + py.
                let iy = ((oy0 + j) * sh + py).checked_sub(g.pad_top);
                if let Some(iy) = iy.filter(|&iy| iy < g.h) {
                    every_nth(&mut row[first..end], &x_c[iy * g.w..][column..g.w], sw);
                }
            }
        }
    };
    // SAFETY: `pad_plane` writes every element of each chunk (the zeros first).
    let data = unsafe { scratch.written_aligned(len, plane_len, A::ZERO, pad_plane) }?;
    let starts = (0..planes)
        .flat_map(|ci| (0..g.kh).flat_map(move |ky| (0..g.kw).map(move |kx| (ci, ky, kx))))
        .map(|(ci, ky, kx)| {
            let (r, c) = (ky * g.dilation.h, kx * g.dilation.w);
            let phase = (r % sh) * column_phases + c % sw;
            ci * plane_len + phase * phase_len + r / sh * width + c / sw
        })
        .collect();
    Some(PhasePlanes {
        data,
        width,
        starts,
    })
}
