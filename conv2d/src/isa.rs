//! The instruction set the row kernels run with: detected once, and lowerable for testing.

use std::sync::OnceLock;

/// The environment variable that lowers the instruction set (`scalar`, `avx2`, `avx512`),
/// read once, at first use; it never raises it above what the CPU has.
///
/// # Example
/// ```
/// // Set before the first convolution, e.g. `CONV2D_ISA=scalar cargo test`.
/// assert_eq!(conv2d::ISA_ENV, "CONV2D_ISA");
/// assert!(conv2d::isa() <= conv2d::detected_isa());
/// ```
pub const ISA_ENV: &str = "CONV2D_ISA";

/// An instruction-set level for the library's own kernels, lowest first.
///
/// The `direct-rows` kernels give bitwise the same results on every level (one summation
/// order, no multiply and add contracted into an FMA), and so does `direct` for `f64` and
/// complex types; `direct` for `f32`, `f16` and `bf16` uses FMAs on AVX2 and AVX-512, and
/// `direct-tiled` FMAs and vectors as wide as the level has (below AVX2 it runs another
/// algorithm), so their last bits depend on the level (and, for `direct-tiled` at the
/// AVX-512 level, on whether the CPU is an AMD Zen 4, where it sums longer blocks of input
/// channels). The GEMM-based algorithm dispatches
/// on its own, inside the `gemm` crate. At the AVX-512 level, a CPU with AMX-BF16 also runs
/// `direct-tiled`'s `bf16` forward pass and input gradient on its matrix unit (see
/// [`Algorithm::DirectTiled`](crate::Algorithm::DirectTiled)), and an AMD CPU with
/// AVX512-BF16 but no AMX (Zen 4 and 5) most of the same layers on its `bf16` dot products,
/// which round and flush as the matrix unit does; lowering the level to AVX2 turns both off.
///
/// # Example
/// ```
/// use conv2d::{detected_isa, isa, Isa};
///
/// assert!(isa() <= detected_isa());
/// assert!(Isa::Scalar < Isa::Avx512);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// The target's baseline (SSE2 on x86-64), vectorised by the compiler.
    Scalar,
    /// AVX2 and FMA (x86-64).
    Avx2,
    /// AVX-512 F/VL/BW/DQ (x86-64).
    Avx512,
}

impl Isa {
    /// The name `CONV2D_ISA` accepts.
    ///
    /// # Example
    /// ```
    /// assert_eq!(conv2d::Isa::Avx2.name(), "avx2");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .find(|isa| isa.name() == name.trim().to_ascii_lowercase())
    }
}

/// The highest level this CPU supports.
///
/// # Example
/// ```
/// println!("this CPU runs {}", conv2d::detected_isa().name());
/// ```
pub fn detected_isa() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    let has = |f: &str| match f {
        "avx512" => {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
        }
        _ => {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
    };
    if has("avx2") && has("avx512") {
        Isa::Avx512
    } else if has("avx2") {
        Isa::Avx2
    } else {
        Isa::Scalar
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Scalar
}

/// Whether this CPU runs each 512-bit instruction as two 256-bit halves: AMD's family 0x19
/// (Zen 4 has AVX-512 that way; Zen 3, the family's other member, has none). Its 512-bit
/// multiply-adds issue at half the rate of a full-width core's, so a kernel that waits on
/// L2 there waits relatively less, and some kernels take longer blocks of work on it.
pub(crate) fn halved_avx512() -> bool {
    amd_family() == Some(0x19)
}

/// Whether AVX512-BF16's dot products (`vdpbf16ps`, four FLOPs a lane) outrun `f32`
/// multiply-adds (two a lane) on this CPU, where it has them: on AMD's (Zen 4 and 5), which
/// run them at twice the FLOPs of their multiply-adds; not on Intel's, at half (`fma_peak`'s
/// `bf16dot` line against its `avx512` one: 84 against 167 GFLOP/s on one core, an Intel
/// Xeon reported as model 207, without AMX, 2026-12-07), where the widened `f32` tiles ran
/// every `bf16` layer that took the dot products 1.2-2.9x as fast.
pub(crate) fn fast_bf16_dots() -> bool {
    amd_family().is_some()
}

/// The CPU's family (`cpuid` leaf 1: the base family, plus the extended family where the
/// base reads 0xF) if its vendor is AMD; `None` on other vendors and targets.
fn amd_family() -> Option<u32> {
    static FAMILY: OnceLock<Option<u32>> = OnceLock::new();
    *FAMILY.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::__cpuid;
            // Leaf 0: the vendor in EBX, EDX, ECX; leaf 1: EAX bits 8-11 the family, bits
            // 20-27 added to it where those read 0xF.
            let leaf0 = __cpuid(0);
            let vendor = [leaf0.ebx, leaf0.edx, leaf0.ecx].map(u32::to_le_bytes);
            let eax = __cpuid(1).eax;
            let family = match (eax >> 8) & 0xF {
                0xF => 0xF + ((eax >> 20) & 0xFF),
                base => base,
            };
            (vendor.as_flattened() == b"AuthenticAMD").then_some(family)
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    })
}

/// The level the kernels use: [`detected_isa`], lowered by `CONV2D_ISA` if that names a
/// lower one (an unknown name is ignored).
///
/// # Example
/// ```
/// assert!(conv2d::isa() <= conv2d::detected_isa());
/// ```
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let requested = std::env::var(ISA_ENV).ok().and_then(|v| Isa::from_name(&v));
        requested.map_or_else(detected_isa, |r| r.min(detected_isa()))
    })
}
