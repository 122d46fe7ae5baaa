//! The `bf16` tile job of the AMX kernel ([`AmxJob`]) on CPUs with AVX512-BF16 but no AMX
//! (AMD Zen 4 and 5): `vdpbf16ps` multiplies 16 pairs of `bf16` values by a pair broadcast
//! to every lane and adds both exact products into 16 `f32` sums, the step that AMX's
//! `tdpbf16ps` takes for a whole tile. Like the matrix unit, it treats subnormal operands
//! as zero and flushes subnormal sums.

use std::arch::x86_64::*;

use crate::kernels::direct::AmxJob;

/// Output channels of a register tile.
const TILE_CHANNELS: usize = 8;
/// Vectors of 16 pixels of a register tile (24 sums in registers with [`TILE_CHANNELS`]; 3
/// against 2: `resnet_3x3_c64` to `c256` and the input gradient in `bf16` 1.02-1.04x as fast
/// on one thread, 2026-12-07, AMD Zen 4).
const TILE_VECTORS: usize = 3;

/// Runs an [`AmxJob`] with AVX512-BF16: per [`TILE_CHANNELS`] channels and [`TILE_VECTORS`]
/// vectors of 16 pixels (fewer in a last tile), the sums in registers, started from the
/// bias; per reduction step and pair of terms, the pixels' pairs loaded (zeros in the lanes
/// that do not read the step, where the job has [`lanes`](AmxJob::lanes)) and each
/// channel's pair (its two terms side by side, or [`pair_gap`](AmxJob::pair_gap) apart and
/// put together) broadcast into one `vdpbf16ps` per vector; the sums stored into the job's
/// rows. Panics (a bug) where the pair gap is not one of [`PAIR_GAPS`].
///
/// # Safety
/// The CPU must support AVX-512 F and BF16 (the job's bounds are checked by
/// `AmxJob::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma")]
pub(crate) unsafe fn bf16_dot_tiles(job: &mut AmxJob<'_>) {
    // SAFETY: the CPU has the features (this function's contract).
    unsafe {
        match job.pair_gap {
            1 => tiles::<1>(job),
            9 => tiles::<9>(job),
            gap => panic!("pairs {gap} values apart"),
        }
    }
}

/// The pair gaps [`bf16_dot_tiles`] runs: side by side, and 3x3 weights read in place (the
/// gap compiled in: as a variable, the pair's addressing ran the kernel 1.6x slower).
pub(crate) const PAIR_GAPS: [usize; 2] = [1, 9];

/// [`bf16_dot_tiles`] with the two terms of each pair of the left operand `GAP` apart.
///
/// # Safety
/// As for [`bf16_dot_tiles`].
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma")]
#[inline]
unsafe fn tiles<const GAP: usize>(job: &mut AmxJob<'_>) {
    let pointers = job.pointers();
    let whole = job.len - job.len % (16 * TILE_VECTORS);
    for c0 in (0..32).step_by(TILE_CHANNELS) {
        for p in (0..whole).step_by(16 * TILE_VECTORS) {
            // SAFETY: the CPU has the features (this function's contract); `c0 + c < 32`
            // and `p + 16 * TILE_VECTORS <= len`.
            unsafe { tile::<TILE_VECTORS, GAP>(job, pointers, c0, p) };
        }
        // The last one or two vectors (`len` is a multiple of 16, checked by `pointers`).
        match (job.len - whole) / 16 {
            0 => {}
            // SAFETY: as above, `whole + 16 == len`.
            1 => unsafe { tile::<1, GAP>(job, pointers, c0, whole) },
            // SAFETY: as above, `whole + 32 == len`.
            _ => unsafe { tile::<2, GAP>(job, pointers, c0, whole) },
        }
    }
}

/// [`bf16_dot_tiles`]'s sums of channels `c0..c0 + TILE_CHANNELS` and pixels `p..p + 16 *
/// V`, from the job's `pointers`.
///
/// # Safety
/// The CPU must support AVX-512 F and BF16; `c0 + TILE_CHANNELS <= 32` and `p + 16 * V <=
/// len`, and `pointers` those of `AmxJob::pointers`, which checked the bounds.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma")]
#[inline]
unsafe fn tile<const V: usize, const GAP: usize>(
    job: &AmxJob<'_>,
    (a, b, bias, sums): (*const u16, *const u16, *const f32, *mut f32),
    c0: usize,
    p: usize,
) {
    let (a_stride, b_stride, len) = (job.a_stride, job.b_stride, job.len);
    // Per step, the lanes of each vector that load their pixels' pairs.
    let masks = |s: usize| -> [__mmask16; V] {
        std::array::from_fn(|v| match &job.lanes {
            Some(l) => l.masks[(p / 16 + v) * l.columns + l.step_columns[s]],
            None => u16::MAX,
        })
    };
    // SAFETY: `pointers` checked that the bias holds 16 values for each of 32 channels, the
    // left operand 32 rows of 32 values `a_stride` apart from every step's `at`, the right
    // one 16 rows of `2 * len` values `b_stride` apart from every step's `bt`, and the sums
    // 32 rows of `len`; with `c0 + c < 32` and `p + 16 * V <= len` (this function's
    // contract) every access below is inside them.
    unsafe {
        let mut acc: [[__m512; V]; TILE_CHANNELS] =
            std::array::from_fn(|c| [_mm512_loadu_ps(bias.add((c0 + c) * 16)); V]);
        for (s, &(at, bt)) in job.steps.iter().enumerate() {
            let x = b.add(bt + 2 * p);
            let w = a.add(at + c0 * a_stride);
            let m = masks(s);
            for r in 0..16 {
                let xs: [__m512bh; V] = std::array::from_fn(|v| {
                    let at = x.add(r * b_stride + 32 * v).cast();
                    bh(_mm512_maskz_loadu_epi32(m[v], at))
                });
                for (c, acc_c) in acc.iter_mut().enumerate() {
                    let at = w.add(c * a_stride + 2 * r * GAP);
                    let pair = match GAP {
                        1 => at.cast::<i32>().read_unaligned(),
                        _ => i32::from(*at) | i32::from(*at.add(GAP)) << 16,
                    };
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
    use crate::kernels::direct::amx::StepLanes;

    /// Random `bf16` bits of values in [-1, 1).
    fn random_bits(len: usize, rng: &mut StdRng) -> Vec<u16> {
        (0..len)
            .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)).to_bits())
            .collect()
    }

    fn value(bits: u16) -> f64 {
        bf16::from_bits(bits).to_f64()
    }

    /// Jobs of 16 to 96 pixels (a last tile of one or two vectors, or none), strides wider
    /// than their rows and steps at odd offsets, every lane or random lanes reading each
    /// step, each pair's terms side by side or [`PAIR_GAPS`] apart: every sum within the
    /// bound of `f32` summation of its exact products (terms counted times the roundoff
    /// times their magnitudes) of the job's definition, computed in `f64`.
    #[test]
    fn dot_tiles_match_the_job_definition() {
        if !bf16_dot_available() {
            return;
        }
        let mut rng = StdRng::seed_from_u64(11);
        let jobs = [
            (32, 32, 0, 1),
            (80, 45, 7, 3),
            (96, 96, 3, 5),
            (16, 16, 2, 2),
        ];
        let variants = PAIR_GAPS
            .into_iter()
            .flat_map(|gap| [(gap, false), (gap, true)]);
        let variants: Vec<_> = variants.collect();
        for ((len, a_stride, slack, step_count), (pair_gap, masked)) in jobs
            .into_iter()
            .flat_map(|job| variants.iter().map(move |&v| (job, v)))
        {
            let b_stride = 2 * len + slack;
            let a = random_bits(31 * a_stride + 31 * pair_gap + 1 + slack, &mut rng);
            let b = random_bits(15 * b_stride + 2 * len + slack, &mut rng);
            let steps: Vec<(usize, usize)> = (0..step_count)
                .map(|_| (rng.random_range(0..=slack), rng.random_range(0..=slack)))
                .collect();
            let bias: Vec<f32> = (0..32)
                .flat_map(|_| [rng.random_range(-1.0f32..1.0); 16])
                .collect();
            let columns = 3;
            let masks: Vec<u16> = (0..len / 16 * columns).map(|_| rng.random()).collect();
            let step_columns: Vec<usize> = (0..step_count)
                .map(|_| rng.random_range(0..columns))
                .collect();
            let reads = |p: usize, s: usize| {
                !masked || masks[p / 16 * columns + step_columns[s]] & (1 << (p % 16)) != 0
            };
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
                pair_gap,
                lanes: masked.then_some(StepLanes {
                    masks: &masks,
                    columns,
                    step_columns: &step_columns,
                }),
            };
            // SAFETY: the CPU has AVX512-BF16 (checked above), hence AVX-512 F.
            unsafe { bf16_dot_tiles(&mut job) };
            for c in 0..32 {
                for p in 0..len {
                    let (mut exact, mut magnitude) = (f64::from(bias[c * 16]), 0.0);
                    let read = steps.iter().enumerate().filter(|&(s, _)| reads(p, s));
                    for (_, &(at, bt)) in read {
                        for k in 0..32 {
                            let term = value(a[at + c * a_stride + k * pair_gap])
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
