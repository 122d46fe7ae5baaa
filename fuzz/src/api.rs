//! The checks of the `conv2d_api` fuzz target, shared with the bounded property test
//! `conv2d/tests/integration/fuzz_properties.rs`, which includes this file with `#[path]`.
//!
//! [`Case::decode`] reads one call from a [`Source`] of fuzz bytes: a dtype; an entry point
//! (the functional forward or backward, or a plan and its allocating or `*_into` methods with
//! possibly wrong buffer lengths); conv2d or conv_transpose2d; shapes; every option (stride,
//! padding with `Same`/`Valid`, dilation, groups, padding mode, output padding, output size, a
//! bias, the gradient mask, a forced algorithm); operand layouts; and how to fill the data.
//! [`check`] runs it and returns `Err` describing a finding when
//! - the library accepts what PyTorch rejects, or the reverse ([`conv_verdict`] and
//!   [`transposed_verdict`] model PyTorch's checks; sizes near `usize::MAX` are left open);
//! - an accepted call's output shape is not PyTorch's formula;
//! - a value is farther from the oracle (`support::reference`, in `Complex<f64>`) than the
//!   tolerance of `support::tolerance`, derived from the sum of |terms| and the dtype's roundoff;
//! - a functional call and its plan disagree, or a buffer of the wrong length is not rejected.
//!
//! A panic is a finding by itself. Most cases are bounded ([`MAX_WORK`], [`MAX_LEN`]), so that
//! an execution takes well under a millisecond; "raw" cases draw some numbers anywhere up to
//! `usize::MAX`: they must be rejected, or accepted with a correct shape, by validation alone,
//! and run only when they turn out small.

use conv2d::{
    conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward, Algorithm, Conv2dOptions,
    Conv2dPlan, ConvError, ConvTranspose2dOptions, ConvTranspose2dPlan, Element, ErrorKind,
    GradMask, Padding, PaddingMode, Pair,
};
use half::{bf16, f16};
use ndarray::{Array1, ArrayD, ArrayViewD, Axis, Ix4, IxDyn, ShapeBuilder, Slice};
use num_complex::Complex;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::support::reference::{self, Acc, ConvSpec};
use crate::support::{check_close, to_tensor};

/// Most multiply-adds a case may need (library and oracle each) before it is run.
pub const MAX_WORK: u128 = 60_000;
/// Most elements of any one tensor of a case that is run.
pub const MAX_LEN: u128 = 20_000;

/// Where a case's numbers come from: fuzz bytes (`arbitrary::Unstructured`) or a plain slice.
pub trait Source {
    /// A number in `lo..=hi` (`lo <= hi`); `lo` once the bytes run out.
    fn int_in(&mut self, lo: u64, hi: u64) -> u64;
}

/// A [`Source`] over a byte slice, read as `arbitrary::Unstructured::int_in_range` reads.
pub struct Bytes<'a>(pub &'a [u8]);

impl Source for Bytes<'_> {
    fn int_in(&mut self, lo: u64, hi: u64) -> u64 {
        let span = hi - lo;
        let mut value = 0u64;
        let mut taken = 0;
        while taken < 8 && span >> (8 * taken) > 0 {
            let Some((&byte, rest)) = self.0.split_first() else {
                break;
            };
            self.0 = rest;
            value = (value << 8) | u64::from(byte);
            taken += 1;
        }
        lo + span.checked_add(1).map_or(value, |m| value % m)
    }
}

/// The element type of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    Bf16,
    F16,
    Complex32,
    Complex64,
}

/// The entry point a case calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `conv2d` or `conv_transpose2d` on `ndarray` views.
    Forward,
    /// `conv2d_backward` or `conv_transpose2d_backward`.
    Backward,
    /// A plan's forward and three gradients, allocating or `*_into`.
    Plan,
}

/// How numbers are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Within the valid ranges (combinations may still be invalid, e.g. a kernel too large).
    Valid,
    /// With zeros, mismatched channels, wrong ranks, lengths and `output_size`s now and then.
    Mistakes,
    /// As `Mistakes`, and some numbers anywhere in `0..=usize::MAX`.
    Raw,
}

/// How a functional operand is laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    RowMajor,
    ColumnMajor,
    /// Every other element of the last axis.
    Strided,
    /// The last axis reversed (a negative stride).
    Flipped,
}

/// The options of either operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Options {
    Conv(Conv2dOptions),
    Transposed(ConvTranspose2dOptions),
}

/// How operand values are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Values {
    /// Seeds the generator of every operand.
    pub seed: u64,
    /// Values are uniform in `(-1, 1) * 2^scale`.
    pub scale: i32,
    /// Small integers (-4..=4) instead, which every dtype sums exactly.
    pub integers: bool,
    /// One input element is NaN or infinite: only shapes are checked.
    pub poison: bool,
}

/// One decoded call.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub dtype: Dtype,
    pub entry: Entry,
    pub mode: Mode,
    pub threads: usize,
    /// The input shape with its batch: an unbatched (rank 3) input has `n = 1`.
    pub input: [usize; 4],
    /// The rank of the functional input (3 or 4; 2 or 5 as a mistake), also given to
    /// `ConvTranspose2dPlan::with_input_rank`.
    pub rank: usize,
    pub weight: [usize; 4],
    pub options: Options,
    /// The bias length, if there is a bias.
    pub bias: Option<usize>,
    pub mask: GradMask,
    pub algorithm: Option<Algorithm>,
    /// Layouts of the functional input, weight and grad_output.
    pub layouts: [Layout; 3],
    /// Added to the last axis of the functional grad_output (a mismatch when not 0).
    pub grad_output_extra: usize,
    /// Added to the length of each plan buffer: input, weight, bias, grad_output, output,
    /// grad_input, grad_weight, grad_bias.
    pub deltas: [isize; 8],
    /// Whether each plan method (forward, input, weight, bias gradient) runs `*_into`.
    pub into: [bool; 4],
    pub values: Values,
}

/// Numbers anywhere in `usize`, with the edges of overflow checks often.
const EDGES: [usize; 14] = [
    0,
    1,
    2,
    3,
    usize::MAX,
    usize::MAX - 1,
    usize::MAX / 2,
    usize::MAX / 2 + 1,
    u32::MAX as usize,
    1 << 32,
    (1 << 32) + 1,
    1 << 31,
    1 << 62,
    (1 << 21) + 1,
];

/// Draws the numbers of a case.
struct Draw<'s, S: Source> {
    src: &'s mut S,
    mode: Mode,
}

impl<S: Source> Draw<'_, S> {
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        self.src.int_in(lo as u64, hi as u64) as usize
    }

    /// True one time in `n` (false once the bytes run out).
    fn one_in(&mut self, n: usize) -> bool {
        self.int(1, n) == n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.int(0, items.len() - 1)]
    }

    fn mistakes(&self) -> bool {
        self.mode != Mode::Valid
    }

    /// A number anywhere in `usize`.
    fn raw(&mut self) -> usize {
        if self.one_in(2) {
            self.pick(&EDGES)
        } else {
            self.src.int_in(0, u64::MAX) as usize
        }
    }

    /// A size in `lo..=hi`; now and then 0 (mistakes) or anything (raw).
    fn size(&mut self, lo: usize, hi: usize) -> usize {
        if self.mode == Mode::Raw && self.one_in(4) {
            self.raw()
        } else if self.mistakes() && self.one_in(10) {
            self.int(0, hi + 2)
        } else {
            self.int(lo, hi)
        }
    }

    /// Channels per group: zero now and then (valid: an empty result, or the bias alone).
    fn channels(&mut self) -> usize {
        if self.one_in(12) {
            0
        } else {
            self.size(1, 4)
        }
    }

    /// A pair of sizes, equal one time in two.
    fn pair(&mut self, lo: usize, hi: usize) -> Pair {
        let h = self.size(lo, hi);
        let w = if self.one_in(2) { h } else { self.size(lo, hi) };
        Pair::new(h, w)
    }

    /// An image extent: small mostly, sometimes up to 40.
    fn extent(&mut self) -> usize {
        if self.one_in(8) {
            self.size(13, 40)
        } else {
            self.size(1, 12)
        }
    }

    /// `v`, or off by one as a mistake one time in `n`.
    fn maybe_off(&mut self, v: usize, n: usize) -> usize {
        if self.mistakes() && self.one_in(n) {
            if self.one_in(2) {
                v.saturating_add(1)
            } else {
                v.saturating_sub(1)
            }
        } else {
            v
        }
    }
}

impl Case {
    /// Reads a case; every byte string gives one (missing bytes read as zeros).
    pub fn decode(src: &mut impl Source) -> Case {
        let mode = match src.int_in(0, 7) {
            0..=3 => Mode::Valid,
            4 | 5 => Mode::Mistakes,
            _ => Mode::Raw,
        };
        let mut d = Draw { src, mode };
        let dtype = d.pick(&[
            Dtype::F32,
            Dtype::F64,
            Dtype::Bf16,
            Dtype::F16,
            Dtype::Complex32,
            Dtype::Complex64,
        ]);
        let entry = d.pick(&[Entry::Forward, Entry::Backward, Entry::Plan]);
        let transposed = d.one_in(2);
        let threads = d.int(1, 3);
        let groups = d.size(1, 4);
        let (per_group_in, per_group_out) = (d.channels(), d.channels());
        let rank = if d.mistakes() && d.one_in(16) {
            d.pick(&[2, 5])
        } else if d.one_in(4) {
            3
        } else {
            4
        };
        let n = match rank {
            3 => 1,
            _ if d.one_in(8) => 0,
            _ => d.size(1, 3),
        };
        let (h, w) = (d.extent(), d.extent());
        let kernel = d.pair(1, 5);
        let stride = d.pair(1, 4);
        let dilation = d.pair(1, 3);
        let cin = d.maybe_off(per_group_in.saturating_mul(groups), 6);
        let (weight, options) = if transposed {
            let padding = d.pair(0, 3);
            let output_padding = if d.one_in(2) {
                Pair::new(0, 0)
            } else {
                d.pair(0, 3)
            };
            let mut options = ConvTranspose2dOptions::default()
                .stride(stride)
                .padding(padding)
                .dilation(dilation)
                .groups(groups)
                .output_padding(output_padding);
            if d.one_in(4) {
                options.output_size = Some(Self::output_size(&mut d, [h, w], kernel, &options));
            }
            let wcin = d.maybe_off(cin, 6);
            (
                [wcin, per_group_out, kernel.h, kernel.w],
                Options::Transposed(options),
            )
        } else {
            let padding = match d.int(0, 7) {
                6 => Padding::Same,
                7 => Padding::Valid,
                _ => Padding::Explicit(d.pair(0, 4)),
            };
            let padding_mode = match d.int(0, 5) {
                3 => PaddingMode::Reflect,
                4 => PaddingMode::Replicate,
                5 => PaddingMode::Circular,
                _ => PaddingMode::Zeros,
            };
            let options = Conv2dOptions::default()
                .stride(stride)
                .padding(padding)
                .dilation(dilation)
                .groups(groups)
                .padding_mode(padding_mode);
            let cout = d.maybe_off(per_group_out.saturating_mul(groups), 6);
            let cin_g = d.maybe_off(per_group_in, 8);
            ([cout, cin_g, kernel.h, kernel.w], Options::Conv(options))
        };
        let cout = match &options {
            Options::Conv(_) => weight[0],
            Options::Transposed(o) => weight[1].saturating_mul(o.groups),
        };
        let bias = d.one_in(2).then(|| d.maybe_off(cout, 4));
        let mask = GradMask {
            input: d.one_in(2),
            weight: d.one_in(2),
            bias: d.one_in(2),
        };
        let algorithm = d.pick(&[
            None,
            Some(Algorithm::DirectRows),
            Some(Algorithm::Im2colGemm),
            Some(Algorithm::Direct),
            Some(Algorithm::DirectTiled),
        ]);
        let layouts = [(); 3].map(|()| {
            d.pick(&[
                Layout::RowMajor,
                Layout::RowMajor,
                Layout::ColumnMajor,
                Layout::Strided,
                Layout::Flipped,
            ])
        });
        let grad_output_extra = usize::from(d.mistakes() && d.one_in(8));
        let deltas = [(); 8].map(|()| {
            if d.mistakes() && d.one_in(6) {
                d.pick(&[-2, -1, 1, 2])
            } else {
                0
            }
        });
        let into = [(); 4].map(|()| d.one_in(2));
        let values = Values {
            seed: d.src.int_in(0, u64::MAX),
            scale: d.int(0, 8) as i32 - 4,
            integers: d.one_in(4),
            poison: d.one_in(16),
        };
        Case {
            dtype,
            entry,
            mode,
            threads,
            input: [n, cin, h, w],
            rank,
            weight,
            options,
            bias,
            mask,
            algorithm,
            layouts,
            grad_output_extra,
            deltas,
            into,
            values,
        }
    }

    /// An `output_size` near the valid range: of 2 or `rank` numbers mostly, the spatial ones
    /// within `[min, min + stride - 1]` mostly.
    fn output_size<S: Source>(
        d: &mut Draw<'_, S>,
        [h, w]: [usize; 2],
        kernel: Pair,
        o: &ConvTranspose2dOptions,
    ) -> Vec<usize> {
        let len = if d.mistakes() && d.one_in(6) {
            d.pick(&[0, 1, 3, 4, 5])
        } else {
            d.pick(&[2, 4])
        };
        let mut size = vec![1; len];
        let spatial = [
            (h, o.stride.h, o.padding.h, o.dilation.h, kernel.h),
            (w, o.stride.w, o.padding.w, o.dilation.w, kernel.w),
        ];
        for (i, (x, s, p, dl, k)) in spatial.into_iter().enumerate() {
            let min = transposed_min(x, s, p, dl, k).unwrap_or(1);
            let want = min
                .saturating_add(d.int(0, s.min(8)) as i128)
                .saturating_sub(i128::from(d.one_in(8)));
            let want = if d.mode == Mode::Raw && d.one_in(4) {
                d.raw()
            } else {
                usize::try_from(want.max(0)).unwrap_or(usize::MAX)
            };
            if len >= 2 {
                size[len - 2 + i] = want;
            }
        }
        // The leading (batch, channel) numbers of a full size are not read.
        size
    }
}

/// The smallest transposed output extent `(in-1)*stride - 2*padding + dilation*(k-1) + 1`,
/// or `None` when it overflows `i128`.
fn transposed_min(x: usize, s: usize, p: usize, d: usize, k: usize) -> Option<i128> {
    let (x, s, p, d, k) = (x as i128, s as i128, p as i128, d as i128, k as i128);
    (x - 1)
        .checked_mul(s)?
        .checked_sub(p.checked_mul(2)?)?
        .checked_add(d.checked_mul(k - 1)?)?
        .checked_add(1)
}

/// What PyTorch does with a call's shapes and options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted, with this output shape `[n, cout, oh, ow]`.
    Valid([usize; 4]),
    /// Rejected, for this reason.
    Invalid(&'static str),
    /// Not modelled: sizes near `usize::MAX` (the library may report an overflow), and
    /// corners where PyTorch's own backends disagree (empty inputs with a zero-size kernel
    /// or a non-zero padding mode).
    Open,
}

/// The product of `factors` if it fits in `usize`.
fn product(factors: &[u128]) -> Option<u128> {
    factors
        .iter()
        .try_fold(1u128, |acc, &f| acc.checked_mul(f))
        .filter(|&p| p <= usize::MAX as u128)
}

/// Whether `ndarray` (and PyTorch's storage arithmetic) can hold a tensor of `shape`: the
/// product of its non-zero extents fits in `isize`.
fn holdable(shape: &[u128]) -> Option<u128> {
    let extents: Vec<u128> = shape.iter().map(|&v| v.max(1)).collect();
    product(&extents).filter(|&p| p <= isize::MAX as u128)
}

/// `o*s + k*d` (the largest index a kernel computes) if it fits in `usize`.
fn reach(o: u128, s: u128, k: u128, d: u128) -> Option<u128> {
    o.checked_mul(s)?
        .checked_add(k.checked_mul(d)?)
        .filter(|&r| r <= usize::MAX as u128)
}

fn wide(p: Pair) -> [u128; 2] {
    [p.h as u128, p.w as u128]
}

/// The explicit padding `[top, bottom, left, right]` of a conv2d (`None`: `Same` with a stride).
fn conv_pads(o: &Conv2dOptions, weight: [usize; 4]) -> Option<[u128; 4]> {
    let [dh, dw] = wide(o.dilation);
    let total = |d: u128, k: usize| d * (k as u128).saturating_sub(1);
    match o.padding {
        Padding::Explicit(p) => Some([p.h, p.h, p.w, p.w].map(|v| v as u128)),
        Padding::Valid => Some([0; 4]),
        Padding::Same if o.stride != Pair::new(1, 1) => None,
        Padding::Same => {
            let (th, tw) = (total(dh, weight[2]), total(dw, weight[3]));
            Some([th / 2, th - th / 2, tw / 2, tw - tw / 2])
        }
    }
}

/// PyTorch's verdict on `conv2d(input, weight)` (`nn.Conv2d` for the padding modes).
pub fn conv_verdict(input: [usize; 4], weight: [usize; 4], o: &Conv2dOptions) -> Verdict {
    let [n, c, h, w] = input.map(|v| v as u128);
    let [co, cig, kh, kw] = weight.map(|v| v as u128);
    let ([sh, sw], [dh, dw], g) = (wide(o.stride), wide(o.dilation), o.groups as u128);
    if sh == 0 || sw == 0 {
        return Verdict::Invalid("non-positive stride");
    }
    if dh == 0 || dw == 0 {
        return Verdict::Invalid("non-positive dilation");
    }
    if g == 0 {
        return Verdict::Invalid("non-positive groups");
    }
    if co < g || co % g != 0 {
        return Verdict::Invalid("groups must divide weight[0]");
    }
    if c != cig * g {
        return Verdict::Invalid("input channels must be weight[1] * groups");
    }
    if kh == 0 || kw == 0 {
        return if n == 0 || c == 0 {
            Verdict::Open
        } else {
            Verdict::Invalid("kernel size should be greater than zero")
        };
    }
    let Some([top, bottom, left, right]) = conv_pads(o, weight) else {
        return Verdict::Invalid("padding='same' is not supported for strided convolutions");
    };
    let (reach_h, reach_w) = (dh * (kh - 1), dw * (kw - 1));
    let (ph, pw) = (h + top + bottom, w + left + right);
    if ph <= reach_h || pw <= reach_w {
        return Verdict::Invalid("kernel size can't be greater than the padded input size");
    }
    if n > 0 && c > 0 && (h == 0 || w == 0) {
        return Verdict::Invalid("only zero batch or zero channel inputs are supported");
    }
    let mode = o.padding_mode;
    for (size, before, after) in [(h, top, bottom), (w, left, right)] {
        let largest = before.max(after);
        let bad = match mode {
            PaddingMode::Zeros => false,
            PaddingMode::Reflect => largest >= size && largest > 0,
            PaddingMode::Replicate => size == 0 && largest > 0,
            PaddingMode::Circular => largest > size,
        };
        if bad {
            return Verdict::Invalid("padding too large for the padding mode");
        }
    }
    if mode != PaddingMode::Zeros && (c == 0 || h == 0 || w == 0) {
        // F.pad's reflect and replicate refuse empty channels or images even in an empty batch.
        return Verdict::Open;
    }
    let (oh, ow) = ((ph - reach_h - 1) / sh + 1, (pw - reach_w - 1) / sw + 1);
    let padded_len = match mode {
        PaddingMode::Zeros => Some(0),
        _ => product(&[n, c, ph, pw]),
    };
    let fits = [
        product(&[n, c, h, w]),
        product(&[n, co, oh, ow]),
        product(&[co, cig, kh, kw]),
        product(&[ph]),
        product(&[pw]),
        padded_len,
        reach(oh, sh, kh, dh),
        reach(ow, sw, kw, dw),
        holdable(&[n, c, h, w]),
        holdable(&[n, co, oh, ow]),
        holdable(&[co, cig, kh, kw]),
    ];
    if fits.iter().any(Option::is_none) {
        return Verdict::Open;
    }
    Verdict::Valid([n, co, oh, ow].map(|v| v as usize))
}

/// PyTorch's verdict on `conv_transpose2d(input, weight)` for an input of `rank` dimensions
/// (`nn.ConvTranspose2d.forward` for `output_size`).
pub fn transposed_verdict(
    input: [usize; 4],
    weight: [usize; 4],
    o: &ConvTranspose2dOptions,
    rank: usize,
) -> Verdict {
    let [n, c, h, w] = input;
    let [wc, cog, kh, kw] = weight;
    let (s, p, d, op, g) = (o.stride, o.padding, o.dilation, o.output_padding, o.groups);
    if !(3..=4).contains(&rank) {
        return Verdict::Invalid("expected a 3D or 4D input");
    }
    if s.h == 0 || s.w == 0 {
        return Verdict::Invalid("non-positive stride");
    }
    if d.h == 0 || d.w == 0 {
        return Verdict::Invalid("non-positive dilation");
    }
    if g == 0 {
        return Verdict::Invalid("non-positive groups");
    }
    if wc < g || wc % g != 0 {
        return Verdict::Invalid("groups must divide weight[0]");
    }
    if c != wc {
        return Verdict::Invalid("input channels must be weight[0]");
    }
    let (Some(min_h), Some(min_w)) = (
        transposed_min(h, s.h, p.h, d.h, kh),
        transposed_min(w, s.w, p.w, d.w, kw),
    ) else {
        return Verdict::Open;
    };
    let (oh, ow) = match &o.output_size {
        None => {
            if (op.h >= s.h && op.h >= d.h) || (op.w >= s.w && op.w >= d.w) {
                return Verdict::Invalid("output padding must be smaller than stride or dilation");
            }
            (min_h + op.h as i128, min_w + op.w as i128)
        }
        Some(size) => {
            let len = size.len();
            if len != 2 && len != rank {
                return Verdict::Invalid("output_size must have 2 or rank elements");
            }
            let (want_h, want_w) = (size[len - 2] as i128, size[len - 1] as i128);
            if want_h < min_h
                || want_h > min_h + s.h as i128 - 1
                || want_w < min_w
                || want_w > min_w + s.w as i128 - 1
            {
                return Verdict::Invalid("output_size outside the valid range");
            }
            (want_h, want_w)
        }
    };
    if oh <= 0 || ow <= 0 {
        return Verdict::Invalid("output size is too small");
    }
    if kh == 0 || kw == 0 {
        return if n == 0 || c == 0 {
            Verdict::Open
        } else {
            Verdict::Invalid("kernel size should be greater than zero")
        };
    }
    if n > 0 && c > 0 && (h == 0 || w == 0) {
        return Verdict::Invalid("only zero batch or zero channel inputs are supported");
    }
    let [n, c, h, w, cog, kh, kw, g] = [n, c, h, w, cog, kh, kw, g].map(|v| v as u128);
    let ([sh, sw], [dh, dw]) = (wide(s), wide(d));
    let (oh, ow) = (oh as u128, ow as u128);
    let co = cog * g;
    let fits = [
        product(&[oh]),
        product(&[ow]),
        product(&[co]),
        product(&[n, co, oh, ow]),
        product(&[n, c, h, w]),
        product(&[c, cog, kh, kw]),
        reach(h, sh, kh, dh),
        reach(w, sw, kw, dw),
        product(&[oh + p.h as u128]),
        product(&[ow + p.w as u128]),
        holdable(&[n, c, h, w]),
        holdable(&[n, co, oh, ow]),
        holdable(&[c, cog, kh, kw]),
    ];
    if fits.iter().any(Option::is_none) {
        return Verdict::Open;
    }
    Verdict::Valid([n, co, oh, ow].map(|v| v as usize))
}

impl Case {
    /// PyTorch's verdict on this case's shapes and options.
    pub fn verdict(&self) -> Verdict {
        match &self.options {
            Options::Conv(o) => conv_verdict(self.input, self.weight, o),
            Options::Transposed(o) => transposed_verdict(self.input, self.weight, o, self.rank),
        }
    }

    /// The shape of the functional input, of `rank` dimensions.
    fn functional_shape(&self) -> Vec<usize> {
        let [n, c, h, w] = self.input;
        match self.rank {
            2 => vec![h, w],
            3 => vec![c, h, w],
            5 => vec![n, c, 1, h, w],
            _ => vec![n, c, h, w],
        }
    }

    fn functional_rank_ok(&self) -> bool {
        (3..=4).contains(&self.rank)
    }
}

/// A validated plan of either operation, with the methods both have.
#[derive(Debug, Clone)]
enum AnyPlan {
    Conv(Conv2dPlan),
    Transposed(ConvTranspose2dPlan),
}

macro_rules! both {
    ($plan:expr, $method:ident($($arg:expr),*)) => {
        match $plan {
            AnyPlan::Conv(p) => p.$method($($arg),*),
            AnyPlan::Transposed(p) => p.$method($($arg),*),
        }
    };
}

impl AnyPlan {
    /// The plan the functional call of `case` builds (with the functional rank).
    fn build(case: &Case) -> Result<Self, ConvError> {
        match &case.options {
            Options::Conv(o) => Conv2dPlan::new(case.input, case.weight, o).map(AnyPlan::Conv),
            Options::Transposed(o) => {
                ConvTranspose2dPlan::with_input_rank(case.input, case.weight, o, case.rank)
                    .map(AnyPlan::Transposed)
            }
        }
    }

    fn with_algorithm(self, algorithm: Algorithm) -> Self {
        match self {
            AnyPlan::Conv(p) => AnyPlan::Conv(p.with_algorithm(algorithm)),
            AnyPlan::Transposed(p) => AnyPlan::Transposed(p.with_algorithm(algorithm)),
        }
    }

    fn input_shape(&self) -> [usize; 4] {
        both!(self, input_shape())
    }

    fn output_shape(&self) -> [usize; 4] {
        both!(self, output_shape())
    }

    fn weight_shape(&self) -> [usize; 4] {
        both!(self, weight_shape())
    }

    /// Whether running the plan (and the oracle) stays within [`MAX_LEN`] elements per tensor
    /// and [`MAX_WORK`] iterations of the oracle's loops (which run over empty extents too).
    fn small(&self) -> bool {
        let [n, cin, h, w] = self.input_shape();
        let [_, cout, oh, ow] = self.output_shape();
        let [_, per_group, kh, kw] = self.weight_shape();
        let loops: &[&[usize]] = match self {
            AnyPlan::Conv(_) => &[&[n, cout, oh, ow, per_group, kh, kw]],
            AnyPlan::Transposed(_) => &[&[n, cin, per_group, h, w, kh, kw], &[n, cout, oh, ow]],
        };
        let lens = [
            self.input_shape(),
            self.output_shape(),
            self.weight_shape(),
            [1, 1, 1, cout],
        ];
        let within = |extents: &[usize], limit: u128| {
            let mut prefix = 1u128;
            extents.iter().all(|&e| {
                prefix = prefix.saturating_mul(e as u128);
                prefix <= limit
            })
        };
        lens.iter().all(|s| within(s, MAX_LEN)) && loops.iter().all(|l| within(l, MAX_WORK))
    }
}

/// `len` values drawn as `v` says.
fn values<T: Element>(len: usize, rng: &mut StdRng, v: &Values) -> Vec<T> {
    let scale = 2f64.powi(v.scale);
    (0..len)
        .map(|_| {
            if v.integers {
                let mut int = || f64::from(rng.random_range(-4i32..=4));
                T::from_parts(int(), int())
            } else {
                let mut real = || rng.random_range(-1.0..1.0) * scale;
                T::from_parts(real(), real())
            }
        })
        .collect()
}

fn poisoned<T: Element>(rng: &mut StdRng) -> T {
    let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
    T::from_parts(bad[rng.random_range(0..3)], bad[rng.random_range(0..3)])
}

/// An operand of a functional call, in one of the [`Layout`]s.
struct Operand<T> {
    array: ArrayD<T>,
    layout: Layout,
}

impl<T: Element> Operand<T> {
    /// `None` when the shape is too large to hold.
    fn new(shape: &[usize], layout: Layout, rng: &mut StdRng, v: &Values) -> Option<Self> {
        let mut stored = shape.to_vec();
        if layout == Layout::Strided {
            let last = stored.last_mut()?;
            *last = last.checked_mul(2)?;
        }
        let len = product(&stored.iter().map(|&s| s as u128).collect::<Vec<_>>())?;
        if len > 2 * MAX_LEN {
            return None;
        }
        let data = values::<T>(len as usize, rng, v);
        let array = match layout {
            Layout::ColumnMajor => ArrayD::from_shape_vec(IxDyn(&stored).f(), data),
            _ => ArrayD::from_shape_vec(IxDyn(&stored), data),
        };
        Some(Self {
            array: array.ok()?,
            layout,
        })
    }

    fn view(&self) -> ArrayViewD<'_, T> {
        let mut view = self.array.view();
        let last = Axis(view.ndim() - 1);
        match self.layout {
            Layout::Strided => view.slice_axis_inplace(last, Slice::new(0, None, 2)),
            Layout::Flipped => view.invert_axis(last),
            Layout::RowMajor | Layout::ColumnMajor => {}
        }
        view
    }

    /// The elements in logical (row-major) order.
    fn logical(&self) -> Vec<T> {
        self.view().iter().copied().collect()
    }

    fn poison(&mut self, rng: &mut StdRng) {
        if let Some(first) = self.array.first_mut() {
            *first = poisoned(rng);
        }
    }
}

/// The oracle's results for `case` on these operands (row-major, batched shapes).
fn oracle<T: Element>(
    case: &Case,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    gy: Option<&[T]>,
    output_shape: [usize; 4],
) -> reference::ConvResult {
    let (x, w) = (to_tensor(&case.input, x), to_tensor(&case.weight, w));
    let b = b.map(|b| to_tensor(&[b.len()], b));
    let gy = gy.map(|gy| to_tensor(&output_shape, gy));
    match &case.options {
        Options::Conv(o) => {
            let spec = ConvSpec {
                stride: [o.stride.h, o.stride.w],
                pads: conv_pads(o, case.weight)
                    .expect("a valid case")
                    .map(|p| p as usize),
                dilation: [o.dilation.h, o.dilation.w],
                groups: o.groups,
                mode: match o.padding_mode {
                    PaddingMode::Zeros => reference::Mode::Zeros,
                    PaddingMode::Reflect => reference::Mode::Reflect,
                    PaddingMode::Replicate => reference::Mode::Replicate,
                    PaddingMode::Circular => reference::Mode::Circular,
                },
            };
            reference::conv2d(&x, &w, b.as_ref(), &spec, gy.as_ref())
        }
        Options::Transposed(o) => reference::conv_transpose2d(
            &x,
            &w,
            b.as_ref(),
            [o.stride.h, o.stride.w],
            [o.padding.h, o.padding.w],
            [o.dilation.h, o.dilation.w],
            o.groups,
            [output_shape[2], output_shape[3]],
            gy.as_ref(),
        ),
    }
}

/// Whether every element of `want` is far from `T`'s overflow threshold (`f16` overflows at
/// 65504; a result beyond it is infinite, which is right but not what the oracle says).
fn representable<T: Element>(want: &[Acc]) -> bool {
    let max = if T::DTYPE_NAME == "float16" {
        65504.0
    } else {
        f64::MAX
    };
    want.iter().all(|a| a.magnitude < max / 4.0)
}

/// Compares a result with the oracle (lengths only when the data is poisoned or overflows).
fn compare<T: Element>(what: &str, got: &[T], want: &[Acc], v: &Values) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} elements, expected {}",
            got.len(),
            want.len()
        ));
    }
    if v.poison || !representable::<T>(want) {
        return Ok(());
    }
    check_close(what, got, want)
}

/// Checks that `got` failed exactly as `expected` did.
fn same_error<R>(
    what: &str,
    got: Result<R, ConvError>,
    expected: &ConvError,
) -> Result<(), String> {
    match got {
        Err(e) if e == *expected => Ok(()),
        Err(e) => Err(format!(
            "{what}: error {e:?}, but its plan failed with {expected:?}"
        )),
        Ok(_) => Err(format!(
            "{what}: accepted, but its plan failed with {expected:?}"
        )),
    }
}

/// Checks that `got` failed with one of `kinds`.
fn failed<R>(what: &str, got: Result<R, ConvError>, kinds: &[ErrorKind]) -> Result<(), String> {
    match got {
        Err(e) if kinds.contains(&e.kind()) => Ok(()),
        Err(e) => Err(format!("{what}: error {e:?}, expected one of {kinds:?}")),
        Ok(_) => Err(format!("{what}: accepted, expected one of {kinds:?}")),
    }
}

/// Decodes and checks one case from fuzz bytes.
pub fn check_bytes(data: &[u8]) -> Result<(), String> {
    check(&Case::decode(&mut Bytes(data)))
}

/// Runs `case` and checks it; `Err` describes a finding, with the decoded case.
pub fn check(case: &Case) -> Result<(), String> {
    conv2d::set_num_threads(case.threads).map_err(|e| e.to_string())?;
    let outcome = match case.dtype {
        Dtype::F32 => run::<f32>(case),
        Dtype::F64 => run::<f64>(case),
        Dtype::Bf16 => run::<bf16>(case),
        Dtype::F16 => run::<f16>(case),
        Dtype::Complex32 => run::<Complex<f32>>(case),
        Dtype::Complex64 => run::<Complex<f64>>(case),
    };
    outcome.map_err(|finding| format!("{finding}\nin {case:#?}"))
}

fn run<T: Element>(case: &Case) -> Result<(), String> {
    let verdict = case.verdict();
    let plan = AnyPlan::build(case);
    match (&plan, verdict) {
        (Ok(p), Verdict::Valid(shape)) if p.output_shape() != shape => {
            return Err(format!(
                "output shape {:?}, but PyTorch's formula gives {shape:?}",
                p.output_shape()
            ))
        }
        (Ok(p), Verdict::Invalid(why)) => {
            return Err(format!(
                "accepted with output shape {:?}, but PyTorch rejects it: {why}",
                p.output_shape()
            ))
        }
        (Err(e), Verdict::Valid(shape)) => {
            return Err(format!(
                "rejected ({e:?}), but PyTorch accepts it with output shape {shape:?}"
            ))
        }
        _ => {}
    }
    if case.padded_input_is_large() {
        // Only validated, as other large cases: the library materialises the padded input,
        // as PyTorch's `F.pad` does, and may fail to allocate it (a clean error either way).
        return Ok(());
    }
    match (case.entry, plan) {
        (Entry::Forward, plan) => forward::<T>(case, plan),
        (Entry::Backward, plan) => backward::<T>(case, plan),
        (Entry::Plan, Ok(plan)) => plan_calls::<T>(case, plan),
        (Entry::Plan, Err(_)) => Ok(()),
    }
}

impl Case {
    /// Whether a reflect, replicate or circular padding makes the padded input larger than
    /// [`MAX_LEN`] elements.
    fn padded_input_is_large(&self) -> bool {
        let Options::Conv(o) = &self.options else {
            return false;
        };
        if o.padding_mode == PaddingMode::Zeros {
            return false;
        }
        let Some([top, bottom, left, right]) = conv_pads(o, self.weight) else {
            return true;
        };
        let [n, c, h, w] = self.input.map(|v| v as u128);
        let padded = [
            n,
            c,
            h.saturating_add(top + bottom),
            w.saturating_add(left + right),
        ];
        padded.iter().fold(1u128, |acc, &v| acc.saturating_mul(v)) > MAX_LEN
    }
}

/// The functional operands of `case`: input, weight, bias (`None` when too large to hold).
type Operands<T> = (Operand<T>, Operand<T>, Option<Array1<T>>);

fn operands<T: Element>(case: &Case, rng: &mut StdRng) -> Option<Operands<T>> {
    let v = &case.values;
    let mut x = Operand::new(&case.functional_shape(), case.layouts[0], rng, v)?;
    let w = Operand::new(&case.weight, case.layouts[1], rng, v)?;
    let b = match case.bias {
        Some(len) if len as u128 > MAX_LEN => return None,
        Some(len) => Some(Array1::from(values::<T>(len, rng, v))),
        None => None,
    };
    if v.poison {
        x.poison(rng);
    }
    Some((x, w, b))
}

/// Whether a functional call may be made: a plan that failed (only the operands are
/// allocated) or one that is small.
fn runnable(plan: &Result<AnyPlan, ConvError>) -> bool {
    plan.as_ref().map_or(true, AnyPlan::small)
}

fn forward<T: Element>(case: &Case, plan: Result<AnyPlan, ConvError>) -> Result<(), String> {
    if !runnable(&plan) {
        return Ok(());
    }
    let mut rng = StdRng::seed_from_u64(case.values.seed);
    let Some((x, w, b)) = operands::<T>(case, &mut rng) else {
        return Ok(());
    };
    let weight = w.view().into_dimensionality::<Ix4>().expect("4 axes");
    let bias = b.as_ref().map(|b| b.view());
    let got = match &case.options {
        Options::Conv(o) => conv2d(&x.view(), &weight, bias, o),
        Options::Transposed(o) => conv_transpose2d(&x.view(), &weight, bias, o),
    };
    let plan = match plan {
        _ if !case.functional_rank_ok() => {
            return failed("forward", got, &[ErrorKind::ShapeMismatch]);
        }
        Err(e) => return same_error("forward", got, &e),
        Ok(plan) => plan,
    };
    let out_shape = plan.output_shape();
    let expected_shape = &out_shape[4 - case.rank..];
    if holdable(
        &expected_shape
            .iter()
            .map(|&e| e as u128)
            .collect::<Vec<_>>(),
    )
    .is_none()
    {
        // Empty, but with extents ndarray cannot describe: an error is right.
        return got.map_or(Ok(()), |y| {
            Err(format!("forward: {:?} returned", y.shape()))
        });
    }
    if case.bias.is_some_and(|len| len != out_shape[1]) {
        return failed(
            "forward with a bias of the wrong length",
            got,
            &[ErrorKind::ShapeMismatch],
        );
    }
    let y = got.map_err(|e| format!("forward: {e:?}"))?;
    if y.shape() != expected_shape {
        return Err(format!(
            "forward: output shape {:?}, expected {expected_shape:?}",
            y.shape()
        ));
    }
    let b = b.map(|b| b.to_vec());
    let want = oracle(
        case,
        &x.logical(),
        &w.logical(),
        b.as_deref(),
        None,
        out_shape,
    );
    let y: Vec<T> = y.iter().copied().collect();
    compare("forward output", &y, &want.output, &case.values)
}

fn backward<T: Element>(case: &Case, plan: Result<AnyPlan, ConvError>) -> Result<(), String> {
    if !runnable(&plan) {
        return Ok(());
    }
    let mut rng = StdRng::seed_from_u64(case.values.seed);
    let Some((x, w, _)) = operands::<T>(case, &mut rng) else {
        return Ok(());
    };
    let out_shape = plan.as_ref().map_or([1; 4], AnyPlan::output_shape);
    let mut gy_shape = match case.rank {
        3 | 4 => out_shape[4 - case.rank..].to_vec(),
        rank => vec![1; rank],
    };
    *gy_shape.last_mut().expect("rank >= 2") += case.grad_output_extra;
    let Some(gy) = Operand::<T>::new(&gy_shape, case.layouts[2], &mut rng, &case.values) else {
        return Ok(());
    };
    let weight = w.view().into_dimensionality::<Ix4>().expect("4 axes");
    let mask = case.mask;
    let got = match &case.options {
        Options::Conv(o) => conv2d_backward(&x.view(), &weight, &gy.view(), o, mask),
        Options::Transposed(o) => {
            conv_transpose2d_backward(&x.view(), &weight, &gy.view(), o, mask)
        }
    };
    match plan {
        _ if !case.functional_rank_ok() => {
            return failed("backward", got, &[ErrorKind::ShapeMismatch]);
        }
        Err(e) => return same_error("backward", got, &e),
        Ok(_) => {}
    }
    if case.grad_output_extra != 0 {
        return failed(
            "backward with a wrong grad_output shape",
            got,
            &[ErrorKind::ShapeMismatch],
        );
    }
    let g = got.map_err(|e| format!("backward: {e:?}"))?;
    let present = [g.input.is_some(), g.weight.is_some(), g.bias.is_some()];
    if present != [mask.input, mask.weight, mask.bias] {
        return Err(format!(
            "backward: gradients present {present:?}, mask {mask:?}"
        ));
    }
    let want = oracle(
        case,
        &x.logical(),
        &w.logical(),
        None,
        Some(&gy.logical()),
        out_shape,
    );
    if let Some(gx) = g.input {
        if gx.shape() != case.functional_shape().as_slice() {
            return Err(format!("grad_input shape {:?}", gx.shape()));
        }
        let gx: Vec<T> = gx.iter().copied().collect();
        compare("grad_input", &gx, &want.grad_input, &case.values)?;
    }
    if let Some(gw) = g.weight {
        if gw.shape() != case.weight {
            return Err(format!("grad_weight shape {:?}", gw.shape()));
        }
        let gw: Vec<T> = gw.iter().copied().collect();
        compare("grad_weight", &gw, &want.grad_weight, &case.values)?;
    }
    if let Some(gb) = g.bias {
        compare("grad_bias", &gb.to_vec(), &want.grad_bias, &case.values)?;
    }
    Ok(())
}

/// Checks a plan method's result: `Err` of a buffer kind unless every length was right, and
/// then the oracle's values (when it could be computed).
fn verify<T: Element>(
    what: &str,
    got: Result<Vec<T>, ConvError>,
    lengths_right: bool,
    want: Option<&[Acc]>,
    v: &Values,
) -> Result<(), String> {
    if !lengths_right {
        return failed(
            what,
            got,
            &[ErrorKind::BufferLength, ErrorKind::ShapeMismatch],
        );
    }
    let got = got.map_err(|e| format!("{what}: {e:?}"))?;
    match want {
        Some(want) => compare(what, &got, want, v),
        None => Ok(()),
    }
}

/// A plan's four methods, each allocating or `*_into` a buffer of garbage (NaN), with the
/// buffer lengths of `case.deltas`.
fn plan_calls<T: Element>(case: &Case, plan: AnyPlan) -> Result<(), String> {
    if !plan.small() {
        return Ok(());
    }
    let plan = match case.algorithm {
        Some(algorithm) => plan.with_algorithm(algorithm),
        None => plan,
    };
    let len = |s: [usize; 4]| s.iter().product::<usize>();
    let (x_len, y_len, w_len) = (
        len(plan.input_shape()),
        len(plan.output_shape()),
        len(plan.weight_shape()),
    );
    let cout = plan.output_shape()[1];
    let right = [x_len, w_len, cout, y_len, y_len, x_len, w_len, cout];
    let mut lengths = right;
    if let Some(bias) = case.bias {
        lengths[2] = bias;
    }
    for (l, d) in lengths.iter_mut().zip(case.deltas) {
        *l = l.saturating_add_signed(d);
    }
    if lengths.iter().any(|&l| l as u128 > 2 * MAX_LEN) {
        return Ok(());
    }
    let ok = |i: usize| lengths[i] == right[i];
    let v = &case.values;
    let mut rng = StdRng::seed_from_u64(v.seed);
    let mut x = values::<T>(lengths[0], &mut rng, v);
    let w = values::<T>(lengths[1], &mut rng, v);
    let b = case.bias.map(|_| values::<T>(lengths[2], &mut rng, v));
    let gy = values::<T>(lengths[3], &mut rng, v);
    if v.poison {
        if let Some(first) = x.first_mut() {
            *first = poisoned(&mut rng);
        }
    }
    let bias_ok = case.bias.is_none() || ok(2);
    let want = (ok(0) && ok(1) && ok(3) && bias_ok)
        .then(|| oracle(case, &x, &w, b.as_deref(), Some(&gy), plan.output_shape()));
    let garbage = |len: usize| vec![T::from_parts(f64::NAN, f64::NAN); len];
    let into = case.into;

    let got = if into[0] {
        let mut out = garbage(lengths[4]);
        both!(&plan, forward_into(&x, &w, b.as_deref(), &mut out)).map(|()| out)
    } else {
        both!(&plan, forward(&x, &w, b.as_deref()))
    };
    let right_lengths = ok(0) && ok(1) && bias_ok && (!into[0] || ok(4));
    verify(
        "plan forward",
        got,
        right_lengths,
        want.as_ref().map(|r| &r.output[..]),
        v,
    )?;

    let got = if into[1] {
        let mut out = garbage(lengths[5]);
        both!(&plan, backward_input_into(&gy, &w, &mut out)).map(|()| out)
    } else {
        both!(&plan, backward_input(&gy, &w))
    };
    let right_lengths = ok(3) && ok(1) && (!into[1] || ok(5));
    let want_gx = want.as_ref().map(|r| &r.grad_input[..]);
    verify("plan grad_input", got, right_lengths, want_gx, v)?;

    let got = if into[2] {
        let mut out = garbage(lengths[6]);
        both!(&plan, backward_weight_into(&x, &gy, &mut out)).map(|()| out)
    } else {
        both!(&plan, backward_weight(&x, &gy))
    };
    let right_lengths = ok(0) && ok(3) && (!into[2] || ok(6));
    let want_gw = want.as_ref().map(|r| &r.grad_weight[..]);
    verify("plan grad_weight", got, right_lengths, want_gw, v)?;

    let got = if into[3] {
        let mut out = garbage(lengths[7]);
        both!(&plan, backward_bias_into(&gy, &mut out)).map(|()| out)
    } else {
        both!(&plan, backward_bias(&gy))
    };
    let right_lengths = ok(3) && (!into[3] || ok(7));
    let want_gb = want.as_ref().map(|r| &r.grad_bias[..]);
    verify("plan grad_bias", got, right_lengths, want_gb, v)
}
