//! Shared test support: seeded random tensors and tolerances derived from floating-point
//! rounding.
#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor};

/// A small seeded generator (SplitMix64), so that every run draws the same cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Uniform in (-1, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// A CPU tensor of `shape` with values uniform in (-1, 1), rounded to `dtype`.
    pub fn tensor(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let len = shape.iter().product();
        let values: Vec<f64> = (0..len).map(|_| self.unit()).collect();
        Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)
    }
}

/// Unit roundoff of the storage type and of the type sums are carried in (`f32` for half
/// types, as `conv2d` does).
pub fn roundoffs(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (2f64.powi(-11), 2f64.powi(-24)),
        DType::BF16 => (2f64.powi(-8), 2f64.powi(-24)),
        DType::F32 => (2f64.powi(-24), 2f64.powi(-24)),
        DType::F64 => (2f64.powi(-53), 2f64.powi(-53)),
        other => panic!("no roundoff for {other:?}"),
    }
}

/// Half the smallest subnormal of `dtype`: the absolute rounding error below the normal range.
fn tiny(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2f64.powi(-25),
        DType::BF16 => 2f64.powi(-134),
        DType::F32 => 2f64.powi(-150),
        _ => f64::from_bits(1),
    }
}

/// How far a computed sum of `terms` products may stray from the exact `want`, when the
/// absolute values of its terms add up to `magnitude`: one rounding of the result to the
/// storage type, plus summation error `4 * sqrt(terms + 1) * u * magnitude` (the
/// probabilistic bound of Higham & Mary, with a factor of 4 for blocked and fused sums).
pub fn tolerance(dtype: DType, want: f64, magnitude: f64, terms: usize) -> f64 {
    let (u_out, u_sum) = roundoffs(dtype);
    2.0 * u_out * want.abs()
        + 4.0 * ((terms + 1) as f64).sqrt() * u_sum * magnitude
        + 2.0 * tiny(dtype)
}

/// The elements of a tensor as `f64`, in row-major order.
pub fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// Checks `got` element by element against the exact `want`, with the tolerance of
/// `got`'s dtype for sums of at most `terms` terms whose absolute values add up to
/// `magnitude`; the error names the first offender.
pub fn check_close(
    what: &str,
    got: &Tensor,
    want: &Tensor,
    magnitude: &Tensor,
    terms: usize,
) -> std::result::Result<(), String> {
    if got.dims() != want.dims() {
        return Err(format!(
            "{what}: shape {:?}, expected {:?}",
            got.dims(),
            want.dims()
        ));
    }
    let e = |e: candle_core::Error| format!("{what}: {e}");
    let (g, w, m) = (
        values(got).map_err(e)?,
        values(want).map_err(e)?,
        values(magnitude).map_err(e)?,
    );
    for (i, ((g, w), m)) in g.iter().zip(&w).zip(&m).enumerate() {
        let err = (g - w).abs();
        let tol = tolerance(got.dtype(), *w, *m, terms);
        if err.is_nan() || err > tol {
            return Err(format!(
                "{what}[{i}] ({:?}): got {g}, expected {w} (error {err:.3e} > tolerance \
                 {tol:.3e}; at most {terms} terms of total magnitude {m:.3e})",
                got.dtype()
            ));
        }
    }
    Ok(())
}

/// Checks that two tensors hold the same bits.
pub fn check_identical(what: &str, a: &Tensor, b: &Tensor) -> std::result::Result<(), String> {
    let e = |e: candle_core::Error| format!("{what}: {e}");
    let (va, vb) = (values(a).map_err(e)?, values(b).map_err(e)?);
    if a.dims() != b.dims() || va.iter().zip(&vb).any(|(x, y)| x.to_bits() != y.to_bits()) {
        return Err(format!("{what}: {:?} and {:?} differ", a.dims(), b.dims()));
    }
    Ok(())
}
