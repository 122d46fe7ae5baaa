//! Every op, gradient and dtype against fixtures PyTorch 2.15 wrote (`scripts/gen_fixtures.py`).
//!
//! Each case is checked twice against the f64 oracle with tolerances derived from the summed
//! terms: PyTorch's own result (so the bound is one PyTorch meets), and ours. For `f16` and
//! `bf16` PyTorch rounds some partial sums to the storage type, so its results are held to
//! that bound, while ours (summed in `f32`, rounded once) are held to the tighter
//! single-rounding bound. Shapes must match PyTorch's exactly.

mod support;

use conv2d::{
    conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward, Conv2dOptions,
    ConvTranspose2dOptions, Element, GradMask, Padding, PaddingMode, Pair,
};
use half::{bf16, f16};
use ndarray::{Array1, Array4, ArrayD, IxDyn};
use num_complex::Complex;
use serde_json::Value;
use support::fixtures::FixtureFile;
use support::reference::{self, ConvResult, ConvSpec, Mode};
use support::{check_close, check_close_with, to_tensor, Sums};

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

/// Runs one case; the error says what differed.
fn run_case<T: Element>(file: &FixtureFile, i: usize, case: &Value) -> Result<(), String> {
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
    let stride = pair(&case["stride"]);
    let dilation = pair(&case["dilation"]);
    let groups = case["groups"].as_u64().unwrap() as usize;
    let (ours_out, ours_grads, oracle): (ArrayD<T>, _, ConvResult) = match case["op"]
        .as_str()
        .unwrap()
    {
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
            let out = conv2d(&c.input, &c.weight, bias_view, &opts).map_err(|e| e.to_string())?;
            let grads = conv2d_backward(&c.input, &c.weight, &c.grad_output, &opts, GradMask::ALL)
                .map_err(|e| e.to_string())?;
            let spec = ConvSpec {
                stride: [stride.h, stride.w],
                pads,
                dilation: [dilation.h, dilation.w],
                groups,
                mode: ref_mode,
            };
            (
                out,
                grads,
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
            (out, grads, oracle)
        }
        other => panic!("unknown op {other}"),
    };
    let (out_shape, torch_out) = &c.torch_output;
    let (gx_shape, torch_gx) = &c.torch_grad_input;
    let (gw_shape, torch_gw) = &c.torch_grad_weight;
    if ours_out.shape() != out_shape.as_slice() {
        return Err(format!(
            "output shape {:?}, PyTorch {:?}",
            ours_out.shape(),
            out_shape
        ));
    }
    let gx = ours_grads.input.ok_or("no grad_input")?;
    let gw = ours_grads.weight.ok_or("no grad_weight")?;
    if gx.shape() != gx_shape.as_slice() || gw.shape() != gw_shape.as_slice() {
        return Err(format!("gradient shapes {:?} {:?}", gx.shape(), gw.shape()));
    }
    let flat = |v: ndarray::iter::Iter<'_, T, _>| v.copied().collect::<Vec<T>>();
    let checks = [
        ("output", flat(ours_out.iter()), torch_out, &oracle.output),
        ("grad_input", flat(gx.iter()), torch_gx, &oracle.grad_input),
        (
            "grad_weight",
            gw.iter().copied().collect(),
            torch_gw,
            &oracle.grad_weight,
        ),
    ];
    for (what, ours, torch, want) in checks {
        check_close_with(&format!("PyTorch's {what}"), torch, want, Sums::Storage)?;
        check_close(what, &ours, want)?;
    }
    match (ours_grads.bias, &c.torch_grad_bias) {
        (Some(gb), Some(torch_gb)) => {
            check_close_with(
                "PyTorch's grad_bias",
                torch_gb,
                &oracle.grad_bias,
                Sums::Storage,
            )?;
            check_close("grad_bias", gb.as_slice().unwrap(), &oracle.grad_bias)?;
        }
        (_, None) => {}
        (None, Some(_)) => return Err("no grad_bias".into()),
    }
    Ok(())
}

fn run_file<T: Element>(name: &str) -> usize {
    let file = FixtureFile::open(name);
    assert!(
        file.torch_version.starts_with("2.15"),
        "fixtures from torch {}",
        file.torch_version
    );
    let failures: Vec<String> = file
        .cases
        .iter()
        .enumerate()
        .filter_map(|(i, case)| {
            run_case::<T>(&file, i, case)
                .err()
                .map(|e| format!("{name} case {i} ({}): {e}", case["name"]))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        file.cases.len(),
        failures.join("\n")
    );
    file.cases.len()
}

#[test]
fn float32_matches_pytorch() {
    assert!(run_file::<f32>("f32") >= 100);
}

#[test]
fn float64_matches_pytorch() {
    assert!(run_file::<f64>("f64") >= 60);
}

#[test]
fn float16_matches_pytorch() {
    assert!(run_file::<f16>("f16") >= 40);
}

#[test]
fn bfloat16_matches_pytorch() {
    assert!(run_file::<bf16>("bf16") >= 40);
}

#[test]
fn complex64_matches_pytorch() {
    assert!(run_file::<Complex<f32>>("c64") >= 40);
}

#[test]
fn complex128_matches_pytorch() {
    assert!(run_file::<Complex<f64>>("c128") >= 40);
}
