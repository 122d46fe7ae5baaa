//! Flushing subnormal numbers to zero: the counterpart of `torch.set_flush_denormal`.
//!
//! Subnormal (denormal) operands make x86 CPUs take a slow microcode path on every
//! multiplication that meets them: 30 to 145 times slower calls on this library's kernels
//! (`cargo run --release -p conv2d-bench --bin denormals`), as in PyTorch. The CPU's own
//! flush-to-zero modes cannot be switched on from Rust code without undefined behaviour (the
//! compiler assumes the default floating-point environment), so the flush is done on the
//! data: subnormal operands are read as zero, and subnormal results are written as zero.

use std::any::TypeId;
use std::borrow::Cow;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::element::{Accumulator, Element};
use crate::error::{try_filled, Result};
use crate::spare::recycle;

static FLUSH: AtomicBool = AtomicBool::new(false);

/// Treats subnormal numbers as zero from now on, in every thread, when `on` (off by
/// default): the counterpart of `torch.set_flush_denormal(True)`. Returns `true`: it is
/// supported on every CPU.
///
/// With it on, every subnormal element of an input, weight, bias or output gradient is
/// read as a zero of its sign, and every subnormal element of a result is written as one.
/// This keeps calls on data with subnormal numbers as fast as on other data, at the price
/// of exactness for values below the normal range (`f32::MIN_POSITIVE`, about 1.2e-38, for
/// `f32`, `bf16` and `Complex<f32>`; 2.2e-308 for `f64`; `f16` inputs become normal `f32`
/// numbers and are never flushed). Unlike the CPU's modes, products of two normal numbers
/// that fall below the normal range inside a sum are not flushed. With it off, subnormal
/// values are exact, except on CPUs with AMX-BF16, whose matrix unit runs the tiled `bf16`
/// forward pass and input gradient reading subnormal `bf16` operands and sums as zero (as
/// PyTorch's kernels there).
///
/// # Example
/// ```
/// use conv2d::{conv2d, set_flush_denormal, Conv2dOptions};
/// use ndarray::Array4;
///
/// let x = Array4::<f32>::from_elem((1, 1, 2, 2), 1e-39); // subnormal
/// let w = Array4::<f32>::ones((1, 1, 1, 1));
/// let exact = conv2d(&x, &w, None, &Conv2dOptions::default())?;
/// assert_eq!(exact[[0, 0, 0, 0]], 1e-39);
/// assert!(set_flush_denormal(true));
/// let flushed = conv2d(&x, &w, None, &Conv2dOptions::default())?;
/// set_flush_denormal(false);
/// assert_eq!(flushed[[0, 0, 0, 0]], 0.0);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
pub fn set_flush_denormal(on: bool) -> bool {
    FLUSH.store(on, Ordering::Relaxed);
    true
}

/// Whether subnormal numbers are flushed to zero ([`set_flush_denormal`]).
///
/// # Example
/// ```
/// assert!(!conv2d::flush_denormal()); // off unless switched on
/// ```
pub fn flush_denormal() -> bool {
    FLUSH.load(Ordering::Relaxed)
}

fn is_flushed<A: Accumulator>(v: A) -> bool {
    v.is_finite() && v.flush_subnormal() != v
}

/// An operand in the accumulator type, borrowed or in a buffer of its own. A buffer that a
/// half-precision operand was widened into goes back to the calling thread's spare buffers
/// when the operand is dropped (see [`recycle`]); other buffers are freed.
pub(crate) struct Operand<'a, A: Clone + 'static> {
    values: Cow<'a, [A]>,
    widened: bool,
}

impl<A: Clone> Deref for Operand<'_, A> {
    type Target = [A];

    fn deref(&self) -> &[A] {
        &self.values
    }
}

impl<A: Clone> Operand<'_, A> {
    /// An operand in a buffer of its own, freed when dropped.
    pub(crate) fn owned(values: Vec<A>) -> Self {
        Self {
            values: Cow::Owned(values),
            widened: false,
        }
    }
}

impl<A: Clone + 'static> Drop for Operand<'_, A> {
    fn drop(&mut self) {
        if let (true, Cow::Owned(buffer)) = (self.widened, std::mem::take(&mut self.values)) {
            recycle(buffer);
        }
    }
}

/// An operand in the accumulator type, with subnormal elements flushed when the flush is
/// on (copied only if there are any).
pub(crate) fn operand<T: Element>(values: &[T]) -> Result<Operand<'_, T::Acc>> {
    let acc = Operand {
        values: T::acc_slice(values)?,
        // Types summed in a wider accumulator are widened into a spare buffer.
        widened: TypeId::of::<T>() != TypeId::of::<T::Acc>(),
    };
    if !flush_denormal() || !acc.iter().any(|&v| is_flushed(v)) {
        return Ok(acc);
    }
    let mut owned = try_filled(acc.len(), <T::Acc as Accumulator>::ZERO)?;
    for (o, &v) in owned.iter_mut().zip(acc.iter()) {
        *o = v.flush_subnormal();
    }
    Ok(Operand::owned(owned))
}

/// Flushes subnormal results when the flush is on.
pub(crate) fn flush_results<A: Accumulator>(values: &mut [A]) {
    if flush_denormal() {
        for v in values {
            *v = v.flush_subnormal();
        }
    }
}
