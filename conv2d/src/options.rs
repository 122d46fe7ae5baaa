//! Options with PyTorch's names and defaults.

use std::fmt;

/// A per-axis value `(height, width)`; built from one number or a pair, as PyTorch accepts both.
///
/// # Example
/// ```
/// use conv2d::Pair;
///
/// assert_eq!(Pair::from(2), Pair::new(2, 2));
/// assert_eq!(Pair::from((2, 1)), Pair { h: 2, w: 1 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pair {
    /// The value along the height axis.
    pub h: usize,
    /// The value along the width axis.
    pub w: usize,
}

impl Pair {
    /// A pair with its height and width values.
    ///
    /// # Example
    /// ```
    /// let p = conv2d::Pair::new(3, 5);
    /// assert_eq!((p.h, p.w), (3, 5));
    /// ```
    pub const fn new(h: usize, w: usize) -> Self {
        Self { h, w }
    }
}

impl From<usize> for Pair {
    fn from(v: usize) -> Self {
        Self { h: v, w: v }
    }
}

impl From<(usize, usize)> for Pair {
    fn from((h, w): (usize, usize)) -> Self {
        Self { h, w }
    }
}

impl From<[usize; 2]> for Pair {
    fn from([h, w]: [usize; 2]) -> Self {
        Self { h, w }
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.h, self.w)
    }
}

/// The `padding` argument of `conv2d`: explicit amounts, `'same'` or `'valid'`.
///
/// # Example
/// ```
/// use conv2d::{Padding, Pair};
///
/// assert_eq!(Padding::from(1), Padding::Explicit(Pair::new(1, 1)));
/// assert_eq!(Padding::from((4, 2)), Padding::Explicit(Pair::new(4, 2)));
/// let _ = Padding::Same; // output has the input's size; stride must be 1
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// The same amount on both sides of each axis.
    Explicit(Pair),
    /// PyTorch's `padding='same'`: total `dilation*(k-1)` per axis, `total/2` before and the
    /// rest after; only with stride 1.
    Same,
    /// PyTorch's `padding='valid'`: no padding.
    Valid,
}

/// PyTorch's `padding='same'`, so that `.padding(Same)` reads as in Python.
pub use Padding::Same;
/// PyTorch's `padding='valid'`, so that `.padding(Valid)` reads as in Python.
pub use Padding::Valid;

impl Default for Padding {
    fn default() -> Self {
        Padding::Explicit(Pair::new(0, 0))
    }
}

impl<P: Into<Pair>> From<P> for Padding {
    fn from(p: P) -> Self {
        Padding::Explicit(p.into())
    }
}

/// How `Conv2d` fills the padded border: PyTorch's `padding_mode`.
///
/// # Example
/// ```
/// use conv2d::{conv2d, Conv2dOptions, PaddingMode};
/// use ndarray::Array4;
///
/// let x = Array4::<f32>::ones((1, 1, 4, 4));
/// let w = Array4::<f32>::ones((1, 1, 3, 3));
/// let opts = Conv2dOptions::default().padding(1).padding_mode(PaddingMode::Replicate);
/// let y = conv2d(&x, &w, None, &opts).unwrap();
/// assert!(y.iter().all(|&v| v == 9.0)); // replicated ones, unlike zeros at the border
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PaddingMode {
    /// Zeros outside the input (the default).
    #[default]
    Zeros,
    /// Mirror without repeating the edge pixel; padding must be smaller than the input.
    Reflect,
    /// Repeat the edge pixel.
    Replicate,
    /// Wrap around; padding must not exceed the input.
    Circular,
}

impl PaddingMode {
    /// PyTorch's string for the mode (`"zeros"`, `"reflect"`, ...).
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::PaddingMode::Circular.as_str(), "circular");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            PaddingMode::Zeros => "zeros",
            PaddingMode::Reflect => "reflect",
            PaddingMode::Replicate => "replicate",
            PaddingMode::Circular => "circular",
        }
    }
}

/// Options of `conv2d`: PyTorch's `stride`, `padding`, `dilation`, `groups`, plus
/// `nn.Conv2d`'s `padding_mode`.
///
/// Defaults are PyTorch's: stride 1, padding 0, dilation 1, groups 1, zeros padding.
///
/// # Example
/// ```
/// use conv2d::{Conv2dOptions, Same};
///
/// let opts = Conv2dOptions::default().stride((2, 1)).padding((4, 2)).dilation((3, 1));
/// assert_eq!(opts.stride.h, 2);
/// let same = Conv2dOptions::default().padding(Same).groups(4);
/// assert_eq!(same.groups, 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dOptions {
    /// Step between applications of the kernel.
    pub stride: Pair,
    /// Implicit padding: explicit amounts, `Same` or `Valid`.
    pub padding: Padding,
    /// Spacing between kernel taps.
    pub dilation: Pair,
    /// Number of blocked connections from input to output channels.
    pub groups: usize,
    /// What the padded border holds.
    pub padding_mode: PaddingMode,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Self {
            stride: Pair::new(1, 1),
            padding: Padding::default(),
            dilation: Pair::new(1, 1),
            groups: 1,
            padding_mode: PaddingMode::Zeros,
        }
    }
}

impl Conv2dOptions {
    /// Sets `stride` (one number or `(h, w)`).
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::Conv2dOptions::default().stride(2).stride.w, 2);
    /// ```
    pub fn stride(mut self, stride: impl Into<Pair>) -> Self {
        self.stride = stride.into();
        self
    }

    /// Sets `padding` (one number, `(h, w)`, `Same` or `Valid`).
    ///
    /// # Example
    /// ```
    /// use conv2d::{Conv2dOptions, Padding, Valid};
    /// assert_eq!(Conv2dOptions::default().padding(Valid).padding, Padding::Valid);
    /// ```
    pub fn padding(mut self, padding: impl Into<Padding>) -> Self {
        self.padding = padding.into();
        self
    }

    /// Sets `dilation` (one number or `(h, w)`).
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::Conv2dOptions::default().dilation((3, 1)).dilation.h, 3);
    /// ```
    pub fn dilation(mut self, dilation: impl Into<Pair>) -> Self {
        self.dilation = dilation.into();
        self
    }

    /// Sets `groups`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::Conv2dOptions::default().groups(8).groups, 8);
    /// ```
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets `padding_mode` (as `nn.Conv2d`'s argument).
    ///
    /// # Example
    /// ```
    /// use conv2d::{Conv2dOptions, PaddingMode};
    /// let o = Conv2dOptions::default().padding_mode(PaddingMode::Reflect);
    /// assert_eq!(o.padding_mode, PaddingMode::Reflect);
    /// ```
    pub fn padding_mode(mut self, padding_mode: PaddingMode) -> Self {
        self.padding_mode = padding_mode;
        self
    }
}

/// Options of `conv_transpose2d`: PyTorch's `stride`, `padding`, `output_padding`, `groups`,
/// `dilation`, plus `nn.ConvTranspose2d.forward`'s `output_size`.
///
/// Defaults are PyTorch's: stride 1, padding 0, output_padding 0, groups 1, dilation 1.
///
/// # Example
/// ```
/// use conv2d::ConvTranspose2dOptions;
///
/// let opts = ConvTranspose2dOptions::default().stride(2).padding(1).output_size([12, 12]);
/// assert_eq!(opts.output_size.as_deref(), Some(&[12, 12][..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dOptions {
    /// Step between applications of the kernel (the upsampling factor).
    pub stride: Pair,
    /// `dilation*(kernel_size-1) - padding` zeros are added on both sides of the input.
    pub padding: Pair,
    /// Extra rows/columns added to one side of the output shape; smaller than stride or dilation.
    pub output_padding: Pair,
    /// Number of blocked connections from input to output channels.
    pub groups: usize,
    /// Spacing between kernel taps.
    pub dilation: Pair,
    /// An exact output size (2 spatial numbers, or with the leading batch/channel numbers),
    /// which overrides `output_padding`; must lie within PyTorch's valid range.
    pub output_size: Option<Vec<usize>>,
}

impl Default for ConvTranspose2dOptions {
    fn default() -> Self {
        Self {
            stride: Pair::new(1, 1),
            padding: Pair::new(0, 0),
            output_padding: Pair::new(0, 0),
            groups: 1,
            dilation: Pair::new(1, 1),
            output_size: None,
        }
    }
}

impl ConvTranspose2dOptions {
    /// Sets `stride`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::ConvTranspose2dOptions::default().stride(2).stride.h, 2);
    /// ```
    pub fn stride(mut self, stride: impl Into<Pair>) -> Self {
        self.stride = stride.into();
        self
    }

    /// Sets `padding`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::ConvTranspose2dOptions::default().padding((4, 2)).padding.w, 2);
    /// ```
    pub fn padding(mut self, padding: impl Into<Pair>) -> Self {
        self.padding = padding.into();
        self
    }

    /// Sets `output_padding`.
    ///
    /// # Example
    /// ```
    /// let o = conv2d::ConvTranspose2dOptions::default().stride(2).output_padding(1);
    /// assert_eq!(o.output_padding.h, 1);
    /// ```
    pub fn output_padding(mut self, output_padding: impl Into<Pair>) -> Self {
        self.output_padding = output_padding.into();
        self
    }

    /// Sets `groups`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::ConvTranspose2dOptions::default().groups(2).groups, 2);
    /// ```
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets `dilation`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::ConvTranspose2dOptions::default().dilation(2).dilation.w, 2);
    /// ```
    pub fn dilation(mut self, dilation: impl Into<Pair>) -> Self {
        self.dilation = dilation.into();
        self
    }

    /// Sets `output_size`: `[h, w]`, or the full size `[n, c, h, w]` (`[c, h, w]` unbatched).
    ///
    /// # Example
    /// ```
    /// let o = conv2d::ConvTranspose2dOptions::default().output_size([1, 16, 12, 12]);
    /// assert_eq!(o.output_size.unwrap().len(), 4);
    /// ```
    pub fn output_size(mut self, output_size: impl AsRef<[usize]>) -> Self {
        self.output_size = Some(output_size.as_ref().to_vec());
        self
    }
}

/// Which gradients a backward call computes, as `aten::convolution_backward`'s output mask.
///
/// # Example
/// ```
/// use conv2d::GradMask;
///
/// let only_weight = GradMask { input: false, weight: true, bias: false };
/// assert_ne!(only_weight, GradMask::ALL);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GradMask {
    /// Compute the gradient with respect to the input.
    pub input: bool,
    /// Compute the gradient with respect to the weight.
    pub weight: bool,
    /// Compute the gradient with respect to the bias.
    pub bias: bool,
}

impl GradMask {
    /// All three gradients.
    ///
    /// # Example
    /// ```
    /// use conv2d::GradMask;
    /// assert!(GradMask::ALL.input && GradMask::ALL.weight && GradMask::ALL.bias);
    /// ```
    pub const ALL: GradMask = GradMask {
        input: true,
        weight: true,
        bias: true,
    };
}

impl Default for GradMask {
    fn default() -> Self {
        Self::ALL
    }
}
