//! PyTorch's default initialisation of convolution parameters.

use ndarray::{Array1, Array4};
use rand::Rng;

use crate::element::Element;
use crate::error::{try_filled, ConvError, Result};
use crate::geometry::checked_product;

/// Weight of `shape` and optional bias of `bias_len`, both drawn from `U(-b, b)` with
/// `b = 1/sqrt(shape[1]*shape[2]*shape[3])`: what `kaiming_uniform_(a=sqrt(5))` and
/// `reset_parameters` give, i.e. `b = sqrt(groups / (channels * kh * kw))`. Complex values
/// draw their real and imaginary parts independently, as PyTorch's `uniform_` does.
pub(super) fn uniform_parameters<T: Element>(
    shape: [usize; 4],
    bias_len: Option<usize>,
    rng: &mut impl Rng,
) -> Result<(Array4<T>, Option<Array1<T>>)> {
    let fan_in = checked_product(&shape[1..], "the fan-in")?;
    let bound = if fan_in == 0 {
        0.0
    } else {
        1.0 / (fan_in as f64).sqrt()
    };
    let mut draw = |len: usize| -> Result<Vec<T>> {
        let mut v = try_filled(len, T::ZERO)?;
        for x in &mut v {
            let re = (2.0 * rng.random::<f64>() - 1.0) * bound;
            let im = if T::IS_COMPLEX {
                (2.0 * rng.random::<f64>() - 1.0) * bound
            } else {
                0.0
            };
            *x = T::from_parts(re, im);
        }
        Ok(v)
    };
    let weight =
        Array4::from_shape_vec(shape, draw(checked_product(&shape, "the weight length")?)?)
            .map_err(|e| ConvError::shape(format!("cannot shape the weight: {e}")))?;
    let bias = bias_len
        .map(|len| draw(len).map(Array1::from))
        .transpose()?;
    Ok((weight, bias))
}
