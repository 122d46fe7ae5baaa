//! `reflect`, `replicate` and `circular` padding, as `nn.Conv2d` applies them with `F.pad`
//! before a zero-padding convolution, and the adjoint that folds gradients back.

use crate::element::Accumulator;
use crate::error::{fmt_shape, try_filled, ConvError, Result};
use crate::options::PaddingMode;
use crate::threading::for_each_chunk;

/// Explicit amounts on each side, and the mode that fills them. Invariant (from
/// [`Border::new`]): every padded coordinate maps to a pixel of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Border {
    pub mode: PaddingMode,
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Border {
    /// Checks the amounts against the input `[n, c, h, w]` as PyTorch's `F.pad` does.
    pub fn new(
        mode: PaddingMode,
        [top, bottom, left, right]: [usize; 4],
        input_shape: [usize; 4],
    ) -> Result<Self> {
        let [_, _, h, w] = input_shape;
        for (dim, size, before, after) in [(3, w, left, right), (2, h, top, bottom)] {
            let largest = before.max(after);
            let bad = match mode {
                PaddingMode::Zeros => false,
                PaddingMode::Reflect => largest >= size && largest > 0,
                PaddingMode::Replicate => size == 0 && largest > 0,
                PaddingMode::Circular => largest > size,
            };
            if bad {
                let rule = match mode {
                    PaddingMode::Reflect => "should be less than",
                    PaddingMode::Circular => {
                        "should not exceed (it would wrap around more than once)"
                    }
                    _ => "needs a non-empty",
                };
                return Err(ConvError::shape(format!(
                    "{} padding size {rule} the corresponding input dimension, but got: \
                     padding ({before}, {after}) at dimension {dim} of input {}",
                    mode.as_str(),
                    fmt_shape(&input_shape)
                )));
            }
        }
        Ok(Self {
            mode,
            top,
            bottom,
            left,
            right,
        })
    }

    pub fn padded_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (h + self.top + self.bottom, w + self.left + self.right)
    }

    /// The input coordinate that padded coordinate `p` (with `before` pixels of padding)
    /// copies, on an axis of `len` pixels.
    fn source(&self, p: usize, before: usize, len: usize) -> usize {
        let i = p as isize - before as isize;
        let n = len as isize;
        let s = match self.mode {
            PaddingMode::Zeros | PaddingMode::Replicate => i.clamp(0, n - 1),
            PaddingMode::Reflect if i < 0 => -i,
            PaddingMode::Reflect if i >= n => 2 * (n - 1) - i,
            PaddingMode::Circular if i < 0 => i + n,
            PaddingMode::Circular if i >= n => i - n,
            PaddingMode::Reflect | PaddingMode::Circular => i,
        };
        s as usize
    }

    fn sources(&self, padded: usize, before: usize, len: usize) -> Vec<usize> {
        (0..padded).map(|p| self.source(p, before, len)).collect()
    }

    /// The padded copy of `planes` planes of `h x w` pixels.
    pub fn pad<A: Accumulator>(&self, input: &[A], h: usize, w: usize) -> Result<Vec<A>> {
        if input.is_empty() {
            // No planes (or empty ones, which a plan only accepts in an empty batch).
            return Ok(Vec::new());
        }
        // Within the plan's checked lengths: `h * w` divides the input's, `ph * pw` the
        // padded input's.
        let (ph, pw) = self.padded_hw(h, w);
        let mut out = try_filled(input.len() / (h * w) * ph * pw, A::ZERO)?;
        let (ys, xs) = (
            self.sources(ph, self.top, h),
            self.sources(pw, self.left, w),
        );
        for_each_chunk(&mut out, ph * pw, |plane, dst| {
            let src = &input[plane * h * w..][..h * w];
            for (dst_row, &y) in dst.chunks_exact_mut(pw).zip(&ys) {
                for (d, &x) in dst_row.iter_mut().zip(&xs) {
                    *d = src[y * w + x];
                }
            }
        });
        Ok(out)
    }

    /// The adjoint of [`Border::pad`]: sums each padded pixel's gradient into the input pixel
    /// it copies, writing every element of `grad_in`.
    pub fn fold<A: Accumulator>(&self, grad_padded: &[A], h: usize, w: usize, grad_in: &mut [A]) {
        if grad_in.is_empty() {
            return;
        }
        let (ph, pw) = self.padded_hw(h, w);
        let (ys, xs) = (
            self.sources(ph, self.top, h),
            self.sources(pw, self.left, w),
        );
        for_each_chunk(grad_in, h * w, |plane, dst| {
            let src = &grad_padded[plane * ph * pw..][..ph * pw];
            dst.fill(A::ZERO);
            for (src_row, &y) in src.chunks_exact(pw).zip(&ys) {
                for (&s, &x) in src_row.iter().zip(&xs) {
                    dst[y * w + x] += s;
                }
            }
        });
    }
}
