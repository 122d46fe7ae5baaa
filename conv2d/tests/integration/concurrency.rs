//! Many threads calling the library at once, on different shapes and dtypes, for a while
//! (`CONV2D_STRESS_SECONDS`, default 2) and while the pool is resized, get exactly the
//! results of calls made one at a time; the pool survives callers that panic, and calls
//! from inside other rayon pools work.

use std::thread;

use crate::support::random_vec;
use conv2d::{Conv2dOptions, Conv2dPlan, ConvTranspose2dOptions, ConvTranspose2dPlan, Element};
use half::bf16;
use num_complex::Complex;
use rand::{rngs::StdRng, SeedableRng};

/// The forward and backward results of one conv2d and one conv_transpose2d problem.
fn run<T: Element>(seed: u64) -> Vec<Vec<T>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let s = seed as usize;
    let (cin, cout, groups) = (4 * (1 + s % 3), 8 * (1 + s % 2), 1 + s % 2 * 3);
    let opts = Conv2dOptions::default()
        .padding(1)
        .stride(1 + s % 2)
        .groups(groups);
    let plan = Conv2dPlan::new([2, cin, 19, 23], [cout, cin / groups, 3, 3], &opts).unwrap();
    let x = random_vec::<T>(plan.input_shape().iter().product(), &mut rng);
    let w = random_vec::<T>(plan.weight_shape().iter().product(), &mut rng);
    let gy = random_vec::<T>(plan.output_shape().iter().product(), &mut rng);
    let t_opts = ConvTranspose2dOptions::default()
        .stride(2)
        .padding(1)
        .groups(groups);
    let tplan =
        ConvTranspose2dPlan::new(plan.output_shape(), [cout, cin / groups, 3, 3], &t_opts).unwrap();
    vec![
        plan.forward(&x, &w, None).unwrap(),
        plan.backward_input(&gy, &w).unwrap(),
        plan.backward_weight(&x, &gy).unwrap(),
        tplan.forward(&gy, &w, None).unwrap(),
    ]
}

#[test]
fn concurrent_callers_get_the_results_of_sequential_calls() {
    let seeds: Vec<u64> = (0..8).collect();
    let f32_alone: Vec<_> = seeds.iter().map(|&s| run::<f32>(s)).collect();
    let bf16_alone: Vec<_> = seeds.iter().map(|&s| run::<bf16>(s)).collect();
    let c64_alone: Vec<_> = seeds.iter().map(|&s| run::<Complex<f64>>(s)).collect();
    thread::scope(|scope| {
        for round in 0..3 {
            for &seed in &seeds {
                let (a, b, c) = (&f32_alone, &bf16_alone, &c64_alone);
                scope.spawn(move || {
                    let i = seed as usize;
                    match (seed + round) % 3 {
                        0 => assert_eq!(run::<f32>(seed), a[i], "f32 seed {seed}"),
                        1 => assert_eq!(run::<bf16>(seed), b[i], "bf16 seed {seed}"),
                        _ => assert_eq!(run::<Complex<f64>>(seed), c[i], "c64 seed {seed}"),
                    }
                });
            }
        }
    });
}

/// How long the stress test runs: `CONV2D_STRESS_SECONDS`, default 2.
fn stress_duration() -> std::time::Duration {
    let seconds = std::env::var("CONV2D_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    std::time::Duration::from_secs_f64(seconds)
}

#[test]
fn callers_hammering_the_library_for_a_while_get_sequential_results() {
    let seeds: Vec<u64> = (0..6).collect();
    let f32_alone: Vec<_> = seeds.iter().map(|&s| run::<f32>(s)).collect();
    let c64_alone: Vec<_> = seeds.iter().map(|&s| run::<Complex<f32>>(s)).collect();
    let deadline = std::time::Instant::now() + stress_duration();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|scope| {
        // Meanwhile the pool is resized again and again: results do not depend on it.
        scope.spawn(move || {
            for threads in [1, 2, 3].into_iter().cycle() {
                if std::time::Instant::now() >= deadline {
                    break;
                }
                conv2d::set_num_threads(threads).unwrap();
                thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        for t in 0..8u64 {
            let (a, c, calls) = (&f32_alone, &c64_alone, &calls);
            scope.spawn(move || {
                // Each thread runs at least one of each dtype, however slow the machine.
                let mut i = t;
                while i < t + 2 || std::time::Instant::now() < deadline {
                    let seed = i % 6;
                    if i % 2 == 0 {
                        assert_eq!(run::<f32>(seed), a[seed as usize], "f32 seed {seed}");
                    } else {
                        assert_eq!(
                            run::<Complex<f32>>(seed),
                            c[seed as usize],
                            "c64 seed {seed}"
                        );
                    }
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    i += 1;
                }
            });
        }
    });
    let calls = calls.into_inner();
    eprintln!("{calls} concurrent runs of 4 convolutions each, all equal to sequential");
    assert!(calls >= 16);
}

#[test]
fn the_pool_survives_callers_that_panic() {
    let want = run::<f32>(3);
    for _ in 0..4 {
        let outcome = thread::spawn(|| {
            let y = run::<f32>(3);
            panic!("a caller panics after its call ({} results)", y.len());
        })
        .join();
        assert!(outcome.is_err());
        // A caller that panics while other threads are mid-call.
        thread::scope(|scope| {
            let busy = scope.spawn(|| run::<f32>(3));
            let panicking = scope.spawn(|| -> Vec<Vec<f32>> { panic!("caller panics mid-flight") });
            assert!(panicking.join().is_err());
            assert_eq!(busy.join().unwrap(), want);
        });
    }
    assert_eq!(run::<f32>(3), want);
}

#[test]
fn calls_from_inside_another_rayon_pool_and_nested_calls_work() {
    use rayon::prelude::*;
    let want: Vec<_> = (0..4).map(run::<f32>).collect();
    // Callers that are themselves rayon workers (the global pool), several at once.
    let got: Vec<_> = (0..16u64)
        .into_par_iter()
        .map(|i| run::<f32>(i % 4))
        .collect();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &want[i % 4], "call {i}");
    }
    // A call made while the caller's own rayon task runs another call beside it.
    let (a, b) = rayon::join(
        || run::<f32>(1),
        || rayon::join(|| run::<f32>(2), || run::<f32>(0)),
    );
    assert_eq!(
        (a, b.0, b.1),
        (want[1].clone(), want[2].clone(), want[0].clone())
    );
}
