//! [`ConvTranspose2dPlan`]: a validated `conv_transpose2d` of fixed shapes.
//!
//! A transposed convolution is the input-gradient of a convolution: the plan holds that
//! convolution's geometry (its input is our output) and runs the conv2d kernels swapped.

use super::{
    check_bias, check_image_not_empty, check_kernel_size, check_len, check_positive,
    check_weight_groups, conjugate_in_place,
};
use super::{fill, prepared_weight};
use crate::algorithm::Algorithm;
use crate::denormal::operand;
use crate::element::Element;
use crate::error::{fmt_shape, try_filled, ConvError, Result};
use crate::geometry::Geometry;
use crate::kernels;
use crate::options::ConvTranspose2dOptions;
use crate::threading::{install, INLINE_WORK};

/// A `conv_transpose2d` whose shapes and options have been checked, run on contiguous NCHW
/// slices.
///
/// # Shapes
/// input `[n, cin, h, w]`, weight `[cin, cout/groups, kh, kw]`, bias `[cout]`, output
/// `[n, cout, (h-1)*stride - 2*padding + dilation*(kh-1) + output_padding + 1, ...]`.
///
/// # Example
/// ```
/// use conv2d::{ConvTranspose2dOptions, ConvTranspose2dPlan};
///
/// let opts = ConvTranspose2dOptions::default().stride(2);
/// let plan = ConvTranspose2dPlan::new([20, 16, 50, 100], [16, 33, 3, 3], &opts)?;
/// assert_eq!(plan.output_shape(), [20, 33, 101, 201]);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvTranspose2dPlan {
    /// The convolution whose input-gradient this is: its `cin`/`h`/`w` are our output's, its
    /// `cout`/`oh`/`ow` our input's.
    geometry: Geometry,
    /// How the input gradient (that convolution's forward pass) is computed.
    algorithm: Algorithm,
}

impl ConvTranspose2dPlan {
    /// Checks shapes and options as PyTorch does and computes the output shape.
    ///
    /// # Errors
    /// Zero stride, dilation or groups; groups not dividing the input channels; input
    /// channels other than `weight[0]`; `output_padding` not smaller than the stride or the
    /// dilation; an `output_size` outside the valid range or of the wrong length; a
    /// non-positive output size; sizes whose arithmetic overflows.
    ///
    /// # Example
    /// ```
    /// use conv2d::{ConvTranspose2dOptions, ConvTranspose2dPlan};
    ///
    /// let opts = ConvTranspose2dOptions::default().stride(2).padding(1).output_size([12, 12]);
    /// let plan = ConvTranspose2dPlan::new([1, 16, 6, 6], [16, 16, 3, 3], &opts)?;
    /// assert_eq!(plan.output_shape(), [1, 16, 12, 12]);
    /// let too_big = opts.clone().output_size([13, 13]);
    /// assert!(ConvTranspose2dPlan::new([1, 16, 6, 6], [16, 16, 3, 3], &too_big).is_err());
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn new(
        input_shape: [usize; 4],
        weight_shape: [usize; 4],
        options: &ConvTranspose2dOptions,
    ) -> Result<Self> {
        Self::with_input_rank(input_shape, weight_shape, options, 4)
    }

    /// As [`new`](ConvTranspose2dPlan::new), for a caller whose tensor has `rank` dimensions
    /// (3 when it is unbatched and `input_shape` has a batch of 1 in front), which decides how
    /// many numbers `output_size` may have: 2 or `rank`, as PyTorch accepts.
    ///
    /// # Shapes
    /// As [`new`](ConvTranspose2dPlan::new).
    ///
    /// # Errors
    /// As [`new`](ConvTranspose2dPlan::new), and a `rank` other than 3 or 4.
    ///
    /// # Example
    /// ```
    /// use conv2d::{ConvTranspose2dOptions, ConvTranspose2dPlan};
    /// // An unbatched (4, 5, 6) input with output_size given as 3 numbers, (3, 12, 14).
    /// let opts = ConvTranspose2dOptions::default().stride(2).output_size([3, 12, 14]);
    /// let plan = ConvTranspose2dPlan::with_input_rank([1, 4, 5, 6], [4, 3, 3, 3], &opts, 3)?;
    /// assert_eq!(plan.output_shape(), [1, 3, 12, 14]);
    /// assert!(ConvTranspose2dPlan::new([1, 4, 5, 6], [4, 3, 3, 3], &opts).is_err());
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn with_input_rank(
        input_shape: [usize; 4],
        weight_shape: [usize; 4],
        options: &ConvTranspose2dOptions,
        rank: usize,
    ) -> Result<Self> {
        if !(3..=4).contains(&rank) {
            return Err(ConvError::invalid(format!(
                "conv_transpose2d: expected an input rank of 3 or 4, but got rank {rank}"
            )));
        }
        let ConvTranspose2dOptions {
            stride,
            padding,
            output_padding,
            groups,
            dilation,
            ref output_size,
        } = *options;
        check_positive(stride, dilation, groups)?;
        check_weight_groups(weight_shape, groups)?;
        let [n, cin, h, w] = input_shape;
        let [wcin, cout_g, kh, kw] = weight_shape;
        if cin != wcin {
            return Err(ConvError::shape(format!(
                "Given transposed=1, weight of size {}, expected input{} to have {wcin} \
                 channels, but got {cin} channels instead",
                fmt_shape(&weight_shape),
                fmt_shape(&input_shape)
            )));
        }
        let cout = cout_g
            .checked_mul(groups)
            .ok_or_else(|| ConvError::overflow("out_channels"))?;
        // Smallest output size per axis: (in-1)*stride - 2*padding + dilation*(k-1) + 1.
        let min_size = |size: usize, s: usize, p: usize, d: usize, k: usize| -> Result<i128> {
            let (size, s, p, d, k) = (size as i128, s as i128, p as i128, d as i128, k as i128);
            (size - 1)
                .checked_mul(s)
                .and_then(|v| v.checked_add(d.checked_mul(k - 1)?))
                .and_then(|v| v.checked_sub(2 * p - 1))
                .ok_or_else(|| ConvError::overflow("the output size"))
        };
        let mins = [
            min_size(h, stride.h, padding.h, dilation.h, kh)?,
            min_size(w, stride.w, padding.w, dilation.w, kw)?,
        ];
        let extra = match output_size {
            None => {
                if (output_padding.h >= stride.h && output_padding.h >= dilation.h)
                    || (output_padding.w >= stride.w && output_padding.w >= dilation.w)
                {
                    return Err(ConvError::invalid(format!(
                        "output padding must be smaller than either stride or dilation, but got \
                         output_padding_height: {} output_padding_width: {} stride_height: {} \
                         stride_width: {} dilation_height: {} dilation_width: {}",
                        output_padding.h,
                        output_padding.w,
                        stride.h,
                        stride.w,
                        dilation.h,
                        dilation.w
                    )));
                }
                [output_padding.h as i128, output_padding.w as i128]
            }
            Some(size) => {
                let spatial = match size.len() {
                    2 => &size[..],
                    len if len == rank => &size[len - 2..],
                    len => {
                        return Err(ConvError::invalid(format!(
                            "ConvTranspose2D: for {rank}D input, output_size must have 2 or \
                             {rank} elements (got {len})"
                        )))
                    }
                };
                let strides = [stride.h as i128, stride.w as i128];
                let mut extra = [0i128; 2];
                for i in 0..2 {
                    let want = spatial[i] as i128;
                    if want < mins[i] || want - mins[i] >= strides[i] {
                        return Err(ConvError::invalid(format!(
                            "requested an output size of {}, but valid sizes range from [{}, {}] \
                             to [{}, {}] (for an input of {})",
                            fmt_shape(spatial),
                            mins[0],
                            mins[1],
                            mins[0].saturating_add(strides[0] - 1),
                            mins[1].saturating_add(strides[1] - 1),
                            fmt_shape(&input_shape[2..])
                        )));
                    }
                    extra[i] = want - mins[i];
                }
                extra
            }
        };
        let [oh, ow] = [0, 1].map(|i| mins[i].checked_add(extra[i]));
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(ConvError::overflow("the output size"));
        };
        if oh <= 0 || ow <= 0 {
            return Err(ConvError::shape(format!(
                "Given input size per channel: ({h} x {w}). Calculated output size per channel: \
                 ({oh} x {ow}). Output size is too small"
            )));
        }
        check_kernel_size(kh, kw)?;
        check_image_not_empty(input_shape)?;
        let to_usize =
            |v: i128| usize::try_from(v).map_err(|_| ConvError::overflow("the output size"));
        let geometry = Geometry::new(Geometry {
            n,
            cin: cout,
            h: to_usize(oh)?,
            w: to_usize(ow)?,
            cout: cin,
            kh,
            kw,
            groups,
            stride,
            dilation,
            pad_top: padding.h,
            pad_left: padding.w,
            oh: h,
            ow: w,
        })?;
        Ok(Self {
            geometry,
            algorithm: Algorithm::choose_transposed(&geometry),
        })
    }

    /// The algorithm the input gradient uses (a convolution of `grad_output`).
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([1, 4, 3, 3], [4, 2, 2, 2], &Default::default())?;
    /// println!("{}", plan.algorithm().name());
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The same plan, computing its input gradient with `algorithm`.
    ///
    /// # Example
    /// ```
    /// use conv2d::{Algorithm, ConvTranspose2dPlan};
    /// let plan = ConvTranspose2dPlan::new([1, 4, 3, 3], [4, 2, 2, 2], &Default::default())?;
    /// assert_eq!(plan.with_algorithm(Algorithm::Im2colGemm).algorithm(), Algorithm::Im2colGemm);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The input shape `[n, cin, h, w]`.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([1, 4, 3, 3], [4, 2, 2, 2], &Default::default())?;
    /// assert_eq!(plan.input_shape(), [1, 4, 3, 3]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn input_shape(&self) -> [usize; 4] {
        self.geometry.output_shape()
    }

    /// The weight shape `[cin, cout/groups, kh, kw]`.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([1, 4, 3, 3], [4, 2, 2, 2], &Default::default())?;
    /// assert_eq!(plan.weight_shape(), [4, 2, 2, 2]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn weight_shape(&self) -> [usize; 4] {
        self.geometry.weight_shape()
    }

    /// The output shape `[n, cout, oh, ow]`.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([1, 4, 3, 3], [4, 2, 2, 2], &Default::default())?;
    /// assert_eq!(plan.output_shape(), [1, 2, 4, 4]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn output_shape(&self) -> [usize; 4] {
        self.geometry.input_shape()
    }

    /// The output of [`forward_into`](ConvTranspose2dPlan::forward_into) in a new vector.
    ///
    /// # Shapes
    /// `input`: [`input_shape`](ConvTranspose2dPlan::input_shape), `weight`: [`weight_shape`](ConvTranspose2dPlan::weight_shape),
    /// `bias`: `[out_channels]`; the result: [`output_shape`](ConvTranspose2dPlan::output_shape). All contiguous NCHW.
    ///
    /// # Errors
    /// As [`forward_into`](ConvTranspose2dPlan::forward_into).
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([1, 1, 1, 1], [1, 1, 2, 2], &Default::default())?;
    /// let y = plan.forward(&[2.0f32], &[1.0, 2.0, 3.0, 4.0], Some(&[1.0]))?;
    /// assert_eq!(y, vec![3.0, 5.0, 7.0, 9.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn forward<T: Element>(
        &self,
        input: &[T],
        weight: &[T],
        bias: Option<&[T]>,
    ) -> Result<Vec<T>> {
        let mut out = try_filled(self.geometry.input_len(), T::ZERO)?;
        self.forward_into(input, weight, bias, &mut out)?;
        Ok(out)
    }

    /// Writes `conv_transpose2d(input, weight, bias)` into `out`.
    ///
    /// # Shapes
    /// `input`: [`input_shape`](ConvTranspose2dPlan::input_shape), `weight`: [`weight_shape`](ConvTranspose2dPlan::weight_shape),
    /// `bias`: `[out_channels]`, `out`: [`output_shape`](ConvTranspose2dPlan::output_shape). All contiguous NCHW.
    ///
    /// # Errors
    /// A slice whose length differs from its shape's, or a bias whose length is not `cout`.
    ///
    /// # Example
    /// ```
    /// use conv2d::{ConvTranspose2dOptions, ConvTranspose2dPlan};
    /// let plan = ConvTranspose2dPlan::new([1, 1, 2, 2], [1, 1, 1, 1], &ConvTranspose2dOptions::default().stride(2))?;
    /// let mut y = vec![0.0f64; 9];
    /// plan.forward_into(&[1.0, 2.0, 3.0, 4.0], &[10.0], None, &mut y)?;
    /// assert_eq!(y, vec![10.0, 0.0, 20.0, 0.0, 0.0, 0.0, 30.0, 0.0, 40.0]);
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
        check_len("input", input.len(), self.input_shape())?;
        check_len("weight", weight.len(), g.weight_shape())?;
        check_bias(bias.map(<[T]>::len), g.cin, g.weight_shape())?;
        check_len("output", out.len(), self.output_shape())?;
        if let Some(done) =
            kernels::backward_input_bf16(self.algorithm, g, input, weight, bias, out)
        {
            return done;
        }
        let x = operand(input)?;
        let w = prepared_weight(weight, false)?;
        let b = bias.map(operand).transpose()?;
        fill(out, |out| {
            self.algorithm.install(g, || {
                kernels::backward_input(self.algorithm, g, &x, &w, out)?;
                if let Some(b) = &b {
                    kernels::add_bias(out, b, g.n);
                }
                Ok(())
            })
        })
    }

    /// The input gradient in a new vector; see
    /// [`backward_input_into`](ConvTranspose2dPlan::backward_input_into).
    ///
    /// # Shapes
    /// `grad_output`: [`output_shape`](ConvTranspose2dPlan::output_shape), `weight`: [`weight_shape`](ConvTranspose2dPlan::weight_shape);
    /// the result: [`input_shape`](ConvTranspose2dPlan::input_shape).
    ///
    /// # Errors
    /// As [`backward_input_into`](ConvTranspose2dPlan::backward_input_into).
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([1, 1, 1, 1], [1, 1, 2, 2], &Default::default())?;
    /// let gx = plan.backward_input(&[1.0f32; 4], &[1.0, 2.0, 3.0, 4.0])?;
    /// assert_eq!(gx, vec![10.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_input<T: Element>(&self, grad_output: &[T], weight: &[T]) -> Result<Vec<T>> {
        let mut grad_input = try_filled(self.geometry.output_len(), T::ZERO)?;
        self.backward_input_into(grad_output, weight, &mut grad_input)?;
        Ok(grad_input)
    }

    /// Writes the gradient with respect to the input (a convolution of `grad_output` with the
    /// weight, conjugated for complex types) into `grad_input`.
    ///
    /// # Shapes
    /// `grad_output`: [`output_shape`](ConvTranspose2dPlan::output_shape), `weight`: [`weight_shape`](ConvTranspose2dPlan::weight_shape),
    /// `out`: [`input_shape`](ConvTranspose2dPlan::input_shape).
    ///
    /// # Errors
    /// A slice whose length differs from its shape's.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([1, 1, 1, 1], [1, 1, 1, 1], &Default::default())?;
    /// let mut gx = [0.0f64];
    /// plan.backward_input_into(&[3.0], &[2.0], &mut gx)?;
    /// assert_eq!(gx, [6.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_input_into<T: Element>(
        &self,
        grad_output: &[T],
        weight: &[T],
        grad_input: &mut [T],
    ) -> Result<()> {
        let g = &self.geometry;
        check_len("grad_output", grad_output.len(), self.output_shape())?;
        check_len("weight", weight.len(), g.weight_shape())?;
        check_len("grad_input", grad_input.len(), self.input_shape())?;
        let gy = operand(grad_output)?;
        let w = prepared_weight(weight, true)?;
        fill(grad_input, |gx| {
            self.algorithm
                .install(g, || kernels::forward(self.algorithm, g, &gy, &w, None, gx))
        })
    }

    /// The weight gradient in a new vector; see
    /// [`backward_weight_into`](ConvTranspose2dPlan::backward_weight_into).
    ///
    /// # Shapes
    /// `input`: [`input_shape`](ConvTranspose2dPlan::input_shape), `grad_output`: [`output_shape`](ConvTranspose2dPlan::output_shape);
    /// the result: [`weight_shape`](ConvTranspose2dPlan::weight_shape).
    ///
    /// # Errors
    /// As [`backward_weight_into`](ConvTranspose2dPlan::backward_weight_into).
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([1, 1, 1, 1], [1, 1, 2, 2], &Default::default())?;
    /// let gw = plan.backward_weight(&[2.0f32], &[1.0, 2.0, 3.0, 4.0])?;
    /// assert_eq!(gw, vec![2.0, 4.0, 6.0, 8.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_weight<T: Element>(&self, input: &[T], grad_output: &[T]) -> Result<Vec<T>> {
        let mut grad_weight = try_filled(self.geometry.weight_len(), T::ZERO)?;
        self.backward_weight_into(input, grad_output, &mut grad_weight)?;
        Ok(grad_weight)
    }

    /// Writes the gradient with respect to the weight (for complex types, the sum of
    /// `conj(input) * grad_output`, as PyTorch) into `grad_weight`.
    ///
    /// # Shapes
    /// `input`: [`input_shape`](ConvTranspose2dPlan::input_shape), `grad_output`: [`output_shape`](ConvTranspose2dPlan::output_shape),
    /// `out`: [`weight_shape`](ConvTranspose2dPlan::weight_shape).
    ///
    /// # Errors
    /// A slice whose length differs from its shape's.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([2, 1, 1, 1], [1, 1, 1, 1], &Default::default())?;
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
        check_len("input", input.len(), self.input_shape())?;
        check_len("grad_output", grad_output.len(), self.output_shape())?;
        check_len("grad_weight", grad_weight.len(), g.weight_shape())?;
        let x = operand(input)?;
        let gy = operand(grad_output)?;
        // The kernel sums conj(its input) * (its output gradient) = conj(gy) * x here;
        // PyTorch's convention wants conj(x) * gy, the conjugate of that.
        fill(grad_weight, |gw| {
            self.algorithm.install(g, || {
                kernels::backward_weight(self.algorithm, g, &gy, &x, gw)
            })?;
            conjugate_in_place(gw);
            Ok(())
        })
    }

    /// The bias gradient in a new vector; see
    /// [`backward_bias_into`](ConvTranspose2dPlan::backward_bias_into).
    ///
    /// # Shapes
    /// `grad_output`: [`output_shape`](ConvTranspose2dPlan::output_shape); the result: `[out_channels]`.
    ///
    /// # Errors
    /// As [`backward_bias_into`](ConvTranspose2dPlan::backward_bias_into).
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([1, 1, 1, 1], [1, 1, 2, 2], &Default::default())?;
    /// assert_eq!(plan.backward_bias(&[1.0f32, 2.0, 3.0, 4.0])?, vec![10.0]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_bias<T: Element>(&self, grad_output: &[T]) -> Result<Vec<T>> {
        let mut grad_bias = try_filled(self.geometry.cin, T::ZERO)?;
        self.backward_bias_into(grad_output, &mut grad_bias)?;
        Ok(grad_bias)
    }

    /// Writes the gradient with respect to the bias into `grad_bias`.
    ///
    /// # Shapes
    /// `grad_output`: [`output_shape`](ConvTranspose2dPlan::output_shape), `out`: `[out_channels]`.
    ///
    /// # Errors
    /// A slice whose length differs from its shape's.
    ///
    /// # Example
    /// ```
    /// let plan = conv2d::ConvTranspose2dPlan::new([1, 1, 1, 1], [1, 1, 1, 1], &Default::default())?;
    /// let mut gb = [0.0f32];
    /// plan.backward_bias_into(&[2.5], &mut gb)?;
    /// assert_eq!(gb, [2.5]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward_bias_into<T: Element>(
        &self,
        grad_output: &[T],
        grad_bias: &mut [T],
    ) -> Result<()> {
        let g = &self.geometry;
        check_len("grad_output", grad_output.len(), self.output_shape())?;
        check_len("grad_bias", grad_bias.len(), [1, g.cin, 1, 1])?;
        let gy = operand(grad_output)?;
        fill(grad_bias, |gb| {
            install(g.output_len(), INLINE_WORK, || {
                kernels::backward_bias(&gy, g.n, gb)
            });
            Ok(())
        })
    }
}
