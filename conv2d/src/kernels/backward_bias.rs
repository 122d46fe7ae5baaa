//! Gradient with respect to the bias: the sum of the output gradient over batch and plane.

use super::rows::sum;
use crate::element::Accumulator;
use crate::threading::for_each_chunk;

/// `grad_b[c] = sum_{n, y, x} grad_out[n, c, y, x]` for `grad_out` of `batch` images with
/// `grad_b.len()` channels, overwriting `grad_b`.
pub(crate) fn backward_bias<A: Accumulator>(grad_out: &[A], batch: usize, grad_b: &mut [A]) {
    let channels = grad_b.len();
    let plane = match batch * channels {
        0 => 0,
        images => grad_out.len() / images,
    };
    for_each_chunk(grad_b, 1, |c, gb| {
        let gb = &mut gb[0];
        let mut acc = A::ZERO;
        for n in 0..batch {
            acc += sum(&grad_out[(n * channels + c) * plane..][..plane]);
        }
        *gb = acc;
    });
}
