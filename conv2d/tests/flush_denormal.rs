//! `set_flush_denormal`: off, subnormal numbers are exact values; on, every pass of every
//! algorithm gives bitwise the results of the same call on data whose subnormal elements
//! were zeroed, with subnormal results zeroed. Alone in its own test binary, as the switch
//! is global.

use conv2d::{Algorithm, Conv2dOptions, Conv2dPlan, Element};
use half::bf16;
use num_complex::Complex;

/// Every pass of `plan` on (x, w, gy): forward with bias, both gradients, bias gradient.
fn passes<T: Element>(plan: &Conv2dPlan, x: &[T], w: &[T], b: &[T], gy: &[T]) -> Vec<Vec<T>> {
    vec![
        plan.forward(x, w, Some(b)).unwrap(),
        plan.backward_input(gy, w).unwrap(),
        plan.backward_weight(x, gy).unwrap(),
        plan.backward_bias(gy).unwrap(),
    ]
}

/// Data of which about a third is subnormal (`tiny` scale), the rest ordinary.
fn data<T: Element>(len: usize, seed: usize, tiny: f64) -> Vec<T> {
    (0..len)
        .map(|i| {
            let k = (i * 7919 + seed * 104729) % 1000;
            let v = (k as f64 / 500.0 - 1.0) * if k.is_multiple_of(3) { tiny } else { 1.0 };
            T::from_parts(v, -v / 2.0)
        })
        .collect()
}

fn zero_subnormals<T: Element>(values: &[T]) -> Vec<T> {
    values
        .iter()
        .map(|&v| {
            let c = v.to_complex64();
            let flush = |p: f64, min: f64| if p.abs() < min { 0.0 * p.signum() } else { p };
            let min = if T::DTYPE_NAME == "float64" || T::DTYPE_NAME == "complex128" {
                f64::MIN_POSITIVE
            } else {
                f32::MIN_POSITIVE as f64
            };
            T::from_parts(flush(c.re, min), flush(c.im, min))
        })
        .collect()
}

fn bits<T: Element>(values: &[Vec<T>]) -> Vec<Vec<Complex<f64>>> {
    values
        .iter()
        .map(|v| v.iter().map(|x| x.to_complex64()).collect())
        .collect()
}

fn check<T: Element>(tiny: f64) {
    for (x_shape, w_shape, groups) in [
        ([2, 8, 9, 7], [16, 8, 3, 3], 1),
        ([1, 6, 8, 8], [6, 1, 3, 3], 6),
        ([1, 4, 5, 6], [3, 4, 1, 1], 1),
    ] {
        let opts = Conv2dOptions::default().padding(1).groups(groups);
        let plan = Conv2dPlan::new(x_shape, w_shape, &opts).unwrap();
        let x = data::<T>(x_shape.iter().product(), 1, tiny);
        let w = data::<T>(w_shape.iter().product(), 2, tiny);
        let b = data::<T>(w_shape[0], 3, tiny);
        let gy = data::<T>(plan.output_shape().iter().product(), 4, tiny);
        for algorithm in Algorithm::ALL {
            let plan = plan.clone().with_algorithm(algorithm);
            conv2d::set_flush_denormal(false);
            let exact = passes(&plan, &x, &w, &b, &gy);
            let (xf, wf, bf, gyf) = (
                zero_subnormals(&x),
                zero_subnormals(&w),
                zero_subnormals(&b),
                zero_subnormals(&gy),
            );
            let want: Vec<Vec<T>> = passes(&plan, &xf, &wf, &bf, &gyf)
                .iter()
                .map(|r| zero_subnormals(r))
                .collect();
            conv2d::set_flush_denormal(true);
            let flushed = passes(&plan, &x, &w, &b, &gy);
            conv2d::set_flush_denormal(false);
            let what = format!("{} {x_shape:?} {}", T::DTYPE_NAME, algorithm.name());
            let (flushed, want) = (bits(&flushed), bits(&want));
            for (pass, (f, w)) in flushed.iter().zip(&want).enumerate() {
                let first = f.iter().zip(w).position(|(a, b)| a != b);
                assert_eq!(first, None, "{what}, pass {pass}: first difference");
            }
            assert_eq!(exact.len(), flushed.len());
        }
    }
    // An input of subnormal numbers only: exact, a subnormal result; flushed, zero.
    let plan = Conv2dPlan::new([1, 1, 2, 2], [1, 1, 1, 1], &Conv2dOptions::default()).unwrap();
    let x = vec![T::from_parts(tiny, tiny); 4];
    let w = [T::from_parts(1.0, 0.0)];
    let exact = plan.forward(&x, &w, None).unwrap();
    assert!(
        exact.iter().all(|v| v.to_complex64().norm() > 0.0),
        "{}",
        T::DTYPE_NAME
    );
    conv2d::set_flush_denormal(true);
    let flushed = plan.forward(&x, &w, None).unwrap();
    conv2d::set_flush_denormal(false);
    assert!(
        flushed.iter().all(|v| v.to_complex64().norm() == 0.0),
        "{}",
        T::DTYPE_NAME
    );
}

#[test]
fn flushing_equals_computing_on_zeroed_subnormals() {
    assert!(!conv2d::flush_denormal());
    check::<f32>(1e-39);
    check::<f64>(1e-310);
    check::<bf16>(1e-39);
    check::<Complex<f32>>(1e-39);
}
