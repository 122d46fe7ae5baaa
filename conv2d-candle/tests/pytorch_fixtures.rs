//! Every case of the `conv2d` crate's float32 PyTorch fixtures
//! (`../conv2d/tests/fixtures/f32.safetensors`, written by `scripts/gen_fixtures.py`) through
//! candle: the output, and the gradients of `sum(output * grad_output)` through candle's
//! autograd.
//!
//! The exact values are our op in `f64` on the same inputs, and each element's tolerance is
//! derived from the magnitude of its terms (the op on absolute values). Both our `f32`
//! results and PyTorch's own must meet it, and shapes must match PyTorch's exactly.

mod support;

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use conv2d_candle::{
    conv2d, conv_transpose2d, Conv2dOptions, ConvTranspose2dOptions, Padding, PaddingMode, Pair,
};
use serde_json::Value;
use support::check_close;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../conv2d/tests/fixtures/f32.safetensors"
);

/// Cases that must be in the file, so that the options below stay covered.
const REQUIRED: [&str; 10] = [
    "kernel_3x5_stride_2_1_pad_4_2",
    "dilation_3_1_pad_4_2",
    "groups_4",
    "depthwise_x3_stride_2",
    "same_even_kernel_dil_2",
    "reflect_stride_2_groups_2_pad_1_2",
    "unbatched",
    "t_stride_3_1_dil_1_2_output_padding_2_1",
    "t_depthwise_x2_stride_2",
    "t_unbatched_output_size_3_numbers",
];

/// The cases (from the file's metadata) and its tensors.
fn open() -> (Vec<Value>, HashMap<String, Tensor>) {
    let bytes = std::fs::read(FIXTURES).unwrap_or_else(|e| panic!("{FIXTURES}: {e}"));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let cases = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("cases"))
        .expect("the file's metadata lists its cases");
    let cases: Vec<Value> = serde_json::from_str(cases).expect("cases are JSON");
    let tensors = candle_core::safetensors::load(FIXTURES, &Device::Cpu).expect("tensors");
    (cases, tensors)
}

fn pair(v: &Value) -> Pair {
    let n = |i: usize| v[i].as_u64().expect("a number") as usize;
    Pair::new(n(0), n(1))
}

fn dims(v: &Value) -> Vec<usize> {
    let list = v.as_array().expect("a list");
    list.iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

/// A fixture op as a closure of candle tensors, with upper bounds on the number of terms in
/// each element of output, grad_input, grad_weight and grad_bias.
type Op = Box<dyn Fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>>;

fn op_of(case: &Value, x: &[usize], w: &[usize], out: &[usize]) -> (Op, [usize; 4]) {
    let (stride, dilation) = (pair(&case["stride"]), pair(&case["dilation"]));
    let groups = case["groups"].as_u64().unwrap() as usize;
    let n: usize = x[..x.len() - 3].iter().product();
    let [kh, kw] = [w[2], w[3]];
    let out_pixels = n * out[out.len() - 2] * out[out.len() - 1];
    if case["op"] == "conv_transpose2d" {
        let mut opts = ConvTranspose2dOptions::default()
            .stride(stride)
            .padding(pair(&case["padding"]))
            .output_padding(pair(&case["output_padding"]))
            .groups(groups)
            .dilation(dilation);
        if !case["output_size"].is_null() {
            opts = opts.output_size(dims(&case["output_size"]));
        }
        let in_pixels = n * x[x.len() - 2] * x[x.len() - 1];
        let terms = [
            w[0] / groups * kh * kw + 1,
            w[1] * kh * kw,
            in_pixels,
            out_pixels,
        ];
        let op: Op = Box::new(move |x, w, b| conv_transpose2d(x, w, b, &opts));
        return (op, terms);
    }
    let (padding, pads) = match case["padding"].as_str() {
        Some("same") => {
            let total = [dilation.h * (kh - 1), dilation.w * (kw - 1)];
            (Padding::Same, total)
        }
        Some("valid") => (Padding::Valid, [0, 0]),
        _ => {
            let p = pair(&case["padding"]);
            (Padding::Explicit(p), [2 * p.h, 2 * p.w])
        }
    };
    let padding_mode = match case["padding_mode"].as_str().unwrap() {
        "zeros" => PaddingMode::Zeros,
        "reflect" => PaddingMode::Reflect,
        "replicate" => PaddingMode::Replicate,
        "circular" => PaddingMode::Circular,
        other => panic!("unknown padding mode {other}"),
    };
    // A non-zero padding mode copies each input pixel into at most (pad_h + 1) * (pad_w + 1)
    // places, each of whose gradients folds back into it.
    let copies = match padding_mode {
        PaddingMode::Zeros => 1,
        _ => (pads[0] + 1) * (pads[1] + 1),
    };
    let opts = Conv2dOptions::default()
        .stride(stride)
        .padding(padding)
        .dilation(dilation)
        .groups(groups)
        .padding_mode(padding_mode);
    let terms = [
        w[1] * kh * kw + 1,
        w[0] / groups * kh * kw * copies,
        out_pixels,
        out_pixels,
    ];
    let op: Op = Box::new(move |x, w, b| conv2d(x, w, b, &opts));
    (op, terms)
}

/// The output and the gradients of `sum(output * grad_output)` (the bias gradient last, when
/// there is a bias).
fn forward_backward(
    op: &Op,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    gy: &Tensor,
) -> Result<Vec<Tensor>> {
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let bv = b.map(Var::from_tensor).transpose()?;
    let y = op(&xv, &wv, bv.as_ref().map(|b| b.as_tensor()))?;
    let grads = (&y * gy)?.sum_all()?.backward()?;
    let mut out = vec![y];
    for v in [Some(&xv), Some(&wv), bv.as_ref()].into_iter().flatten() {
        let g = grads.get(v).cloned();
        out.push(g.ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?);
    }
    Ok(out)
}

fn run_case(i: usize, case: &Value, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let get = |name: &str| tensors.get(&format!("{i}.{name}"));
    let need = |name: &str| {
        get(name).ok_or_else(|| candle_core::Error::Msg(format!("case {i} lacks {name}")))
    };
    let (x, w, gy) = (need("input")?, need("weight")?, need("grad_output")?);
    let b = get("bias");
    let (op, terms) = op_of(case, x.dims(), w.dims(), gy.dims());
    let mut torch = vec![need("output")?, need("grad_input")?, need("grad_weight")?];
    torch.extend(get("grad_bias"));

    let ours = forward_backward(&op, x, w, b, gy)?;
    let f64_of = |t: &Tensor| t.to_dtype(DType::F64);
    let abs64 = |t: &Tensor| f64_of(t)?.abs();
    let b64 = b.map(f64_of).transpose()?;
    let exact = forward_backward(&op, &f64_of(x)?, &f64_of(w)?, b64.as_ref(), &f64_of(gy)?)?;
    let b_abs = b.map(abs64).transpose()?;
    let magnitude = forward_backward(&op, &abs64(x)?, &abs64(w)?, b_abs.as_ref(), &abs64(gy)?)?;

    let names = ["output", "grad_input", "grad_weight", "grad_bias"];
    for (k, name) in names.iter().enumerate().take(torch.len()) {
        for (who, got) in [("ours", &ours[k]), ("PyTorch", torch[k])] {
            let what = format!("{who} {name}");
            check_close(&what, got, &exact[k], &magnitude[k], terms[k])
                .map_err(candle_core::Error::Msg)?;
        }
    }
    Ok(())
}

#[test]
fn every_f32_fixture_case_through_candle_autograd() {
    let (cases, tensors) = open();
    let names: Vec<&str> = cases.iter().filter_map(|c| c["name"].as_str()).collect();
    for required in REQUIRED {
        assert!(names.contains(&required), "the fixtures lack {required}");
    }
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, case)| {
            let e = run_case(i, case, &tensors).err()?;
            Some(format!("case {i} {}: {e}", case["name"]))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
