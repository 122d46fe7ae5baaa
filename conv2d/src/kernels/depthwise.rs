//! Forward convolution when each output channel reads one input channel (`cin/groups == 1`:
//! depthwise, with any channel multiplier). Each task pads the input rows its band of output
//! rows needs into a small slab, then computes 16 output pixels at a time with the sums in
//! registers, tap after tap.

use rayon::prelude::*;

use super::rows::band_rows;
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};

/// Output pixels in one vector of sums.
const LANES: usize = 16;

/// One band of output rows of one plane, with its padded input slab.
pub(crate) struct Band<'a, A> {
    pub g: &'a Geometry,
    /// Padded input rows, `slab_width` apart; row 0 is the one output row 0 starts at.
    pub slab: &'a [A],
    pub slab_width: usize,
    /// The `kh * kw` weights of the plane's output channel.
    pub taps: &'a [A],
    pub init: A,
    /// `rows * ow` outputs.
    pub out: &'a mut [A],
}

/// `out = conv2d(input, weight) + bias` for `cin/groups == 1`, overwriting every element.
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
    let taps = g.kh * g.kw;
    let band = band_rows(g.n * g.cout, g.oh);
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(p, out_plane)| {
            let (n, co) = (p / g.cout, p % g.cout);
            let ci = co / g.cout_per_group();
            let x = &input[(n * g.cin + ci) * g.h * g.w..][..g.h * g.w];
            out_plane
                .par_chunks_mut(band * g.ow)
                .enumerate()
                .for_each(|(b, rows)| {
                    let oy0 = b * band;
                    let n_rows = rows.len() / g.ow;
                    let (slab, slab_width) = padded_slab(g, x, oy0, n_rows);
                    let mut job = Band {
                        g,
                        slab: &slab,
                        slab_width,
                        taps: &weight[co * taps..][..taps],
                        init: bias.map_or(A::ZERO, |b| b[co]),
                        out: rows,
                    };
                    run(&mut job);
                });
        });
}

/// The input rows output rows `oy0..oy0+rows` read, zero-padded on every side, and their
/// width.
fn padded_slab<A: Accumulator>(g: &Geometry, x: &[A], oy0: usize, rows: usize) -> (Vec<A>, usize) {
    let width = (g.ow - 1) * g.stride.w + (g.kw - 1) * g.dilation.w + 1;
    let height = (rows - 1) * g.stride.h + (g.kh - 1) * g.dilation.h + 1;
    let mut slab = vec![A::ZERO; width * height];
    for (r, dst) in slab.chunks_exact_mut(width).enumerate() {
        let Some(iy) = (oy0 * g.stride.h + r).checked_sub(g.pad_top) else {
            continue;
        };
        if iy >= g.h {
            continue;
        }
        // Slab column c reads input column c - pad_left.
        let first = g.pad_left.min(width);
        let count = g.w.min(width - first);
        dst[first..first + count].copy_from_slice(&x[iy * g.w..][..count]);
    }
    (slab, width)
}

/// Runs a band on the ISA [`isa`] selects.
fn run<A: Accumulator>(job: &mut Band<'_, A>) {
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::arch::x86_64::depthwise_band_avx512(job) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::arch::x86_64::depthwise_band_avx2(job) },
        _ => band(job),
    }
}

/// The band kernel, inlined into each ISA's build of it. With stride 1 and rows of at
/// least [`LANES`] pixels, groups of [`LANES`] pixels keep their sums in registers
/// (fixed-size arrays the compiler maps onto vector registers); the last group overlaps
/// the one before rather than leaving a scalar tail. Other rows accumulate tap after tap
/// in the output row itself. Either way each output sums its taps in the same order.
#[inline(always)]
pub(crate) fn band<A: Accumulator>(job: &mut Band<'_, A>) {
    let g = job.g;
    let (sh, sw, dh, dw) = (g.stride.h, g.stride.w, g.dilation.h, g.dilation.w);
    let registers = sw == 1 && g.ow >= LANES;
    for (r, out_row) in job.out.chunks_exact_mut(g.ow).enumerate() {
        let slab_rows = &job.slab[r * sh * job.slab_width..];
        if !registers {
            out_row.fill(job.init);
            for (ky, w_row) in job.taps.chunks_exact(g.kw).enumerate() {
                let x_rows = &slab_rows[ky * dh * job.slab_width..];
                for (kx, &w) in w_row.iter().enumerate() {
                    let x_row = &x_rows[kx * dw..];
                    for (out, &x) in out_row.iter_mut().zip(x_row.iter().step_by(sw)) {
                        *out += w * x;
                    }
                }
            }
            continue;
        }
        // Four vectors of pixels at once, so that independent sums hide the add latency;
        // starts past the row end repeat the last (overlapping) vector.
        let last = g.ow - LANES;
        let start = |i: usize| (i * LANES).min(last);
        for first in (0..g.ow.div_ceil(LANES)).step_by(4) {
            let s = [
                start(first),
                start(first + 1),
                start(first + 2),
                start(first + 3),
            ];
            let mut acc = [[job.init; LANES]; 4];
            let [a0, a1, a2, a3] = &mut acc;
            for (ky, w_row) in job.taps.chunks_exact(g.kw).enumerate() {
                let x_rows = &slab_rows[ky * dh * job.slab_width..];
                for (kx, &w) in w_row.iter().enumerate() {
                    let x_row = &x_rows[kx * dw..];
                    // In bounds: the slab is as wide as the row's last tap reaches.
                    multiply_add(a0, w, &x_row[s[0]..s[0] + LANES]);
                    multiply_add(a1, w, &x_row[s[1]..s[1] + LANES]);
                    multiply_add(a2, w, &x_row[s[2]..s[2] + LANES]);
                    multiply_add(a3, w, &x_row[s[3]..s[3] + LANES]);
                }
            }
            for (acc, &ox) in acc.iter().zip(&s) {
                out_row[ox..ox + LANES].copy_from_slice(acc);
            }
        }
    }
}

/// `acc[l] += w * x[l]` for the [`LANES`] pixels of one vector.
#[inline(always)]
fn multiply_add<A: Accumulator>(acc: &mut [A; LANES], w: A, x: &[A]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += w * v;
    }
}
