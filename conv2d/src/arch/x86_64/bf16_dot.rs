//! The `bf16` tile job of the AMX kernel ([`AmxJob`]) on CPUs with AVX512-BF16 but no AMX
//! (AMD Zen 4 and 5): `vdpbf16ps` multiplies 16 pairs of `bf16` values by a pair broadcast
//! to every lane and adds both exact products into 16 `f32` sums, the step that AMX's
//! `tdpbf16ps` takes for a whole tile. Like the matrix unit, it treats subnormal operands
//! as zero and flushes subnormal sums.

use std::arch::x86_64::*;

use crate::kernels::direct::AmxJob;

/// Output channels of a register tile.
const TILE_CHANNELS: usize = 8;
/// Vectors of 16 pixels of a register tile (16 sums in registers with [`TILE_CHANNELS`]).
const TILE_VECTORS: usize = 2;

/// Runs an [`AmxJob`] with AVX512-BF16: per [`TILE_CHANNELS`] channels and 32 pixels, the
/// sums in registers, started from the bias; per reduction step and pair of terms, the
/// pixels' pairs loaded and each channel's pair broadcast into one `vdpbf16ps` per vector;
/// the sums stored into the job's rows.
///
/// # Safety
/// The CPU must support AVX-512 F and BF16 (the job's bounds are checked by
/// `AmxJob::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma")]
pub(crate) unsafe fn bf16_dot_tiles(job: &mut AmxJob<'_>) {
    let (a, b, bias, sums) = job.pointers();
    let (a_stride, b_stride, len) = (job.a_stride, job.b_stride, job.len);
    for c0 in (0..32).step_by(TILE_CHANNELS) {
        for p in (0..len).step_by(16 * TILE_VECTORS) {
            // SAFETY: `pointers` checked that the bias holds 16 values for each of 32
            // channels, the left operand 32 rows of 32 values `a_stride` apart from every
            // step's `at`, the right one 16 rows of `2 * len` values `b_stride` apart from
            // every step's `bt`, and the sums 32 rows of `len`; `c0 + c < 32` and
            // `p + 16 * TILE_VECTORS <= len` (a multiple of 32), so every access below is
            // inside them.
            unsafe {
                let mut acc: [[__m512; TILE_VECTORS]; TILE_CHANNELS] = std::array::from_fn(|c| {
                    [_mm512_loadu_ps(bias.add((c0 + c) * 16)); TILE_VECTORS]
                });
                for &(at, bt) in job.steps {
                    let x = b.add(bt + 2 * p);
                    let w = a.add(at + c0 * a_stride);
                    for r in 0..16 {
                        let xs: [__m512bh; TILE_VECTORS] = std::array::from_fn(|v| {
                            bh(_mm512_loadu_si512(x.add(r * b_stride + 32 * v).cast()))
                        });
                        for (c, acc_c) in acc.iter_mut().enumerate() {
                            let pair = w.add(c * a_stride + 2 * r).cast::<i32>().read_unaligned();
                            let pair = bh(_mm512_set1_epi32(pair));
                            for (s, &xv) in acc_c.iter_mut().zip(&xs) {
                                *s = _mm512_dpbf16_ps(*s, xv, pair);
                            }
                        }
                    }
                }
                for (c, acc_c) in acc.iter().enumerate() {
                    for (v, &s) in acc_c.iter().enumerate() {
                        _mm512_storeu_ps(sums.add((c0 + c) * len + p + 16 * v), s);
                    }
                }
            }
        }
    }
}

/// The 32 `bf16` values of a register of integers.
#[inline(always)]
fn bh(v: __m512i) -> __m512bh {
    // SAFETY: both types are 64 bytes of plain data, every bit pattern valid in either.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// Whether this CPU has AVX512-BF16.
pub(crate) fn bf16_dot_available() -> bool {
    is_x86_feature_detected!("avx512bf16")
}

#[cfg(test)]
mod tests {
    use half::bf16;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;

    /// Random `bf16` bits of values in [-1, 1).
    fn random_bits(len: usize, rng: &mut StdRng) -> Vec<u16> {
        (0..len)
            .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)).to_bits())
            .collect()
    }

    fn value(bits: u16) -> f64 {
        bf16::from_bits(bits).to_f64()
    }

    /// Jobs of 32 to 96 pixels, strides wider than their rows and steps at odd offsets: every
    /// sum within the bound of `f32` summation of its exact products (terms counted times
    /// the roundoff times their magnitudes) of the job's definition, computed in `f64`.
    #[test]
    fn dot_tiles_match_the_job_definition() {
        if !bf16_dot_available() {
            return;
        }
        let mut rng = StdRng::seed_from_u64(11);
        for (len, a_stride, slack, step_count) in [(32, 32, 0, 1), (64, 45, 7, 3), (96, 96, 3, 5)] {
            let b_stride = 2 * len + slack;
            let a = random_bits(31 * a_stride + 32 + slack, &mut rng);
            let b = random_bits(15 * b_stride + 2 * len + slack, &mut rng);
            let steps: Vec<(usize, usize)> = (0..step_count)
                .map(|_| (rng.random_range(0..=slack), rng.random_range(0..=slack)))
                .collect();
            let bias: Vec<f32> = (0..32)
                .flat_map(|_| [rng.random_range(-1.0f32..1.0); 16])
                .collect();
            let mut sums = vec![f32::NAN; 32 * len];
            let mut job = AmxJob {
                a: &a,
                a_stride,
                b: &b,
                b_stride,
                steps: &steps,
                bias: &bias,
                sums: &mut sums,
                len,
            };
            // SAFETY: the CPU has AVX512-BF16 (checked above), hence AVX-512 F.
            unsafe { bf16_dot_tiles(&mut job) };
            for c in 0..32 {
                for p in 0..len {
                    let (mut exact, mut magnitude) = (f64::from(bias[c * 16]), 0.0);
                    for &(at, bt) in &steps {
                        for k in 0..32 {
                            let term = value(a[at + c * a_stride + k])
                                * value(b[bt + (k / 2) * b_stride + 2 * p + k % 2]);
                            exact += term;
                            magnitude += term.abs();
                        }
                    }
                    let bound = (32 * step_count) as f64 * f64::from(f32::EPSILON) * magnitude;
                    let got = f64::from(sums[c * len + p]);
                    assert!(
                        (got - exact).abs() <= bound,
                        "channel {c}, pixel {p}: {got} vs {exact} (bound {bound})"
                    );
                }
            }
        }
    }
}
