//! The `ndarray` front-end: PyTorch's `F.conv2d` and `F.conv_transpose2d`, and their backward.
//!
//! Inputs are views of any layout and of rank 3 (unbatched) or 4 (batched); outputs are owned
//! arrays of the input's rank.

use std::borrow::Cow;

use ndarray::{Array, Array1, Array4, ArrayBase, ArrayView1, Data, Dimension, Ix4, IxDyn};

use crate::element::Element;
use crate::error::{fmt_shape, ConvError, Result};
use crate::options::{Conv2dOptions, ConvTranspose2dOptions, GradMask};
use crate::plan::{Conv2dPlan, ConvTranspose2dPlan};

/// Gradients from a backward call; a field is `None` when its [`GradMask`] entry was false.
///
/// # Example
/// ```
/// use conv2d::{conv2d_backward, Conv2dOptions, GradMask};
/// use ndarray::Array4;
///
/// let x = Array4::<f32>::ones((1, 2, 4, 4));
/// let w = Array4::<f32>::ones((3, 2, 3, 3));
/// let gy = Array4::<f32>::ones((1, 3, 2, 2));
/// let mask = GradMask { input: false, weight: true, bias: true };
/// let g = conv2d_backward(&x, &w, &gy, &Conv2dOptions::default(), mask)?;
/// assert!(g.input.is_none());
/// assert_eq!(g.weight.unwrap().dim(), (3, 2, 3, 3));
/// assert_eq!(g.bias.unwrap()[0], 4.0);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T, D: Dimension> {
    /// Gradient with respect to the input, of the input's shape and rank.
    pub input: Option<Array<T, D>>,
    /// Gradient with respect to the weight.
    pub weight: Option<Array4<T>>,
    /// Gradient with respect to the bias, of length `out_channels`.
    pub bias: Option<Array1<T>>,
}

/// PyTorch's `torch.nn.functional.conv2d`, plus `nn.Conv2d`'s `padding_mode` in `options`.
///
/// # Shapes
/// - input: `(N, Cin, H, W)` or unbatched `(Cin, H, W)`
/// - weight: `(Cout, Cin/groups, kH, kW)`
/// - bias: `(Cout)`
/// - output: `(N, Cout, Hout, Wout)` or `(Cout, Hout, Wout)`, with
///   `Hout = (H + pad_top + pad_bottom - dilation*(kH-1) - 1) / stride + 1`.
///
/// # Errors
/// An input of rank other than 3 or 4, and every invalid combination
/// [`Conv2dPlan::new`] lists, with a message naming the values.
///
/// # Example
/// ```
/// use conv2d::{conv2d, Conv2dOptions};
/// use ndarray::Array4;
///
/// // F.conv2d(inputs, filters, padding=1) from PyTorch's docs
/// let filters = Array4::<f32>::ones((8, 4, 3, 3));
/// let inputs = Array4::<f32>::ones((1, 4, 5, 5));
/// let out = conv2d(&inputs, &filters, None, &Conv2dOptions::default().padding(1))?;
/// assert_eq!(out.shape(), &[1, 8, 5, 5]);
/// assert_eq!(out[[0, 0, 2, 2]], 36.0);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
pub fn conv2d<T, S, SW, D>(
    input: &ArrayBase<S, D>,
    weight: &ArrayBase<SW, Ix4>,
    bias: Option<ArrayView1<'_, T>>,
    options: &Conv2dOptions,
) -> Result<Array<T, D>>
where
    T: Element,
    S: Data<Elem = T>,
    SW: Data<Elem = T>,
    D: Dimension,
{
    let (shape, rank) = batched_shape(input.shape(), "conv2d")?;
    let plan = Conv2dPlan::new(shape, dim4(weight), options)?;
    let bias = bias.map(|b| b.to_vec());
    let out = plan.forward(&contiguous(input), &contiguous(weight), bias.as_deref())?;
    shaped(out, plan.output_shape(), rank)
}

/// PyTorch's `torch.nn.functional.conv_transpose2d`, plus `nn.ConvTranspose2d.forward`'s
/// `output_size` in `options`.
///
/// # Shapes
/// - input: `(N, Cin, H, W)` or unbatched `(Cin, H, W)`
/// - weight: `(Cin, Cout/groups, kH, kW)`
/// - bias: `(Cout)`
/// - output: `(N, Cout, Hout, Wout)` or `(Cout, Hout, Wout)`, with
///   `Hout = (H-1)*stride - 2*padding + dilation*(kH-1) + output_padding + 1`.
///
/// # Errors
/// An input of rank other than 3 or 4, and every invalid combination
/// [`ConvTranspose2dPlan::new`] lists.
///
/// # Example
/// ```
/// use conv2d::{conv_transpose2d, ConvTranspose2dOptions};
/// use ndarray::{Array1, Array4};
///
/// let x = Array4::<f64>::ones((1, 16, 6, 6));
/// let w = Array4::<f64>::ones((16, 8, 3, 3));
/// let b = Array1::<f64>::zeros(8);
/// let opts = ConvTranspose2dOptions::default().stride(2).padding(1).output_size([12, 12]);
/// let y = conv_transpose2d(&x, &w, Some(b.view()), &opts)?;
/// assert_eq!(y.shape(), &[1, 8, 12, 12]);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
pub fn conv_transpose2d<T, S, SW, D>(
    input: &ArrayBase<S, D>,
    weight: &ArrayBase<SW, Ix4>,
    bias: Option<ArrayView1<'_, T>>,
    options: &ConvTranspose2dOptions,
) -> Result<Array<T, D>>
where
    T: Element,
    S: Data<Elem = T>,
    SW: Data<Elem = T>,
    D: Dimension,
{
    let (shape, rank) = batched_shape(input.shape(), "conv_transpose2d")?;
    let plan = ConvTranspose2dPlan::with_input_rank(shape, dim4(weight), options, rank)?;
    let bias = bias.map(|b| b.to_vec());
    let out = plan.forward(&contiguous(input), &contiguous(weight), bias.as_deref())?;
    shaped(out, plan.output_shape(), rank)
}

/// Gradients of [`conv2d`] with respect to its input, weight and bias, given the gradient
/// with respect to its output; only those `mask` asks for are computed (as
/// `aten::convolution_backward`). Complex types follow PyTorch's convention
/// (`grad_input` uses the conjugated weight, `grad_weight` the conjugated input).
///
/// # Shapes
/// `grad_output` has the shape `conv2d(input, weight)` returns; the gradients have the
/// shapes of input, weight and `(Cout)`.
///
/// # Errors
/// As [`conv2d`], and a `grad_output` whose shape is not the output's.
///
/// # Example
/// ```
/// use conv2d::{conv2d_backward, Conv2dOptions, GradMask};
/// use ndarray::Array3;
/// use ndarray::Array4;
///
/// let x = Array3::<f64>::ones((2, 5, 5)); // unbatched
/// let w = Array4::<f64>::ones((4, 2, 3, 3));
/// let gy = Array3::<f64>::ones((4, 3, 3));
/// let g = conv2d_backward(&x, &w, &gy, &Conv2dOptions::default(), GradMask::ALL)?;
/// let gx = g.input.unwrap();
/// assert_eq!(gx.dim(), (2, 5, 5));
/// assert_eq!(gx[[0, 2, 2]], 36.0); // 4 output channels x 9 taps reach the centre
/// # Ok::<(), conv2d::ConvError>(())
/// ```
pub fn conv2d_backward<T, S, SW, SG, D>(
    input: &ArrayBase<S, D>,
    weight: &ArrayBase<SW, Ix4>,
    grad_output: &ArrayBase<SG, D>,
    options: &Conv2dOptions,
    mask: GradMask,
) -> Result<Gradients<T, D>>
where
    T: Element,
    S: Data<Elem = T>,
    SW: Data<Elem = T>,
    SG: Data<Elem = T>,
    D: Dimension,
{
    let (shape, rank) = batched_shape(input.shape(), "conv2d")?;
    let plan = Conv2dPlan::new(shape, dim4(weight), options)?;
    check_grad_output(grad_output.shape(), plan.output_shape(), rank)?;
    let gy = contiguous(grad_output);
    gradients(
        mask,
        (shape, rank, plan.weight_shape()),
        || plan.backward_input(&gy, &contiguous(weight)),
        || plan.backward_weight(&contiguous(input), &gy),
        || plan.backward_bias(&gy),
    )
}

/// Gradients of [`conv_transpose2d`] with respect to its input, weight and bias, given the
/// gradient with respect to its output; only those `mask` asks for are computed.
///
/// # Shapes
/// `grad_output` has the shape `conv_transpose2d(input, weight)` returns (with the same
/// `output_size`); the gradients have the shapes of input, weight and `(Cout)`.
///
/// # Errors
/// As [`conv_transpose2d`], and a `grad_output` whose shape is not the output's.
///
/// # Example
/// ```
/// use conv2d::{conv_transpose2d_backward, ConvTranspose2dOptions, GradMask};
/// use ndarray::Array4;
///
/// let x = Array4::<f32>::ones((1, 2, 3, 3));
/// let w = Array4::<f32>::ones((2, 1, 2, 2));
/// let gy = Array4::<f32>::ones((1, 1, 6, 6));
/// let opts = ConvTranspose2dOptions::default().stride(2);
/// let g = conv_transpose2d_backward(&x, &w, &gy, &opts, GradMask::ALL)?;
/// assert_eq!(g.input.unwrap()[[0, 0, 1, 1]], 4.0);
/// assert_eq!(g.bias.unwrap()[0], 36.0);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
pub fn conv_transpose2d_backward<T, S, SW, SG, D>(
    input: &ArrayBase<S, D>,
    weight: &ArrayBase<SW, Ix4>,
    grad_output: &ArrayBase<SG, D>,
    options: &ConvTranspose2dOptions,
    mask: GradMask,
) -> Result<Gradients<T, D>>
where
    T: Element,
    S: Data<Elem = T>,
    SW: Data<Elem = T>,
    SG: Data<Elem = T>,
    D: Dimension,
{
    let (shape, rank) = batched_shape(input.shape(), "conv_transpose2d")?;
    let plan = ConvTranspose2dPlan::with_input_rank(shape, dim4(weight), options, rank)?;
    check_grad_output(grad_output.shape(), plan.output_shape(), rank)?;
    let gy = contiguous(grad_output);
    gradients(
        mask,
        (shape, rank, plan.weight_shape()),
        || plan.backward_input(&gy, &contiguous(weight)),
        || plan.backward_weight(&contiguous(input), &gy),
        || plan.backward_bias(&gy),
    )
}

/// Runs the gradient computations `mask` asks for and shapes their results: the input
/// gradient as the batched `input_shape` at `rank`, the weight gradient as `weight_shape`.
fn gradients<T, D: Dimension>(
    mask: GradMask,
    (input_shape, rank, weight_shape): ([usize; 4], usize, [usize; 4]),
    input: impl FnOnce() -> Result<Vec<T>>,
    weight: impl FnOnce() -> Result<Vec<T>>,
    bias: impl FnOnce() -> Result<Vec<T>>,
) -> Result<Gradients<T, D>> {
    Ok(Gradients {
        input: mask
            .input
            .then(|| shaped(input()?, input_shape, rank))
            .transpose()?,
        weight: mask
            .weight
            .then(|| shaped(weight()?, weight_shape, 4))
            .transpose()?,
        bias: mask.bias.then(|| bias().map(Array1::from)).transpose()?,
    })
}

/// The batched shape of an input of rank 3 or 4, and that rank.
pub(crate) fn batched_shape(shape: &[usize], op: &str) -> Result<([usize; 4], usize)> {
    match *shape {
        [c, h, w] => Ok(([1, c, h, w], 3)),
        [n, c, h, w] => Ok(([n, c, h, w], 4)),
        _ => Err(ConvError::shape(format!(
            "Expected 3D (unbatched) or 4D (batched) input to {op}, but got input of size: {}",
            fmt_shape(shape)
        ))),
    }
}

fn check_grad_output(got: &[usize], output: [usize; 4], rank: usize) -> Result<()> {
    let expected = &output[4 - rank..];
    if got != expected {
        return Err(ConvError::shape(format!(
            "grad_output of size {} does not match the output size {}",
            fmt_shape(got),
            fmt_shape(expected)
        )));
    }
    Ok(())
}

fn dim4<S: Data>(a: &ArrayBase<S, Ix4>) -> [usize; 4] {
    let (a0, a1, a2, a3) = a.dim();
    [a0, a1, a2, a3]
}

/// The elements in row-major (NCHW) order: borrowed when already so laid out.
fn contiguous<T: Element, S: Data<Elem = T>, D: Dimension>(a: &ArrayBase<S, D>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// Wraps a row-major buffer of the batched `shape` as an array of `rank` dimensions.
fn shaped<T, D: Dimension>(data: Vec<T>, shape: [usize; 4], rank: usize) -> Result<Array<T, D>> {
    Array::from_shape_vec(IxDyn(&shape[4 - rank..]), data)
        .and_then(|a| a.into_dimensionality::<D>())
        .map_err(|e| {
            ConvError::shape(format!(
                "cannot shape the result as {}: {e}",
                fmt_shape(&shape[4 - rank..])
            ))
        })
}
