//! Every op, gradient and dtype against fixtures PyTorch 2.15 wrote (`scripts/gen_fixtures.py`).
//!
//! Each case is checked twice against the f64 oracle with tolerances derived from the summed
//! terms: PyTorch's own result (so the bound is one PyTorch meets), and ours. For `f16` and
//! `bf16` PyTorch rounds some partial sums to the storage type, so its results are held to
//! that bound, while ours (summed in `f32`, rounded once) are held to the tighter
//! single-rounding bound. Shapes must match PyTorch's exactly.

use crate::support::fixtures::FixtureFile;
use crate::support::reference::{self, Acc, ConvResult, ConvSpec, Mode};
use crate::support::{check_close, check_close_with, to_tensor, Sums};
use conv2d::{
    conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward, Algorithm, Conv2dOptions,
    Conv2dPlan, ConvTranspose2dOptions, ConvTranspose2dPlan, Element, GradMask, Gradients, Padding,
    PaddingMode, Pair,
};
use half::{bf16, f16};
use ndarray::{Array1, Array4, ArrayD, IxDyn};
use num_complex::Complex;
use serde_json::Value;

fn pair(v: &Value) -> Pair {
    Pair::new(
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    )
}

fn mode(case: &Value) -> (PaddingMode, Mode) {
    match case["padding_mode"].as_str().unwrap() {
        "zeros" => (PaddingMode::Zeros, Mode::Zeros),
        "reflect" => (PaddingMode::Reflect, Mode::Reflect),
        "replicate" => (PaddingMode::Replicate, Mode::Replicate),
        "circular" => (PaddingMode::Circular, Mode::Circular),
        other => panic!("unknown padding mode {other}"),
    }
}

/// The tensors of one case.
struct Case<T> {
    input: ArrayD<T>,
    weight: Array4<T>,
    bias: Option<Array1<T>>,
    grad_output: ArrayD<T>,
    /// PyTorch's results, with their shapes.
    torch_output: Tensor<T>,
    torch_grad_input: Tensor<T>,
    torch_grad_weight: Tensor<T>,
    torch_grad_bias: Option<Vec<T>>,
}

type Tensor<T> = (Vec<usize>, Vec<T>);

fn load<T: Element>(file: &FixtureFile, i: usize) -> Case<T> {
    let get = |name: &str| file.tensor::<T>(&format!("{i}.{name}"));
    let need = |name: &str| get(name).unwrap_or_else(|| panic!("case {i} lacks {name}"));
    let (xs, x) = need("input");
    let (ws, w) = need("weight");
    let (gs, gy) = need("grad_output");
    Case {
        input: ArrayD::from_shape_vec(IxDyn(&xs), x).unwrap(),
        weight: Array4::from_shape_vec([ws[0], ws[1], ws[2], ws[3]], w).unwrap(),
        bias: get("bias").map(|(_, b)| Array1::from(b)),
        grad_output: ArrayD::from_shape_vec(IxDyn(&gs), gy).unwrap(),
        torch_output: need("output"),
        torch_grad_input: need("grad_input"),
        torch_grad_weight: need("grad_weight"),
        torch_grad_bias: get("grad_bias").map(|(_, b)| b),
    }
}

fn batched(shape: &[usize]) -> Vec<usize> {
    if shape.len() == 3 {
        [&[1][..], shape].concat()
    } else {
        shape.to_vec()
    }
}

/// Our results for one case, flattened, with their shapes.
struct Ours<T> {
    output: Tensor<T>,
    grad_input: Tensor<T>,
    grad_weight: Tensor<T>,
    grad_bias: Option<Vec<T>>,
}

impl<T: Element> Ours<T> {
    /// From the functional API's arrays.
    fn from_arrays<D: ndarray::Dimension>(
        output: ArrayD<T>,
        grads: Gradients<T, D>,
    ) -> Result<Self, String> {
        let flat =
            |a: ndarray::ArrayViewD<'_, T>| (a.shape().to_vec(), a.iter().copied().collect());
        let gx = grads.input.ok_or("no grad_input")?;
        let gw = grads.weight.ok_or("no grad_weight")?;
        Ok(Self {
            output: flat(output.view()),
            grad_input: flat(gx.view().into_dyn()),
            grad_weight: flat(gw.view().into_dyn()),
            grad_bias: grads.bias.map(|b| b.to_vec()),
        })
    }
}

/// Runs a batched case through a plan with `algorithm` forced.
macro_rules! run_plan {
    ($plan:expr, $algorithm:expr, $c:expr) => {{
        let plan = $plan.map_err(|e| e.to_string())?.with_algorithm($algorithm);
        let slice = |a: &ArrayD<T>| a.as_slice().unwrap().to_vec();
        let (x, w, gy) = (
            slice(&$c.input),
            $c.weight.as_slice().unwrap(),
            slice(&$c.grad_output),
        );
        let bias = $c.bias.as_ref().map(|b| b.as_slice().unwrap());
        let err = |e: conv2d::ConvError| e.to_string();
        Ours {
            output: (
                plan.output_shape().to_vec(),
                plan.forward(&x, w, bias).map_err(err)?,
            ),
            grad_input: (
                plan.input_shape().to_vec(),
                plan.backward_input(&gy, w).map_err(err)?,
            ),
            grad_weight: (
                plan.weight_shape().to_vec(),
                plan.backward_weight(&x, &gy).map_err(err)?,
            ),
            grad_bias: match bias {
                Some(_) => Some(plan.backward_bias(&gy).map_err(err)?),
                None => None,
            },
        }
    }};
}

/// Runs one case, through the functional API or, with `algorithm`, through a plan with that
/// algorithm forced (batched cases only); the error says what differed.
fn run_case<T: Element>(
    file: &FixtureFile,
    i: usize,
    case: &Value,
    algorithm: Option<Algorithm>,
    definition: Definition<'_>,
) -> Result<usize, String> {
    let c = load::<T>(file, i);
    let bias_view = c.bias.as_ref().map(|b| b.view());
    let x4 = to_tensor(&batched(c.input.shape()), c.input.as_slice().unwrap());
    let w4 = to_tensor(c.weight.shape(), c.weight.as_slice().unwrap());
    let b1 = c
        .bias
        .as_ref()
        .map(|b| to_tensor(&[b.len()], b.as_slice().unwrap()));
    let gy4 = to_tensor(
        &batched(c.grad_output.shape()),
        c.grad_output.as_slice().unwrap(),
    );
    let input_shape = || -> Result<[usize; 4], String> {
        (c.input.shape().try_into()).map_err(|_| "plans run batched cases only".to_string())
    };
    let stride = pair(&case["stride"]);
    let dilation = pair(&case["dilation"]);
    let groups = case["groups"].as_u64().unwrap() as usize;
    let (ours, oracle): (Ours<T>, ConvResult) = match case["op"].as_str().unwrap() {
        "conv2d" => {
            let (padding_mode, ref_mode) = mode(case);
            let (kh, kw) = (c.weight.shape()[2], c.weight.shape()[3]);
            let (padding, pads) = match &case["padding"] {
                Value::String(s) if s == "same" => {
                    let (th, tw) = (dilation.h * (kh - 1), dilation.w * (kw - 1));
                    (Padding::Same, [th / 2, th - th / 2, tw / 2, tw - tw / 2])
                }
                Value::String(s) if s == "valid" => (Padding::Valid, [0; 4]),
                v => {
                    let p = pair(v);
                    (Padding::Explicit(p), [p.h, p.h, p.w, p.w])
                }
            };
            let opts = Conv2dOptions::default()
                .stride(stride)
                .padding(padding)
                .dilation(dilation)
                .groups(groups)
                .padding_mode(padding_mode);
            let ours = match algorithm {
                Some(a) => {
                    let plan = Conv2dPlan::new(input_shape()?, c.weight.dim().into(), &opts);
                    run_plan!(plan, a, c)
                }
                None => {
                    let out =
                        conv2d(&c.input, &c.weight, bias_view, &opts).map_err(|e| e.to_string())?;
                    let grads =
                        conv2d_backward(&c.input, &c.weight, &c.grad_output, &opts, GradMask::ALL)
                            .map_err(|e| e.to_string())?;
                    Ours::from_arrays(out, grads)?
                }
            };
            let spec = ConvSpec {
                stride: [stride.h, stride.w],
                pads,
                dilation: [dilation.h, dilation.w],
                groups,
                mode: ref_mode,
            };
            (
                ours,
                reference::conv2d(&x4, &w4, b1.as_ref(), &spec, Some(&gy4)),
            )
        }
        "conv_transpose2d" => {
            let padding = pair(&case["padding"]);
            let mut opts = ConvTranspose2dOptions::default()
                .stride(stride)
                .padding(padding)
                .output_padding(pair(&case["output_padding"]))
                .dilation(dilation)
                .groups(groups);
            if let Value::Array(size) = &case["output_size"] {
                let size: Vec<usize> = size.iter().map(|v| v.as_u64().unwrap() as usize).collect();
                opts = opts.output_size(size);
            }
            let ours = match algorithm {
                Some(a) => {
                    let plan =
                        ConvTranspose2dPlan::new(input_shape()?, c.weight.dim().into(), &opts);
                    run_plan!(plan, a, c)
                }
                None => {
                    let out = conv_transpose2d(&c.input, &c.weight, bias_view, &opts)
                        .map_err(|e| e.to_string())?;
                    let grads = conv_transpose2d_backward(
                        &c.input,
                        &c.weight,
                        &c.grad_output,
                        &opts,
                        GradMask::ALL,
                    )
                    .map_err(|e| e.to_string())?;
                    Ours::from_arrays(out, grads)?
                }
            };
            let ts = &c.torch_output.0;
            let out_hw = [ts[ts.len() - 2], ts[ts.len() - 1]];
            let oracle = reference::conv_transpose2d(
                &x4,
                &w4,
                b1.as_ref(),
                [stride.h, stride.w],
                [padding.h, padding.w],
                [dilation.h, dilation.w],
                groups,
                out_hw,
                Some(&gy4),
            );
            (ours, oracle)
        }
        other => panic!("unknown op {other}"),
    };
    let batched_shape = |t: &Tensor<T>| batched(&t.0);
    let checks = [
        ("output", &ours.output, &c.torch_output, &oracle.output),
        (
            "grad_input",
            &ours.grad_input,
            &c.torch_grad_input,
            &oracle.grad_input,
        ),
        (
            "grad_weight",
            &ours.grad_weight,
            &c.torch_grad_weight,
            &oracle.grad_weight,
        ),
    ];
    let defined = |what: &str| match definition {
        Definition::PyTorch => None,
        Definition::Float64(file) => file.tensor::<f64>(&format!("{i}.{what}")).map(|t| t.1),
    };
    let mut deviations = 0;
    for (what, ours, torch, want) in checks {
        // A plan is always batched; the functional API keeps PyTorch's rank.
        let same_shape = match algorithm {
            Some(_) => batched_shape(ours) == batched_shape(torch),
            None => ours.0 == torch.0,
        };
        if !same_shape {
            return Err(format!("{what} shape {:?}, PyTorch {:?}", ours.0, torch.0));
        }
        deviations +=
            check_against_pytorch(what, &ours.1, &torch.1, want, defined(what).as_deref())?;
    }
    match (&ours.grad_bias, &c.torch_grad_bias) {
        (Some(gb), Some(torch_gb)) => {
            let defined = defined("grad_bias");
            deviations += check_against_pytorch(
                "grad_bias",
                gb,
                torch_gb,
                &oracle.grad_bias,
                defined.as_deref(),
            )?;
        }
        (_, None) => {}
        (None, Some(_)) => return Err("no grad_bias".into()),
    }
    Ok(deviations)
}

/// Which elements must be NaN or infinite: PyTorch's own result, or (for the special-value
/// files in float32 and the half types) PyTorch's float64 result on the same data, where
/// PyTorch's reference path follows the definition that oneDNN's reduced-precision paths
/// leave (see `special_values_*`).
#[derive(Clone, Copy)]
enum Definition<'a> {
    PyTorch,
    Float64(&'a FixtureFile),
}

/// Where the definition has NaN or an infinity, ours must have the same (NaN, or that
/// infinity); elsewhere ours must be finite and within the oracle's tolerance, and so must
/// PyTorch's (with its sums in the storage type). Returns the number of elements where
/// PyTorch's own result leaves the definition.
fn check_against_pytorch<T: Element>(
    what: &str,
    ours: &[T],
    torch: &[T],
    want: &[Acc],
    definition: Option<&[f64]>,
) -> Result<usize, String> {
    if ours.len() != torch.len() || want.len() != torch.len() {
        return Err(format!(
            "{what}: {} elements, PyTorch {}",
            ours.len(),
            torch.len()
        ));
    }
    let same_class = |a: Complex<f64>, b: Complex<f64>| (a.is_nan() && b.is_nan()) || a == b;
    let (mut finite_ours, mut finite_torch, mut want_ours, mut want_torch) =
        (vec![], vec![], vec![], vec![]);
    let mut deviations = 0;
    for (i, ((&o, &t), w)) in ours.iter().zip(torch).zip(want).enumerate() {
        let (oc, tc) = (o.to_complex64(), t.to_complex64());
        let dc = definition.map_or(tc, |d| Complex::new(d[i], 0.0));
        if dc.is_finite() {
            finite_ours.push(o);
            want_ours.push(*w);
            if tc.is_finite() {
                finite_torch.push(t);
                want_torch.push(*w);
            } else {
                deviations += 1;
            }
        } else if !same_class(oc, dc) {
            return Err(format!("{what}[{i}]: got {oc}, PyTorch {dc}"));
        } else if !same_class(tc, dc) {
            deviations += 1;
        }
    }
    check_close_with(
        &format!("PyTorch's {what}"),
        &finite_torch,
        &want_torch,
        Sums::Storage,
    )?;
    check_close(what, &finite_ours, &want_ours)?;
    Ok(deviations)
}

/// Runs every case of fixture file `name` through the functional API and, for each of
/// `algorithms`, through a plan with it forced; returns the number of cases and the number
/// of elements where PyTorch's own result leaves the `definition`.
fn run_file<T: Element>(
    name: &str,
    algorithms: &[Algorithm],
    definition: Definition<'_>,
) -> (usize, usize) {
    let file = FixtureFile::open(name);
    assert!(
        file.torch_version.starts_with("2.15"),
        "fixtures from torch {}",
        file.torch_version
    );
    let file = &file;
    let mut deviations = 0;
    let mut failures = vec![];
    for (i, case) in file.cases.iter().enumerate() {
        for algorithm in std::iter::once(None).chain(algorithms.iter().copied().map(Some)) {
            match run_case::<T>(file, i, case, algorithm, definition) {
                // Count PyTorch's deviations once per case, not once per algorithm.
                Ok(d) if algorithm.is_none() => deviations += d,
                Ok(_) => {}
                Err(e) => {
                    let how = algorithm.map_or("functional API", Algorithm::name);
                    failures.push(format!("{name} case {i} ({}, {how}): {e}", case["name"]));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures in {} cases:\n{}",
        failures.len(),
        file.cases.len(),
        failures.join("\n")
    );
    (file.cases.len(), deviations)
}

#[test]
fn float32_matches_pytorch() {
    let (cases, _) = run_file::<f32>("f32", &[], Definition::PyTorch);
    assert!(cases >= 100);
}

#[test]
fn float64_matches_pytorch() {
    let (cases, _) = run_file::<f64>("f64", &[], Definition::PyTorch);
    assert!(cases >= 60);
}

#[test]
fn float16_matches_pytorch() {
    let (cases, _) = run_file::<f16>("f16", &[], Definition::PyTorch);
    assert!(cases >= 40);
}

#[test]
fn bfloat16_matches_pytorch() {
    let (cases, _) = run_file::<bf16>("bf16", &[], Definition::PyTorch);
    assert!(cases >= 40);
}

#[test]
fn complex64_matches_pytorch() {
    let (cases, _) = run_file::<Complex<f32>>("c64", &[], Definition::PyTorch);
    assert!(cases >= 40);
}

#[test]
fn complex128_matches_pytorch() {
    let (cases, _) = run_file::<Complex<f64>>("c128", &[], Definition::PyTorch);
    assert!(cases >= 40);
}

/// NaN, infinities and overflow (`scripts/gen_special_fixtures.py`), through every algorithm.
///
/// The definition of where they propagate: PyTorch's result for a convolution of the
/// explicitly padded input, which its float64 path (im2col and GEMM) computes, with IEEE
/// arithmetic on every term. In float32, float16 and bfloat16 PyTorch runs oneDNN, whose
/// result on non-finite data depends on the shape-dependent algorithm it picks: some skip
/// the padding's `0 * inf` terms, some multiply inserted zeros in strided input gradients,
/// and bfloat16's spreads NaN past an element's own terms. Those dtypes are held to the
/// float64 definition on the same data; the count of PyTorch's own deviations is printed.
const ALGORITHMS: [Algorithm; 6] = Algorithm::ALL;

fn special_values<T: Element>(name: &str, definition: Definition<'_>) {
    let (cases, deviations) = run_file::<T>(name, &ALGORITHMS, definition);
    assert!(cases >= 20);
    println!("{name}: {cases} cases; PyTorch's own result leaves the definition in {deviations} elements");
}

#[test]
fn float64_special_values_propagate_as_in_pytorch() {
    special_values::<f64>("special_f64", Definition::PyTorch);
}

#[test]
fn float32_special_values_propagate_as_pytorch_defines() {
    let f64_file = FixtureFile::open("special_f64");
    special_values::<f32>("special_f32", Definition::Float64(&f64_file));
}

#[test]
fn float16_special_values_propagate_as_pytorch_defines() {
    let f64_file = FixtureFile::open("special_f64");
    special_values::<f16>("special_f16", Definition::Float64(&f64_file));
}

#[test]
fn bfloat16_special_values_propagate_as_pytorch_defines() {
    let f64_file = FixtureFile::open("special_f64");
    special_values::<bf16>("special_bf16", Definition::Float64(&f64_file));
}
