//! The portable kernels, written once over [`Accumulator`](crate::element::Accumulator).
//!
//! One verb per file, all in conv2d orientation (see [`Geometry`](crate::geometry::Geometry)):
//! a transposed convolution runs `backward_input` as its forward pass. Each output element is
//! summed by one thread in a fixed order, so results do not depend on the thread count.

mod backward_bias;
mod backward_input;
mod backward_weight;
mod forward;
mod rows;

pub(crate) use backward_bias::backward_bias;
pub(crate) use backward_input::backward_input;
pub(crate) use backward_weight::backward_weight;
pub(crate) use forward::forward;

use rayon::prelude::*;

use crate::element::Accumulator;

/// `out[n, c, ..] += bias[c]` for an NCHW `out` whose planes hold `plane` elements.
pub(crate) fn add_bias<A: Accumulator>(out: &mut [A], bias: &[A], plane: usize) {
    if plane == 0 || bias.is_empty() {
        return;
    }
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(p, values)| {
            let b = bias[p % bias.len()];
            for v in values {
                *v += b;
            }
        });
}
