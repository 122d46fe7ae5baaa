//! [`ConvTranspose2d`]: PyTorch's `nn.ConvTranspose2d`.

use ndarray::{Array, Array1, Array4, ArrayBase, Data, Dimension};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::conv2d::check_layer_args;
use safetensors::SafeTensors;

use super::init::uniform_parameters;
use super::state_dict::{load_parameters, parameters_state_dict, StateTensor};
use crate::element::Element;
use crate::error::{ConvError, Result};
use crate::functional::{conv_transpose2d, conv_transpose2d_backward, Gradients};
use crate::options::{ConvTranspose2dOptions, GradMask, PaddingMode, Pair};

/// The constructor arguments of `nn.ConvTranspose2d`, with PyTorch's names and defaults.
///
/// `stride=1, padding=0, output_padding=0, groups=1, bias=true, dilation=1,
/// padding_mode=zeros` (the only mode PyTorch accepts here).
///
/// # Example
/// ```
/// use conv2d::nn::ConvTranspose2dConfig;
///
/// // nn.ConvTranspose2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2))
/// let m = ConvTranspose2dConfig::new(16, 33, (3, 5))
///     .stride((2, 1))
///     .padding((4, 2))
///     .init_seeded::<f32>(0)?;
/// assert_eq!(m.weight.dim(), (16, 33, 3, 5));
/// # Ok::<(), conv2d::ConvError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dConfig {
    /// Channels of the input.
    pub in_channels: usize,
    /// Channels of the output.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel_size: Pair,
    /// Step between kernel applications (the upsampling factor).
    pub stride: Pair,
    /// `dilation*(kernel_size-1) - padding` zeros are added to both sides of the input.
    pub padding: Pair,
    /// Extra size added to one side of the output.
    pub output_padding: Pair,
    /// Blocked connections from input to output channels.
    pub groups: usize,
    /// Whether the layer has a learnable bias.
    pub bias: bool,
    /// Spacing between kernel taps.
    pub dilation: Pair,
    /// Must be [`PaddingMode::Zeros`], as in PyTorch; other modes are rejected by `init`.
    pub padding_mode: PaddingMode,
}

impl ConvTranspose2dConfig {
    /// `nn.ConvTranspose2d(in_channels, out_channels, kernel_size)` with the other arguments
    /// defaulted.
    ///
    /// # Example
    /// ```
    /// let c = conv2d::nn::ConvTranspose2dConfig::new(16, 8, 4);
    /// assert_eq!(c.output_padding.h, 0);
    /// ```
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl Into<Pair>) -> Self {
        let defaults = ConvTranspose2dOptions::default();
        Self {
            in_channels,
            out_channels,
            kernel_size: kernel_size.into(),
            stride: defaults.stride,
            padding: defaults.padding,
            output_padding: defaults.output_padding,
            groups: defaults.groups,
            bias: true,
            dilation: defaults.dilation,
            padding_mode: PaddingMode::Zeros,
        }
    }

    /// Sets `stride`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::nn::ConvTranspose2dConfig::new(4, 4, 2).stride(2).stride.w, 2);
    /// ```
    pub fn stride(mut self, stride: impl Into<Pair>) -> Self {
        self.stride = stride.into();
        self
    }

    /// Sets `padding`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::nn::ConvTranspose2dConfig::new(4, 4, 3).padding(1).padding.h, 1);
    /// ```
    pub fn padding(mut self, padding: impl Into<Pair>) -> Self {
        self.padding = padding.into();
        self
    }

    /// Sets `output_padding`.
    ///
    /// # Example
    /// ```
    /// let c = conv2d::nn::ConvTranspose2dConfig::new(4, 4, 3).stride(2).output_padding(1);
    /// assert_eq!(c.output_padding.w, 1);
    /// ```
    pub fn output_padding(mut self, output_padding: impl Into<Pair>) -> Self {
        self.output_padding = output_padding.into();
        self
    }

    /// Sets `groups`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::nn::ConvTranspose2dConfig::new(4, 4, 3).groups(4).groups, 4);
    /// ```
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets `bias` (whether the layer has one).
    ///
    /// # Example
    /// ```
    /// let m = conv2d::nn::ConvTranspose2dConfig::new(4, 4, 3).bias(false).init_seeded::<f32>(0)?;
    /// assert!(m.bias.is_none());
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets `dilation`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::nn::ConvTranspose2dConfig::new(4, 4, 3).dilation(2).dilation.h, 2);
    /// ```
    pub fn dilation(mut self, dilation: impl Into<Pair>) -> Self {
        self.dilation = dilation.into();
        self
    }

    /// Sets `padding_mode`; anything but zeros makes [`init`](ConvTranspose2dConfig::init) fail,
    /// as PyTorch's constructor does.
    ///
    /// # Example
    /// ```
    /// use conv2d::{nn::ConvTranspose2dConfig, PaddingMode};
    /// let c = ConvTranspose2dConfig::new(4, 4, 3).padding_mode(PaddingMode::Reflect);
    /// assert!(c.init_seeded::<f32>(0).is_err());
    /// ```
    pub fn padding_mode(mut self, padding_mode: PaddingMode) -> Self {
        self.padding_mode = padding_mode;
        self
    }

    /// The functional options this layer applies (without `output_size`).
    ///
    /// # Example
    /// ```
    /// let c = conv2d::nn::ConvTranspose2dConfig::new(4, 4, 3).stride(2);
    /// assert_eq!(c.options().stride.h, 2);
    /// ```
    pub fn options(&self) -> ConvTranspose2dOptions {
        ConvTranspose2dOptions {
            stride: self.stride,
            padding: self.padding,
            output_padding: self.output_padding,
            groups: self.groups,
            dilation: self.dilation,
            output_size: None,
        }
    }

    /// Builds the layer with weight and bias drawn from `U(-sqrt(k), sqrt(k))`,
    /// `k = groups / (out_channels * kh * kw)`, as PyTorch initialises them.
    ///
    /// # Errors
    /// As PyTorch's constructor: a padding mode other than zeros, zero groups, groups not
    /// dividing the channel counts; and a zero kernel size.
    ///
    /// # Example
    /// ```
    /// use rand::SeedableRng;
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    /// let m = conv2d::nn::ConvTranspose2dConfig::new(4, 6, 2).init::<f32>(&mut rng)?;
    /// let bound = (1.0f32 / (6.0 * 4.0)).sqrt();
    /// assert!(m.weight.iter().all(|w| w.abs() <= bound));
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn init<T: Element>(&self, rng: &mut impl Rng) -> Result<ConvTranspose2d<T>> {
        let (weight, bias) = uniform_parameters(
            self.weight_shape()?,
            self.bias.then_some(self.out_channels),
            rng,
        )?;
        Ok(ConvTranspose2d {
            weight,
            bias,
            config: *self,
        })
    }

    /// Builds the layer with the weight and bias a PyTorch `state_dict` holds under `prefix`,
    /// from a file written by `safetensors.torch.save_file`; see [`Conv2dConfig::load`](crate::nn::Conv2dConfig::load).
    ///
    /// # Errors
    /// Those of [`init`](ConvTranspose2dConfig::init) and of [`Conv2dConfig::load`](crate::nn::Conv2dConfig::load).
    ///
    /// # Example
    /// ```
    /// use conv2d::nn::{serialize_state_dict, ConvTranspose2dConfig};
    ///
    /// let config = ConvTranspose2dConfig::new(8, 4, 4).stride(2).padding(1);
    /// let bytes = serialize_state_dict(&config.init_seeded::<f32>(0)?.state_dict("up")?)?;
    /// let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    /// assert_eq!(config.load::<f64>(&file, "up")?.weight.dim(), (8, 4, 4, 4));
    /// assert!(config.load::<f64>(&file, "down").is_err()); // missing key
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn load<T: Element>(
        &self,
        state_dict: &SafeTensors<'_>,
        prefix: &str,
    ) -> Result<ConvTranspose2d<T>> {
        let (weight, bias) = load_parameters(
            state_dict,
            prefix,
            self.weight_shape()?,
            self.bias.then_some(self.out_channels),
        )?;
        Ok(ConvTranspose2d {
            weight,
            bias,
            config: *self,
        })
    }

    /// The weight shape PyTorch gives this layer, after the constructor's checks.
    fn weight_shape(&self) -> Result<[usize; 4]> {
        if self.padding_mode != PaddingMode::Zeros {
            return Err(ConvError::invalid(format!(
                "Only \"zeros\" padding mode is supported for ConvTranspose2d, but got \
                 padding_mode=\"{}\"",
                self.padding_mode.as_str()
            )));
        }
        check_layer_args(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.groups,
        )?;
        Ok([
            self.in_channels,
            self.out_channels / self.groups,
            self.kernel_size.h,
            self.kernel_size.w,
        ])
    }

    /// [`init`](ConvTranspose2dConfig::init) with a `StdRng` seeded by `seed`.
    ///
    /// # Errors
    /// As [`init`](ConvTranspose2dConfig::init).
    ///
    /// # Example
    /// ```
    /// let m = conv2d::nn::ConvTranspose2dConfig::new(4, 2, 3).init_seeded::<f64>(9)?;
    /// assert_eq!(m.bias.unwrap().len(), 2);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn init_seeded<T: Element>(&self, seed: u64) -> Result<ConvTranspose2d<T>> {
        self.init(&mut StdRng::seed_from_u64(seed))
    }
}

/// PyTorch's `nn.ConvTranspose2d`: a transposed-convolution layer owning its weight and bias.
///
/// # Shapes
/// - input: `(N, Cin, H, W)` or `(Cin, H, W)`; output: `(N, Cout, Hout, Wout)` or `(Cout, Hout, Wout)`
/// - `weight`: `(in_channels, out_channels/groups, kh, kw)`; `bias`: `(out_channels)`
///
/// # Example
/// ```
/// use conv2d::nn::{Conv2dConfig, ConvTranspose2dConfig};
/// use ndarray::Array4;
///
/// let input = Array4::<f32>::zeros((1, 16, 12, 12));
/// let down = Conv2dConfig::new(16, 16, 3).stride(2).padding(1).init_seeded::<f32>(0)?;
/// let up = ConvTranspose2dConfig::new(16, 16, 3).stride(2).padding(1).init_seeded::<f32>(0)?;
/// let h = down.forward(&input)?;
/// assert_eq!(h.shape(), &[1, 16, 6, 6]);
/// let out = up.forward_with_output_size(&h, input.shape())?;
/// assert_eq!(out.shape(), &[1, 16, 12, 12]);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTranspose2d<T: Element> {
    /// The filters, `(in_channels, out_channels/groups, kh, kw)`.
    pub weight: Array4<T>,
    /// The bias, `(out_channels)`, if the layer has one.
    pub bias: Option<Array1<T>>,
    config: ConvTranspose2dConfig,
}

impl<T: Element> ConvTranspose2d<T> {
    /// The arguments the layer was built with.
    ///
    /// # Example
    /// ```
    /// let m = conv2d::nn::ConvTranspose2dConfig::new(3, 8, 5).init_seeded::<f32>(0)?;
    /// assert_eq!(m.config().out_channels, 8);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn config(&self) -> &ConvTranspose2dConfig {
        &self.config
    }

    /// The layer's parameters under `prefix`, as PyTorch's `state_dict()` names them; see
    /// [`Conv2d::state_dict`](crate::nn::Conv2d::state_dict).
    ///
    /// # Errors
    /// Complex element types, which safetensors files from PyTorch cannot hold.
    ///
    /// # Example
    /// ```
    /// let m = conv2d::nn::ConvTranspose2dConfig::new(8, 4, 2).init_seeded::<f32>(0)?;
    /// assert_eq!(m.state_dict("up")?.len(), 2);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn state_dict(&self, prefix: &str) -> Result<Vec<(String, StateTensor)>> {
        parameters_state_dict(prefix, &self.weight, self.bias.as_ref())
    }

    /// Applies the layer, with the output size given by `output_padding`.
    ///
    /// # Shapes
    /// `input`: `[N, in_channels, H, W]` or unbatched `[in_channels, H, W]`; the result has the
    /// same rank, `[N, out_channels, H_out, W_out]` with `H_out = (H - 1) * stride - 2 * padding +
    /// dilation * (kernel - 1) + output_padding + 1` (and likewise `W_out`), as in PyTorch's docs.
    ///
    /// # Errors
    /// As [`conv_transpose2d`](crate::conv_transpose2d).
    ///
    /// # Example
    /// ```
    /// use conv2d::nn::ConvTranspose2dConfig;
    /// use ndarray::Array4;
    /// let m = ConvTranspose2dConfig::new(16, 33, 3).stride(2).init_seeded::<f32>(0)?;
    /// let y = m.forward(&Array4::<f32>::zeros((20, 16, 50, 100)))?;
    /// assert_eq!(y.shape(), &[20, 33, 101, 201]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn forward<S, D>(&self, input: &ArrayBase<S, D>) -> Result<Array<T, D>>
    where
        S: Data<Elem = T>,
        D: Dimension,
    {
        self.apply(input, &self.config.options())
    }

    /// Applies the layer with an exact `output_size` (`[h, w]` or the full output shape), as
    /// `forward(input, output_size=...)` in PyTorch.
    ///
    /// # Shapes
    /// As [`forward`](ConvTranspose2d::forward), with `H_out, W_out` taken from `output_size`
    /// (which replaces `output_padding`).
    ///
    /// # Errors
    /// An `output_size` outside `[min, min + stride - 1]` per axis or of the wrong length, and
    /// everything [`forward`](ConvTranspose2d::forward) rejects.
    ///
    /// # Example
    /// ```
    /// use conv2d::nn::ConvTranspose2dConfig;
    /// use ndarray::Array4;
    /// let m = ConvTranspose2dConfig::new(4, 4, 3).stride(2).padding(1).init_seeded::<f32>(0)?;
    /// let x = Array4::<f32>::zeros((1, 4, 6, 6));
    /// assert_eq!(m.forward_with_output_size(&x, &[11, 11])?.shape(), &[1, 4, 11, 11]);
    /// assert!(m.forward_with_output_size(&x, &[13, 13]).is_err());
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn forward_with_output_size<S, D>(
        &self,
        input: &ArrayBase<S, D>,
        output_size: &[usize],
    ) -> Result<Array<T, D>>
    where
        S: Data<Elem = T>,
        D: Dimension,
    {
        self.apply(input, &self.config.options().output_size(output_size))
    }

    fn apply<S, D>(
        &self,
        input: &ArrayBase<S, D>,
        options: &ConvTranspose2dOptions,
    ) -> Result<Array<T, D>>
    where
        S: Data<Elem = T>,
        D: Dimension,
    {
        conv_transpose2d(
            input,
            &self.weight,
            self.bias.as_ref().map(|b| b.view()),
            options,
        )
    }

    /// Gradients with respect to the input, weight and bias (the last only when the layer has
    /// a bias). The output size is read from `grad_output`, so a forward call made with an
    /// `output_size` needs nothing more.
    ///
    /// # Shapes
    /// `input` as in [`forward`](ConvTranspose2d::forward), `grad_output` the shape of its
    /// result; the gradients have the shapes of `input`, `weight` and `bias`.
    ///
    /// # Errors
    /// As [`conv_transpose2d_backward`](crate::conv_transpose2d_backward); a `grad_output`
    /// whose spatial size no `output_size` could give is reported as an `output_size` error.
    ///
    /// # Example
    /// ```
    /// use conv2d::{nn::ConvTranspose2dConfig, GradMask};
    /// use ndarray::Array4;
    /// let m = ConvTranspose2dConfig::new(2, 3, 2).stride(2).init_seeded::<f64>(0)?;
    /// let x = Array4::<f64>::ones((1, 2, 3, 3));
    /// let gy = Array4::<f64>::ones((1, 3, 6, 6));
    /// let g = m.backward(&x, &gy, GradMask::ALL)?;
    /// assert_eq!(g.input.unwrap().dim(), (1, 2, 3, 3));
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn backward<S, SG, D>(
        &self,
        input: &ArrayBase<S, D>,
        grad_output: &ArrayBase<SG, D>,
        mask: GradMask,
    ) -> Result<Gradients<T, D>>
    where
        S: Data<Elem = T>,
        SG: Data<Elem = T>,
        D: Dimension,
    {
        let mask = GradMask {
            bias: mask.bias && self.bias.is_some(),
            ..mask
        };
        let spatial = &grad_output.shape()[grad_output.ndim().saturating_sub(2)..];
        let options = self.config.options().output_size(spatial);
        conv_transpose2d_backward(input, &self.weight, grad_output, &options, mask)
    }
}
