//! [`Algorithm::DirectTiled`](crate::Algorithm::DirectTiled)'s weight gradient: stride 1,
//! `f32` sums on AVX2 or AVX-512, a finite input. Each weight-gradient element is a dot
//! product of an output-gradient plane with a shifted window of the padded input:
//! `grad_w[co][t] = sum_q grad_out_flat[co][q] * slab[start_t + q]`, over the output pixels
//! `q` counted in slab rows as in [`tiled`](super::tiled). The output gradient is copied
//! into that layout with zeros in the columns that are not outputs (so the input values
//! those columns meet add nothing; a non-finite input would add `0 * inf`, hence the
//! finite-input condition). A register tile of [`WCO`] output channels by [`WTAPS`] taps
//! holds vectors of partial sums over `q`; each element's sum runs over images, bands and
//! `q` in a fixed order, whatever the thread count. Layers with many output channels per
//! group go to the channel-vectorised tiles of [`weight_channels`](super::weight_channels)
//! instead, under the same conditions.

use super::tiled::{as_f32, as_f32_mut, bands, has_kernel};
use super::weight_channels;
use super::{all_finite, padded_slab, Scratch, Slab, LANES};
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};
use crate::threading::for_each_chunk;

/// Output channels per tile.
pub(crate) const WCO: usize = 4;
/// Taps per tile.
pub(crate) const WTAPS: usize = 6;

/// One tile of output channels: `grad_w[c * taps + t] += sum_q grad_out[c * len + q] *
/// slab[starts[t] + q]` for `q < len` (a multiple of [`LANES`]), `c < channels`, every tap.
pub(crate) struct WeightTile<'a, A> {
    pub slab: &'a [A],
    pub starts: &'a [usize],
    /// [`WCO`] rows of `len` output-gradient values (rows past `channels` are zero).
    pub grad_out: &'a [A],
    pub len: usize,
    /// `channels` rows of `starts.len()` sums.
    pub grad_w: &'a mut [A],
    pub channels: usize,
}

impl<A> WeightTile<'_, A> {
    /// The slab and output-gradient pointers of the vector kernels, after checking every
    /// bound they rely on (panics on a bug).
    pub(crate) fn pointers(&self) -> (*const A, *const A) {
        let len = self.len;
        assert!(len.is_multiple_of(LANES) && self.grad_out.len() >= WCO * len);
        assert!(self.channels <= WCO && self.grad_w.len() >= self.channels * self.starts.len());
        let end = self.starts.iter().max().map_or(0, |&s| s + len);
        assert!(end <= self.slab.len());
        (self.slab.as_ptr(), self.grad_out.as_ptr())
    }

    /// Adds one tap tile's sums (taps `t0..`, as many as remain) to `grad_w`.
    pub(crate) fn add(&mut self, t0: usize, sums: &[[A; WTAPS]; WCO])
    where
        A: Accumulator,
    {
        let taps = self.starts.len();
        for (c, sums) in sums.iter().enumerate().take(self.channels) {
            let row = &mut self.grad_w[c * taps + t0..][..WTAPS.min(taps - t0)];
            for (w, &s) in row.iter_mut().zip(sums) {
                *w += s;
            }
        }
    }

    /// The starts of tap tile `t0..t0 + WTAPS`, the last one repeated past the end.
    pub(crate) fn tile_starts(&self, t0: usize) -> [usize; WTAPS] {
        let last = self.starts.len() - 1;
        std::array::from_fn(|i| self.starts[(t0 + i).min(last)])
    }
}

/// Output pixels (counted in slab rows) below which each tile's 24 final reductions cost
/// more than the GEMM's packing: a sweep (`conv2d-bench --algorithm`, one thread) found
/// the tiles 1.3-1.9x faster than `im2col-gemm` on 56x56 maps, even at 28x28 and 0.65x at
/// 14x14.
const MIN_PIXELS: usize = 512;

/// Whether the tiled weight gradient computes this shape in `A` with this input: stride 1,
/// more than a pointwise kernel, the tile kernels, a finite input, and the shape rule of
/// either tile (channel-vectorised, [`weight_channels::suits`], or these with
/// [`MIN_PIXELS`]). A pointwise weight gradient is one GEMM of the output gradient with
/// the input planes as they are, which `im2col-gemm` runs 1.15-6x as fast
/// (`sweeps/pointwise.json`'s stride-1 layers of 3-64 input channels as weight gradients,
/// one and two threads, 2026-12-03, Intel Xeon).
fn applies<A: Accumulator>(g: &Geometry, input: &[A]) -> bool {
    let pixels = g.oh.saturating_mul(g.ow + (g.kw - 1) * g.dilation.w);
    g.stride.h == 1
        && g.stride.w == 1
        && !super::pointwise(g)
        && (weight_channels::suits(g) || pixels >= MIN_PIXELS)
        && has_kernel::<A>()
        && all_finite(input)
}

/// `grad_w = sum conj(input) * grad_out` (overwriting `grad_w`) by tiles, or `false`
/// (nothing written) where they do not apply.
pub(crate) fn backward_weight<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    grad_out: &[A],
    grad_w: &mut [A],
    scratch: &Scratch,
) -> bool {
    if !applies(g, input) {
        return false;
    }
    if weight_channels::suits(g) {
        weight_channels::backward_weight(g, input, grad_out, grad_w, scratch);
        return true;
    }
    let (cout_g, taps) = (g.cout_per_group(), g.cin_per_group() * g.kh * g.kw);
    let (plane, row_len) = (g.oh * g.ow, bands(g).0);
    grad_w.fill(A::ZERO);
    // Groups in parallel; within one, each image and band prepares its rows once and its
    // tiles of output channels run in parallel over them.
    for_each_chunk(grad_w, cout_g * taps, |group, grad_w| {
        for_each_band(g, input, grad_out, group, scratch, |band| {
            let len = band.len.next_multiple_of(LANES);
            // The band's output gradient in slab-row layout, zero between rows, with
            // zero rows up to a whole number of tiles.
            let tiles = cout_g.div_ceil(WCO);
            let Some(mut flat) = scratch.filled_aligned(tiles * WCO * len, A::ZERO) else {
                return false;
            };
            for (dst, src) in flat
                .chunks_exact_mut(len)
                .zip(band.grad_out.chunks_exact(plane))
            {
                let src = &src[band.oy0 * g.ow..][..band.rows * g.ow];
                for (d, s) in dst.chunks_mut(row_len).zip(src.chunks_exact(g.ow)) {
                    d[..g.ow].copy_from_slice(s);
                }
            }
            for_each_chunk(grad_w, WCO * taps, |tile, gw| {
                let count = gw.len() / taps;
                let grad_out = &flat[tile * WCO * len..][..WCO * len];
                run(&mut WeightTile {
                    slab: &band.slab.data,
                    starts: &band.starts,
                    grad_out,
                    len,
                    grad_w: gw,
                    channels: count,
                });
            });
            true
        });
    });
    true
}

/// One band of one image for a weight-gradient kernel: its padded input rows (with
/// [`LANES`] zeros after), each tap's window start, and the image's output-gradient planes
/// of the group.
pub(super) struct GradientBand<'a, A: 'static> {
    pub n: usize,
    pub oy0: usize,
    pub rows: usize,
    pub slab: Slab<A>,
    pub starts: Vec<usize>,
    /// Output pixels of the band counted in slab rows (`(rows - 1) * row_len + ow`).
    pub len: usize,
    pub grad_out: &'a [A],
}

/// `f` for each image and band of `group`, in order, until it returns `false` or a buffer
/// cannot be allocated.
pub(super) fn for_each_band<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    grad_out: &[A],
    group: usize,
    scratch: &Scratch,
    mut f: impl FnMut(GradientBand<'_, A>) -> bool,
) {
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
    let (row_len, band) = bands(g);
    for n in 0..g.n {
        let x = &input[(n * g.cin + group * cin_g) * in_plane..][..cin_g * in_plane];
        for oy0 in (0..g.oh).step_by(band) {
            let rows = band.min(g.oh - oy0);
            let Some(slab) = padded_slab(g, x, oy0, rows, LANES, scratch) else {
                return;
            };
            let starts = slab.tap_starts(g);
            let band = GradientBand {
                n,
                oy0,
                rows,
                slab,
                starts,
                len: (rows - 1) * row_len + g.ow,
                grad_out: &grad_out[(n * g.cout + group * cout_g) * plane..][..cout_g * plane],
            };
            if !f(band) {
                return;
            }
        }
    }
}

/// Runs a tile with the vector kernel for `A` (`f32`, checked by [`applies`]).
fn run<A: Accumulator>(job: &mut WeightTile<'_, A>) {
    let (Some(slab), Some(grad_out), Some(grad_w)) = (
        as_f32(job.slab),
        as_f32(job.grad_out),
        as_f32_mut(job.grad_w),
    ) else {
        unreachable!("applies admits f32 only");
    };
    let mut f32_job = WeightTile {
        slab,
        starts: job.starts,
        grad_out,
        len: job.len,
        grad_w,
        channels: job.channels,
    };
    match isa() {
        // SAFETY: `isa()` returns a level only if the CPU supports it.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::arch::x86_64::direct_weight_tile_f32_avx512(&mut f32_job) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::arch::x86_64::direct_weight_tile_f32_avx2(&mut f32_job) },
        _ => unreachable!("applies admits AVX2 and AVX-512 only"),
    }
}
