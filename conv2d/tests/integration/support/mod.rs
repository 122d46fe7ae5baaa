//! Shared test support: the reference oracle, tolerances derived from it, random data and
//! the PyTorch fixture reader.

pub mod fixtures;
pub mod reference;

use conv2d::Element;
use rand::Rng;
use reference::{Acc, Tensor};

/// Unit roundoff of the type a value is stored in, and of the type it is summed in.
pub fn roundoffs<T: Element>() -> (f64, f64) {
    match T::DTYPE_NAME {
        "float16" => (2f64.powi(-11), 2f64.powi(-24)),
        "bfloat16" => (2f64.powi(-8), 2f64.powi(-24)),
        "float32" | "complex64" => (2f64.powi(-24), 2f64.powi(-24)),
        "float64" | "complex128" => (2f64.powi(-53), 2f64.powi(-53)),
        other => panic!("no roundoff known for {other}"),
    }
}

/// The precision partial sums are carried in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sums {
    /// In the accumulator type, rounded once at the end: what this library does.
    Accumulator,
    /// Possibly rounded to the storage type along the way: what PyTorch does for `f16` and
    /// `bf16` in several places (the gradient of a padding mode, `col2im` in transposed
    /// convolutions and input gradients). Equals `Accumulator` for the other types.
    Storage,
}

/// How far a computed element may stray from the exact one: one rounding of the result to
/// the storage type (twice, for two implementations that each round once), plus summation
/// error growing as `sqrt(terms)` times the magnitude of the summed terms (the probabilistic
/// bound of Higham & Mary; complex products add a few roundings each), plus the absolute
/// rounding error of results in the subnormal range.
pub fn tolerance<T: Element>(want: &Acc, sums: Sums) -> f64 {
    let (u_out, u_acc) = roundoffs::<T>();
    let u_sum = match sums {
        Sums::Accumulator => u_acc,
        Sums::Storage => u_out,
    };
    let complex = if T::IS_COMPLEX { 4.0 } else { 1.0 };
    2.0 * u_out * want.value.norm()
        + 4.0 * complex * ((want.terms + 1) as f64).sqrt() * u_sum * want.magnitude
        + 2.0 * smallest_subnormal::<T>()
}

/// Below the normal range rounding errors are absolute: half the smallest subnormal.
fn smallest_subnormal<T: Element>() -> f64 {
    match T::DTYPE_NAME {
        "float16" => 2f64.powi(-24),
        "bfloat16" => 2f64.powi(-133),
        "float32" | "complex64" => 2f64.powi(-149),
        _ => f64::from_bits(1),
    }
}

/// Checks `got` against the oracle element by element, with sums carried in the
/// accumulator type; the error names the first offender.
pub fn check_close<T: Element>(what: &str, got: &[T], want: &[Acc]) -> Result<(), String> {
    check_close_with(what, got, want, Sums::Accumulator)
}

/// [`check_close`] with the summation precision stated.
pub fn check_close_with<T: Element>(
    what: &str,
    got: &[T],
    want: &[Acc],
    sums: Sums,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} elements, expected {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.to_complex64();
        let err = (g - w.value).norm();
        let tol = tolerance::<T>(w, sums);
        if err.is_nan() || err > tol {
            return Err(format!(
                "{what}[{i}]: got {g}, expected {} (error {err:.3e} > tolerance {tol:.3e}; \
                 {} terms of total magnitude {:.3e})",
                w.value, w.terms, w.magnitude
            ));
        }
    }
    Ok(())
}

pub fn to_tensor<T: Element>(shape: &[usize], data: &[T]) -> Tensor {
    Tensor::new(shape, data.iter().map(|v| v.to_complex64()).collect())
}

/// `len` values uniform in (-1, 1), rounded to `T` (both parts for complex types).
pub fn random_vec<T: Element>(len: usize, rng: &mut impl Rng) -> Vec<T> {
    (0..len)
        .map(|_| T::from_parts(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
        .collect()
}
