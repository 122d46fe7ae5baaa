//! The `bf16` strided input gradient (a strided transposed convolution's forward pass) on
//! AMX tiles, split into stride phases as [`subpixel`](super::subpixel) splits it: the
//! input-gradient pixels of phase `(ry, rx)` receive the taps `ky = ry + s * a` (and
//! likewise across) from output-gradient pixel `q - a`, which is a stride-1 convolution of
//! the output gradient with those taps flipped. Each phase runs [`amx`](super::amx)'s
//! forward pass (the bias in its sums, rounded once) into a buffer, then its pixels are
//! written to their places, every `stride`-th of the input gradient (with stride 2 across,
//! a row's two column phases at once, interleaved).
//!
//! For dilation 1, kernels at least as large as the stride (every phase has a tap) and
//! paddings whose phase convolutions need no cropping (`q0 <= taps - 1` below).

use half::bf16;

use super::{amx, Scratch};
use crate::geometry::Geometry;
use crate::options::Pair;
use crate::threading::for_each_chunk;

/// One axis of a phase: its first input-gradient pixel `first` (`s * q0 + r - pad`), the
/// pixels it has (every `s`-th from there) and its taps (`ky = r + s * a` for `a < taps`).
#[derive(Clone, Copy)]
struct PhaseAxis {
    r: usize,
    first: usize,
    q0: usize,
    pixels: usize,
    taps: usize,
}

impl PhaseAxis {
    /// Phase `r` of an axis of `size` input-gradient pixels, stride `s`, padding `pad` and
    /// a kernel of `k` taps; `None` where it has no tap or would need cropping.
    fn new(r: usize, size: usize, s: usize, pad: usize, k: usize) -> Option<Self> {
        let taps = k.checked_sub(r)?.div_ceil(s);
        // Pixel `i` is in phase `r` when `(i + pad) % s == r`, its `q` then `(i + pad) / s`.
        let first = (r + s - pad % s) % s;
        let pixels = size.saturating_sub(first).div_ceil(s);
        let q0 = (first + pad) / s;
        (taps > 0 && q0 < taps).then_some(PhaseAxis {
            r,
            first,
            q0,
            pixels,
            taps,
        })
    }
}

/// A phase with pixels: its axes and its stride-1 convolution.
pub(crate) struct Phase {
    y: PhaseAxis,
    x: PhaseAxis,
    conv: Geometry,
}

/// The phases of a strided `g` with their stride-1 convolutions, where every one runs on
/// the tiles; `None` otherwise (another path computes the input gradient).
fn phases(g: &Geometry) -> Option<Vec<Phase>> {
    let (s, d) = (g.stride, g.dilation);
    if (s.h == 1 && s.w == 1) || d.h != 1 || d.w != 1 {
        return None;
    }
    let mut out = Vec::new();
    for ry in 0..s.h {
        for rx in 0..s.w {
            let y = PhaseAxis::new(ry, g.h, s.h, g.pad_top, g.kh)?;
            let x = PhaseAxis::new(rx, g.w, s.w, g.pad_left, g.kw)?;
            if y.pixels == 0 || x.pixels == 0 {
                continue;
            }
            // Output-gradient channels in, input-gradient channels out; phase pixel `Y`
            // (`q = q0 + Y`) reads rows `q - a`, tap `j = taps - 1 - a`.
            let conv = Geometry {
                n: g.n,
                cin: g.cout,
                h: g.oh,
                w: g.ow,
                cout: g.cin,
                kh: y.taps,
                kw: x.taps,
                groups: g.groups,
                stride: Pair { h: 1, w: 1 },
                dilation: Pair { h: 1, w: 1 },
                pad_top: y.taps - 1 - y.q0,
                pad_left: x.taps - 1 - x.q0,
                oh: y.pixels,
                ow: x.pixels,
            };
            if !amx::applies(&conv) {
                return None;
            }
            out.push(Phase { y, x, conv });
        }
    }
    Some(out)
}

/// The phases the tiles compute the strided input gradient of `g` with `weight` in, where
/// every phase runs on them and every weight is finite (a zero-padded read times an
/// infinite weight would be a NaN that PyTorch's definition does not have); `None`
/// otherwise.
pub(crate) fn tiled_phases(g: &Geometry, weight: &[bf16]) -> Option<Vec<Phase>> {
    phases(g).filter(|_| amx::all_finite(weight))
}

/// `grad_in = conv2d's input gradient (+ bias per channel)` in the [`tiled_phases`] of `g`,
/// overwriting `grad_in`.
pub(crate) fn backward_input(
    g: &Geometry,
    phases: &[Phase],
    grad_out: &[bf16],
    weight: &[bf16],
    bias: Option<&[bf16]>,
    grad_in: &mut [bf16],
    scratch: &Scratch,
) {
    let (cin_g, cout_g, kernel) = (g.cin_per_group(), g.cout_per_group(), g.kh * g.kw);
    // Each phase's weight `[ci][co of its group][jy][jx]`: tap `ky = r + s * (taps - 1 -
    // jy)` (and across) of `weight[co][ci][..]`, all phases in one pass over the weight.
    let taps: Vec<Vec<usize>> = phases
        .iter()
        .map(|&Phase { y, x, .. }| {
            (0..y.taps)
                .flat_map(|jy| {
                    let ky = y.r + g.stride.h * (y.taps - 1 - jy);
                    (0..x.taps).map(move |jx| ky * g.kw + x.r + g.stride.w * (x.taps - 1 - jx))
                })
                .collect()
        })
        .collect();
    let Some(mut weights) = taps
        .iter()
        .map(|t| scratch.filled(g.cin * cout_g * t.len(), bf16::ZERO))
        .collect::<Option<Vec<Vec<bf16>>>>()
    else {
        return;
    };
    for (row, src) in weight.chunks_exact(kernel).enumerate() {
        // Row `co * cin_g + c` of the weight: output channel `co`, input channel `c` of its
        // group.
        let (co, c) = (row / cin_g, row % cin_g);
        let ci = co / cout_g * cin_g + c;
        for (w, t) in weights.iter_mut().zip(&taps) {
            let dst = &mut w[(ci * cout_g + co % cout_g) * t.len()..][..t.len()];
            for (v, &tap) in dst.iter_mut().zip(t) {
                *v = src[tap];
            }
        }
    }
    // Each phase's sums: phase pixel `(Y, X)` is input-gradient pixel `(y.first + s * Y, ..)`.
    let mut outs = Vec::new();
    for (phase, w) in phases.iter().zip(&weights) {
        let (y, x) = (phase.y, phase.x);
        let Some(mut out) = scratch.filled(g.n * g.cin * y.pixels * x.pixels, bf16::ZERO) else {
            return;
        };
        amx::forward(&phase.conv, grad_out, w, false, bias, &mut out, scratch);
        outs.push((y, x, out));
    }
    // Plane by plane, the rows of each row phase (the phases are row-phase major): with
    // stride 2 across, both column phases at once, interleaved (vectorised); else each
    // phase's every `stride`-th value.
    let s = g.stride;
    for_each_chunk(grad_in, g.h * g.w, |p, plane| {
        for row_phases in outs.chunk_by(|a, b| a.0.r == b.0.r) {
            let y = row_phases[0].0;
            let rows = |o, x| plane_rows(o, p, y, x);
            match row_phases {
                [one, other] if s.w == 2 => {
                    // Column phases starting at columns 0 and 1.
                    let (a, b) = if one.1.first == 0 {
                        (one, other)
                    } else {
                        (other, one)
                    };
                    let pairs = rows(&a.2, a.1).zip(rows(&b.2, b.1)).enumerate();
                    for (row, (va, vb)) in pairs {
                        let dst = &mut plane[(y.first + s.h * row) * g.w..][..g.w];
                        let mut pairs = dst.chunks_exact_mut(2);
                        for ((d, &a), &b) in pairs.by_ref().zip(va).zip(vb) {
                            d[0] = a;
                            d[1] = b;
                        }
                        if let ([last], Some(&a)) = (pairs.into_remainder(), va.last()) {
                            *last = a;
                        }
                    }
                }
                _ => {
                    for (_, x, out) in row_phases {
                        for (row, values) in rows(out, *x).enumerate() {
                            let dst = &mut plane[(y.first + s.h * row) * g.w + x.first..];
                            for (d, &v) in dst.iter_mut().step_by(s.w).zip(values) {
                                *d = v;
                            }
                        }
                    }
                }
            }
        }
    });
}

/// The rows of plane `p` of a phase's sums `out`.
fn plane_rows(
    out: &[bf16],
    p: usize,
    y: PhaseAxis,
    x: PhaseAxis,
) -> std::slice::ChunksExact<'_, bf16> {
    let len = y.pixels * x.pixels;
    out[p * len..][..len].chunks_exact(x.pixels)
}
