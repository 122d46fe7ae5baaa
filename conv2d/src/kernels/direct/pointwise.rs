//! Pointwise convolutions (a 1x1 kernel, no padding, any stride) on the tile kernel: each
//! output plane is a GEMM of the weight rows with the input planes, which the tile kernel
//! reads as they are (one "tap" per input channel, its window the channel's pixels).
//! A strided input, or planes that are not whole vectors, are first copied into planes of
//! whole vectors on 64-byte lines. Planes of whole vectors off a line (a `Vec`'s usual
//! 16-byte alignment) are read in place from their first pixel on a line, the pixels before
//! it and the vector's worth past the last whole vector after it staged into one vector a
//! channel: copying the whole input was 18% of a 64-channel 56x56 layer.
//!
//! Tasks are chunks of [`CHUNK`] pixels of every output channel (split further by runs of
//! channel tiles when the chunks are few); within one, the input channels go in blocks of
//! [`CI_BLOCK`] (more for a shorter chunk, in as many elements), every tile sweeping a block
//! before the next. Every output sums its bias, then its input channels in order, whatever
//! the thread count.

use super::tiled::{run, summed_channels, tile_channels, tile_rows, Tile, CO};
use super::{every_nth, Aligned, Scratch, LANES};
use crate::element::Accumulator;
use crate::geometry::Geometry;
use crate::kernels::elements_to_line;
use crate::threading::{for_each_chunk, for_each_item};

/// Output pixels of one task, and input channels whose taps every tile of the task sweeps
/// before the next block: `conv2d-bench` over `sweeps/pointwise.json` (one thread, 25 1x1
/// layers) put chunks of 1024 pixels level with whole planes and 3-12% ahead of 256, 512
/// and 2048, and blocks of 64 channels level with 128 and 256. A shorter chunk (a plane of
/// fewer pixels) takes more channels a block, up to `CI_BLOCK * CHUNK` elements: each tile
/// call then sums more taps (2026-12-03, Intel Xeon: a 1024-channel layer with 7x7 outputs
/// 1.1x as fast as in blocks of 64; the sweep 1.02x overall with 8-channel tiles).
const CHUNK: usize = 1024;
/// See [`CHUNK`].
const CI_BLOCK: usize = 64;
/// Tasks an image and group is split into at least, where its channels allow (a constant,
/// not the thread count, so that the split never depends on it).
const TASKS: usize = 16;

/// Whether `g` is pointwise: a 1x1 kernel whose every output reads an input pixel (no
/// padding on any side).
pub(crate) fn applies(g: &Geometry) -> bool {
    let inside = |outputs: usize, stride: usize, size: usize| {
        outputs.saturating_sub(1).saturating_mul(stride) < size
    };
    g.kh == 1
        && g.kw == 1
        && g.pad_top == 0
        && g.pad_left == 0
        && inside(g.oh, g.stride.h, g.h)
        && inside(g.ow, g.stride.w, g.w)
}

/// `out = conv2d(input, weight) + bias` for a pointwise shape on the tile kernel,
/// overwriting `out`.
pub(crate) fn forward<A: Accumulator>(
    g: &Geometry,
    input: &[A],
    weight: &[A],
    bias: Option<&[A]>,
    out: &mut [A],
    scratch: &Scratch,
) {
    let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    for (task, out_g) in out.chunks_exact_mut(cout_g * plane).enumerate() {
        let (n, group) = (task / g.groups, task % g.groups);
        let x = &input[(n * g.cin + group * cin_g) * in_plane..][..cin_g * in_plane];
        let layer = Layer {
            weight,
            bias,
            first: group * cout_g,
            cin: cin_g,
            scratch,
        };
        let planes = out_g.chunks_exact_mut(plane);
        let whole_vectors =
            (g.stride.h, g.stride.w) == (1, 1) && in_plane == plane && plane.is_multiple_of(LANES);
        match elements_to_line(x) {
            0 if whole_vectors => layer.sweep(x, plane, planes.collect(), TASKS),
            // Every plane is as far off a line as the first: its pixels from `skip` on are
            // read in place, the `skip` before and those past the last whole vector after
            // them are staged into one vector a channel.
            skip if whole_vectors && skip < LANES && plane > LANES => {
                let inner = plane - LANES;
                let inner_planes = planes.map(|p| &mut p[skip..][..inner]).collect();
                layer.sweep(&x[skip..], plane, inner_planes, TASKS);
                layer.edges(x, plane, skip, out_g);
            }
            _ => {
                let padded = plane.next_multiple_of(LANES);
                let Some(staged) = stage(g, x, padded, scratch) else {
                    return;
                };
                layer.sweep(&staged, padded, planes.collect(), TASKS);
            }
        }
    }
}

/// What every sweep of one (image, group) shares.
struct Layer<'a, A> {
    weight: &'a [A],
    bias: Option<&'a [A]>,
    /// The group's first output channel.
    first: usize,
    /// Input channels per group.
    cin: usize,
    scratch: &'a Scratch,
}

impl<A: Accumulator> Layer<'_, A> {
    /// `outs[c][p] = bias + sum_ci weight[c][ci] * x[ci * stride + p]` for the group's output
    /// channels `c` and `p < outs[c].len()`, which the input rows hold rounded up to whole
    /// vectors (`x[ci * stride..]` readable that far, `stride` a multiple of [`LANES`]), in
    /// at least `tasks` tasks where the chunks and channel tiles allow.
    fn sweep(&self, x: &[A], stride: usize, mut planes: Vec<&mut [A]>, tasks: usize) {
        let Some(pixels) = planes.first().map(|p| p.len()) else {
            return;
        };
        let padded = pixels.next_multiple_of(LANES);
        let (cin_g, cout_g, scratch) = (self.cin, planes.len(), self.scratch);
        // Tasks: a chunk of pixels of every channel, split by runs of whole tiles of
        // channels when the chunks alone would be too few to share out.
        let chunk = padded.min(CHUNK);
        let chunks = pixels.div_ceil(chunk);
        let co = tile_channels();
        let tiles = cout_g.div_ceil(co);
        let split = tasks.div_ceil(chunks).min(tiles);
        let channels_per_task = tiles.div_ceil(split) * co;
        let mut rows: Vec<_> = planes.iter_mut().map(|p| p.chunks_mut(chunk)).collect();
        let mut tasks = Vec::new();
        for p0 in (0..pixels).step_by(chunk) {
            let mut outs = rows.iter_mut().flat_map(Iterator::next);
            for first in (0..cout_g).step_by(channels_per_task) {
                let part: Vec<&mut [A]> = outs.by_ref().take(channels_per_task).collect();
                tasks.push((p0, self.first + first, part));
            }
        }
        let copy_rows =
            cin_g >= ALIASING_CHANNELS && pixels >= ALIASING_PIXELS && aliases::<A>(stride);
        for_each_item(tasks, |(p0, co_first, mut outs)| {
            let len = chunk.min(padded - p0);
            let width = outs[0].len();
            // Rows that would alias in L1 are read from a copy whose rows do not.
            let copy = copy_rows.then(|| copied_rows(x, stride, p0, len, cin_g, scratch));
            let (slab, starts): (&[A], Vec<usize>) = match &copy {
                Some(Some((rows, row))) => (rows, (0..cin_g).map(|ci| ci * row).collect()),
                Some(None) => return,
                None => (x, (0..cin_g).map(|ci| ci * stride + p0).collect()),
            };
            // The sums go straight into the output, except where it is shorter than whole
            // vectors (the last chunk of a plane that is not) or the tile sums channels past
            // the group's last: those sum into `spare`, copied after.
            let staged_tile = |count: usize| width < len || summed_channels(count) != count;
            let counts: Vec<usize> = outs.chunks(co).map(<[_]>::len).collect();
            let spares = counts.iter().filter(|&&count| staged_tile(count)).count();
            let Some(mut spare) = scratch.filled(spares * CO * len, A::ZERO) else {
                return;
            };
            let mut spare_tiles = spare.chunks_exact_mut(CO * len);
            // Placeholders past the channels summed.
            let mut sums: Vec<[&mut [A]; CO]> = outs
                .chunks_mut(co)
                .map(|tile_outs| {
                    if staged_tile(tile_outs.len()) {
                        let tile = spare_tiles.next().expect("a spare tile");
                        let mut rows = tile.chunks_exact_mut(len);
                        std::array::from_fn(|_| rows.next().expect("CO rows"))
                    } else {
                        let mut chans = tile_outs.iter_mut();
                        std::array::from_fn(|_| chans.next().map_or(&mut [][..], |c| &mut c[..]))
                    }
                })
                .collect();
            // Per tile: its starting sums, weight rows and channels summed.
            let tiles: Vec<_> = (counts.iter().enumerate())
                .map(|(t, &count)| (tile_rows(self.bias, co_first + t * co, count, cin_g), count))
                .collect();
            // Shorter chunks take more channels a block, in as many elements.
            let ci_block = (CI_BLOCK * CHUNK / len).max(CI_BLOCK);
            for (b, k0) in (0..cin_g).step_by(ci_block).enumerate() {
                let block = &starts[k0..][..ci_block.min(cin_g - k0)];
                for (sums, &((init, rows), count)) in sums.iter_mut().zip(&tiles) {
                    run(&mut Tile {
                        slab,
                        starts: block,
                        weights: self.weight,
                        rows: rows.map(|r| r + k0),
                        init,
                        resume: b > 0,
                        outs: sums.each_mut().map(|o| &mut **o),
                        len,
                        channels: summed_channels(count),
                        prefetch: true,
                    });
                }
            }
            drop(sums);
            let mut spare_tiles = spare.chunks_exact(CO * len);
            for tile_outs in outs.chunks_mut(co) {
                if staged_tile(tile_outs.len()) {
                    let sums = spare_tiles.next().expect("a spare tile");
                    for (dst, src) in tile_outs.iter_mut().zip(sums.chunks_exact(len)) {
                        dst.copy_from_slice(&src[..width]);
                    }
                }
            }
        });
    }

    /// The pixels a sweep from `skip` (`1..LANES`) leaves out of each `plane` (a multiple of
    /// [`LANES`] over it): the first `skip` and the last `LANES - skip`, one vector a
    /// channel staged on a line, summed into `out` (the group's output planes).
    fn edges(&self, x: &[A], plane: usize, skip: usize, out: &mut [A]) {
        let tail = plane - LANES;
        let Some(mut staged) = self.scratch.filled_aligned(self.cin * LANES, A::ZERO) else {
            return;
        };
        for (dst, src) in staged.chunks_exact_mut(LANES).zip(x.chunks_exact(plane)) {
            dst[..skip].copy_from_slice(&src[..skip]);
            dst[skip..].copy_from_slice(&src[tail + skip..]);
        }
        let cout = out.len() / plane;
        let Some(mut sums) = self.scratch.filled(cout * LANES, A::ZERO) else {
            return;
        };
        // One task, on this thread: a parallel region costs more than these few sums.
        self.sweep(&staged, LANES, sums.chunks_exact_mut(LANES).collect(), 1);
        for (dst, src) in out.chunks_exact_mut(plane).zip(sums.chunks_exact(LANES)) {
            dst[..skip].copy_from_slice(&src[..skip]);
            dst[tail + skip..].copy_from_slice(&src[skip..]);
        }
    }
}

/// Input channels and output pixels per plane from which a sweep whose rows
/// [`alias`](aliases) reads a copy of each task's rows instead: with fewer channels more
/// of them fit in an L1 set's ways, and on smaller planes each task's copy (repeated by
/// the tasks that split a chunk's channels) costs more than the misses. Over 14 pointwise
/// layers of 16-512 channels on 16x16 to 128x128 maps (2026-12-04, Zen 3, AVX2, one thread,
/// three alternated rounds, the tiles forced): 1.09-1.46x as fast on 64x64 and larger
/// planes of 32 or more input channels, 0.73-0.97x on 16x16 and 32x32 ones, 0.92x with 16
/// input channels on 112x112.
const ALIASING_CHANNELS: usize = 32;
/// See [`ALIASING_CHANNELS`].
const ALIASING_PIXELS: usize = 4 * CHUNK;

/// Whether input rows `stride` elements apart map onto few L1 sets: a whole number of
/// 1 KiB (16 lines) puts the rows' vectors at one pixel into 4 or fewer of a 64-set L1's
/// sets, whose 8 to 12 ways then hold a fraction of a block's channels, so that most taps
/// miss L1. `conv2d-bench` (2026-12-04, Zen 3, AVX2, one thread) ran a 128 to 256 channel
/// layer on 64x64 maps (16 KiB planes) at 46.5 GFLOP/s, on 60x68 maps at 73.8, on 64x72
/// (18 KiB) at 66.2.
fn aliases<A>(stride: usize) -> bool {
    (stride * std::mem::size_of::<A>()).is_multiple_of(1024)
}

/// Pixels `p0..p0 + len` of each of the `cin` rows of `x` (`stride` apart, each readable
/// that far), copied onto aligned lines `row` apart: `len`, or `len + LANES` where `len`
/// itself would [`alias`](aliases). Returns the copy and `row`; `None` if the buffer cannot
/// be allocated.
#[allow(unsafe_code)] // calls `written_aligned`
fn copied_rows<A: Accumulator>(
    x: &[A],
    stride: usize,
    p0: usize,
    len: usize,
    cin: usize,
    scratch: &Scratch,
) -> Option<(Aligned<A>, usize)> {
    let row = match aliases::<A>(len) {
        true => len + LANES,
        false => len,
    };
    let copy = |ci: usize, dst: &mut [std::mem::MaybeUninit<A>]| {
        let (data, rest) = dst.split_at_mut(len);
        data.write_copy_of_slice(&x[ci * stride + p0..][..len]);
        rest.fill(std::mem::MaybeUninit::new(A::ZERO));
    };
    // SAFETY: each chunk is one row of `row >= len` elements, all written by `copy`.
    let rows = unsafe { scratch.written_aligned(cin * row, row, A::ZERO, copy) }?;
    Some((rows, row))
}

/// The input pixels the outputs read (every `stride`-th of every `stride`-th row), each
/// channel's plane in `padded` values with zeros after the last, on aligned lines; `None`
/// if the buffer cannot be allocated.
fn stage<A: Accumulator>(
    g: &Geometry,
    x: &[A],
    padded: usize,
    scratch: &Scratch,
) -> Option<Aligned<A>> {
    let in_plane = g.h * g.w;
    if (g.stride.h, g.stride.w) == (1, 1) && in_plane == padded {
        return scratch.copied_aligned(x);
    }
    let mut buf = scratch.filled_aligned(g.cin_per_group() * padded, A::ZERO)?;
    for_each_chunk(&mut buf, padded, |c, dst| {
        let src = &x[c * in_plane..][..in_plane];
        for (oy, row) in dst.chunks_exact_mut(g.ow).take(g.oh).enumerate() {
            every_nth(row, &src[oy * g.stride.h * g.w..], g.stride.w);
        }
    });
    Some(buf)
}
