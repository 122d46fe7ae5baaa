//! The `bf16` tile kernel on AMX (Advanced Matrix Extensions): `tdpbf16ps` multiplies a
//! tile of 16 x 32 `bf16` values by a tile of 32 x 16 (stored as 16 rows of 16 pairs) and
//! adds the exact products into 16 x 16 `f32` sums. Stable Rust has no AMX intrinsics yet,
//! so the instructions are written as inline assembly; the operating system hands out the
//! tile registers only on request ([`available`]).

use std::arch::asm;
use std::sync::OnceLock;

use crate::kernels::direct::AmxJob;

/// Whether this CPU has AMX-BF16 and the operating system lets this process use the tile
/// registers (asked for once, for the whole process).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // Leaf 7, sub-leaf 0: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let cpu = leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0;
        cpu && request_tile_data()
    })
}

/// Asks Linux for the tile-data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)`); the
/// answer holds for every thread of the process.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: `arch_prctl` with this request only reads its two integer arguments and
    // changes the process's permitted register state; it touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// The tile configuration `ldtilecfg` reads: palette 1, registers 0-7 all 16 rows of 64
/// bytes (sums `tmm0`-`tmm3`, left operand `tmm4`-`tmm5`, right operand `tmm6`-`tmm7`).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Runs an [`AmxJob`]: per 32 pixels, the 32 x 32 sums in four tile registers (two of
/// channels by two of pixels), started from the bias, then per reduction step two tiles of
/// the left operand and two of the right loaded and four `tdpbf16ps`, each issued as soon
/// as its tiles are in (measured 10-20% ahead of four loads first); the sums stored into
/// the job's rows. The job must be whole tiles of 32 pixels, its pairs side by side and
/// without lane masks (checked).
///
/// # Safety
/// [`available`] must have returned `true` (the job's bounds are checked by
/// `AmxJob::pointers`).
pub(crate) unsafe fn bf16_tiles(job: &mut AmxJob<'_>) {
    let (a, b, bias, sums) = job.pointers();
    assert!(job.len.is_multiple_of(32) && job.lanes.is_none() && job.pair_gap == 1);
    let (a_stride, b_stride, sums_stride) = (job.a_stride * 2, job.b_stride * 2, job.len * 4);
    // SAFETY: the tile registers are granted (this function's contract); `CONFIG` is a
    // valid palette-1 configuration, 64 bytes, aligned.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
    for p in (0..job.len).step_by(32) {
        // SAFETY: the tile registers are configured; `pointers` checked that every tile
        // read below lies in the operands and the bias, and every tile written in the
        // sums: for all `p < len` (a multiple of 32) and steps, the 16 rows at the given
        // strides (the same holds for the blocks below).
        unsafe {
            asm!(
                "tileloadd tmm0, [{b} + {s}*1]",
                "tileloadd tmm1, [{b} + {s}*1]",
                "tileloadd tmm2, [{c} + {s}*1]",
                "tileloadd tmm3, [{c} + {s}*1]",
                b = in(reg) bias,
                c = in(reg) bias.add(16 * 16),
                s = in(reg) 64usize,
                options(nostack, readonly),
            );
        }
        for &(at, bt) in job.steps {
            // SAFETY: see above.
            unsafe {
                let (w, x) = (a.add(at), b.add(bt + 2 * p));
                asm!(
                    "tileloadd tmm4, [{w0} + {ws}*1]",
                    "tileloadd tmm6, [{x0} + {xs}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{x1} + {xs}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{w1} + {ws}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    w0 = in(reg) w,
                    w1 = in(reg) w.add(16 * job.a_stride),
                    ws = in(reg) a_stride,
                    x0 = in(reg) x,
                    x1 = in(reg) x.add(32),
                    xs = in(reg) b_stride,
                    options(nostack, readonly),
                );
            }
        }
        // SAFETY: see above.
        unsafe {
            let out = sums.add(p);
            asm!(
                "tilestored [{o0} + {s}*1], tmm0",
                "tilestored [{o1} + {s}*1], tmm1",
                "tilestored [{o2} + {s}*1], tmm2",
                "tilestored [{o3} + {s}*1], tmm3",
                o0 = in(reg) out,
                o1 = in(reg) out.add(16),
                o2 = in(reg) out.add(16 * job.len),
                o3 = in(reg) out.add(16 * job.len + 16),
                s = in(reg) sums_stride,
                options(nostack),
            );
        }
    }
    // SAFETY: the tiles were configured above; releasing them returns to the initial state.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}
