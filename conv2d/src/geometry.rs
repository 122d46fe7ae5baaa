//! The validated shape of one convolution, in conv2d orientation, that every kernel reads.

use crate::error::{ConvError, Result};
use crate::options::Pair;

/// A convolution `input (n, cin, h, w) * weight (cout, cin/groups, kh, kw) -> output (n, cout, oh, ow)`
/// with output pixel `(oy, ox)` reading input pixel `(oy*stride + ky*dilation - pad_top, ...)`.
///
/// Invariants (established by [`Geometry::new`]): every extent and every buffer length below
/// fits in `usize`; `groups` divides `cin` and `cout`; strides and dilations are positive.
/// `oh`/`ow` are given, not derived, so that a transposed convolution can ask for output rows
/// no kernel tap reaches (PyTorch allows `output_padding` up to the dilation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub groups: usize,
    pub stride: Pair,
    pub dilation: Pair,
    pub pad_top: usize,
    pub pad_left: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Multiplies extents, reporting overflow as an error that names `what`.
pub(crate) fn checked_product(factors: &[usize], what: &str) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| ConvError::overflow(what))
}

impl Geometry {
    /// Checks that every buffer length and index this geometry implies fits in `usize`.
    pub fn new(g: Geometry) -> Result<Self> {
        checked_product(&[g.n, g.cin, g.h, g.w], "the input length")?;
        checked_product(&[g.n, g.cout, g.oh, g.ow], "the output length")?;
        checked_product(
            &[g.cout, g.cin / g.groups.max(1), g.kh, g.kw],
            "the weight length",
        )?;
        // Largest index arithmetic a kernel performs: oy*stride + ky*dilation (and likewise for x).
        for (o, s, k, d) in [
            (g.oh, g.stride.h, g.kh, g.dilation.h),
            (g.ow, g.stride.w, g.kw, g.dilation.w),
        ] {
            o.checked_mul(s)
                .and_then(|a| a.checked_add(k.checked_mul(d)?))
                .ok_or_else(|| ConvError::overflow("the kernel's reach"))?;
        }
        g.pad_top
            .checked_add(g.h)
            .and_then(|_| g.pad_left.checked_add(g.w))
            .ok_or_else(|| ConvError::overflow("the padded input size"))?;
        Ok(g)
    }

    pub fn cin_per_group(&self) -> usize {
        self.cin / self.groups
    }

    pub fn cout_per_group(&self) -> usize {
        self.cout / self.groups
    }

    pub fn input_len(&self) -> usize {
        self.n * self.cin * self.h * self.w
    }

    pub fn output_len(&self) -> usize {
        self.n * self.cout * self.oh * self.ow
    }

    pub fn weight_len(&self) -> usize {
        self.cout * self.cin_per_group() * self.kh * self.kw
    }

    /// Multiply-adds of one pass (saturating): what decides whether threads pay off.
    pub fn work(&self) -> usize {
        self.output_len()
            .saturating_mul(self.cin_per_group())
            .saturating_mul(self.kh)
            .saturating_mul(self.kw)
    }

    pub fn input_shape(&self) -> [usize; 4] {
        [self.n, self.cin, self.h, self.w]
    }

    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.cout, self.oh, self.ow]
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.cin_per_group(), self.kh, self.kw]
    }
}
