//! Many threads calling the library at once, on different shapes and dtypes, get exactly
//! the results of calls made one at a time.

mod support;

use std::thread;

use conv2d::{Conv2dOptions, Conv2dPlan, ConvTranspose2dOptions, ConvTranspose2dPlan, Element};
use half::bf16;
use num_complex::Complex;
use rand::{rngs::StdRng, SeedableRng};
use support::random_vec;

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
