//! Times every case of a suite (`suite.json` format) and prints GFLOP/s.
//!
//! `cargo run --release -p conv2d-bench -- [--suite FILE] [--threads N] [--json FILE]
//! [--algorithm direct|direct-rows|direct-tiled|im2col-gemm] [--dtype f32|f64|f16|bf16]`
//! (`--algorithm` forces one algorithm, for sweeps; the element type is `f32` unless given)
//!
//! Each case: two warm-up calls, then calls until at least 20 calls and 0.5 s, reporting the
//! median. FLOPs follow the suite's `about`: `2*N*Cout*Hout*Wout*(Cin/groups)*kh*kw` for
//! conv2d and its backward passes, and the same with the input as the conv2d output for
//! conv_transpose2d.

use std::time::{Duration, Instant};

use conv2d::{
    Algorithm, Conv2dOptions, Conv2dPlan, ConvTranspose2dOptions, ConvTranspose2dPlan, Element,
};
use half::{bf16, f16};
use serde_json::{json, Value};

struct Args {
    suite: String,
    threads: Option<usize>,
    json: Option<String>,
    algorithm: Option<Algorithm>,
    dtype: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        suite: concat!(env!("CARGO_MANIFEST_DIR"), "/suite.json").to_string(),
        threads: None,
        json: None,
        algorithm: None,
        dtype: "f32".to_string(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--suite" => args.suite = value()?,
            "--threads" => {
                args.threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?)
            }
            "--json" => args.json = Some(value()?),
            "--dtype" => args.dtype = value()?,
            "--algorithm" => {
                let name = value()?;
                let found = Algorithm::ALL.into_iter().find(|a| a.name() == name);
                args.algorithm = Some(found.ok_or(format!("--algorithm: unknown {name}"))?);
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; use --suite, --threads, --json, --algorithm, --dtype"
                ))
            }
        }
    }
    Ok(args)
}

fn pair(case: &Value, key: &str, default: usize) -> (usize, usize) {
    match &case[key] {
        Value::Array(v) => (
            v[0].as_u64().unwrap_or(0) as usize,
            v[1].as_u64().unwrap_or(0) as usize,
        ),
        _ => (default, default),
    }
}

fn num(case: &Value, key: &str) -> Result<usize, String> {
    case[key]
        .as_u64()
        .map(|v| v as usize)
        .ok_or(format!("case {} lacks {key}", case["name"]))
}

/// A prepared call of one case, and its FLOP count.
type Runner = Box<dyn FnMut() -> Result<(), conv2d::ConvError>>;

/// What a case runs: the call, its FLOP count and the algorithm name.
type Prepared = (Runner, f64, &'static str);

/// [`prepare_typed`] for the element type named `dtype`.
fn prepare(case: &Value, forced: Option<Algorithm>, dtype: &str) -> Result<Prepared, String> {
    match dtype {
        "f32" => prepare_typed::<f32>(case, forced),
        "f64" => prepare_typed::<f64>(case, forced),
        "f16" => prepare_typed::<f16>(case, forced),
        "bf16" => prepare_typed::<bf16>(case, forced),
        other => Err(format!(
            "--dtype: unknown {other}; use f32, f64, f16 or bf16"
        )),
    }
}

fn prepare_typed<T: Element>(case: &Value, forced: Option<Algorithm>) -> Result<Prepared, String> {
    let (n, cin, h, w, cout, groups) = (
        num(case, "n")?,
        num(case, "cin")?,
        num(case, "h")?,
        num(case, "w")?,
        num(case, "cout")?,
        num(case, "groups")?,
    );
    let (k, stride, padding, dilation) = (
        pair(case, "k", 1),
        pair(case, "stride", 1),
        pair(case, "padding", 0),
        pair(case, "dilation", 1),
    );
    let op = case["op"].as_str().unwrap_or("");
    let filled = |len: usize, seed: usize| -> Vec<T> {
        (0..len)
            .map(|i| T::from_parts((((i * 7 + seed) % 13) as f64 - 6.0) / 8.0, 0.0))
            .collect()
    };
    let e = |e: conv2d::ConvError| e.to_string();
    if op == "conv_transpose2d" {
        let opts = ConvTranspose2dOptions::default()
            .stride(stride)
            .padding(padding)
            .dilation(dilation)
            .groups(groups)
            .output_padding(pair(case, "output_padding", 0));
        let plan = ConvTranspose2dPlan::new([n, cin, h, w], [cin, cout / groups, k.0, k.1], &opts)
            .map_err(e)?;
        let plan = match forced {
            Some(a) => plan.with_algorithm(a),
            None => plan,
        };
        let x = filled(n * cin * h * w, 1);
        let wt = filled(plan.weight_shape().iter().product(), 2);
        let mut y = filled(plan.output_shape().iter().product(), 0);
        let flops = 2.0 * (n * cin * h * w) as f64 * (cout / groups * k.0 * k.1) as f64;
        let algorithm = plan.algorithm().name();
        let runner: Runner = Box::new(move || plan.forward_into(&x, &wt, None, &mut y));
        return Ok((runner, flops, algorithm));
    }
    let opts = Conv2dOptions::default()
        .stride(stride)
        .padding(padding)
        .dilation(dilation)
        .groups(groups);
    let plan = Conv2dPlan::new([n, cin, h, w], [cout, cin / groups, k.0, k.1], &opts).map_err(e)?;
    let plan = match forced {
        Some(a) => plan.with_algorithm(a),
        None => plan,
    };
    let [_, _, oh, ow] = plan.output_shape();
    let flops = 2.0 * (n * cout * oh * ow) as f64 * (cin / groups * k.0 * k.1) as f64;
    let x = filled(n * cin * h * w, 1);
    let wt = filled(plan.weight_shape().iter().product(), 2);
    let gy = filled(plan.output_shape().iter().product(), 3);
    let algorithm = plan.algorithm().name();
    let runner: Runner = match op {
        "conv2d" => {
            let mut y = filled(gy.len(), 0);
            Box::new(move || plan.forward_into(&x, &wt, None, &mut y))
        }
        "conv2d_bwd_input" => {
            let mut gx = filled(x.len(), 0);
            Box::new(move || plan.backward_input_into(&gy, &wt, &mut gx))
        }
        "conv2d_bwd_weight" => {
            let mut gw = filled(wt.len(), 0);
            Box::new(move || plan.backward_weight_into(&x, &gy, &mut gw))
        }
        other => return Err(format!("unknown op {other}")),
    };
    Ok((runner, flops, algorithm))
}

/// Median seconds per call.
fn time(run: &mut Runner) -> Result<f64, String> {
    for _ in 0..2 {
        run().map_err(|e| e.to_string())?;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 20 || start.elapsed() < Duration::from_millis(500) {
        let t = Instant::now();
        run().map_err(|e| e.to_string())?;
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    if let Some(t) = args.threads {
        conv2d::set_num_threads(t).map_err(|e| e.to_string())?;
    }
    let text = std::fs::read_to_string(&args.suite).map_err(|e| format!("{}: {e}", args.suite))?;
    let suite: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", args.suite))?;
    let cases = suite["cases"].as_array().ok_or("the suite has no cases")?;
    let threads = conv2d::num_threads();
    println!(
        "{:<22} {:<18} {:>10} {:>9}  algorithm    ({threads} threads, {})",
        "case", "op", "median ms", "GFLOP/s", args.dtype
    );
    let mut results = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap_or("?");
        eprint!("[{}/{}] {name}...\r", i + 1, cases.len());
        let (mut run, flops, algorithm) = prepare(case, args.algorithm, &args.dtype)?;
        let secs = time(&mut run)?;
        let gflops = flops / secs / 1e9;
        let op = case["op"].as_str().unwrap_or("?");
        println!(
            "{name:<22} {op:<18} {:>10.3} {gflops:>9.1}  {algorithm}",
            secs * 1e3
        );
        results.push(json!({
            "case": name, "op": op, "threads": threads,
            "median_ms": secs * 1e3, "gflops": gflops, "algorithm": algorithm,
        }));
    }
    if let Some(path) = args.json {
        let out = serde_json::to_string_pretty(&json!({ "results": results }))
            .map_err(|e| e.to_string())?;
        std::fs::write(&path, out).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}
