//! The oracle: convolution written straight from its definition, in `Complex<f64>`.
//!
//! Every output and gradient element carries its value, the sum of the magnitudes of the
//! terms it adds up, and how many terms there were, from which tolerances are derived.
//! Gradients are the literal chain rule of the forward loops (PyTorch's convention for
//! complex: the gradient of `w*x` sends `conj(w)*g` to `x`).

// Index loops are the point here: the oracle reads like the formula.
#![allow(clippy::needless_range_loop)]

use num_complex::Complex;

pub type C64 = Complex<f64>;

/// One accumulated element: value, sum of |terms|, number of terms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acc {
    pub value: C64,
    pub magnitude: f64,
    pub terms: usize,
}

impl Acc {
    /// Adds `a * b`, each factor given with its magnitude.
    fn add(&mut self, (a, a_norm): (C64, f64), (b, b_norm): (C64, f64)) {
        self.value += a * b;
        self.magnitude += a_norm * b_norm;
        self.terms += 1;
    }
    fn add_one(&mut self, a: C64) {
        self.value += a;
        self.magnitude += a.norm();
        self.terms += 1;
    }
}

/// A dense NCHW (or any rank) tensor of complex values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<C64>,
    /// `|v|` of each value, for the magnitudes of the oracle's terms: computed per term (a
    /// `hypot` call per factor), they took 43% of the time of the tests on large layers.
    norms: Vec<f64>,
}

impl Tensor {
    pub fn new(shape: &[usize], data: Vec<C64>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            shape: shape.to_vec(),
            norms: data.iter().map(|v| v.norm()).collect(),
            data,
        }
    }

    /// Value `i` with its magnitude.
    fn at(&self, i: usize) -> (C64, f64) {
        (self.data[i], self.norms[i])
    }
}

/// The conjugate of a value with its magnitude.
fn conj((v, norm): (C64, f64)) -> (C64, f64) {
    (v.conj(), norm)
}

#[inline]
fn index4(shape: &[usize], i: [usize; 4]) -> usize {
    ((i[0] * shape[1] + i[1]) * shape[2] + i[2]) * shape[3] + i[3]
}

/// Padding of one axis: before, after, and the mode's rule for what a padded pixel copies.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Zeros,
    Reflect,
    Replicate,
    Circular,
}

/// The input pixel a (possibly out-of-range) coordinate reads, or `None` for a zero.
fn source(i: i128, len: usize, mode: Mode) -> Option<usize> {
    let n = len as i128;
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    let j = match mode {
        Mode::Zeros => return None,
        Mode::Reflect => {
            if i < 0 {
                -i
            } else {
                2 * (n - 1) - i
            }
        }
        Mode::Replicate => i.clamp(0, n - 1),
        Mode::Circular => i.rem_euclid(n),
    };
    assert!((0..n).contains(&j), "padding wraps more than once");
    Some(j as usize)
}

/// A conv2d problem in full generality.
#[derive(Debug, Clone)]
pub struct ConvSpec {
    pub stride: [usize; 2],
    /// top, bottom, left, right
    pub pads: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub mode: Mode,
}

pub struct ConvResult {
    pub output: Vec<Acc>,
    pub output_shape: [usize; 4],
    pub grad_input: Vec<Acc>,
    pub grad_weight: Vec<Acc>,
    pub grad_bias: Vec<Acc>,
}

/// conv2d of `x` (NCHW) by `w` (Cout, Cin/g, kh, kw), and the three gradients for `gy`
/// (ignored when `None`: only the output is computed).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    spec: &ConvSpec,
    gy: Option<&Tensor>,
) -> ConvResult {
    let [n, _, h, wd] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    let [cout, cin_g, kh, kw] = [w.shape[0], w.shape[1], w.shape[2], w.shape[3]];
    let g = spec.groups;
    let [pt, pb, pl, pr] = spec.pads;
    let oh = (h + pt + pb - spec.dilation[0] * (kh - 1) - 1) / spec.stride[0] + 1;
    let ow = (wd + pl + pr - spec.dilation[1] * (kw - 1) - 1) / spec.stride[1] + 1;
    let out_shape = [n, cout, oh, ow];
    let mut out = vec![Acc::default(); n * cout * oh * ow];
    let mut gx = vec![Acc::default(); x.data.len()];
    let mut gw = vec![Acc::default(); w.data.len()];
    let mut gb = vec![Acc::default(); cout];
    // The input row (column) that output row `oy` (column `ox`) reads at kernel row `ky`
    // (column `kx`), at `oy * kh + ky`: `source` of each, tabulated once (per term, it took
    // a third of the time of the tests on large layers). Empty when the loops below visit
    // no term: no larger than what they visit otherwise (the fuzz properties' empty tensors
    // come with kernels of billions of taps).
    let idle = [n, cout, cin_g, oh, ow].contains(&0);
    let read = |outs: usize, taps: usize, len: usize, [stride, dilation, pad]: [usize; 3]| {
        (0..if idle { 0 } else { outs * taps })
            .map(|i| {
                let (o, t) = ((i / taps) as i128, (i % taps) as i128);
                source(
                    o * stride as i128 + t * dilation as i128 - pad as i128,
                    len,
                    spec.mode,
                )
            })
            .collect::<Vec<_>>()
    };
    let rows_read = read(oh, kh, h, [spec.stride[0], spec.dilation[0], pt]);
    let columns_read = read(ow, kw, wd, [spec.stride[1], spec.dilation[1], pl]);
    for bi in 0..n {
        for co in 0..cout {
            let grp = co / (cout / g);
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = index4(&out_shape, [bi, co, oy, ox]);
                    if let Some(b) = b {
                        out[o].add_one(b.data[co]);
                    }
                    let gyv = gy.map(|t| t.at(o));
                    if let Some((gyv, _)) = gyv {
                        gb[co].add_one(gyv);
                    }
                    for cil in 0..cin_g {
                        let ci = grp * cin_g + cil;
                        for ky in 0..kh {
                            let Some(sy) = rows_read[oy * kh + ky] else {
                                continue;
                            };
                            for kx in 0..kw {
                                let Some(sx) = columns_read[ox * kw + kx] else {
                                    continue;
                                };
                                let xi = index4(&x.shape, [bi, ci, sy, sx]);
                                let wi = index4(&w.shape, [co, cil, ky, kx]);
                                out[o].add(w.at(wi), x.at(xi));
                                if let Some(gyv) = gyv {
                                    gx[xi].add(conj(w.at(wi)), gyv);
                                    gw[wi].add(conj(x.at(xi)), gyv);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    ConvResult {
        output: out,
        output_shape: out_shape,
        grad_input: gx,
        grad_weight: gw,
        grad_bias: gb,
    }
}

/// conv_transpose2d of `x` (NCHW) by `w` (Cin, Cout/g, kh, kw) with output size `(oh, ow)`,
/// straight from its definition: input pixel `(iy, ix)` adds `w * x` to output pixel
/// `(iy*stride - pad + ky*dilation, ...)`.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    out_hw: [usize; 2],
    gy: Option<&Tensor>,
) -> ConvResult {
    let [n, cin, h, wd] = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
    let [_, cout_g, kh, kw] = [w.shape[0], w.shape[1], w.shape[2], w.shape[3]];
    let cout = cout_g * groups;
    let cin_g = cin / groups;
    let out_shape = [n, cout, out_hw[0], out_hw[1]];
    let mut out = vec![Acc::default(); out_shape.iter().product()];
    let mut gx = vec![Acc::default(); x.data.len()];
    let mut gw = vec![Acc::default(); w.data.len()];
    let mut gb = vec![Acc::default(); cout];
    for bi in 0..n {
        if let Some(b) = b {
            for (co, &bv) in b.data.iter().enumerate() {
                for oy in 0..out_hw[0] {
                    for ox in 0..out_hw[1] {
                        out[index4(&out_shape, [bi, co, oy, ox])].add_one(bv);
                    }
                }
            }
        }
        if let Some(gy) = gy {
            for (co, gb) in gb.iter_mut().enumerate() {
                for oy in 0..out_hw[0] {
                    for ox in 0..out_hw[1] {
                        gb.add_one(gy.data[index4(&out_shape, [bi, co, oy, ox])]);
                    }
                }
            }
        }
        for ci in 0..cin {
            let grp = ci / cin_g;
            for col in 0..cout_g {
                let co = grp * cout_g + col;
                for iy in 0..h {
                    for ix in 0..wd {
                        let xi = index4(&x.shape, [bi, ci, iy, ix]);
                        for ky in 0..kh {
                            let oy = (iy as i128 * stride[0] as i128
                                + ky as i128 * dilation[0] as i128)
                                - padding[0] as i128;
                            if oy < 0 || oy >= out_hw[0] as i128 {
                                continue;
                            }
                            for kx in 0..kw {
                                let ox = (ix as i128 * stride[1] as i128
                                    + kx as i128 * dilation[1] as i128)
                                    - padding[1] as i128;
                                if ox < 0 || ox >= out_hw[1] as i128 {
                                    continue;
                                }
                                let o = index4(&out_shape, [bi, co, oy as usize, ox as usize]);
                                let wi = index4(&w.shape, [ci, col, ky, kx]);
                                out[o].add(w.at(wi), x.at(xi));
                                if let Some(gy) = gy {
                                    gx[xi].add(conj(w.at(wi)), gy.at(o));
                                    gw[wi].add(conj(x.at(xi)), gy.at(o));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    ConvResult {
        output: out,
        output_shape: out_shape,
        grad_input: gx,
        grad_weight: gw,
        grad_bias: gb,
    }
}

/// The oracle on an empty layer whose kernel spans billions of columns (as the fuzz
/// properties draw them) visits no term and allocates nothing by the kernel's size.
#[test]
fn empty_layers_with_huge_kernels_cost_nothing() {
    let kw = 1 << 36;
    let x = Tensor::new(&[1, 0, 1, 1], vec![]);
    let w = Tensor::new(&[1, 0, 1, kw], vec![]);
    let spec = ConvSpec {
        stride: [1, 1],
        pads: [0, 0, kw / 2, kw / 2],
        dilation: [1, 1],
        groups: 1,
        mode: Mode::Zeros,
    };
    let result = conv2d(&x, &w, None, &spec, None);
    assert_eq!(result.output_shape, [1, 1, 1, 2]);
    assert!(result.output.iter().all(|o| o.terms == 0));
}
