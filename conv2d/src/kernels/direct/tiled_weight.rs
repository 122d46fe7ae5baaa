//! [`Algorithm::DirectTiled`](crate::Algorithm::DirectTiled)'s weight gradient: stride 1,
//! `f32` sums on AVX2 or AVX-512, a finite input. Each weight-gradient element is a dot
//! product of an output-gradient plane with a shifted window of the padded input:
//! `grad_w[co][t] = sum over output rows r and columns x of grad_out[co][r][x] *
//! slab[start_t + r * row_len + x]`, the slab's rows `row_len` apart as in
//! [`tiled`](super::tiled). The output gradient is read in place, row by row (a row's last
//! vector masked to its columns). A register tile of [`WCO`] output channels by [`WTAPS`]
//! taps holds vectors of partial sums; each element's sum runs over images, bands, rows
//! and columns in a fixed order, whatever the thread count. Layers with many output
//! channels per group go to the channel-vectorised tiles of
//! [`weight_channels`](super::weight_channels) instead, under the same conditions.

use super::tiled::{as_f32, as_f32_mut, bands, has_kernel};
use super::weight_channels;
use std::mem::MaybeUninit;

use super::{all_finite, padded_slab, Aligned, Scratch, Slab, LANES};
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::isa::{isa, Isa};
use crate::threading::for_each_chunk;

/// Output channels per tile.
pub(crate) const WCO: usize = 4;
/// Taps per tile.
pub(crate) const WTAPS: usize = 6;

/// One tile of output channels: `grad_w[c * taps + t] += sum over r < rows, x < width of
/// grad_out[c][r * width + x] * slab[starts[t] + r * row_step + x]` for `c < channels`,
/// every tap.
pub(crate) struct WeightTile<'a, A> {
    pub slab: &'a [A],
    pub starts: &'a [usize],
    /// [`WCO`] channels' output-gradient rows, `rows * width` values each (the rows of
    /// those past `channels` repeat a real channel's; their sums are dropped).
    pub grad_out: [&'a [A]; WCO],
    pub rows: usize,
    pub width: usize,
    /// Elements from one slab row to the next.
    pub row_step: usize,
    /// `channels` rows of `starts.len()` sums.
    pub grad_w: &'a mut [A],
    pub channels: usize,
}

impl<A> WeightTile<'_, A> {
    /// The slab and output-gradient pointers of the vector kernels, after checking every
    /// bound they rely on (panics on a bug): `rows * width` values in every channel's
    /// rows, every window's rows inside the slab.
    pub(crate) fn pointers(&self) -> (*const A, [*const A; WCO]) {
        assert!(self.rows > 0 && self.width > 0 && self.row_step >= self.width);
        let pixels = self.rows * self.width;
        assert!(self.grad_out.iter().all(|rows| rows.len() >= pixels));
        assert!(self.channels <= WCO && self.grad_w.len() >= self.channels * self.starts.len());
        let reach = (self.rows - 1) * self.row_step + self.width;
        assert!(self.starts.iter().all(|&s| s + reach <= self.slab.len()));
        (self.slab.as_ptr(), self.grad_out.map(<[A]>::as_ptr))
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

/// Taps per group from which a band's output gradient is copied into slab-row layout
/// (one run of pixels per channel, whose vectors start on 64-byte lines) rather than read
/// in place row by row (whose rows start wherever the caller's buffer puts them, across a
/// line for most loads, and end in a masked vector): the copy costs the same per output
/// pixel whatever the taps, the in-place rows a share of every tap's work. Over 20 layers
/// of 16-64 output channels on 28x28-224x224 maps (`conv2d-bench`, 2026-12-06, Intel Xeon,
/// one thread, three alternated rounds): in place 1.07-1.58x as fast with 9-27 taps on
/// every map (3x3 kernels on 1-3 input channels), with 36-72 taps 1.07-1.63x on rows of
/// 112 and more but 0.72-0.97x on rows of 56 and 80, with 108-144 taps 0.61-1.0x.
const COPIED_TAPS: usize = 32;
/// Taps per group from which rows of [`WIDE_ROW`] or more outputs are copied (see
/// [`COPIED_TAPS`]).
const WIDE_COPIED_TAPS: usize = 80;
/// See [`WIDE_COPIED_TAPS`].
const WIDE_ROW: usize = 112;

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
    let in_place = taps < COPIED_TAPS || taps < WIDE_COPIED_TAPS && g.ow >= WIDE_ROW;
    grad_w.fill(A::ZERO);
    // Groups in parallel; within one, each image and band prepares its rows once and its
    // tiles of output channels run in parallel over them.
    for_each_chunk(grad_w, cout_g * taps, |group, grad_w| {
        for_each_band(g, input, grad_out, group, scratch, |band| {
            // Each channel's output gradient: its rows of the band in place, or one run of
            // `len` pixels in the slab-row copy.
            let copy = match in_place {
                true => None,
                false => match slab_row_copy(g, &band, row_len, scratch) {
                    Some(copy) => Some(copy),
                    None => return false,
                },
            };
            let (rows, width, row_step) = match &copy {
                None => (band.rows, g.ow, row_len),
                Some((_, len)) => (1, *len, *len),
            };
            let channel = |co: usize| match &copy {
                None => &band.grad_out[co * plane + band.oy0 * g.ow..][..band.rows * g.ow],
                Some((flat, len)) => &flat[co * len..][..*len],
            };
            for_each_chunk(grad_w, WCO * taps, |tile, gw| {
                let count = gw.len() / taps;
                run(&mut WeightTile {
                    slab: &band.slab.data,
                    starts: &band.starts,
                    // A tile's channels past its last repeat it (their sums are dropped).
                    grad_out: std::array::from_fn(|c| channel(tile * WCO + c.min(count - 1))),
                    rows,
                    width,
                    row_step,
                    grad_w: gw,
                    channels: count,
                });
            });
            true
        });
    });
    true
}

/// The band's output gradient in slab-row layout (each channel's rows `row_len` apart,
/// zeros between them, so that one run of the copy's pixels meets the windows as the rows
/// do), and the length of a channel's run (a multiple of [`LANES`]); `None` if the buffer
/// cannot be allocated.
#[allow(unsafe_code)] // calls `written_aligned`
fn slab_row_copy<A: Accumulator>(
    g: &Geometry,
    band: &GradientBand<'_, A>,
    row_len: usize,
    scratch: &Scratch,
) -> Option<(Aligned<A>, usize)> {
    let plane = g.oh * g.ow;
    let len = ((band.rows - 1) * row_len + g.ow).next_multiple_of(LANES);
    let zero = MaybeUninit::new(A::ZERO);
    // Channel `c`'s run: its rows, each followed by zeros up to the next; a row's run past
    // the band's last row (`len` rounds up) all zeros.
    let write = |c: usize, run: &mut [MaybeUninit<A>]| {
        for (r, dst) in run.chunks_mut(row_len).enumerate() {
            let (row, gap) = dst.split_at_mut(g.ow.min(dst.len()));
            if r < band.rows {
                row.write_copy_of_slice(
                    &band.grad_out[c * plane + (band.oy0 + r) * g.ow..][..g.ow],
                );
            } else {
                row.fill(zero);
            }
            gap.fill(zero);
        }
    };
    let runs = g.cout_per_group();
    // SAFETY: `write` initialises every element of each run (a row and its gap fill each
    // segment of `row_len`; the band's rows are `ow` long, `ow <= row_len`, and every
    // segment of a real row is whole: `len >= (rows - 1) * row_len + ow`).
    let flat = unsafe { scratch.written_aligned(runs * len, len, A::ZERO, write)? };
    Some((flat, len))
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
    let band = bands(g).1;
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
    let grad_out = job.grad_out.map(as_f32);
    let (Some(slab), Some(grad_w), true) = (
        as_f32(job.slab),
        as_f32_mut(job.grad_w),
        grad_out.iter().all(Option::is_some),
    ) else {
        unreachable!("applies admits f32 only");
    };
    let grad_out = grad_out.map(Option::unwrap_or_default);
    let mut f32_job = WeightTile {
        slab,
        starts: job.starts,
        grad_out,
        rows: job.rows,
        width: job.width,
        row_step: job.row_step,
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
