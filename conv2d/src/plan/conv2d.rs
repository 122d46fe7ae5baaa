//! [`Conv2dPlan`]: a validated `conv2d` of fixed shapes.

use super::{
    check_bias, check_image_not_empty, check_kernel_size, check_len, check_positive,
    check_weight_groups, fill, prepared_weight,
};
use crate::algorithm::Algorithm;
use crate::denormal::{operand, Operand};
use crate::element::Element;
use crate::error::{fmt_shape, try_filled, ConvError, Result};
use crate::geometry::Geometry;
use crate::kernels;
use crate::options::{Conv2dOptions, Padding, PaddingMode};
use crate::padding_mode::Border;
use crate::threading::{install, INLINE_WORK};

/// A `conv2d` whose shapes and options have been checked, run on contiguous NCHW slices.
///
/// Build it once with [`Conv2dPlan::new`]; then the `*_into` methods write into the caller's
/// buffers without copying inputs (for `f32`, `f64` and complex; `f16`/`bf16` are widened to
/// `f32` first). Only buffer lengths are checked per call.
///
/// # Shapes
/// input `[n, cin, h, w]`, weight `[cout, cin/groups, kh, kw]`, bias `[cout]`,
/// output [`output_shape`](Conv2dPlan::output_shape).
///
/// # Example
/// ```
/// use conv2d::{Conv2dOptions, Conv2dPlan};
///
/// let plan = Conv2dPlan::new([1, 4, 5, 5], [8, 4, 3, 3], &Conv2dOptions::default().padding(1))?;
/// assert_eq!(plan.output_shape(), [1, 8, 5, 5]);
/// let x = vec![1.0f32; 100];
/// let w = vec![0.5f32; 288];
/// let mut y = vec![0.0f32; 200];
/// plan.forward_into(&x, &w, None, &mut y)?;
/// assert_eq!(y[2 * 5 + 2], 18.0); // an interior pixel: 4*3*3 taps of 1*0.5
/// # Ok::<(), conv2d::ConvError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conv2dPlan {
    input_shape: [usize; 4],
    /// Present for the non-zero padding modes; then `geometry` runs on the padded input.
    border: Option<Border>,
    geometry: Geometry,
    algorithm: Algorithm,
}

impl Conv2dPlan {
    /// Checks shapes and options as PyTorch does and computes the output shape.
    ///
    /// # Errors
    /// Zero stride, dilation or groups; `Same` with a stride other than 1; groups not dividing
    /// the weight's output channels; input channels other than `weight[1] * groups`; a padded
    /// input smaller than the dilated kernel; reflect padding not smaller than the input or
    /// circular padding larger than it; sizes whose arithmetic overflows.
    ///
    /// # Example
    /// ```
    /// use conv2d::{Conv2dOptions, Conv2dPlan, Same};
    ///
    /// let plan = Conv2dPlan::new([2, 3, 17, 17], [5, 3, 4, 4], &Conv2dOptions::default().padding(Same))?;
    /// assert_eq!(plan.output_shape(), [2, 5, 17, 17]);
    /// let err = Conv2dPlan::new([2, 3, 17, 17], [5, 3, 4, 4], &Conv2dOptions::default().padding(Same).stride(2));
    /// assert!(err.is_err());
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn new(
        input_shape: [usize; 4],
        weight_shape: [usize; 4],
        options: &Conv2dOptions,
    ) -> Result<Self> {
        let Conv2dOptions {
            stride,
            padding,
            dilation,
            groups,
            padding_mode,
        } = *options;
        check_positive(stride, dilation, groups)?;
        check_weight_groups(weight_shape, groups)?;
        let [n, cin, h, w] = input_shape;
        let [cout, cin_g, kh, kw] = weight_shape;
        let expected_cin = cin_g
            .checked_mul(groups)
            .ok_or_else(|| ConvError::overflow("in_channels"))?;
        if cin != expected_cin {
            return Err(ConvError::shape(format!(
                "Given groups={groups}, weight of size {}, expected input{} to have \
                 {expected_cin} channels, but got {cin} channels instead",
                fmt_shape(&weight_shape),
                fmt_shape(&input_shape)
            )));
        }
        check_kernel_size(kh, kw)?;
        let reach = |k: usize, d: usize| {
            (k - 1)
                .checked_mul(d)
                .ok_or_else(|| ConvError::overflow("the dilated kernel size"))
        };
        let (reach_h, reach_w) = (reach(kh, dilation.h)?, reach(kw, dilation.w)?);
        let [top, bottom, left, right] = match padding {
            Padding::Explicit(p) => [p.h, p.h, p.w, p.w],
            Padding::Valid => [0; 4],
            Padding::Same if stride.h != 1 || stride.w != 1 => {
                return Err(ConvError::invalid(format!(
                    "padding='same' is not supported for strided convolutions, but got stride={stride}"
                )))
            }
            Padding::Same => [
                reach_h / 2,
                reach_h - reach_h / 2,
                reach_w / 2,
                reach_w - reach_w / 2,
            ],
        };
        let padded = |size: usize, a: usize, b: usize| {
            size.checked_add(a)
                .and_then(|s| s.checked_add(b))
                .ok_or_else(|| ConvError::overflow("the padded input size"))
        };
        let (ph, pw) = (padded(h, top, bottom)?, padded(w, left, right)?);
        if ph <= reach_h || pw <= reach_w {
            return Err(ConvError::shape(format!(
                "Calculated padded input size per channel: ({ph} x {pw}). Kernel size: ({} x {}). \
                 Kernel size can't be greater than actual input size",
                reach_h as u128 + 1,
                reach_w as u128 + 1
            )));
        }
        check_image_not_empty(input_shape)?;
        let (oh, ow) = (
            (ph - reach_h - 1) / stride.h + 1,
            (pw - reach_w - 1) / stride.w + 1,
        );
        let border = match padding_mode {
            PaddingMode::Zeros => None,
            mode => Some(Border::new(mode, [top, bottom, left, right], input_shape)?),
        };
        let (gh, gw, pad_top, pad_left) = match border {
            Some(_) => (ph, pw, 0, 0),
            None => (h, w, top, left),
        };
        let geometry = Geometry::new(Geometry {
            n,
            cin,
            h: gh,
            w: gw,
            cout,
            kh,
            kw,
            groups,
            stride,
            dilation,
            pad_top,
            pad_left,
            oh,
            ow,
        })?;
        if border.is_some() {
            // The unpadded input too must have a representable length.
            crate::geometry::checked_product(&input_shape, "the input length")?;
        }
        Ok(Self {
            input_shape,
            border,
            geometry,
            algorithm: Algorithm::choose(&geometry),
        })
    }

    /// The algorithm the forward pass uses (chosen from the shape when the plan is built).
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([1, 3, 8, 8], [4, 3, 3, 3], &Default::default())?;
    /// println!("{}", plan.algorithm().name());
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The same plan, computing its forward pass with `algorithm`.
    ///
    /// # Example
    /// ```
    /// use conv2d::{Algorithm, Conv2dPlan};
    /// let plan = Conv2dPlan::new([1, 3, 8, 8], [4, 3, 3, 3], &Default::default())?;
    /// let gemm = plan.clone().with_algorithm(Algorithm::Im2colGemm);
    /// let (x, w) = (vec![1.0f64; 192], vec![0.5; 108]);
    /// let (a, b) = (plan.forward(&x, &w, None)?, gemm.forward(&x, &w, None)?);
    /// assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-12));
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The input shape `[n, cin, h, w]` the plan was built for.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([1, 2, 6, 6], [4, 2, 3, 3], &Default::default())?;
    /// assert_eq!(plan.input_shape(), [1, 2, 6, 6]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    /// The weight shape `[cout, cin/groups, kh, kw]`.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([1, 2, 6, 6], [4, 2, 3, 3], &Default::default())?;
    /// assert_eq!(plan.weight_shape(), [4, 2, 3, 3]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn weight_shape(&self) -> [usize; 4] {
        self.geometry.weight_shape()
    }

    /// The output shape `[n, cout, oh, ow]`, by PyTorch's formula.
    ///
    /// # Example
    /// ```
    /// use conv2d::{Conv2dOptions, Conv2dPlan};
    /// let o = Conv2dOptions::default().stride((2, 1)).padding((4, 2)).dilation((3, 1));
    /// let plan = Conv2dPlan::new([20, 16, 50, 100], [33, 16, 3, 5], &o)?;
    /// assert_eq!(plan.output_shape(), [20, 33, 26, 100]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn output_shape(&self) -> [usize; 4] {
        self.geometry.output_shape()
    }

    /// The output of [`forward_into`](Conv2dPlan::forward_into) in a new vector.
    ///
    /// # Shapes
    /// `input`: [`input_shape`](Conv2dPlan::input_shape), `weight`: [`weight_shape`](Conv2dPlan::weight_shape),
    /// `bias`: `[out_channels]`; the result: [`output_shape`](Conv2dPlan::output_shape). All contiguous NCHW.
    ///
    /// # Errors
    /// As [`forward_into`](Conv2dPlan::forward_into).
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([1, 1, 3, 3], [1, 1, 3, 3], &Default::default())?;
    /// let y = plan.forward(&[1.0f64; 9], &[2.0; 9], Some(&[0.5]))?;
    /// assert_eq!(y, vec![18.5]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn forward<T: Element>(
        &self,
        input: &[T],
        weight: &[T],
        bias: Option<&[T]>,
    ) -> Result<Vec<T>> {
        let mut out = try_filled(self.geometry.output_len(), T::ZERO)?;
        self.forward_into(input, weight, bias, &mut out)?;
        Ok(out)
    }

    /// Writes `conv2d(input, weight, bias)` into `out`.
    ///
    /// # Shapes
    /// `input`: [`input_shape`](Conv2dPlan::input_shape), `weight`: [`weight_shape`](Conv2dPlan::weight_shape),
    /// `bias`: `[out_channels]`, `out`: [`output_shape`](Conv2dPlan::output_shape). All contiguous NCHW.
    ///
    /// # Errors
    /// A slice whose length differs from its shape's, or a bias whose length is not `cout`.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([1, 1, 4, 4], [1, 1, 2, 2], &Default::default())?;
    /// let mut y = vec![0.0f32; 9];
    /// plan.forward_into(&[1.0; 16], &[1.0; 4], None, &mut y)?;
    /// assert!(y.iter().all(|&v| v == 4.0));
    /// assert!(plan.forward_into(&[1.0; 15], &[1.0; 4], None, &mut y).is_err());
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn forward_into<T: Element>(
        &self,
        input: &[T],
        weight: &[T],
        bias: Option<&[T]>,
        out: &mut [T],
    ) -> Result<()> {
        let g = &self.geometry;
        check_len("input", input.len(), self.input_shape)?;
        check_len("weight", weight.len(), g.weight_shape())?;
        check_bias(bias.map(<[T]>::len), g.cout, g.weight_shape())?;
        check_len("output", out.len(), g.output_shape())?;
        if self.border.is_none() {
            if let Some(done) = kernels::forward_bf16(self.algorithm, g, input, weight, bias, out) {
                return done;
            }
        }
        let x = self.padded_input(input)?;
        let w = prepared_weight(weight, false)?;
        let b = bias.map(operand).transpose()?;
        fill(out, |out| {
            self.algorithm.install(g, || {
                kernels::forward(self.algorithm, g, &x, &w, b.as_deref(), out)
            })
        })
    }

    /// The input gradient in a new vector; see [`backward_input_into`](Conv2dPlan::backward_input_into).
    ///
    /// # Shapes
    /// `grad_output`: [`output_shape`](Conv2dPlan::output_shape), `weight`: [`weight_shape`](Conv2dPlan::weight_shape);
    /// the result: [`input_shape`](Conv2dPlan::input_shape).
    ///
    /// # Errors
    /// As [`backward_input_into`](Conv2dPlan::backward_input_into).
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([1, 1, 2, 2], [1, 1, 2, 2], &Default::default())?;
    /// let gx = plan.backward_input(&[1.0f32], &[1.0, 2.0, 3.0, 4.0])?;
    /// assert_eq!(gx, vec![1.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_input<T: Element>(&self, grad_output: &[T], weight: &[T]) -> Result<Vec<T>> {
        let mut grad_input = try_filled(self.input_shape.iter().product(), T::ZERO)?;
        self.backward_input_into(grad_output, weight, &mut grad_input)?;
        Ok(grad_input)
    }

    /// Writes the gradient with respect to the input into `grad_input`, given the gradient
    /// with respect to the output. Complex types use PyTorch's convention (the conjugated
    /// weight); gradients through reflect/replicate/circular padding accumulate into the
    /// pixels they copy.
    ///
    /// # Shapes
    /// `grad_output`: [`output_shape`](Conv2dPlan::output_shape), `weight`: [`weight_shape`](Conv2dPlan::weight_shape),
    /// `out`: [`input_shape`](Conv2dPlan::input_shape).
    ///
    /// # Errors
    /// A slice whose length differs from its shape's.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([1, 1, 3, 3], [1, 1, 2, 2], &Default::default())?;
    /// let mut gx = vec![0.0f64; 9];
    /// plan.backward_input_into(&[1.0; 4], &[1.0; 4], &mut gx)?;
    /// assert_eq!(gx, vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_input_into<T: Element>(
        &self,
        grad_output: &[T],
        weight: &[T],
        grad_input: &mut [T],
    ) -> Result<()> {
        let g = &self.geometry;
        check_len("grad_output", grad_output.len(), g.output_shape())?;
        check_len("weight", weight.len(), g.weight_shape())?;
        check_len("grad_input", grad_input.len(), self.input_shape)?;
        if self.border.is_none() {
            let (a, gy, w) = (self.algorithm, grad_output, weight);
            if let Some(done) = kernels::backward_input_bf16(a, g, gy, w, None, grad_input) {
                return done;
            }
        }
        let gy = operand(grad_output)?;
        let w = prepared_weight(weight, true)?;
        match &self.border {
            None => fill(grad_input, |gx| {
                self.algorithm.install(g, || {
                    kernels::backward_input(self.algorithm, g, &gy, &w, gx)
                })
            }),
            Some(border) => {
                let mut padded = try_filled(g.input_len(), <T::Acc as crate::Accumulator>::ZERO)?;
                let [_, _, h, w_] = self.input_shape;
                fill(grad_input, |gx| {
                    self.algorithm.install(g, || {
                        kernels::backward_input(self.algorithm, g, &gy, &w, &mut padded)?;
                        border.fold(&padded, h, w_, gx);
                        Ok(())
                    })
                })
            }
        }
    }

    /// The weight gradient in a new vector; see [`backward_weight_into`](Conv2dPlan::backward_weight_into).
    ///
    /// # Shapes
    /// `input`: [`input_shape`](Conv2dPlan::input_shape), `grad_output`: [`output_shape`](Conv2dPlan::output_shape);
    /// the result: [`weight_shape`](Conv2dPlan::weight_shape).
    ///
    /// # Errors
    /// As [`backward_weight_into`](Conv2dPlan::backward_weight_into).
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([1, 1, 2, 2], [1, 1, 1, 1], &Default::default())?;
    /// let gw = plan.backward_weight(&[1.0f32, 2.0, 3.0, 4.0], &[1.0; 4])?;
    /// assert_eq!(gw, vec![10.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_weight<T: Element>(&self, input: &[T], grad_output: &[T]) -> Result<Vec<T>> {
        let mut grad_weight = try_filled(self.geometry.weight_len(), T::ZERO)?;
        self.backward_weight_into(input, grad_output, &mut grad_weight)?;
        Ok(grad_weight)
    }

    /// Writes the gradient with respect to the weight into `grad_weight` (for complex types,
    /// the sum of `conj(input) * grad_output`, as PyTorch).
    ///
    /// # Shapes
    /// `input`: [`input_shape`](Conv2dPlan::input_shape), `grad_output`: [`output_shape`](Conv2dPlan::output_shape),
    /// `out`: [`weight_shape`](Conv2dPlan::weight_shape).
    ///
    /// # Errors
    /// A slice whose length differs from its shape's.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([2, 1, 1, 1], [1, 1, 1, 1], &Default::default())?;
    /// let mut gw = [0.0f64];
    /// plan.backward_weight_into(&[3.0, 4.0], &[1.0, 10.0], &mut gw)?;
    /// assert_eq!(gw, [43.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_weight_into<T: Element>(
        &self,
        input: &[T],
        grad_output: &[T],
        grad_weight: &mut [T],
    ) -> Result<()> {
        let g = &self.geometry;
        check_len("input", input.len(), self.input_shape)?;
        check_len("grad_output", grad_output.len(), g.output_shape())?;
        check_len("grad_weight", grad_weight.len(), g.weight_shape())?;
        if self.border.is_none() {
            let (a, x, gy, gw) = (self.algorithm, input, grad_output, &mut *grad_weight);
            if let Some(done) = kernels::backward_weight_bf16(a, g, x, gy, gw) {
                return done;
            }
        }
        let x = self.padded_input(input)?;
        let gy = operand(grad_output)?;
        fill(grad_weight, |gw| {
            self.algorithm.install(g, || {
                kernels::backward_weight(self.algorithm, g, &x, &gy, gw)
            })
        })
    }

    /// The bias gradient in a new vector; see [`backward_bias_into`](Conv2dPlan::backward_bias_into).
    ///
    /// # Shapes
    /// `grad_output`: [`output_shape`](Conv2dPlan::output_shape); the result: `[out_channels]`.
    ///
    /// # Errors
    /// As [`backward_bias_into`](Conv2dPlan::backward_bias_into).
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([1, 1, 2, 2], [1, 1, 1, 1], &Default::default())?;
    /// assert_eq!(plan.backward_bias(&[1.0f32, 2.0, 3.0, 4.0])?, vec![10.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_bias<T: Element>(&self, grad_output: &[T]) -> Result<Vec<T>> {
        let mut grad_bias = try_filled(self.geometry.cout, T::ZERO)?;
        self.backward_bias_into(grad_output, &mut grad_bias)?;
        Ok(grad_bias)
    }

    /// Writes the gradient with respect to the bias (the sum of `grad_output` over batch and
    /// pixels) into `grad_bias`.
    ///
    /// # Shapes
    /// `grad_output`: [`output_shape`](Conv2dPlan::output_shape), `out`: `[out_channels]`.
    ///
    /// # Errors
    /// A slice whose length differs from its shape's.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::Conv2dPlan::new([2, 1, 1, 1], [1, 1, 1, 1], &Default::default())?;
    /// let mut gb = [0.0f32];
    /// plan.backward_bias_into(&[1.5, 2.5], &mut gb)?;
    /// assert_eq!(gb, [4.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_bias_into<T: Element>(
        &self,
        grad_output: &[T],
        grad_bias: &mut [T],
    ) -> Result<()> {
        let g = &self.geometry;
        check_len("grad_output", grad_output.len(), g.output_shape())?;
        check_len("grad_bias", grad_bias.len(), [1, g.cout, 1, 1])?;
        let gy = operand(grad_output)?;
        fill(grad_bias, |gb| {
            install(g.output_len(), INLINE_WORK, || {
                kernels::backward_bias(&gy, g.n, gb)
            });
            Ok(())
        })
    }

    /// The input in the accumulator type, padded when the padding mode is not zeros.
    fn padded_input<'a, T: Element>(&self, input: &'a [T]) -> Result<Operand<'a, T::Acc>> {
        let x = operand(input)?;
        match &self.border {
            None => Ok(x),
            Some(border) => {
                let [_, _, h, w] = self.input_shape;
                Ok(Operand::owned(install(x.len(), INLINE_WORK, || {
                    border.pad(&x, h, w)
                })?))
            }
        }
    }
}
