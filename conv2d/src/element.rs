//! The element types the library computes on, and the accumulator each one sums in.

use std::borrow::Cow;
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Mul};

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use num_complex::Complex;

use crate::error::Result;
use crate::kernels::extend_mapped;
use crate::threading::{for_each_chunk, install};

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
    ($t:ty, $name:literal, $widen:path, $narrow:path) => {
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
                let mut wide = crate::spare::take::<f32>(values.len())?;
                $widen(values, &mut wide)?;
                Ok(Cow::Owned(wide))
            }
            fn fill_from_acc(
                out: &mut [Self],
                fill: impl FnOnce(&mut [f32]) -> Result<()>,
            ) -> Result<()> {
                let mut wide = crate::spare::take::<f32>(out.len())?;
                wide.resize(out.len(), 0.0);
                fill(&mut wide)?;
                narrow_in_chunks(&wide, out, $narrow);
                crate::spare::recycle(wide);
                Ok(())
            }
        }
    };
}

half_precision!(f16, "float16", widen_f16, narrow_f16);
half_precision!(bf16, "bfloat16", widen_bf16, narrow_bf16);

// `half`'s slice conversions use the CPU's f16 conversion instructions where it has them;
// for bf16 they convert one value at a time, which the branch-free loops below (vectorised
// by the compiler) replace with the same results.

/// Values from which a conversion is shared out among the call's threads (a `bf16`
/// depthwise layer on two threads spent 35% of its time widening on one), and the values
/// of a task.
const PARALLEL_CONVERT: usize = 1 << 18;
const CONVERT_CHUNK: usize = 1 << 16;

/// `out = narrow(wide)`, in chunks on the call's threads where it is long.
fn narrow_in_chunks<T: Send>(wide: &[f32], out: &mut [T], narrow: fn(&[f32], &mut [T])) {
    install(out.len(), PARALLEL_CONVERT, || {
        for_each_chunk(out, CONVERT_CHUNK, |c, o| {
            narrow(&wide[c * CONVERT_CHUNK..][..o.len()], o);
        });
    });
}

/// `wide = values` (exact), into an empty buffer.
fn widen_f16(values: &[f16], wide: &mut Vec<f32>) -> Result<()> {
    wide.resize(values.len(), 0.0);
    values.convert_to_f32_slice(wide);
    Ok(())
}

/// `out[i] = f16(wide[i])`, rounded to nearest even.
fn narrow_f16(wide: &[f32], out: &mut [f16]) {
    out.convert_from_f32_slice(wide);
}

/// `wide = values` (exact: a bf16 is the high half of an f32), into an empty buffer, with
/// the widest vectors the CPU has, or in chunks on the call's threads where it is long.
fn widen_bf16(values: &[bf16], wide: &mut Vec<f32>) -> Result<()> {
    if values.len() < PARALLEL_CONVERT || crate::threading::num_threads() == 1 {
        crate::arch::widen_bf16(values, wide);
        return Ok(());
    }
    install(values.len(), PARALLEL_CONVERT, || {
        extend_mapped(wide, values, |v| {
            f32::from_bits(u32::from(v.to_bits()) << 16)
        })
    })
}

/// [`widen_bf16`] as portable code, for any target features it is inlined into.
#[inline(always)]
pub(crate) fn widen_bf16_portable(values: &[bf16], wide: &mut Vec<f32>) {
    wide.extend(
        values
            .iter()
            .map(|v| f32::from_bits(u32::from(v.to_bits()) << 16)),
    );
}

/// `out[i] = bf16(wide[i])`, rounded to nearest even as `bf16::from_f32` (NaN stays NaN,
/// quiet, with its sign and high payload bits), with the widest vectors the CPU has.
pub(crate) fn narrow_bf16(wide: &[f32], out: &mut [bf16]) {
    crate::arch::narrow_bf16(wide, out);
}

/// [`narrow_bf16`] as portable code, for any target features it is inlined into.
#[inline(always)]
pub(crate) fn narrow_bf16_portable(wide: &[f32], out: &mut [bf16]) {
    for (o, w) in out.iter_mut().zip(wide) {
        let bits = w.to_bits();
        // Wrapping only for NaNs near `u32::MAX`, whose sum is not used.
        let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
        let nan = (bits >> 16) | 0x40;
        *o = bf16::from_bits(if w.is_nan() { nan } else { rounded } as u16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The branch-free bf16 conversions give `half`'s results bit for bit: rounding ties,
    /// carries into the exponent, overflow to infinity, subnormals, NaN payloads.
    #[test]
    fn bf16_conversions_match_half() {
        let mut bits: Vec<u32> = (0..=u32::MAX).step_by(65_521).collect();
        bits.extend([
            0x7F7F_FFFF,
            0x7F80_0000,
            0xFF80_0001,
            0x7FC0_0000,
            0x0000_8000,
        ]);
        bits.extend([
            0x3F80_8000,
            0x3F81_8000,
            0x3F80_8001,
            0x8000_0001,
            0x007F_FFFF,
        ]);
        let wide: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let mut narrow = vec![bf16::ZERO; wide.len()];
        narrow_bf16(&wide, &mut narrow);
        for (w, n) in wide.iter().zip(&narrow) {
            assert_eq!(
                n.to_bits(),
                bf16::from_f32(*w).to_bits(),
                "{:#010x}",
                w.to_bits()
            );
        }
        let mut back = Vec::new();
        widen_bf16(&narrow, &mut back).expect("room for the values");
        for (n, b) in narrow.iter().zip(&back) {
            assert_eq!(b.to_bits(), n.to_f32().to_bits());
        }
    }

    /// Conversions long enough to be shared out among the threads (in chunks, a last one
    /// partial) give every value in its place.
    #[test]
    fn long_bf16_conversions_keep_every_value_in_place() {
        let len = PARALLEL_CONVERT + CONVERT_CHUNK + 123;
        let wide: Vec<f32> = (0..len).map(|i| i as f32 * 0.75 - 1e5).collect();
        let mut narrow = vec![bf16::ZERO; len];
        narrow_in_chunks(&wide, &mut narrow, narrow_bf16);
        let mut back = Vec::new();
        widen_bf16(&narrow, &mut back).expect("room for the values");
        assert_eq!(back.len(), len);
        for ((w, n), b) in wide.iter().zip(&narrow).zip(&back) {
            assert_eq!(n.to_bits(), bf16::from_f32(*w).to_bits());
            assert_eq!(b.to_bits(), n.to_f32().to_bits());
        }
    }
}
