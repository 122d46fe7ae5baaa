//! Measures the machine's float32 FMA peak, per core and for N threads: independent FMA
//! chains (enough to cover latency times throughput) on every vector width the CPU has,
//! and AVX512-BF16's `bf16` dot products where it has them.
//!
//! `cargo run --release -p conv2d-bench --bin fma_peak -- [threads]`

use std::time::Instant;

const ITERATIONS: u64 = 20_000_000;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 16 independent chains of 16-lane FMAs: returns FLOPs done.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iterations: u64) -> (f64, f32) {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); 16];
        for _ in 0..iterations {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let sum = acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum();
        (iterations as f64 * 16.0 * 16.0 * 2.0, sum)
    }

    /// 16 independent chains of AVX512-BF16 dot products (each lane sums two products of
    /// `bf16` pairs into an `f32`, four FLOPs): returns FLOPs done.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn bf16_dot(iterations: u64) -> (f64, f32) {
        // 1.0 and 2^-24 in every `bf16` half of each 32-bit lane.
        let one = _mm512_set1_epi16(0x3F80);
        let tiny = _mm512_set1_epi16(0x3380);
        // SAFETY: both are 64 bytes of plain data, every bit pattern valid in either.
        let bh = |v| unsafe { std::mem::transmute::<__m512i, __m512bh>(v) };
        let (a, b) = (bh(one), bh(tiny));
        let mut acc = [_mm512_set1_ps(1.0); 16];
        for _ in 0..iterations {
            for v in &mut acc {
                *v = _mm512_dpbf16_ps(*v, a, b);
            }
        }
        let sum = acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum();
        (iterations as f64 * 16.0 * 16.0 * 4.0, sum)
    }

    /// 12 independent chains of 8-lane FMAs: returns FLOPs done.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iterations: u64) -> (f64, f32) {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); 12];
        for _ in 0..iterations {
            for v in &mut acc {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut lanes = [0.0f32; 8];
        let mut sum = 0.0;
        for v in &acc {
            _mm256_storeu_ps(lanes.as_mut_ptr(), *v);
            sum += lanes.iter().sum::<f32>();
        }
        (iterations as f64 * 12.0 * 8.0 * 2.0, sum)
    }
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn measure(name: &str, threads: usize, kernel: fn(u64) -> (f64, f32)) {
    let start = Instant::now();
    let flops: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| kernel(ITERATIONS)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic").0)
            .sum()
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<8} {threads} thread(s): {:>7.1} GFLOP/s",
        flops / secs / 1e9
    );
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected just above.
            let run = |n| unsafe { x86::avx512(n) };
            measure("avx512", 1, run);
            measure("avx512", threads, run);
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            // SAFETY: AVX-512F and AVX512-BF16 were detected just above.
            let run = |n| unsafe { x86::bf16_dot(n) };
            measure("bf16dot", 1, run);
            measure("bf16dot", threads, run);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA were detected just above.
            let run = |n| unsafe { x86::avx2(n) };
            measure("avx2", 1, run);
            measure("avx2", threads, run);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("no FMA kernels for this architecture yet ({threads} threads requested)");
}
