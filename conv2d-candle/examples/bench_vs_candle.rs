//! Times this crate's ops against candle's own convolution on a suite of shapes (the
//! `conv2d-bench/suite.json` format) and prints a markdown table.
//!
//! `cargo run --release -p conv2d-candle --example bench_vs_candle -- [--suite FILE] [--threads N]`
//!
//! Both sides get the same thread count: candle through `RAYON_NUM_THREADS` and rayon's global
//! pool, ours through `conv2d::set_num_threads`. Each case and side: two warm-up calls, then
//! calls until at least 20 calls and 0.2 s, reporting the median. Before timing, the two
//! results are compared; a case whose results differ is marked.
//!
//! The backward ops time, for candle, the expression its autograd evaluates for that
//! gradient (`conv_transpose2d` of the output gradient for the input gradient; a `conv2d` of
//! the transposed input and output gradient for the weight gradient, per group); candle's
//! autograd computes both gradients of a convolution, but only the asked-for one is timed.
//! Ours call `conv2d_backward` with only that gradient in the mask.

use std::time::{Duration, Instant};

use candle_core::{Device, Result, Tensor};
use conv2d_candle::{
    conv2d, conv2d_backward, conv_transpose2d, Conv2dOptions, ConvTranspose2dOptions, GradMask,
};
use serde_json::Value;

struct Args {
    suite: String,
    threads: Option<usize>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        suite: concat!(env!("CARGO_MANIFEST_DIR"), "/../conv2d-bench/suite.json").to_string(),
        threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--suite" => args.suite = value()?,
            "--threads" => {
                let n: usize = value()?.parse().map_err(|e| format!("--threads: {e}"))?;
                args.threads = Some(n.max(1));
            }
            other => return Err(format!("unknown argument {other}; use --suite, --threads")),
        }
    }
    Ok(args)
}

/// One suite case, with its options as single numbers where candle needs them.
struct Case {
    name: String,
    op: String,
    n: usize,
    cin: usize,
    cout: usize,
    size: [usize; 2],
    k: [usize; 2],
    groups: usize,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    output_padding: [usize; 2],
}

impl Case {
    fn parse(v: &Value) -> std::result::Result<Self, String> {
        let name = v["name"].as_str().unwrap_or("?").to_string();
        let num = |key: &str| {
            v[key]
                .as_u64()
                .map(|x| x as usize)
                .ok_or(format!("case {name} lacks {key}"))
        };
        let pair = |key: &str, default: usize| match &v[key] {
            Value::Array(a) => [0, 1].map(|i| a[i].as_u64().map_or(default, |x| x as usize)),
            _ => [default; 2],
        };
        Ok(Self {
            op: v["op"].as_str().unwrap_or("?").to_string(),
            n: num("n")?,
            cin: num("cin")?,
            cout: num("cout")?,
            size: [num("h")?, num("w")?],
            k: pair("k", 1),
            groups: num("groups")?,
            stride: pair("stride", 1),
            padding: pair("padding", 0),
            dilation: pair("dilation", 1),
            output_padding: pair("output_padding", 0),
            name,
        })
    }

    /// The single number candle takes for each option, or why the case cannot run there.
    fn candle_options(&self) -> std::result::Result<[usize; 4], String> {
        let one = |[a, b]: [usize; 2], what: &str| match a == b {
            true => Ok(a),
            false => Err(format!("candle takes one {what} for both axes")),
        };
        Ok([
            one(self.stride, "stride")?,
            one(self.padding, "padding")?,
            one(self.dilation, "dilation")?,
            one(self.output_padding, "output_padding")?,
        ])
    }
}

/// Deterministic values in [-0.75, 0.75], as `conv2d-bench` fills its buffers.
fn filled(shape: &[usize], seed: usize) -> Result<Tensor> {
    let len: usize = shape.iter().product();
    let v: Vec<f32> = (0..len)
        .map(|i| (((i * 7 + seed) % 13) as f32 - 6.0) / 8.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// A prepared call: candle's and ours, each returning the tensor it computes.
type Call = Box<dyn Fn() -> Result<Tensor>>;

/// The two calls of a case, or why candle cannot run it.
fn prepare(c: &Case) -> Result<std::result::Result<(Call, Call), String>> {
    let [s, p, d, op] = match c.candle_options() {
        Ok(o) => o,
        Err(why) => return Ok(Err(why)),
    };
    let g = c.groups;
    let x = filled(&[c.n, c.cin, c.size[0], c.size[1]], 1)?;
    if c.op == "conv_transpose2d" {
        if g != 1 {
            return Ok(Err("candle's conv_transpose2d has no groups".into()));
        }
        let w = filled(&[c.cin, c.cout, c.k[0], c.k[1]], 2)?;
        let opts = ConvTranspose2dOptions::default()
            .stride(s)
            .padding(p)
            .dilation(d)
            .output_padding(op);
        let (x2, w2) = (x.clone(), w.clone());
        let candle: Call = Box::new(move || x2.conv_transpose2d(&w2, p, op, s, d));
        let ours: Call = Box::new(move || conv_transpose2d(&x, &w, None, &opts));
        return Ok(Ok((candle, ours)));
    }
    let w = filled(&[c.cout, c.cin / g, c.k[0], c.k[1]], 2)?;
    let opts = Conv2dOptions::default()
        .stride(s)
        .padding(p)
        .dilation(d)
        .groups(g);
    let out = x.conv2d(&w, p, s, d, g)?;
    let gy = filled(out.dims(), 3)?;
    let mask = |input, weight| GradMask {
        input,
        weight,
        bias: false,
    };
    let (candle, ours): (Call, Call) = match c.op.as_str() {
        "conv2d" => {
            let (x2, w2) = (x.clone(), w.clone());
            (
                Box::new(move || x2.conv2d(&w2, p, s, d, g)),
                Box::new(move || conv2d(&x, &w, None, &opts)),
            )
        }
        "conv2d_bwd_input" => {
            // candle's autograd: conv_transpose2d of the output gradient, per group, with the
            // output padding that restores the input height.
            let reach = d * (c.k[0] - 1) + 1;
            let out_padding = c.size[0] + 2 * p - reach - (out.dim(2)? - 1) * s;
            let (gy2, w2) = (gy.clone(), w.clone());
            let candle: Call = Box::new(move || {
                per_group(g, (&gy2, 1), (&w2, 0), 1, |gy, w| {
                    gy.conv_transpose2d(w, p, out_padding, s, d)
                })
            });
            let ours: Call = Box::new(move || {
                let grads = conv2d_backward(&x, &w, &gy, &opts, mask(true, false))?;
                Ok(grads.input.expect("asked for"))
            });
            (candle, ours)
        }
        "conv2d_bwd_weight" => {
            // candle's autograd: conv2d of the transposed input by the transposed output
            // gradient, per group, cut to the kernel size.
            let (x2, gy2, k) = (x.clone(), gy.clone(), c.k);
            let candle: Call = Box::new(move || {
                per_group(g, (&x2, 1), (&gy2, 1), 0, |x, gy| {
                    let gw = x
                        .transpose(0, 1)?
                        .conv2d(&gy.transpose(0, 1)?, p, d, s, 1)?;
                    gw.transpose(0, 1)?.narrow(2, 0, k[0])?.narrow(3, 0, k[1])
                })
            });
            let ours: Call = Box::new(move || {
                let grads = conv2d_backward(&x, &w, &gy, &opts, mask(false, true))?;
                Ok(grads.weight.expect("asked for"))
            });
            (candle, ours)
        }
        other => return Ok(Err(format!("unknown op {other}"))),
    };
    Ok(Ok((candle, ours)))
}

/// `f` on each group, as candle's grouped convolution runs: `a` and `b` cut into `groups`
/// blocks along their given dimensions, the results joined along `cat_dim`.
fn per_group(
    groups: usize,
    (a, a_dim): (&Tensor, usize),
    (b, b_dim): (&Tensor, usize),
    cat_dim: usize,
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if groups == 1 {
        return f(a, b);
    }
    let (a, b) = (a.chunk(groups, a_dim)?, b.chunk(groups, b_dim)?);
    let parts = a
        .iter()
        .zip(&b)
        .map(|(a, b)| f(a, b))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, cat_dim)
}

/// Median seconds per call.
fn time(call: &Call) -> Result<f64> {
    for _ in 0..2 {
        call()?;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 20 || start.elapsed() < Duration::from_millis(200) {
        let t = Instant::now();
        call()?;
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// The largest difference between two results, relative to the largest value.
fn relative_difference(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        return Ok(f64::INFINITY);
    }
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()? as f64;
    let scale = a.abs()?.max_all()?.to_scalar::<f32>()? as f64;
    Ok(diff / scale.max(f64::MIN_POSITIVE))
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    if let Some(n) = args.threads {
        // candle sizes its GEMM's parallelism from RAYON_NUM_THREADS on every call, and runs
        // its loops on rayon's global pool; set both before either starts.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
        conv2d_candle::set_num_threads(n)?;
    }
    let text = std::fs::read_to_string(&args.suite).map_err(|e| format!("{}: {e}", args.suite))?;
    let suite: Value = serde_json::from_str(&text)?;
    let cases = suite["cases"].as_array().ok_or("the suite has no cases")?;
    let started = Instant::now();
    println!(
        "threads: candle {} (rayon), ours {} (conv2d); float32; median of >= 20 calls\n",
        rayon::current_num_threads(),
        conv2d_candle::num_threads()
    );
    println!("| case | op | candle ms | ours ms | speed-up |");
    println!("|---|---|---:|---:|---:|");
    let (mut log_sum, mut count, mut lo, mut hi) = (0.0f64, 0usize, f64::INFINITY, 0.0f64);
    let mut notes = Vec::new();
    for v in cases {
        let case = Case::parse(v)?;
        eprint!("{}...\r", case.name);
        let (candle, ours) = match prepare(&case)? {
            Ok(calls) => calls,
            Err(why) => {
                println!("| {} | {} | - | - | skipped |", case.name, case.op);
                notes.push(format!("{}: {why}", case.name));
                continue;
            }
        };
        let difference = relative_difference(&candle()?, &ours()?)?;
        let agree = if difference <= 1e-4 {
            ""
        } else {
            notes.push(format!(
                "{}: results differ (max difference {difference:.2e} of the largest value)",
                case.name
            ));
            " (results differ)"
        };
        let (t_candle, t_ours) = (time(&candle)?, time(&ours)?);
        let speedup = t_candle / t_ours;
        println!(
            "| {} | {} | {:.3} | {:.3} | {speedup:.2}x{agree} |",
            case.name,
            case.op,
            t_candle * 1e3,
            t_ours * 1e3
        );
        log_sum += speedup.ln();
        count += 1;
        lo = lo.min(speedup);
        hi = hi.max(speedup);
    }
    if count > 0 {
        let geomean = (log_sum / count as f64).exp();
        println!(
            "\ngeomean speed-up: {geomean:.2}x over {count} cases (min {lo:.2}x, max {hi:.2}x)"
        );
    }
    for note in notes {
        println!("- {note}");
    }
    eprintln!("total time: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
