//! [`Algorithm::DirectTiled`](crate::Algorithm::DirectTiled)'s weight gradient for layers
//! with many output channels per group: vectorised over output channels, so that no sum
//! needs a horizontal reduction. The output gradient of a band is transposed into rows of
//! output channels, one per output pixel `q` (counted in slab rows as in
//! [`tiled`](super::tiled)'s slab rows, whose padding columns it skips), and
//! `grad_w[co][t] = sum_q grad_out_t[q][co] * slab[start_t + q]`: a register tile of
//! [`CCO`] channels (vectors) by [`CTAPS`] taps (input values broadcast) per pixel.
//!
//! Each element's sum runs over images, bands and `q` in a fixed order, whatever the thread
//! count. A non-finite input is left to the other kernels (a zero column times an infinite
//! input would add NaN).

use super::implicit_gemm::transpose;
use super::tiled::{as_f32, as_f32_mut, bands};
use super::tiled_weight::for_each_band;
use super::Scratch;
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};
use crate::threading::{for_each_chunk, for_each_item};

/// Output channels per tile (four vectors of 16).
pub(crate) const CCO: usize = 64;
/// Taps per tile.
pub(crate) const CTAPS: usize = 6;
/// Elements of the group's sums (padded channels x taps) up to which this kernel runs:
/// they are revisited for every chunk of pixels, so they must stay in L2.
const MAX_SUMS: usize = 256 * 1024;
/// Elements of the group's sums up to which this kernel runs where each sums at least
/// [`MANY_PIXELS`] output pixels (of all images): enough multiply-adds per sum to pay for
/// sums streamed from beyond L2. See [`suits`].
const MAX_SUMS_MANY_PIXELS: usize = 3 * MAX_SUMS;
/// See [`MAX_SUMS_MANY_PIXELS`].
const MANY_PIXELS: usize = 192;
/// Output pixels per sweep of every tap tile of a task (whole output rows, at least one):
/// their output-gradient rows stay in L2 meanwhile, and a tile's sums are loaded and
/// stored once per sweep. 192 against 64 (`conv2d-bench`, `sweeps/weight_gradient.json`,
/// Zen 4, one thread, three alternated rounds): the layers this kernel takes 1.04-1.06x as
/// fast (`bwd_weight_3x3_c128` 1.06x), the others unchanged; 128 ran 1.0-1.02x slower than
/// 192.
const Q_CHUNK: usize = 192;
/// Tasks a group is split into at least, where its taps allow (a constant, not the thread
/// count, so that the split never depends on it).
const TASKS: usize = 16;

/// One tile over `rows` output rows of `width` pixels: `sums[j * CCO + c] (+)= sum over
/// r < rows, x < width of grad_out[(r * width + x) * pitch + c] * slab[starts[j] + r *
/// row_step + x]` for `c < CCO`, `j < CTAPS` (the output gradient holds output pixels only;
/// the slab's rows are `row_step` apart, padding columns included).
pub(crate) struct ChannelWeightTile<'a> {
    pub slab: &'a [f32],
    pub starts: [usize; CTAPS],
    pub grad_out: &'a [f32],
    pub pitch: usize,
    pub rows: usize,
    pub width: usize,
    pub row_step: usize,
    /// Whether `sums` holds earlier sums to add to (else they start from zero).
    pub resume: bool,
    /// `CTAPS` rows of `CCO` sums, of which the first `16 * vectors` channels are summed
    /// (a group's last tile of fewer channels sums only the vectors they fill).
    pub sums: &'a mut [f32],
    /// Vectors of 16 channels summed: 1 to `CCO / 16`.
    pub vectors: usize,
}

impl ChannelWeightTile<'_> {
    /// Each tap's window, the output-gradient rows and the sums, after checking every bound
    /// the vector kernels rely on (panics on a bug): `rows * width` rows of `CCO` values
    /// `pitch` apart, `CTAPS * CCO` sums, every window's rows inside the slab.
    pub(crate) fn pointers(&mut self) -> ([*const f32; CTAPS], *const f32, *mut f32) {
        let pixels = self.rows * self.width;
        let channels = 16 * self.vectors;
        assert!(pixels > 0 && (16..=CCO).contains(&channels) && self.pitch >= channels);
        assert!(self.grad_out.len() >= (pixels - 1) * self.pitch + channels);
        assert!(self.sums.len() >= CTAPS * CCO);
        let reach = (self.rows - 1) * self.row_step + self.width;
        assert!(self.starts.iter().all(|&s| s + reach <= self.slab.len()));
        let slab = self.slab.as_ptr();
        // `wrapping_add` keeps this safe code; every window is inside the slab (checked).
        let windows = self.starts.map(|s| slab.wrapping_add(s));
        (windows, self.grad_out.as_ptr(), self.sums.as_mut_ptr())
    }
}

/// Output channels per group from which this kernel runs (two vectors; fewer leave most
/// of a tile's registers idle).
const MIN_CHANNELS: usize = 32;
/// Taps per group from which this kernel runs: each chunk of output gradient is loaded
/// once per tap tile of a task, so with fewer taps the loads dominate.
const MIN_TAPS: usize = 128;
/// Output pixels of a band transposed as one run (whole rows): row by row, a 14-wide row
/// has no 16 x 16 block to transpose in registers, and 14x14 maps spent a quarter of a
/// grouped weight gradient copying value by value. In runs: 8 and 16 groups of 32 channels
/// on 14x14 1.04-1.30x as fast, 112-256 channels on 14x14 1.05-1.07x, 56x56 layers alike
/// (AMD Zen 5, one thread, three to five alternated rounds).
const TRANSPOSED_PIXELS: usize = 256;
/// Taps per group below which the transposed output gradient must also stay within
/// [`MAX_GRAD_OUT`]: every task streams all of it for its few tap tiles.
const STREAMED_TAPS: usize = 256;
/// Elements of the transposed output gradient (pixels x channels rounded up to a vector)
/// that a layer of fewer than [`STREAMED_TAPS`] taps may hold: 1 MiB of `f32`.
const MAX_GRAD_OUT: usize = 256 * 1024;

/// Whether the shape suits this kernel, whatever the type: [`MIN_CHANNELS`] or more output
/// channels per group, at most an eighth of them padding up to whole
/// vectors (a group's last tile sums only the vectors it fills), at least [`MIN_TAPS`] taps (and
/// [`STREAMED_TAPS`], or an output gradient within [`MAX_GRAD_OUT`]), and the group's sums
/// within [`MAX_SUMS`] ([`MAX_SUMS_MANY_PIXELS`] where each sums [`MANY_PIXELS`] or
/// more). `conv2d-bench` over `sweeps/weight_gradient.json` (one thread)
/// found it 1.15-1.3x faster than the tap-vectorised tiles on 64-128 channels, 14x14 to
/// 56x56 maps, and slower where a rule fails: 0.5-0.85x with 256-512 channels (sums of
/// 0.6-2.4 Mi elements), 0.67-0.77x with 32-72 taps. Tiles of fewer vectors
/// (2026-12-06, Intel Xeon, three alternated rounds): 32, 48 and 96 channels 1.15-1.37x
/// as fast as the tap-vectorised tiles (which they had run at 0.6-0.96x padded to 64),
/// 144-216 taps on 56x56 maps 1.19-1.24x, but the 7x7 stem's 147 taps on 112x112 (a 3 MiB
/// output gradient) 0.89x. With the groups in parallel (each one's tap tiles too), layers
/// of 2 to 16 groups of 32-48 channels on 14x14-56x56 maps 1.06-2.47x as fast on one
/// thread and 1.10-2.06x on two (the same Xeon, 2026-12-06, three alternated rounds; they
/// had run one group after another, 8 groups of 32 channels 0.77-0.84x on two threads).
/// Sums of up to 768 Ki elements over 192+
/// pixels (2026-12-06, Intel Xeon with 2 MiB of L2 a core, four and three alternated rounds
/// on one and two threads): 160-256 channels on 14x14 and 16x16 maps, 192 on 28x28 and 256
/// on four 7x7 images 1.06-1.29x and 1.02-1.37x as fast; on one thread, 256-320 channels
/// on 10x10 and 12x12 maps 0.88-0.98x, 384-512 channels on 14x14 maps 0.88-1.01x and 512
/// on two 7x7 images 0.77-0.92x, which stay on the tap tiles.
pub(super) fn suits(g: &Geometry) -> bool {
    let cout_g = g.cout_per_group();
    let pitch = cout_g.next_multiple_of(16);
    let taps = g.cin_per_group().saturating_mul(g.kh).saturating_mul(g.kw);
    let grad_out = g.oh.saturating_mul(g.ow).saturating_mul(pitch);
    let sums = cout_g.next_multiple_of(CCO).saturating_mul(taps);
    let max_sums = match g.n.saturating_mul(g.oh).saturating_mul(g.ow) >= MANY_PIXELS {
        true => MAX_SUMS_MANY_PIXELS,
        false => MAX_SUMS,
    };
    cout_g >= MIN_CHANNELS
        && pitch <= cout_g + cout_g / 8
        && taps >= MIN_TAPS
        && (taps >= STREAMED_TAPS || grad_out <= MAX_GRAD_OUT)
        && sums <= max_sums
}

/// `grad_w = sum input * grad_out`, overwriting `grad_w`, for a shape that [`suits`] with
/// a finite `f32` input on a CPU with the tile kernels (the caller,
/// [`tiled_weight`](super::tiled_weight), checks those).
pub(super) fn backward_weight<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    grad_out: &[A],
    grad_w: &mut [A],
    scratch: &Scratch,
) {
    let (Some(input), Some(grad_out), Some(grad_w)) =
        (as_f32(input), as_f32(grad_out), as_f32_mut(grad_w))
    else {
        unreachable!("has_kernel admits f32 only");
    };
    let (cout_g, taps) = (g.cout_per_group(), g.cin_per_group() * g.kh * g.kw);
    let (plane, row_len) = (g.oh * g.ow, bands(g).0);
    let (co_tiles, tap_tiles) = (cout_g.div_ceil(CCO), taps.div_ceil(CTAPS));
    let pitch = cout_g.next_multiple_of(16);
    let per_tile = CTAPS * CCO;
    let tiles_per_task = tap_tiles.div_ceil(TASKS.div_ceil(co_tiles).min(tap_tiles));
    // Where each output channel's plane starts in a band's output gradient.
    let channel_starts: Vec<usize> = (0..cout_g).map(|co| co * plane).collect();
    // Per group: per channel tile, per tap tile, CTAPS x CCO sums.
    let Some(mut sums) = scratch.filled_aligned(g.groups * co_tiles * tap_tiles * per_tile, 0.0f32)
    else {
        return;
    };
    let groups: Vec<_> = sums
        .chunks_exact_mut(co_tiles * tap_tiles * per_tile)
        .zip(grad_w.chunks_exact_mut(cout_g * taps))
        .enumerate()
        .collect();
    // The groups in parallel, each one's regions below shared out too.
    for_each_item(groups, |(group, (sums_g, grad_w_g))| {
        for_each_band(g, input, grad_out, group, scratch, |band| {
            // The band's output gradient, one row of `pitch` channels per output pixel.
            let Some(mut gy_t) = scratch.filled_aligned(band.rows * g.ow * pitch, 0.0f32) else {
                return false;
            };
            // Rows of at least `TRANSPOSED_PIXELS` pixels together (a row narrower than 16
            // has no 16 x 16 block of its own to transpose in registers).
            let chunk_rows = TRANSPOSED_PIXELS.div_ceil(g.ow);
            for_each_chunk(&mut gy_t, chunk_rows * g.ow * pitch, |c, dst| {
                let row = &band.grad_out[(band.oy0 + c * chunk_rows) * g.ow..];
                let mut pixels: Vec<&mut [f32]> = dst.chunks_exact_mut(pitch).collect();
                transpose(row, &channel_starts, &mut pixels);
            });
            let mut tasks = Vec::new();
            for (tile, sums_c) in sums_g.chunks_exact_mut(tap_tiles * per_tile).enumerate() {
                for (k, part) in sums_c.chunks_mut(tiles_per_task * per_tile).enumerate() {
                    tasks.push((tile, k * tiles_per_task, part));
                }
            }
            let first_band = band.n == 0 && band.oy0 == 0;
            let chunk_rows = (Q_CHUNK / g.ow).max(1);
            for_each_item(tasks, |(tile, first, part)| {
                for r0 in (0..band.rows).step_by(chunk_rows) {
                    for (i, sums) in part.chunks_exact_mut(per_tile).enumerate() {
                        let t0 = (first + i) * CTAPS;
                        run(&mut ChannelWeightTile {
                            slab: &band.slab.data,
                            starts: std::array::from_fn(|j| {
                                band.starts[(t0 + j).min(taps - 1)] + r0 * row_len
                            }),
                            grad_out: &gy_t[r0 * g.ow * pitch + tile * CCO..],
                            pitch,
                            rows: chunk_rows.min(band.rows - r0),
                            width: g.ow,
                            row_step: row_len,
                            resume: !first_band || r0 > 0,
                            sums,
                            vectors: (cout_g - tile * CCO).div_ceil(16).min(CCO / 16),
                        });
                    }
                }
            });
            true
        });
        // Each tile's sums (per tap, CCO channels) into the rows of its channels, the
        // channel tiles in parallel.
        let sums_g = &*sums_g;
        // (A tile's sums run tap after tap, so the channel tile's are a matrix of a row of
        // `CCO` channels per tap.)
        let starts: Vec<usize> = (0..taps).map(|t| t * CCO).collect();
        for_each_chunk(grad_w_g, CCO * taps, |c_tile, rows| {
            let sums_c = &sums_g[c_tile * tap_tiles * per_tile..][..tap_tiles * per_tile];
            let mut rows: Vec<&mut [f32]> = rows.chunks_exact_mut(taps).collect();
            transpose(sums_c, &starts, &mut rows);
        });
    });
}

/// Runs a tile with the vector kernel of this CPU (see
/// [`has_kernel`](super::tiled::has_kernel)).
fn run(job: &mut ChannelWeightTile<'_>) {
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it; `pointers` checks
        // the job's bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::arch::x86_64::channel_weight_tile_f32_avx512(job) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::arch::x86_64::channel_weight_tile_f32_avx2(job) },
        _ => unreachable!("has_kernel admits AVX2 and AVX-512 only"),
    }
}
