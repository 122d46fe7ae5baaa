//! Validated, reusable descriptions of one convolution, run on contiguous NCHW slices.
//!
//! This is the zero-copy layer frameworks call: shapes and options are checked once when a
//! plan is built, then each run only checks buffer lengths.

mod conv2d;
mod conv_transpose2d;

pub use conv2d::Conv2dPlan;
pub use conv_transpose2d::ConvTranspose2dPlan;

use crate::denormal::{flush_results, operand, Operand};
use crate::element::{Accumulator, Element};
use crate::error::{fmt_shape, ConvError, ErrorKind, Result};
use crate::options::Pair;

/// Runs `compute` on an accumulator-typed view of `out` and writes the results back, with
/// subnormal results flushed when [`set_flush_denormal`](crate::set_flush_denormal) is on.
fn fill<T: Element>(
    out: &mut [T],
    compute: impl FnOnce(&mut [T::Acc]) -> Result<()>,
) -> Result<()> {
    T::fill_from_acc(out, |acc| {
        compute(acc)?;
        flush_results(acc);
        Ok(())
    })
}

/// Checks the arguments PyTorch rejects before it looks at shapes.
fn check_positive(stride: Pair, dilation: Pair, groups: usize) -> Result<()> {
    if stride.h == 0 || stride.w == 0 {
        return Err(ConvError::invalid(format!(
            "non-positive stride is not supported, but got stride={stride}"
        )));
    }
    if dilation.h == 0 || dilation.w == 0 {
        return Err(ConvError::invalid(format!(
            "dilation should be greater than zero, but got dilation={dilation}"
        )));
    }
    if groups == 0 {
        return Err(ConvError::invalid(
            "non-positive groups is not supported, but got groups=0",
        ));
    }
    Ok(())
}

/// Checks that dimension 0 of the weight is a positive multiple of `groups`.
fn check_weight_groups(weight_shape: [usize; 4], groups: usize) -> Result<()> {
    let problem = if weight_shape[0] < groups {
        "be at least"
    } else if !weight_shape[0].is_multiple_of(groups) {
        "be divisible by"
    } else {
        return Ok(());
    };
    Err(ConvError::shape(format!(
        "Given groups={groups}, expected weight to {problem} {groups} at dimension 0, but got \
         weight of size {} instead",
        fmt_shape(&weight_shape)
    )))
}

/// Checks that the kernel has at least one tap.
fn check_kernel_size(kh: usize, kw: usize) -> Result<()> {
    if kh == 0 || kw == 0 {
        return Err(ConvError::invalid(format!(
            "kernel size should be greater than zero, but got kernel_height: {kh} \
             kernel_width: {kw}"
        )));
    }
    Ok(())
}

/// Checks that a non-empty batch of channels has non-empty images, as PyTorch's backend
/// selection does.
fn check_image_not_empty(input_shape: [usize; 4]) -> Result<()> {
    let [n, c, h, w] = input_shape;
    if n > 0 && c > 0 && (h == 0 || w == 0) {
        return Err(ConvError::shape(format!(
            "Only zero batch or zero channel inputs are supported, but got input shape: {}",
            fmt_shape(&input_shape)
        )));
    }
    Ok(())
}

fn check_bias(bias_len: Option<usize>, expected: usize, weight_shape: [usize; 4]) -> Result<()> {
    match bias_len {
        Some(len) if len != expected => Err(ConvError::shape(format!(
            "Given weight of size {}, expected bias to be 1-dimensional with {expected} elements, \
             but got bias of size [{len}] instead",
            fmt_shape(&weight_shape)
        ))),
        _ => Ok(()),
    }
}

/// Checks that a caller's slice has the length its shape implies.
fn check_len(what: &str, len: usize, shape: [usize; 4]) -> Result<()> {
    let expected: usize = shape.iter().product();
    if len != expected {
        return Err(ConvError::new(
            ErrorKind::BufferLength,
            format!(
                "{what} has {len} elements, but its shape {} needs {expected}",
                fmt_shape(&shape)
            ),
        ));
    }
    Ok(())
}

/// The weight in the accumulator type, conjugated when `conjugate` and the type is complex
/// (gradients of complex convolutions use the conjugated weight, as PyTorch's autograd does).
fn prepared_weight<T: Element>(weight: &[T], conjugate: bool) -> Result<Operand<'_, T::Acc>> {
    let acc = operand(weight)?;
    if conjugate && T::IS_COMPLEX {
        Ok(Operand::owned(acc.iter().map(|w| w.conj()).collect()))
    } else {
        Ok(acc)
    }
}

/// Conjugates in place (a no-op for real types).
fn conjugate_in_place<A: Accumulator>(values: &mut [A]) {
    for v in values {
        *v = v.conj();
    }
}
