//! The element types the library computes on, and the accumulator each one sums in.

use std::borrow::Cow;
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Mul};

use half::{bf16, f16};
use num_complex::Complex;

use crate::error::{try_filled, Result};

mod sealed {
    pub trait Sealed {}
}

/// The type a computation accumulates in: `f32`, `f64`, `Complex<f32>` or `Complex<f64>`.
///
/// Sealed: the kernels are written once over this trait and instantiated for these four.
///
/// # Example
/// ```
/// use conv2d::{Accumulator, Element};
/// use half::bf16;
/// // bf16 is summed in f32.
/// let acc: <bf16 as Element>::Acc = bf16::from_f32(1.5).to_acc() + <f32 as Accumulator>::ONE;
/// assert_eq!(acc, 2.5f32);
/// ```
pub trait Accumulator:
    sealed::Sealed
    + Copy
    + Send
    + Sync
    + Debug
    + PartialEq
    + Add<Output = Self>
    + Mul<Output = Self>
    + AddAssign
    + 'static
{
    /// The additive identity.
    const ZERO: Self;
    /// The multiplicative identity.
    const ONE: Self;
    /// The complex conjugate; the identity for real types.
    fn conj(self) -> Self;
    /// Neither NaN nor infinite (for complex types: neither part).
    fn is_finite(self) -> bool;
    /// Zero (of the same sign) if subnormal, else unchanged; for complex types, per part.
    fn flush_subnormal(self) -> Self;
}

/// An element type of tensors: `f32`, `f64`, `half::f16`, `half::bf16`,
/// `Complex<f32>` or `Complex<f64>`.
///
/// Each element type sums in its [`Accumulator`]: `f16` and `bf16` accumulate in `f32`
/// and are rounded once at the end, as PyTorch does on CPU; the others accumulate in
/// their own type. The trait is sealed.
///
/// # Example
/// ```
/// use conv2d::Element;
/// use half::f16;
///
/// let x = f16::from_f32(1.5);
/// let acc: f32 = x.to_acc();
/// assert_eq!(f16::from_acc(acc * 2.0), f16::from_f32(3.0));
/// ```
pub trait Element: sealed::Sealed + Copy + Send + Sync + Debug + PartialEq + 'static {
    /// The type sums are carried out in.
    type Acc: Accumulator;
    /// PyTorch's name for the dtype, used in messages (`"float32"`, `"complex64"`, ...).
    const DTYPE_NAME: &'static str;
    /// Whether the type is complex (its gradients use PyTorch's conjugation convention).
    const IS_COMPLEX: bool;
    /// The additive identity.
    const ZERO: Self;

    /// Widens to the accumulator type (exact).
    fn to_acc(self) -> Self::Acc;
    /// Rounds an accumulated value back to this type (round-to-nearest-even).
    fn from_acc(acc: Self::Acc) -> Self;
    /// The value nearest to `re + i*im` (`im` is dropped for real types).
    ///
    /// # Example
    /// ```
    /// use conv2d::Element;
    /// use num_complex::Complex;
    ///
    /// assert_eq!(f32::from_parts(1.5, 9.0), 1.5);
    /// assert_eq!(Complex::<f64>::from_parts(1.5, -2.0), Complex::new(1.5, -2.0));
    /// ```
    fn from_parts(re: f64, im: f64) -> Self;
    /// The value as a `Complex<f64>` (exact for every element type).
    ///
    /// # Example
    /// ```
    /// use conv2d::Element;
    /// assert_eq!(half::bf16::from_f32(0.5).to_complex64().re, 0.5);
    /// ```
    fn to_complex64(self) -> Complex<f64>;

    /// Views a slice in the accumulator type, converting only when the types differ.
    #[doc(hidden)]
    fn acc_slice(values: &[Self]) -> Result<Cow<'_, [Self::Acc]>>;

    /// Runs `fill` on an accumulator-typed view of `out`, converting afterwards when the types differ.
    #[doc(hidden)]
    fn fill_from_acc(
        out: &mut [Self],
        fill: impl FnOnce(&mut [Self::Acc]) -> Result<()>,
    ) -> Result<()>;
}

fn flush_f32(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

fn flush_f64(x: f64) -> f64 {
    if x.is_subnormal() {
        0.0f64.copysign(x)
    } else {
        x
    }
}

macro_rules! accumulator {
    ($t:ty, $zero:expr, $one:expr, $conj:expr, $finite:expr, $flush:expr) => {
        impl sealed::Sealed for $t {}
        impl Accumulator for $t {
            const ZERO: Self = $zero;
            const ONE: Self = $one;
            #[inline(always)]
            fn conj(self) -> Self {
                let f: fn($t) -> $t = $conj;
                f(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                let f: fn($t) -> bool = $finite;
                f(self)
            }
            #[inline(always)]
            fn flush_subnormal(self) -> Self {
                let f: fn($t) -> $t = $flush;
                f(self)
            }
        }
    };
}

accumulator!(f32, 0.0, 1.0, |x| x, f32::is_finite, flush_f32);
accumulator!(f64, 0.0, 1.0, |x| x, f64::is_finite, flush_f64);
accumulator!(
    Complex<f32>,
    Complex::new(0.0, 0.0),
    Complex::new(1.0, 0.0),
    |x| Complex::conj(&x),
    Complex::is_finite,
    |x| Complex::new(x.re.flush_subnormal(), x.im.flush_subnormal())
);
accumulator!(
    Complex<f64>,
    Complex::new(0.0, 0.0),
    Complex::new(1.0, 0.0),
    |x| Complex::conj(&x),
    Complex::is_finite,
    |x| Complex::new(x.re.flush_subnormal(), x.im.flush_subnormal())
);

macro_rules! self_accumulating {
    ($t:ty, $name:literal, $complex:literal, $from:expr, $to:expr) => {
        impl Element for $t {
            type Acc = $t;
            const DTYPE_NAME: &'static str = $name;
            const IS_COMPLEX: bool = $complex;
            const ZERO: Self = <$t as Accumulator>::ZERO;

            #[inline(always)]
            fn to_acc(self) -> Self::Acc {
                self
            }
            #[inline(always)]
            fn from_acc(acc: Self::Acc) -> Self {
                acc
            }
            fn from_parts(re: f64, im: f64) -> Self {
                let f: fn(f64, f64) -> $t = $from;
                f(re, im)
            }
            fn to_complex64(self) -> Complex<f64> {
                let f: fn($t) -> Complex<f64> = $to;
                f(self)
            }
            fn acc_slice(values: &[Self]) -> Result<Cow<'_, [Self::Acc]>> {
                Ok(Cow::Borrowed(values))
            }
            fn fill_from_acc(
                out: &mut [Self],
                fill: impl FnOnce(&mut [Self::Acc]) -> Result<()>,
            ) -> Result<()> {
                fill(out)
            }
        }
    };
}

self_accumulating!(f32, "float32", false, |re, _| re as f32, |x| Complex::new(
    x as f64, 0.0
));
self_accumulating!(f64, "float64", false, |re, _| re, |x| Complex::new(x, 0.0));
self_accumulating!(
    Complex<f32>,
    "complex64",
    true,
    |re, im| Complex::new(re as f32, im as f32),
    |x| Complex::new(x.re as f64, x.im as f64)
);
self_accumulating!(Complex<f64>, "complex128", true, Complex::new, |x| x);

macro_rules! half_precision {
    ($t:ty, $name:literal) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            type Acc = f32;
            const DTYPE_NAME: &'static str = $name;
            const IS_COMPLEX: bool = false;
            const ZERO: Self = <$t>::ZERO;

            #[inline(always)]
            fn to_acc(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            fn from_acc(acc: f32) -> Self {
                <$t>::from_f32(acc)
            }
            fn from_parts(re: f64, _im: f64) -> Self {
                <$t>::from_f64(re)
            }
            fn to_complex64(self) -> Complex<f64> {
                Complex::new(self.to_f64(), 0.0)
            }
            fn acc_slice(values: &[Self]) -> Result<Cow<'_, [f32]>> {
                let mut wide = try_filled(values.len(), 0.0f32)?;
                for (w, v) in wide.iter_mut().zip(values) {
                    *w = v.to_f32();
                }
                Ok(Cow::Owned(wide))
            }
            fn fill_from_acc(
                out: &mut [Self],
                fill: impl FnOnce(&mut [f32]) -> Result<()>,
            ) -> Result<()> {
                let mut wide = try_filled(out.len(), 0.0f32)?;
                fill(&mut wide)?;
                for (o, w) in out.iter_mut().zip(&wide) {
                    *o = <$t>::from_f32(*w);
                }
                Ok(())
            }
        }
    };
}

half_precision!(f16, "float16");
half_precision!(bf16, "bfloat16");
