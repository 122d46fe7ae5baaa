//! How much subnormal (denormal) data slows a call: each algorithm's forward pass and both
//! gradients timed on ordinary data, then on the same data scaled into the subnormal
//! range (inputs and output gradients times 1e-39, so products and sums are subnormal too),
//! exactly and with `set_flush_denormal(true)`.
//!
//! `cargo run --release -p conv2d-bench --bin denormals -- [--threads N]`
//!
//! Prints one row per case and pass with the medians and the ratios to ordinary data.

use std::time::Instant;

use conv2d::{Algorithm, Conv2dOptions, Conv2dPlan};

/// Median seconds of `calls` runs of `op`, after one warm-up call.
fn median(calls: usize, mut op: impl FnMut()) -> f64 {
    op();
    let mut times: Vec<f64> = (0..calls)
        .map(|_| {
            let start = Instant::now();
            op();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[calls / 2]
}

/// Deterministic values in `[0.5, 1)` times `scale`.
fn data(len: usize, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|i| (0.5 + ((i * 7919) % 1000) as f32 / 2000.0) * scale)
        .collect()
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--threads", Some(n)) => {
                let n = n.parse().map_err(|e| format!("--threads: {e}"))?;
                conv2d::set_num_threads(n).map_err(|e| e.to_string())?;
            }
            _ => return Err(format!("unknown argument {flag}; use --threads N")),
        }
    }
    let cases = [
        ("dense 3x3 c64 56x56", [1, 64, 56, 56], [64, 64, 3, 3], 1),
        (
            "depthwise 3x3 c64 56x56",
            [1, 64, 56, 56],
            [64, 1, 3, 3],
            64,
        ),
        (
            "pointwise 1x1 c64->256 56x56",
            [1, 64, 56, 56],
            [256, 64, 1, 1],
            1,
        ),
        (
            "grouped 3x3 c32 g4 28x28",
            [2, 32, 28, 28],
            [32, 8, 3, 3],
            4,
        ),
    ];
    let subnormal = 1e-39f32;
    assert!(subnormal.is_subnormal());
    println!(
        "threads {}; subnormal data = ordinary data x {subnormal:e}\n",
        conv2d::num_threads()
    );
    println!(
        "| case | algorithm | pass | ordinary ms | subnormal ms | ratio | flushed ms | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let (mut worst, mut worst_flushed) = (0.0f64, 0.0f64);
    for (name, x_shape, w_shape, groups) in cases {
        let opts = Conv2dOptions::default().padding(1).groups(groups);
        let chosen = Conv2dPlan::new(x_shape, w_shape, &opts).map_err(|e| e.to_string())?;
        for algorithm in Algorithm::ALL {
            let plan = chosen.clone().with_algorithm(algorithm);
            let w = data(w_shape.iter().product(), 0.1);
            let mut y = vec![0.0f32; plan.output_shape().iter().product()];
            let mut gx = vec![0.0f32; x_shape.iter().product()];
            let mut gw = vec![0.0f32; w.len()];
            let mut times = [[0.0; 3]; 3];
            for (i, (scale, flush)) in [(1.0, false), (subnormal, false), (subnormal, true)]
                .into_iter()
                .enumerate()
            {
                conv2d::set_flush_denormal(flush);
                let x = data(gx.len(), scale);
                let gy = data(y.len(), scale);
                times[0][i] = median(9, || plan.forward_into(&x, &w, None, &mut y).unwrap());
                times[1][i] = median(9, || plan.backward_input_into(&gy, &w, &mut gx).unwrap());
                times[2][i] = median(9, || plan.backward_weight_into(&x, &gy, &mut gw).unwrap());
            }
            conv2d::set_flush_denormal(false);
            for (pass, [normal, sub, flushed]) in
                ["forward", "input grad", "weight grad"].iter().zip(times)
            {
                let (ratio, flushed_ratio) = (sub / normal, flushed / normal);
                worst = worst.max(ratio);
                worst_flushed = worst_flushed.max(flushed_ratio);
                let mark = if algorithm == chosen.algorithm() {
                    " (chosen)"
                } else {
                    ""
                };
                println!(
                    "| {name} | {}{mark} | {pass} | {:.3} | {:.3} | {ratio:.2} | {:.3} | \
                     {flushed_ratio:.2} |",
                    algorithm.name(),
                    normal * 1e3,
                    sub * 1e3,
                    flushed * 1e3
                );
            }
        }
    }
    println!("\nworst ratio {worst:.2} exact, {worst_flushed:.2} with set_flush_denormal(true)");
    Ok(())
}
