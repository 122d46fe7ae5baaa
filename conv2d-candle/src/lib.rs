//! # conv2d-candle
//!
//! The [`conv2d`](https://docs.rs/conv2d) crate's PyTorch-exact convolutions on
//! [candle](https://docs.rs/candle-core) tensors, forward and backward through candle's
//! autograd.
//!
//! [`conv2d()`] and [`conv_transpose2d()`] take every argument of PyTorch's
//! `F.conv2d`/`F.conv_transpose2d`, per-axis where PyTorch allows it: asymmetric stride,
//! padding and dilation, `'same'`/`'valid'`, groups (also for transposed convolutions),
//! `output_padding`, `output_size`, and `nn.Conv2d`'s padding modes. candle's own
//! `Tensor::conv2d` takes one number per option and `conv_transpose2d` has no groups.
//! [`conv2d_backward`] and [`conv_transpose2d_backward`] give the gradients directly, for
//! code that writes its own backward pass.
//!
//! Inputs are `(N, C, H, W)` or unbatched `(C, H, W)` tensors on the CPU, of dtype `F32`,
//! `F64`, `F16` or `BF16` (half types are summed in `f32` and rounded once); any layout is
//! accepted (non-contiguous ones are copied first). Results are candle tensors of the input's
//! rank and dtype.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use conv2d_candle::{conv2d, Conv2dOptions, Same};
//!
//! let x = Var::ones((1, 4, 5, 5), candle_core::DType::F32, &Device::Cpu)?;
//! let w = Var::ones((8, 4, 2, 2), candle_core::DType::F32, &Device::Cpu)?;
//! let y = conv2d(&x, &w, None, &Conv2dOptions::default().padding(Same))?;
//! assert_eq!(y.dims(), &[1, 8, 5, 5]); // 'same' with an even kernel pads one extra at the end
//! let grads = y.sum_all()?.backward()?; // runs conv2d's backward kernels
//! assert_eq!(grads.get(&w).unwrap().dims(), &[8, 4, 2, 2]);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! ## How it plugs into candle
//! Each call validates its shapes and options once into a `conv2d` plan, then applies a
//! candle custom op ([`candle_core::CustomOp2`], or [`candle_core::CustomOp3`] with a bias)
//! whose CPU forward calls the plan. Its backward pass returns the input and weight
//! gradients as further custom ops on the same plan, so they run `conv2d`'s kernels too, and
//! are computed only for tensors that track gradients. The bias is an operand of the op
//! rather than a candle `broadcast_add`: `conv2d` adds it inside the kernel (one rounding for
//! half types, no extra pass over the output) and sums its gradient in `f32`, where candle's
//! sum of an `F16`/`BF16` tensor adds in the half type.
//!
//! Gradients of gradients run our kernels as well: every gradient of a convolution is a
//! bilinear map whose adjoints are the others. candle detaches the incoming gradient at each
//! node of a backward pass unless `CANDLE_GRAD_DO_NOT_DETACH=1`; set it to keep the whole
//! backward graph.
//!
//! ## Threads and errors
//! The kernels run on `conv2d`'s thread pool, sized by [`set_num_threads`] or the
//! environment variable `CONV2D_NUM_THREADS` (candle's own ops use rayon's global pool,
//! `RAYON_NUM_THREADS`). Every invalid argument returns a [`candle_core::Error`] whose
//! message is `conv2d`'s, prefixed with the op (`conv2d: non-positive stride ...`); nothing
//! panics.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod op;
mod storage;

use std::sync::Arc;

use candle_core::{bail, Result, Tensor};
pub use conv2d::{
    num_threads, set_num_threads, Conv2dOptions, ConvTranspose2dOptions, GradMask, Padding,
    PaddingMode, Pair, Same, Valid,
};
use conv2d::{Conv2dPlan, ConvError, ConvTranspose2dPlan};

use op::{ConvOp, Plan, Role};

/// PyTorch's `torch.nn.functional.conv2d` on candle tensors, plus `nn.Conv2d`'s
/// `padding_mode` in `options`; differentiable with respect to all three tensors.
///
/// # Shapes
/// - input: `(N, Cin, H, W)` or unbatched `(Cin, H, W)`
/// - weight: `(Cout, Cin/groups, kH, kW)`
/// - bias: `(Cout)`
/// - output: `(N, Cout, Hout, Wout)` or `(Cout, Hout, Wout)`, with
///   `Hout = (H + pad_top + pad_bottom - dilation*(kH-1) - 1) / stride + 1`.
///
/// # Errors
/// An input of rank other than 3 or 4, a weight of rank other than 4, a bias that is not
/// `(Cout)`, tensors not on the CPU, dtypes that differ or are not `F32`, `F64`, `F16` or
/// `BF16`, and every invalid combination `conv2d::Conv2dPlan::new` lists (zero stride,
/// groups not dividing the channels, a kernel larger than the padded input, ...).
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// use conv2d_candle::{conv2d, Conv2dOptions, PaddingMode};
///
/// // nn.Conv2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1))
/// let x = Tensor::zeros((20, 16, 50, 100), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::zeros((33, 16, 3, 5), candle_core::DType::F32, &Device::Cpu)?;
/// let b = Tensor::zeros(33, candle_core::DType::F32, &Device::Cpu)?;
/// let opts = Conv2dOptions::default().stride((2, 1)).padding((4, 2)).dilation((3, 1));
/// assert_eq!(conv2d(&x, &w, Some(&b), &opts)?.dims(), &[20, 33, 26, 100]);
///
/// // padding modes, unbatched input
/// let img = Tensor::ones((1, 4, 4), candle_core::DType::F64, &Device::Cpu)?;
/// let k = Tensor::ones((1, 1, 3, 3), candle_core::DType::F64, &Device::Cpu)?;
/// let opts = Conv2dOptions::default().padding(1).padding_mode(PaddingMode::Replicate);
/// let y = conv2d(&img, &k, None, &opts)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f64>()?, vec![9.0; 16]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &Conv2dOptions,
) -> Result<Tensor> {
    let (x, unbatched) = batched(input, "conv2d")?;
    let plan = conv_plan(&x, weight, options)?;
    let y = forward(Plan::Conv(plan), &x, weight, bias, "conv2d")?;
    unbatch(y, unbatched)
}

/// PyTorch's `torch.nn.functional.conv_transpose2d` on candle tensors, plus
/// `nn.ConvTranspose2d.forward`'s `output_size` in `options`; differentiable with respect to
/// all three tensors.
///
/// # Shapes
/// - input: `(N, Cin, H, W)` or unbatched `(Cin, H, W)`
/// - weight: `(Cin, Cout/groups, kH, kW)`
/// - bias: `(Cout)`
/// - output: `(N, Cout, Hout, Wout)` or `(Cout, Hout, Wout)`, with
///   `Hout = (H-1)*stride - 2*padding + dilation*(kH-1) + output_padding + 1`.
///
/// # Errors
/// An input of rank other than 3 or 4, a weight of rank other than 4, a bias that is not
/// `(Cout)`, tensors not on the CPU, dtypes that differ or are not `F32`, `F64`, `F16` or
/// `BF16`, an `output_size` of other than 2 numbers or the input's rank, and every invalid
/// combination `conv2d::ConvTranspose2dPlan::new` lists (`output_padding` not smaller than
/// stride or dilation, an `output_size` out of range, ...).
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use conv2d_candle::{conv_transpose2d, ConvTranspose2dOptions};
///
/// let x = Tensor::ones((1, 16, 6, 6), DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((16, 4, 3, 3), DType::F32, &Device::Cpu)?; // groups=2: 8 channels out
/// let opts = ConvTranspose2dOptions::default().stride(2).padding(1).groups(2).output_size([12, 12]);
/// let y = conv_transpose2d(&x, &w, None, &opts)?;
/// assert_eq!(y.dims(), &[1, 8, 12, 12]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv_transpose2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &ConvTranspose2dOptions,
) -> Result<Tensor> {
    let (x, unbatched) = batched(input, "conv_transpose2d")?;
    let plan = transpose_plan(&x, weight, options, unbatched)?;
    let y = forward(Plan::Transpose(plan), &x, weight, bias, "conv_transpose2d")?;
    unbatch(y, unbatched)
}

/// Gradients from [`conv2d_backward`] or [`conv_transpose2d_backward`]; a field is `None`
/// when its [`GradMask`] entry was false.
///
/// # Shapes
/// `input` has the input's shape and rank, `weight` the weight's, `bias` is `(Cout)`.
///
/// # Errors
/// A plain value; the functions that return it list their errors.
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use conv2d_candle::{conv2d_backward, Conv2dOptions, GradMask};
///
/// let x = Tensor::ones((1, 2, 4, 4), DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((3, 2, 3, 3), DType::F32, &Device::Cpu)?;
/// let gy = Tensor::ones((1, 3, 2, 2), DType::F32, &Device::Cpu)?;
/// let mask = GradMask { input: false, weight: true, bias: true };
/// let g = conv2d_backward(&x, &w, &gy, &Conv2dOptions::default(), mask)?;
/// assert!(g.input.is_none());
/// assert_eq!(g.bias.unwrap().to_vec1::<f32>()?, vec![4.0; 3]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Gradients {
    /// Gradient with respect to the input.
    pub input: Option<Tensor>,
    /// Gradient with respect to the weight.
    pub weight: Option<Tensor>,
    /// Gradient with respect to the bias.
    pub bias: Option<Tensor>,
}

/// The gradients of [`conv2d()`] given the gradient of its output, as
/// `aten::convolution_backward` with its output mask; what candle's autograd calls, for code
/// that writes its own backward pass.
///
/// The results are candle tensors built by custom ops, so they are differentiable again.
///
/// # Shapes
/// `input`, `weight` as for [`conv2d()`]; `grad_output` has the output's shape. The
/// gradients have the shapes of what they differentiate.
///
/// # Errors
/// As [`conv2d()`], and a `grad_output` whose shape is not the output's.
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use conv2d_candle::{conv2d_backward, Conv2dOptions, GradMask};
///
/// let x = Tensor::ones((1, 1, 3, 3), DType::F64, &Device::Cpu)?;
/// let w = Tensor::ones((1, 1, 2, 2), DType::F64, &Device::Cpu)?;
/// let gy = Tensor::ones((1, 1, 2, 2), DType::F64, &Device::Cpu)?;
/// let g = conv2d_backward(&x, &w, &gy, &Conv2dOptions::default(), GradMask::ALL)?;
/// let gx = g.input.unwrap().flatten_all()?.to_vec1::<f64>()?;
/// assert_eq!(gx, vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d_backward(
    input: &Tensor,
    weight: &Tensor,
    grad_output: &Tensor,
    options: &Conv2dOptions,
    mask: GradMask,
) -> Result<Gradients> {
    let (x, unbatched) = batched(input, "conv2d_backward")?;
    let plan = conv_plan(&x, weight, options)?;
    backward(Plan::Conv(plan), &x, weight, grad_output, mask, unbatched)
}

/// The gradients of [`conv_transpose2d()`] given the gradient of its output; see
/// [`conv2d_backward`].
///
/// # Shapes
/// `input`, `weight` as for [`conv_transpose2d()`]; `grad_output` has the output's shape.
/// The gradients have the shapes of what they differentiate.
///
/// # Errors
/// As [`conv_transpose2d()`], and a `grad_output` whose shape is not the output's.
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use conv2d_candle::{conv_transpose2d_backward, ConvTranspose2dOptions, GradMask};
///
/// let x = Tensor::new(&[[[[2.0f32]]]], &Device::Cpu)?;
/// let w = Tensor::new(&[[[[1.0f32, 2.0], [3.0, 4.0]]]], &Device::Cpu)?;
/// let gy = Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu)?;
/// let opts = ConvTranspose2dOptions::default();
/// let g = conv_transpose2d_backward(&x, &w, &gy, &opts, GradMask::ALL)?;
/// assert_eq!(g.input.unwrap().flatten_all()?.to_vec1::<f32>()?, vec![10.0]);
/// assert_eq!(g.weight.unwrap().flatten_all()?.to_vec1::<f32>()?, vec![2.0; 4]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv_transpose2d_backward(
    input: &Tensor,
    weight: &Tensor,
    grad_output: &Tensor,
    options: &ConvTranspose2dOptions,
    mask: GradMask,
) -> Result<Gradients> {
    let (x, unbatched) = batched(input, "conv_transpose2d_backward")?;
    let plan = transpose_plan(&x, weight, options, unbatched)?;
    backward(
        Plan::Transpose(plan),
        &x,
        weight,
        grad_output,
        mask,
        unbatched,
    )
}

/// `conv2d`'s error as candle's, with the op's name before the message.
pub(crate) fn conv_error(op: &str, err: ConvError) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: {err}")).bt()
}

/// The input as a CPU tensor of rank 4, and whether it was unbatched (rank 3).
fn batched(input: &Tensor, op: &str) -> Result<(Tensor, bool)> {
    if !input.device().is_cpu() {
        bail!(
            "{op}: conv2d-candle runs on the CPU, but the input is on {:?}; move the tensors \
             with `to_device(&Device::Cpu)`",
            input.device().location()
        );
    }
    match input.rank() {
        4 => Ok((input.clone(), false)),
        3 => Ok((input.unsqueeze(0)?, true)),
        _ => bail!(
            "{op}: expected 3D (unbatched) or 4D (batched) input, but got input of size: {:?}",
            input.dims()
        ),
    }
}

/// The output of rank 3 again for an unbatched input.
fn unbatch(output: Tensor, unbatched: bool) -> Result<Tensor> {
    match unbatched {
        true => output.squeeze(0),
        false => Ok(output),
    }
}

fn dims4(t: &Tensor) -> [usize; 4] {
    let d = t.dims();
    [d[0], d[1], d[2], d[3]]
}

fn weight_dims(weight: &Tensor, op: &str) -> Result<[usize; 4]> {
    match weight.dims() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        other => bail!("{op}: expected a 4-dimensional weight, but got weight of size {other:?}"),
    }
}

/// The plan of a convolution of the batched input `x`.
fn conv_plan(x: &Tensor, weight: &Tensor, options: &Conv2dOptions) -> Result<Conv2dPlan> {
    const OP: &str = "conv2d";
    Conv2dPlan::new(dims4(x), weight_dims(weight, OP)?, options).map_err(|e| conv_error(OP, e))
}

/// The transposed plan; for an unbatched input, `output_size` may have 2 or 3 numbers.
fn transpose_plan(
    x: &Tensor,
    weight: &Tensor,
    options: &ConvTranspose2dOptions,
    unbatched: bool,
) -> Result<ConvTranspose2dPlan> {
    const OP: &str = "conv_transpose2d";
    let rank = if unbatched { 3 } else { 4 };
    ConvTranspose2dPlan::with_input_rank(dims4(x), weight_dims(weight, OP)?, options, rank)
        .map_err(|e| conv_error(OP, e))
}

/// Applies the forward op, with the bias as a third operand when there is one.
fn forward(
    plan: Plan,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    op: &str,
) -> Result<Tensor> {
    let conv = ConvOp::new(Arc::new(plan), Role::Forward);
    match bias {
        None => conv.apply2(x, weight),
        Some(b) if b.rank() != 1 => {
            bail!(
                "{op}: expected a 1-dimensional bias, but got bias of size {:?}",
                b.dims()
            )
        }
        Some(b) => x.apply_op3(weight, b, conv),
    }
}

/// The masked gradients of `plan` as custom ops.
fn backward(
    plan: Plan,
    x: &Tensor,
    weight: &Tensor,
    grad_output: &Tensor,
    mask: GradMask,
    unbatched: bool,
) -> Result<Gradients> {
    let gy = match unbatched {
        true => grad_output.unsqueeze(0)?,
        false => grad_output.clone(),
    };
    let plan = Arc::new(plan);
    let role = |role| ConvOp::new(plan.clone(), role);
    let input = match mask.input {
        true => Some(unbatch(
            role(Role::GradInput).apply2(&gy, weight)?,
            unbatched,
        )?),
        false => None,
    };
    let weight = match mask.weight {
        true => Some(role(Role::GradWeight).apply2(x, &gy)?),
        false => None,
    };
    let bias = match mask.bias {
        true => Some(gy.apply_op1(role(Role::GradBias))?),
        false => None,
    };
    Ok(Gradients {
        input,
        weight,
        bias,
    })
}

/// The README's example, run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
