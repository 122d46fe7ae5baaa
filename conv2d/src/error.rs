//! The error type every fallible call returns.

use std::fmt;

/// What kind of mistake a [`ConvError`] reports, for callers that branch on it.
///
/// # Example
/// ```
/// use conv2d::{conv2d, Conv2dOptions, ErrorKind};
/// use ndarray::Array4;
///
/// let x = Array4::<f32>::zeros((1, 5, 8, 8));
/// let w = Array4::<f32>::zeros((4, 4, 3, 3));
/// let err = conv2d(&x, &w, None, &Conv2dOptions::default()).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::ShapeMismatch);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An option is out of its domain (zero stride, `Same` with stride > 1, ...).
    InvalidArgument,
    /// Tensor shapes do not fit together (channels, groups, ranks, bias length, kernel size).
    ShapeMismatch,
    /// A caller-provided buffer has the wrong length.
    BufferLength,
    /// Shape arithmetic overflowed `usize`.
    Overflow,
    /// A buffer of the needed size could not be allocated.
    Allocation,
}

/// An invalid argument or shape, with a message that names the offending values.
///
/// Messages follow PyTorch's wording where PyTorch has one, so that an error seen in
/// a Rust port reads like the one the Python model would have raised.
///
/// # Example
/// ```
/// use conv2d::{conv2d, Conv2dOptions};
/// use ndarray::Array4;
///
/// let x = Array4::<f32>::zeros((1, 4, 8, 8));
/// let w = Array4::<f32>::zeros((8, 4, 3, 3));
/// let err = conv2d(&x, &w, None, &Conv2dOptions::default().stride(0)).unwrap_err();
/// assert!(err.to_string().contains("non-positive stride"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvError {
    kind: ErrorKind,
    message: String,
}

impl ConvError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn shape(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ShapeMismatch, message)
    }

    pub(crate) fn overflow(what: &str) -> Self {
        Self::new(
            ErrorKind::Overflow,
            format!("shape arithmetic overflows usize while computing {what}"),
        )
    }

    /// The category of the error.
    ///
    /// # Example
    /// ```
    /// use conv2d::{conv2d, Conv2dOptions, ErrorKind};
    /// use ndarray::Array4;
    ///
    /// let x = Array4::<f32>::zeros((1, 1, 2, 2));
    /// let w = Array4::<f32>::zeros((1, 1, 3, 3));
    /// let err = conv2d(&x, &w, None, &Conv2dOptions::default()).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::ShapeMismatch);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message, naming the offending values.
    ///
    /// # Example
    /// ```
    /// use conv2d::{conv2d, Conv2dOptions};
    /// use ndarray::Array4;
    ///
    /// let x = Array4::<f32>::zeros((1, 1, 2, 2));
    /// let w = Array4::<f32>::zeros((1, 1, 3, 3));
    /// let err = conv2d(&x, &w, None, &Conv2dOptions::default()).unwrap_err();
    /// assert!(err.message().contains("Kernel size: (3 x 3)"));
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConvError {}

/// Shorthand for `Result<T, ConvError>`.
///
/// # Example
/// ```
/// fn output_channels() -> conv2d::Result<usize> {
///     let plan = conv2d::Conv2dPlan::new([1, 3, 8, 8], [4, 3, 3, 3], &Default::default())?;
///     Ok(plan.output_shape()[1])
/// }
/// assert_eq!(output_channels()?, 4);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
pub type Result<T> = std::result::Result<T, ConvError>;

/// Formats a shape the way PyTorch prints `tensor.size()` in its messages: `[1, 4, 5, 5]`.
pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Allocates a vector of `len` copies of `value`, reporting failure as an error instead of aborting.
pub(crate) fn try_filled<T: Clone>(len: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    try_reserve(&mut v, len)?;
    v.resize(len, value);
    Ok(v)
}

/// Room for `additional` more values in `v`, or an `Allocation` error.
pub(crate) fn try_reserve<T>(v: &mut Vec<T>, additional: usize) -> Result<()> {
    v.try_reserve_exact(additional).map_err(|_| {
        ConvError::new(
            ErrorKind::Allocation,
            format!(
                "cannot allocate a buffer of {additional} elements ({} bytes each)",
                std::mem::size_of::<T>()
            ),
        )
    })
}
