//! [`Conv2d`]: PyTorch's `nn.Conv2d`.

use ndarray::{Array, Array1, Array4, ArrayBase, Data, Dimension};
use rand::{rngs::StdRng, Rng, SeedableRng};

use safetensors::SafeTensors;

use super::init::uniform_parameters;
use super::state_dict::{load_parameters, parameters_state_dict, StateTensor};
use crate::element::Element;
use crate::error::{ConvError, Result};
use crate::functional::{conv2d, conv2d_backward, Gradients};
use crate::options::{Conv2dOptions, GradMask, Padding, PaddingMode, Pair};

/// The constructor arguments of `nn.Conv2d`, with PyTorch's names and defaults.
///
/// `stride=1, padding=0, dilation=1, groups=1, bias=true, padding_mode=zeros`.
///
/// # Example
/// ```
/// use conv2d::nn::Conv2dConfig;
///
/// // nn.Conv2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1))
/// let m = Conv2dConfig::new(16, 33, (3, 5))
///     .stride((2, 1))
///     .padding((4, 2))
///     .dilation((3, 1))
///     .init_seeded::<f32>(0)?;
/// assert_eq!(m.weight.dim(), (33, 16, 3, 5));
/// # Ok::<(), conv2d::ConvError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dConfig {
    /// Channels of the input.
    pub in_channels: usize,
    /// Channels of the output.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel_size: Pair,
    /// Step between kernel applications.
    pub stride: Pair,
    /// Padding: explicit, `Same` or `Valid`.
    pub padding: Padding,
    /// Spacing between kernel taps.
    pub dilation: Pair,
    /// Blocked connections from input to output channels.
    pub groups: usize,
    /// Whether the layer has a learnable bias.
    pub bias: bool,
    /// What the padded border holds.
    pub padding_mode: PaddingMode,
}

impl Conv2dConfig {
    /// `nn.Conv2d(in_channels, out_channels, kernel_size)` with the other arguments defaulted.
    ///
    /// # Example
    /// ```
    /// let c = conv2d::nn::Conv2dConfig::new(3, 8, 3);
    /// assert_eq!((c.groups, c.bias), (1, true));
    /// ```
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl Into<Pair>) -> Self {
        let defaults = Conv2dOptions::default();
        Self {
            in_channels,
            out_channels,
            kernel_size: kernel_size.into(),
            stride: defaults.stride,
            padding: defaults.padding,
            dilation: defaults.dilation,
            groups: defaults.groups,
            bias: true,
            padding_mode: defaults.padding_mode,
        }
    }

    /// Sets `stride`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::nn::Conv2dConfig::new(3, 8, 3).stride(2).stride.h, 2);
    /// ```
    pub fn stride(mut self, stride: impl Into<Pair>) -> Self {
        self.stride = stride.into();
        self
    }

    /// Sets `padding` (a number, a pair, `Same` or `Valid`).
    ///
    /// # Example
    /// ```
    /// use conv2d::{nn::Conv2dConfig, Padding, Same};
    /// assert_eq!(Conv2dConfig::new(3, 8, 3).padding(Same).padding, Padding::Same);
    /// ```
    pub fn padding(mut self, padding: impl Into<Padding>) -> Self {
        self.padding = padding.into();
        self
    }

    /// Sets `dilation`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::nn::Conv2dConfig::new(3, 8, 3).dilation(2).dilation.w, 2);
    /// ```
    pub fn dilation(mut self, dilation: impl Into<Pair>) -> Self {
        self.dilation = dilation.into();
        self
    }

    /// Sets `groups`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::nn::Conv2dConfig::new(8, 8, 3).groups(8).groups, 8);
    /// ```
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets `bias` (whether the layer has one).
    ///
    /// # Example
    /// ```
    /// let m = conv2d::nn::Conv2dConfig::new(3, 8, 3).bias(false).init_seeded::<f32>(1)?;
    /// assert!(m.bias.is_none());
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets `padding_mode`.
    ///
    /// # Example
    /// ```
    /// use conv2d::{nn::Conv2dConfig, PaddingMode};
    /// let c = Conv2dConfig::new(3, 8, 3).padding_mode(PaddingMode::Circular);
    /// assert_eq!(c.padding_mode, PaddingMode::Circular);
    /// ```
    pub fn padding_mode(mut self, padding_mode: PaddingMode) -> Self {
        self.padding_mode = padding_mode;
        self
    }

    /// The functional options this layer applies.
    ///
    /// # Example
    /// ```
    /// let c = conv2d::nn::Conv2dConfig::new(3, 8, 3).stride(2);
    /// assert_eq!(c.options().stride.h, 2);
    /// ```
    pub fn options(&self) -> Conv2dOptions {
        Conv2dOptions {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
            padding_mode: self.padding_mode,
        }
    }

    /// Builds the layer with weight and bias drawn from `U(-sqrt(k), sqrt(k))`,
    /// `k = groups / (in_channels * kh * kw)`, as PyTorch initialises them.
    ///
    /// # Errors
    /// As PyTorch's constructor: zero groups, groups not dividing the channel counts, `Same`
    /// with a stride other than 1, and also a zero kernel size.
    ///
    /// # Example
    /// ```
    /// use rand::SeedableRng;
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    /// let m = conv2d::nn::Conv2dConfig::new(4, 6, 3).groups(2).init::<f64>(&mut rng)?;
    /// let bound = (2.0f64 / (4.0 * 9.0)).sqrt();
    /// assert!(m.weight.iter().all(|w| w.abs() <= bound));
    /// assert!(conv2d::nn::Conv2dConfig::new(5, 4, 3).groups(2).init::<f32>(&mut rng).is_err());
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn init<T: Element>(&self, rng: &mut impl Rng) -> Result<Conv2d<T>> {
        let (weight, bias) = uniform_parameters(
            self.weight_shape()?,
            self.bias.then_some(self.out_channels),
            rng,
        )?;
        Ok(Conv2d {
            weight,
            bias,
            config: *self,
        })
    }

    /// Builds the layer with the weight and bias a PyTorch `state_dict` holds under `prefix`
    /// (`"features.0"` reads `features.0.weight` and `features.0.bias`; an empty prefix reads
    /// `weight` and `bias`), from a file written by `safetensors.torch.save_file`. Values of
    /// another floating-point dtype are converted, as `load_state_dict` does.
    ///
    /// # Errors
    /// Those of [`init`](Conv2dConfig::init); a missing key; a `bias` key when the config
    /// says `bias=false`; a tensor whose shape is not PyTorch's for this config; a
    /// non-floating-point dtype.
    ///
    /// # Example
    /// ```
    /// use conv2d::nn::{serialize_state_dict, Conv2dConfig};
    ///
    /// let config = Conv2dConfig::new(3, 8, 3).padding(1);
    /// let saved = config.init_seeded::<f32>(0)?;
    /// let bytes = serialize_state_dict(&saved.state_dict("conv")?)?;
    /// let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    /// let loaded = config.load::<half::f16>(&file, "conv")?;
    /// assert_eq!(loaded.weight.dim(), (8, 3, 3, 3));
    /// assert!(Conv2dConfig::new(3, 8, 5).load::<f32>(&file, "conv").is_err()); // wrong shape
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn load<T: Element>(
        &self,
        state_dict: &SafeTensors<'_>,
        prefix: &str,
    ) -> Result<Conv2d<T>> {
        let (weight, bias) = load_parameters(
            state_dict,
            prefix,
            self.weight_shape()?,
            self.bias.then_some(self.out_channels),
        )?;
        Ok(Conv2d {
            weight,
            bias,
            config: *self,
        })
    }

    /// The weight shape PyTorch gives this layer, after the constructor's checks.
    fn weight_shape(&self) -> Result<[usize; 4]> {
        check_layer_args(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.groups,
        )?;
        if self.padding == Padding::Same && (self.stride.h != 1 || self.stride.w != 1) {
            return Err(ConvError::invalid(format!(
                "padding='same' is not supported for strided convolutions, but got stride={}",
                self.stride
            )));
        }
        Ok([
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel_size.h,
            self.kernel_size.w,
        ])
    }

    /// [`init`](Conv2dConfig::init) with a `StdRng` seeded by `seed`.
    ///
    /// # Errors
    /// As [`init`](Conv2dConfig::init).
    ///
    /// # Example
    /// ```
    /// use conv2d::nn::Conv2dConfig;
    /// let a = Conv2dConfig::new(3, 8, 3).init_seeded::<f32>(42)?;
    /// let b = Conv2dConfig::new(3, 8, 3).init_seeded::<f32>(42)?;
    /// assert_eq!(a.weight, b.weight);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn init_seeded<T: Element>(&self, seed: u64) -> Result<Conv2d<T>> {
        self.init(&mut StdRng::seed_from_u64(seed))
    }
}

/// The checks PyTorch's `_ConvNd.__init__` makes, plus a positive kernel size.
pub(super) fn check_layer_args(
    in_channels: usize,
    out_channels: usize,
    kernel_size: Pair,
    groups: usize,
) -> Result<()> {
    if groups == 0 {
        return Err(ConvError::invalid(
            "groups must be a positive integer, but got groups=0",
        ));
    }
    if !in_channels.is_multiple_of(groups) {
        return Err(ConvError::invalid(format!(
            "in_channels must be divisible by groups, but got in_channels={in_channels}, groups={groups}"
        )));
    }
    if !out_channels.is_multiple_of(groups) {
        return Err(ConvError::invalid(format!(
            "out_channels must be divisible by groups, but got out_channels={out_channels}, groups={groups}"
        )));
    }
    if kernel_size.h == 0 || kernel_size.w == 0 {
        return Err(ConvError::invalid(format!(
            "kernel_size must be positive, but got kernel_size={kernel_size}"
        )));
    }
    Ok(())
}

/// PyTorch's `nn.Conv2d`: a convolution layer owning its weight and bias.
///
/// # Shapes
/// - input: `(N, Cin, H, W)` or `(Cin, H, W)`; output: `(N, Cout, Hout, Wout)` or `(Cout, Hout, Wout)`
/// - `weight`: `(out_channels, in_channels/groups, kh, kw)`; `bias`: `(out_channels)`
///
/// # Example
/// ```
/// use conv2d::nn::Conv2dConfig;
/// use ndarray::Array4;
///
/// // m = nn.Conv2d(16, 33, 3, stride=2); m(torch.randn(20, 16, 50, 100))
/// let m = Conv2dConfig::new(16, 33, 3).stride(2).init_seeded::<f32>(0)?;
/// let y = m.forward(&Array4::<f32>::zeros((20, 16, 50, 100)))?;
/// assert_eq!(y.shape(), &[20, 33, 24, 49]);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d<T: Element> {
    /// The filters, `(out_channels, in_channels/groups, kh, kw)`.
    pub weight: Array4<T>,
    /// The bias, `(out_channels)`, if the layer has one.
    pub bias: Option<Array1<T>>,
    config: Conv2dConfig,
}

impl<T: Element> Conv2d<T> {
    /// The arguments the layer was built with.
    ///
    /// # Example
    /// ```
    /// let m = conv2d::nn::Conv2dConfig::new(3, 8, 5).init_seeded::<f32>(0)?;
    /// assert_eq!(m.config().kernel_size.h, 5);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// The layer's parameters under `prefix`, as PyTorch's `state_dict()` names them
    /// (`{prefix}.weight`, and `{prefix}.bias` if the layer has one), for
    /// [`serialize_state_dict`](crate::nn::serialize_state_dict).
    ///
    /// # Errors
    /// Complex element types, which safetensors files from PyTorch cannot hold.
    ///
    /// # Example
    /// ```
    /// let m = conv2d::nn::Conv2dConfig::new(3, 8, 3).bias(false).init_seeded::<f32>(0)?;
    /// let names: Vec<String> = m.state_dict("stem")?.into_iter().map(|(k, _)| k).collect();
    /// assert_eq!(names, ["stem.weight"]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn state_dict(&self, prefix: &str) -> Result<Vec<(String, StateTensor)>> {
        parameters_state_dict(prefix, &self.weight, self.bias.as_ref())
    }

    /// Applies the layer to a batched or unbatched input.
    ///
    /// # Shapes
    /// `input`: `[N, in_channels, H, W]` or unbatched `[in_channels, H, W]`; the result has the
    /// same rank, `[N, out_channels, H_out, W_out]` with `H_out = (H + 2 * padding - dilation *
    /// (kernel - 1) - 1) / stride + 1` (and likewise `W_out`), as in PyTorch's docs.
    ///
    /// # Errors
    /// As [`conv2d`](crate::conv2d) (for example an input with the wrong channel count, or a
    /// `weight`/`bias` replaced by arrays of other shapes).
    ///
    /// # Example
    /// ```
    /// use conv2d::nn::Conv2dConfig;
    /// use ndarray::Array3;
    /// let m = Conv2dConfig::new(16, 33, (3, 5)).stride((2, 1)).padding((4, 2)).init_seeded::<f32>(0)?;
    /// assert_eq!(m.forward(&Array3::<f32>::zeros((16, 50, 100)))?.dim(), (33, 28, 100));
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn forward<S, D>(&self, input: &ArrayBase<S, D>) -> Result<Array<T, D>>
    where
        S: Data<Elem = T>,
        D: Dimension,
    {
        conv2d(
            input,
            &self.weight,
            self.bias.as_ref().map(|b| b.view()),
            &self.config.options(),
        )
    }

    /// Gradients with respect to the input, weight and bias (the last only when the layer has
    /// a bias), given the input of the forward call and the gradient of its output.
    ///
    /// # Shapes
    /// `input` as in [`forward`](Conv2d::forward), `grad_output` the shape of its result; the
    /// gradients have the shapes of `input`, `weight` and `bias`.
    ///
    /// # Errors
    /// As [`conv2d_backward`](crate::conv2d_backward).
    ///
    /// # Example
    /// ```
    /// use conv2d::{nn::Conv2dConfig, GradMask};
    /// use ndarray::Array4;
    /// let m = Conv2dConfig::new(2, 3, 3).padding(1).init_seeded::<f64>(0)?;
    /// let x = Array4::<f64>::ones((1, 2, 4, 4));
    /// let gy = Array4::<f64>::ones((1, 3, 4, 4));
    /// let g = m.backward(&x, &gy, GradMask::ALL)?;
    /// assert_eq!(g.bias.unwrap().to_vec(), vec![16.0; 3]);
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
        conv2d_backward(
            input,
            &self.weight,
            grad_output,
            &self.config.options(),
            mask,
        )
    }
}
