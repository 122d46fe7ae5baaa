//! Our ops against candle's own `Tensor::conv2d` / `conv_transpose2d`, forward and gradients
//! through `Var` + `backward()`, on seeded random shapes within what candle supports
//! (one number per option; groups for conv2d only).
//!
//! The exact values are candle's convolutions in `f64` of the same (rounded) inputs, and the
//! tolerance of each element is derived from the magnitude of its terms (the same
//! convolution of absolute values). Our results in every dtype must meet it, and so must
//! candle's own `f32` results, so the bound is one candle's convolution meets too.

mod support;

use candle_core::{DType, Result, Tensor, Var};
use conv2d_candle::{conv2d, conv_transpose2d, Conv2dOptions, ConvTranspose2dOptions};
use support::{check_close, check_identical, Rng};

/// A convolution with an optional bias, as a closure of `(input, weight, bias)`.
type Conv<'a> = dyn Fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor> + 'a;

/// Upper bounds on the number of terms summed into one element of each result.
#[derive(Debug, Clone, Copy)]
struct Terms {
    output: usize,
    grad_input: usize,
    grad_weight: usize,
    grad_bias: usize,
}

/// The output and the gradients of `sum(output * grad_output)` through candle's autograd.
struct Results {
    output: Tensor,
    grad_input: Tensor,
    grad_weight: Tensor,
    grad_bias: Option<Tensor>,
}

fn run(conv: &Conv, x: &Tensor, w: &Tensor, b: Option<&Tensor>, gy: &Tensor) -> Result<Results> {
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let bv = b.map(Var::from_tensor).transpose()?;
    let y = conv(&xv, &wv, bv.as_ref().map(|b| b.as_tensor()))?;
    let grads = (&y * gy)?.sum_all()?.backward()?;
    let grad = |v: &Var| {
        grads
            .get(v)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))
    };
    Ok(Results {
        grad_input: grad(&xv)?,
        grad_weight: grad(&wv)?,
        grad_bias: bv.as_ref().map(grad).transpose()?,
        output: y,
    })
}

/// Candle's convolution plus a bias added by broadcasting, as `F.conv2d` with a bias.
fn with_bias(y: Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}

/// Runs `ours` in `dtype` and, for `f32`, `candle` in `f32`, and checks both against
/// `candle` in `f64`.
#[allow(clippy::too_many_arguments)]
fn compare(
    label: &str,
    ours: &Conv,
    candle: &Conv,
    x_shape: &[usize],
    w_shape: &[usize],
    bias: Option<usize>,
    terms: Terms,
    dtype: DType,
    rng: &mut Rng,
) -> Result<()> {
    let x = rng.tensor(x_shape, dtype)?;
    let w = rng.tensor(w_shape, dtype)?;
    let b = bias.map(|c| rng.tensor(&[c], dtype)).transpose()?;
    let out_dims = ours(&x, &w, b.as_ref())?.dims().to_vec();
    let gy = rng.tensor(&out_dims, dtype)?;
    let f64_of = |t: &Tensor| t.to_dtype(DType::F64);
    let (x64, w64, gy64) = (f64_of(&x)?, f64_of(&w)?, f64_of(&gy)?);
    let b64 = b.as_ref().map(f64_of).transpose()?;
    let exact = run(candle, &x64, &w64, b64.as_ref(), &gy64)?;
    let abs_b = b64.as_ref().map(Tensor::abs).transpose()?;
    let magnitude = run(
        candle,
        &x64.abs()?,
        &w64.abs()?,
        abs_b.as_ref(),
        &gy64.abs()?,
    )?;
    let mut runs = vec![("ours", run(ours, &x, &w, b.as_ref(), &gy)?)];
    if dtype == DType::F32 {
        runs.push(("candle", run(candle, &x, &w, b.as_ref(), &gy)?));
    }
    for (who, got) in &runs {
        let mut checks = vec![
            (
                "output",
                &got.output,
                &exact.output,
                &magnitude.output,
                terms.output,
            ),
            (
                "grad_input",
                &got.grad_input,
                &exact.grad_input,
                &magnitude.grad_input,
                terms.grad_input,
            ),
            (
                "grad_weight",
                &got.grad_weight,
                &exact.grad_weight,
                &magnitude.grad_weight,
                terms.grad_weight,
            ),
        ];
        if let (Some(got), Some(want), Some(mag)) =
            (&got.grad_bias, &exact.grad_bias, &magnitude.grad_bias)
        {
            checks.push(("grad_bias", got, want, mag, terms.grad_bias));
        }
        for (name, got, want, mag, terms) in checks {
            check_close(&format!("{label}: {who} {name}"), got, want, mag, terms)
                .map_err(candle_core::Error::Msg)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conv,
    Transpose,
}

/// A random case candle can run: one number per option; for `conv2d` the same
/// `(size + 2*padding - reach) % stride` on both axes (candle's backward derives the output
/// padding of its transposed convolution from the height alone); for `conv_transpose2d` no
/// groups and `output_padding < stride` (candle's backward loses the extra rows otherwise).
#[derive(Debug)]
struct Case {
    kind: Kind,
    n: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    k: [usize; 2],
    stride: usize,
    padding: usize,
    dilation: usize,
    output_padding: usize,
    size: [usize; 2],
    bias: bool,
}

impl Case {
    fn random(kind: Kind, rng: &mut Rng) -> Self {
        loop {
            let (stride, dilation, groups) = match kind {
                Kind::Conv => (rng.range(1, 3), rng.range(1, 3), rng.range(1, 3)),
                Kind::Transpose => (rng.range(1, 3), rng.range(1, 3), 1),
            };
            let mut case = Self {
                kind,
                n: rng.range(1, 2),
                cin: groups * rng.range(1, 4),
                cout: groups * rng.range(1, 4),
                groups,
                k: [rng.range(1, 4), rng.range(1, 4)],
                stride,
                padding: rng.range(0, 3),
                dilation,
                output_padding: 0,
                size: [rng.range(1, 10), rng.range(1, 10)],
                bias: rng.range(0, 1) == 1,
            };
            if kind == Kind::Transpose {
                case.output_padding = rng.range(0, stride - 1);
            } else {
                while case.phase(0).is_some() && case.phase(1) != case.phase(0) {
                    case.size[1] += 1;
                }
            }
            if case.output_size().iter().all(|&o| o > 0) {
                return case;
            }
        }
    }

    /// `(size + 2*padding - reach) % stride` of a convolution, when its output is not empty.
    fn phase(&self, axis: usize) -> Option<usize> {
        let (padded, reach) = (self.size[axis] + 2 * self.padding, self.reach(axis));
        (padded >= reach && self.size[axis] >= self.stride).then(|| (padded - reach) % self.stride)
    }

    fn reach(&self, axis: usize) -> usize {
        self.dilation * (self.k[axis] - 1) + 1
    }

    /// The output size, or 0 where it would not be positive.
    fn output_size(&self) -> [usize; 2] {
        [0, 1].map(|i| {
            let (size, reach) = (self.size[i] as i64, self.reach(i) as i64);
            let (s, p) = (self.stride as i64, self.padding as i64);
            let out = match self.kind {
                Kind::Conv if size + 2 * p < reach || size < s => 0,
                Kind::Conv => (size + 2 * p - reach) / s + 1,
                Kind::Transpose => (size - 1) * s - 2 * p + reach + self.output_padding as i64,
            };
            out.max(0) as usize
        })
    }

    fn check(&self, label: &str, dtype: DType, rng: &mut Rng) -> Result<()> {
        let (g, p, op, s, d) = (
            self.groups,
            self.padding,
            self.output_padding,
            self.stride,
            self.dilation,
        );
        let [kh, kw] = self.k;
        let [oh, ow] = self.output_size();
        let (ours, candle, w_shape, terms): (Box<Conv>, Box<Conv>, _, _) = match self.kind {
            Kind::Conv => {
                let opts = Conv2dOptions::default()
                    .stride(s)
                    .padding(p)
                    .dilation(d)
                    .groups(g);
                let terms = Terms {
                    output: self.cin / g * kh * kw + 1,
                    grad_input: self.cout / g * kh * kw,
                    grad_weight: self.n * oh * ow,
                    grad_bias: self.n * oh * ow,
                };
                (
                    Box::new(move |x, w, b| conv2d(x, w, b, &opts)),
                    Box::new(move |x, w, b| with_bias(x.conv2d(w, p, s, d, g)?, b)),
                    [self.cout, self.cin / g, kh, kw],
                    terms,
                )
            }
            Kind::Transpose => {
                let opts = ConvTranspose2dOptions::default()
                    .stride(s)
                    .padding(p)
                    .output_padding(op)
                    .dilation(d);
                let terms = Terms {
                    output: self.cin * kh * kw + 1,
                    grad_input: self.cout * kh * kw,
                    grad_weight: self.n * self.size[0] * self.size[1],
                    grad_bias: self.n * oh * ow,
                };
                (
                    Box::new(move |x, w, b| conv_transpose2d(x, w, b, &opts)),
                    Box::new(move |x, w, b| with_bias(x.conv_transpose2d(w, p, op, s, d)?, b)),
                    [self.cin, self.cout, kh, kw],
                    terms,
                )
            }
        };
        compare(
            label,
            &*ours,
            &*candle,
            &[self.n, self.cin, self.size[0], self.size[1]],
            &w_shape,
            self.bias.then_some(self.cout),
            terms,
            dtype,
            rng,
        )
    }
}

/// Runs `cases` random cases of each kind in `dtype`, collecting every failure.
fn random_cases(seed: u64, cases: usize, dtype: DType) {
    let mut rng = Rng::new(seed);
    let mut failures = Vec::new();
    for i in 0..cases {
        for kind in [Kind::Conv, Kind::Transpose] {
            let case = Case::random(kind, &mut rng);
            let label = format!("#{i} {case:?}");
            failures.extend(case.check(&label, dtype, &mut rng).err());
        }
    }
    let failures: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn random_shapes_f32_match_candle() {
    random_cases(1, 60, DType::F32);
}

#[test]
fn random_shapes_f64_match_candle() {
    random_cases(2, 20, DType::F64);
}

#[test]
fn random_shapes_f16_match_candle_in_f64() {
    random_cases(3, 20, DType::F16);
}

#[test]
fn random_shapes_bf16_match_candle_in_f64() {
    random_cases(4, 20, DType::BF16);
}

/// The gradients of `sum(conv2d(x, w, b) * gy)` for the given tensors, through `Var`s.
fn conv2d_grads(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    gy_seed: u64,
    opts: &Conv2dOptions,
) -> Result<Vec<Tensor>> {
    let (xv, wv, bv) = (
        Var::from_tensor(x)?,
        Var::from_tensor(w)?,
        Var::from_tensor(b)?,
    );
    let y = conv2d(&xv, &wv, Some(&bv), opts)?;
    let gy = Rng::new(gy_seed).tensor(y.dims(), y.dtype())?;
    let grads = (&y * &gy)?.sum_all()?.backward()?;
    let mut out = vec![y];
    for v in [&xv, &wv, &bv] {
        out.push(grads.get(v).expect("a gradient").clone());
    }
    Ok(out)
}

#[test]
fn strided_and_offset_layouts_give_the_contiguous_results() -> Result<()> {
    let mut rng = Rng::new(5);
    let opts = Conv2dOptions::default()
        .stride((2, 1))
        .padding((1, 2))
        .groups(2);
    // NHWC storage seen as NCHW, a weight stored with kh and kw swapped, and a bias that is
    // every other element of a longer vector.
    let x = rng
        .tensor(&[2, 9, 8, 4], DType::F32)?
        .permute((0, 3, 1, 2))?;
    let w = rng.tensor(&[6, 2, 3, 3], DType::F32)?.transpose(2, 3)?;
    let b = rng
        .tensor(&[6, 2], DType::F32)?
        .narrow(1, 1, 1)?
        .squeeze(1)?;
    assert!(!x.is_contiguous() && !w.is_contiguous() && !b.is_contiguous());
    let strided = conv2d_grads(&x, &w, &b, 6, &opts)?;
    let contiguous = conv2d_grads(
        &x.contiguous()?,
        &w.contiguous()?,
        &b.contiguous()?,
        6,
        &opts,
    )?;
    for (i, (a, c)) in strided.iter().zip(&contiguous).enumerate() {
        check_identical(&format!("result {i}"), a, c).unwrap();
    }
    // A window of a larger tensor: a non-zero start offset.
    let big = rng.tensor(&[2, 4, 11, 10], DType::F32)?;
    let window = big.narrow(2, 1, 9)?.narrow(3, 2, 8)?;
    let y = conv2d(&window, &w.contiguous()?, None, &opts)?;
    let y_copy = conv2d(&window.contiguous()?, &w.contiguous()?, None, &opts)?;
    check_identical("window", &y, &y_copy).unwrap();
    Ok(())
}

#[test]
fn unbatched_input_matches_a_batch_of_one() -> Result<()> {
    let mut rng = Rng::new(7);
    let x = rng.tensor(&[3, 7, 6], DType::F32)?;
    let w = rng.tensor(&[4, 3, 3, 3], DType::F32)?;
    let b = rng.tensor(&[4], DType::F32)?;
    let opts = Conv2dOptions::default().padding(1);
    let unbatched = conv2d_grads(&x, &w, &b, 8, &opts)?;
    let batched = conv2d_grads(&x.unsqueeze(0)?, &w, &b, 8, &opts)?;
    assert_eq!(unbatched[0].dims(), &[4, 7, 6]);
    assert_eq!(unbatched[1].dims(), &[3, 7, 6]);
    for (i, (u, b)) in unbatched.iter().zip(&batched).enumerate() {
        let b = if u.rank() < b.rank() {
            b.squeeze(0)?
        } else {
            b.clone()
        };
        check_identical(&format!("result {i}"), u, &b).unwrap();
    }
    let t = ConvTranspose2dOptions::default()
        .stride(2)
        .output_size([4, 16, 14]);
    let y = conv_transpose2d(&x, &w.transpose(0, 1)?.contiguous()?, None, &t)?;
    assert_eq!(y.dims(), &[4, 16, 14]);
    Ok(())
}

#[test]
fn only_tensors_that_track_gradients_get_one() -> Result<()> {
    let mut rng = Rng::new(9);
    // Multiples of 1/8: every sum below is exact in f32.
    let x = (rng.tensor(&[2, 2, 5, 5], DType::F32)? * 8.0)?.round()? / 8.0;
    let x = x?;
    let w = Var::from_tensor(&rng.tensor(&[3, 2, 3, 3], DType::F32)?)?;
    let b = rng.tensor(&[3], DType::F32)?;
    let y = conv2d(&x, &w, Some(&b), &Conv2dOptions::default())?;
    let grads = y.sum_all()?.backward()?;
    assert!(grads.get(&x).is_none(), "no input gradient was asked for");
    assert!(grads.get(&b).is_none(), "no bias gradient was asked for");
    // The weight gradient of sum(y) is the sum of each input channel's 3x3 windows.
    let gw = grads.get(&w).expect("weight gradient");
    assert_eq!(gw.dims(), &[3, 2, 3, 3]);
    let batch_sum = x.sum_keepdim(0)?;
    for c in 0..2 {
        for (i, j) in [(0, 0), (1, 2), (2, 1)] {
            let window = batch_sum
                .narrow(1, c, 1)?
                .narrow(2, i, 3)?
                .narrow(3, j, 3)?;
            let expected = window.sum_all()?.to_scalar::<f32>()?;
            for o in 0..3 {
                let got = gw.get(o)?.get(c)?.get(i)?.get(j)?.to_scalar::<f32>()?;
                assert_eq!(got, expected, "gw[{o}, {c}, {i}, {j}]");
            }
        }
    }
    Ok(())
}

#[test]
fn bias_gradient_is_summed_in_f32_for_half_types() -> Result<()> {
    // 4096 ones: exact in f16 and bf16, but a running sum in f16 stops at 2048 and in bf16 at
    // 256, which is what a candle `sum` of the broadcast bias gradient would give.
    for dtype in [DType::F16, DType::BF16] {
        let x = Tensor::zeros((4, 1, 32, 32), dtype, &candle_core::Device::Cpu)?;
        let w = Tensor::zeros((2, 1, 1, 1), dtype, &candle_core::Device::Cpu)?;
        let b = Var::zeros(2, dtype, &candle_core::Device::Cpu)?;
        let y = conv2d(&x, &w, Some(&b), &Conv2dOptions::default())?;
        let grads = y.sum_all()?.backward()?;
        let gb = grads.get(&b).expect("bias gradient").to_dtype(DType::F64)?;
        assert_eq!(gb.to_vec1::<f64>()?, vec![4096.0; 2], "{dtype:?}");
    }
    Ok(())
}
