//! [`Algorithm::DirectRows`](crate::Algorithm::DirectRows): the plain row-by-row kernels, one
//! verb per file. Each task owns a band of rows (or one weight's taps) and adds one tap at a
//! time along a row.

mod backward_input;
mod backward_weight;
mod forward;

pub(crate) use backward_input::backward_input;
pub(crate) use backward_weight::backward_weight;
pub(crate) use forward::forward;
