//! Row primitives the kernels are built from, and how rows are split into parallel tasks.

#[cfg(target_arch = "x86_64")]
use crate::arch::x86_64;
use crate::element::Accumulator;
use crate::isa::{isa, Isa};

/// The output positions `o` in `0..out_len` whose input position `o*stride + tap - pad`
/// lies in `0..in_len`, as a half-open range.
#[inline]
pub(super) fn valid_range(
    out_len: usize,
    stride: usize,
    tap: usize,
    pad: usize,
    in_len: usize,
) -> (usize, usize) {
    let lo = pad.saturating_sub(tap).div_ceil(stride);
    // o*stride + tap < in_len + pad  <=>  o < ceil((in_len + pad - tap) / stride)
    let hi = match (in_len + pad).checked_sub(tap) {
        Some(room) => room.div_ceil(stride).min(out_len),
        None => 0,
    };
    (lo, hi.max(lo))
}

/// `dst[i] += a * src[i*stride]` for each `i` in `dst`, on the ISA [`isa`] selects.
#[inline]
pub(super) fn axpy_strided<A: Accumulator>(dst: &mut [A], a: A, src: &[A], stride: usize) {
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86_64::axpy_strided_avx512(dst, a, src, stride) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86_64::axpy_strided_avx2(dst, a, src, stride) },
        _ => generic::axpy_strided(dst, a, src, stride),
    }
}

/// `dst[i*stride] += a * src[i]` for each `i` in `src`, on the ISA [`isa`] selects.
#[inline]
pub(super) fn axpy_scattered<A: Accumulator>(dst: &mut [A], a: A, src: &[A], stride: usize) {
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86_64::axpy_scattered_avx512(dst, a, src, stride) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86_64::axpy_scattered_avx2(dst, a, src, stride) },
        _ => generic::axpy_scattered(dst, a, src, stride),
    }
}

/// `sum_i conj(x[i*stride]) * y[i]` in a fixed order, on the ISA [`isa`] selects.
#[inline]
pub(super) fn dot_conj<A: Accumulator>(x: &[A], stride: usize, y: &[A]) -> A {
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86_64::dot_conj_avx512(x, stride, y) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86_64::dot_conj_avx2(x, stride, y) },
        _ => generic::dot_conj(x, stride, y),
    }
}

/// The portable row kernels, inlined into each ISA's build of them.
pub(crate) mod generic {
    use super::{sum_lanes, Accumulator, LANES};

    /// `dst[i] += a * src[i*stride]` for each `i` in `dst`.
    #[inline(always)]
    pub(crate) fn axpy_strided<A: Accumulator>(dst: &mut [A], a: A, src: &[A], stride: usize) {
        if stride == 1 {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d += a * s;
            }
        } else {
            for (d, &s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
                *d += a * s;
            }
        }
    }

    /// `dst[i*stride] += a * src[i]` for each `i` in `src`.
    #[inline(always)]
    pub(crate) fn axpy_scattered<A: Accumulator>(dst: &mut [A], a: A, src: &[A], stride: usize) {
        if stride == 1 {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d += a * s;
            }
        } else {
            for (d, &s) in dst.iter_mut().step_by(stride).zip(src) {
                *d += a * s;
            }
        }
    }

    /// `sum_i conj(x[i*stride]) * y[i]`, in eight interleaved partial sums (a fixed order, so
    /// the result is reproducible, and one the compiler can vectorise).
    #[inline(always)]
    pub(crate) fn dot_conj<A: Accumulator>(x: &[A], stride: usize, y: &[A]) -> A {
        if stride != 1 {
            let mut acc = A::ZERO;
            for (&a, &b) in x.iter().step_by(stride).zip(y) {
                acc += a.conj() * b;
            }
            return acc;
        }
        let len = y.len().min(x.len());
        let (x, y) = (&x[..len], &y[..len]);
        let mut part = [A::ZERO; LANES];
        let mut xc = x.chunks_exact(LANES);
        let mut yc = y.chunks_exact(LANES);
        for (xs, ys) in (&mut xc).zip(&mut yc) {
            for l in 0..LANES {
                part[l] += xs[l].conj() * ys[l];
            }
        }
        let mut acc = sum_lanes(part);
        for (&a, &b) in xc.remainder().iter().zip(yc.remainder()) {
            acc += a.conj() * b;
        }
        acc
    }
}

/// `sum_i x[i]`, in the same fixed order as [`dot_conj`].
#[inline]
pub(super) fn sum<A: Accumulator>(x: &[A]) -> A {
    let mut part = [A::ZERO; LANES];
    let mut xc = x.chunks_exact(LANES);
    for xs in &mut xc {
        for l in 0..LANES {
            part[l] += xs[l];
        }
    }
    let mut acc = sum_lanes(part);
    for &a in xc.remainder() {
        acc += a;
    }
    acc
}

#[inline]
fn sum_lanes<A: Accumulator>(p: [A; LANES]) -> A {
    ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]))
}

const LANES: usize = 8;

/// Rows per parallel task when `planes` planes of `rows` rows each are split across the
/// pool: whole planes when there are enough of them, else bands of rows.
pub(super) fn band_rows(planes: usize, rows: usize) -> usize {
    let tasks_wanted = 4 * crate::threading::num_threads();
    if planes >= tasks_wanted {
        return rows.max(1);
    }
    let bands_per_plane = tasks_wanted.div_ceil(planes.max(1));
    rows.div_ceil(bands_per_plane).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brute-force definition of `valid_range`.
    fn valid_brute(out_len: usize, s: usize, tap: usize, pad: usize, in_len: usize) -> Vec<usize> {
        (0..out_len)
            .filter(|&o| {
                let i = (o * s + tap) as isize - pad as isize;
                i >= 0 && (i as usize) < in_len
            })
            .collect()
    }

    #[test]
    fn valid_range_matches_brute_force() {
        for out_len in 0..7 {
            for s in 1..4 {
                for tap in 0..7 {
                    for pad in 0..5 {
                        for in_len in 0..7 {
                            let (lo, hi) = valid_range(out_len, s, tap, pad, in_len);
                            let want = valid_brute(out_len, s, tap, pad, in_len);
                            assert_eq!((lo..hi).collect::<Vec<_>>(), want);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn dot_and_sum_agree_with_plain_loops() {
        let x: Vec<f64> = (0..37).map(|i| i as f64 * 0.5 - 3.0).collect();
        let y: Vec<f64> = (0..37).map(|i| (i * i) as f64 * 0.25).collect();
        let plain: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert_eq!(dot_conj(&x, 1, &y), plain);
        assert_eq!(sum(&x), x.iter().sum::<f64>());
        let strided: f64 = x.iter().step_by(3).zip(&y).map(|(a, b)| a * b).sum();
        assert_eq!(dot_conj(&x, 3, &y[..13]), strided);
    }
}
