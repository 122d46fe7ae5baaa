//! Which algorithm computes a convolution, chosen from its shape or forced by the caller.

use crate::geometry::Geometry;

/// How a plan computes the forward convolution (and, for a transposed convolution, its
/// input gradient, which is the same computation).
///
/// Plans choose from the shape; [`Conv2dPlan::with_algorithm`](crate::Conv2dPlan::with_algorithm)
/// forces one (every algorithm is exact to the same tolerance; they may differ in the last
/// bits, as summation orders differ).
///
/// # Example
/// ```
/// use conv2d::{Algorithm, Conv2dOptions, Conv2dPlan};
///
/// let depthwise = Conv2dPlan::new([1, 32, 28, 28], [32, 1, 3, 3], &Conv2dOptions::default().groups(32))?;
/// assert_eq!(depthwise.algorithm(), Algorithm::Direct);
/// let dense = Conv2dPlan::new([1, 64, 28, 28], [64, 64, 3, 3], &Conv2dOptions::default())?;
/// assert_eq!(dense.algorithm(), Algorithm::Im2colGemm);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Direct convolution, one output row and one tap at a time: the simplest kernel, and
    /// the strided input gradient of [`Algorithm::Direct`].
    DirectRows,
    /// Patches of a bounded block of output pixels unrolled into a column buffer, then one
    /// GEMM with the group's weight panel: best for many channels. Scratch: at most 128 Ki
    /// elements of column buffer per task, plus the GEMM's packing buffers.
    Im2colGemm,
    /// Direct convolution with the sums in registers: the input rows a band of output rows
    /// reads, zero-padded and split by stride phase, then 64 outputs at a time, tap after
    /// tap: best for depthwise and small grouped convolutions. Its weight gradient reduces
    /// vectors of partial sums over the same slabs; its input gradient, with stride 1, is
    /// the same kernel on the flipped weight (other strides run [`Algorithm::DirectRows`]).
    /// Scratch: per task, the padded rows of its band in each input channel of the group.
    /// Where those rows would be mostly padding no tap reads (a huge stride, padding or
    /// dilation), [`Algorithm::Im2colGemm`] runs instead.
    Direct,
}

impl Algorithm {
    /// A short name for tables and logs.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::Algorithm::Im2colGemm.name(), "im2col-gemm");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::DirectRows => "direct-rows",
            Algorithm::Im2colGemm => "im2col-gemm",
            Algorithm::Direct => "direct",
        }
    }

    /// The choice for a shape: a GEMM pays off once the weight panel has enough rows
    /// (output channels per group) and columns (terms per output), or when `direct`'s
    /// staged rows would not [`fit`](crate::kernels::direct::fits).
    pub(crate) fn choose(g: &Geometry) -> Self {
        let terms = g.cin_per_group().saturating_mul(g.kh).saturating_mul(g.kw);
        if (g.cout_per_group() >= 8 && terms >= 16) || !crate::kernels::direct::fits(g) {
            Algorithm::Im2colGemm
        } else {
            Algorithm::Direct
        }
    }
}
