//! Convolutions whose taps never overlap from one output to the next: no padding and a
//! dilated kernel no wider than its stride (2x2 stride-2 downsampling, ConvNeXt's 4x4
//! stride-4 and ViT's 16x16 stride-16 "patchify" stems). Each image's patches are copied
//! once into planes, one per (input channel, kernel row, kernel column), which hold no more
//! values than the image; the convolution is then a pointwise one on those planes (the
//! weights already in that order), run by the pointwise GEMMs. Every output sums its bias,
//! then its terms in the pointwise GEMM's order, whatever the thread count. A first
//! layer's weight gradient (few input channels) runs on the same planes, and the input
//! gradient (the forward pass of a non-overlapping transposed convolution, U-Net's 2x2
//! stride-2 upsampling) is a pointwise convolution into them, then written out.
//! `unet_up_2x2s2` (2026-12-04, Zen 3, AVX2, five alternated rounds) ran 2.4x as fast on
//! one thread and 2.3x on two as with `im2col-gemm`'s columns and col2im; inside it,
//! `im2col-gemm`'s pointwise GEMM (the choice for those planes) ran 1.19x and 1.09x as
//! fast as `direct-tiled`'s pointwise tiles.
//!
//! `conv2d-bench` over `conv2d-bench/sweeps/patches.json` (19 such layers, 2026-12-03,
//! Intel Xeon) against `implicit-gemm`'s phase-split tiles, the copy included: 1.165x
//! geomean with two threads (0.97-1.54x), 1.075x with one, 1.148x in `f64`.

use std::mem::MaybeUninit;

use super::direct::split_pairs;
use super::{add_into, Aligned, Scratch};
use crate::algorithm::Algorithm;
use crate::element::Accumulator;
use crate::error::Result;
use crate::geometry::{checked_product, Geometry};
use crate::options::Pair;
use crate::threading::for_each_chunk;

/// Output channels per group from which staging the patches pays: each staged value then
/// serves at least 64 multiply-adds. Over `conv2d-bench/sweeps/patches.json` (2026-12-03,
/// Intel Xeon, two threads) a 2x2 stride-2 layer of 32 output channels on a 224x224 map
/// ran 0.87x as fast as `implicit-gemm`'s phase split, layers of 64 and more 0.97-1.54x.
const MIN_CHANNELS: usize = 64;

/// The pointwise convolution (1x1, stride 1, no padding) on `g`'s patch planes, for a shape
/// whose taps never overlap and that is not pointwise already; `None` otherwise.
pub(crate) fn geometry(g: &Geometry) -> Option<Geometry> {
    // Every tap reads the input, and no input pixel is read by two outputs.
    let apart = |outputs: usize, size: usize, s: usize, k: usize, d: usize| {
        let reach = (k.max(1) - 1).saturating_mul(d);
        reach < s
            && outputs
                .saturating_sub(1)
                .saturating_mul(s)
                .saturating_add(reach)
                < size
    };
    let fits = g.pad_top == 0
        && g.pad_left == 0
        && g.cout_per_group() >= MIN_CHANNELS
        && g.kh.saturating_mul(g.kw) > 1
        && apart(g.oh, g.h, g.stride.h, g.kh, g.dilation.h)
        && apart(g.ow, g.w, g.stride.w, g.kw, g.dilation.w);
    fits.then_some(Geometry {
        cin: g.cin.checked_mul(g.kh)?.checked_mul(g.kw)?,
        h: g.oh,
        w: g.ow,
        kh: 1,
        kw: 1,
        stride: Pair::new(1, 1),
        dilation: Pair::new(1, 1),
        ..*g
    })
}

/// `out = conv2d(input, weight) + bias` for a shape with patch planes `inner` (see
/// [`geometry`]): image by image, in parallel, each image's patches staged, then
/// `algorithm`'s pointwise pass over them (whose own tasks the other threads help with).
pub(crate) fn forward<A: Accumulator>(
    algorithm: Algorithm,
    g: &Geometry,
    inner: &Geometry,
    input: &[A],
    weight: &[A],
    bias: Option<&[A]>,
    out: &mut [A],
) -> Result<()> {
    let single = Geometry { n: 1, ..*inner };
    let scratch = Scratch::new();
    let image = g.cin * g.h * g.w;
    for_each_chunk(out, g.cout * g.oh * g.ow, |n, out| {
        let x = &input[n * image..][..image];
        if let Some(planes) = stage(g, x, &scratch) {
            scratch.ok(super::forward(
                algorithm, &single, &planes, weight, bias, out,
            ));
        }
    });
    scratch.finish()
}

/// The input gradient (a transposed convolution's forward pass) for a shape with patch
/// planes `inner` (see [`geometry`]): image by image, in parallel, the pointwise
/// convolution (by [`Algorithm::choose`]'s algorithm for it) of the output gradient with
/// the weight transposed to a row per (input channel, kernel row, kernel column) gives the
/// input gradient's patch planes, which are then written into it. Each input-gradient
/// pixel receives at most one tap (the taps never overlap), so that no sum is scattered;
/// pixels that receive none are zero. Holds one image's patch planes (no more values than
/// its input gradient) per image in flight.
pub(crate) fn backward_input<A: Accumulator>(
    g: &Geometry,
    inner: &Geometry,
    grad_out: &[A],
    weight: &[A],
    grad_in: &mut [A],
) -> Result<()> {
    // `inner` read backwards: from the output gradient's channels to the patch planes.
    let single = Geometry {
        n: 1,
        cin: inner.cout,
        cout: inner.cin,
        ..*inner
    };
    let algorithm = Algorithm::choose(&single);
    let scratch = Scratch::new();
    let Some(transposed) = transposed_weight(g, weight, &scratch) else {
        return scratch.finish();
    };
    let (image, image_out) = (g.cin * g.h * g.w, g.cout * g.oh * g.ow);
    for_each_chunk(grad_in, image, |n, gx| {
        let gy = &grad_out[n * image_out..][..image_out];
        let Some(mut planes) = scratch.filled(single.output_len(), A::ZERO) else {
            return;
        };
        if scratch
            .ok(super::forward(
                algorithm,
                &single,
                gy,
                &transposed,
                None,
                &mut planes,
            ))
            .is_some()
        {
            unstage(g, &planes, gx);
        }
    });
    scratch.finish()
}

/// The weight of `g` (`[cout][cin / groups][kh][kw]`) as the pointwise weight of its input
/// gradient's patch planes: per group, a row per (input channel, kernel row, kernel
/// column) of its `cout / groups` weights. `None` if the buffer cannot be allocated.
/// Tasks of [`TRANSPOSE_ROWS`] rows, each filled [`TRANSPOSE_CHANNELS`] output channels at
/// a time, so that the reads run along that many weight rows and every write fills a line:
/// writing each weight row across the rows, one value a line, was half of
/// `tr_c512_256_16_k2s2` (a 2 MiB weight) on one thread.
fn transposed_weight<A: Accumulator>(
    g: &Geometry,
    weight: &[A],
    scratch: &Scratch,
) -> Option<Vec<A>> {
    let (cin_g, cout_g, taps) = (g.cin_per_group(), g.cout_per_group(), g.kh * g.kw);
    let rows = cin_g * taps;
    let mut transposed = scratch.filled(weight.len(), A::ZERO)?;
    for (group_rows, group_weight) in transposed
        .chunks_exact_mut(rows * cout_g)
        .zip(weight.chunks_exact(cout_g * rows))
    {
        for_each_chunk(group_rows, TRANSPOSE_ROWS * cout_g, |task, dst| {
            let r0 = task * TRANSPOSE_ROWS;
            for co0 in (0..cout_g).step_by(TRANSPOSE_CHANNELS) {
                let channels = TRANSPOSE_CHANNELS.min(cout_g - co0);
                for (r, dst_row) in dst.chunks_exact_mut(cout_g).enumerate() {
                    let column = group_weight[co0 * rows + r0 + r..].iter().step_by(rows);
                    for (d, &v) in dst_row[co0..][..channels].iter_mut().zip(column) {
                        *d = v;
                    }
                }
            }
        });
    }
    Some(transposed)
}

/// Rows of the transposed weight per task of [`transposed_weight`].
const TRANSPOSE_ROWS: usize = 64;
/// Output channels per sweep of a task's rows in [`transposed_weight`]: a line of `f32`.
const TRANSPOSE_CHANNELS: usize = 16;

/// Writes one image's input gradient `gx` from its patch planes (see [`stage`]'s layout):
/// input pixel `(oy * stride.h + ky * dilation.h, ox * stride.w + kx * dilation.w)` of
/// channel `ci` from plane `(ci, ky, kx)` at `(oy, ox)`, zero where no tap reaches.
fn unstage<A: Accumulator>(g: &Geometry, planes: &[A], gx: &mut [A]) {
    let (plane, taps) = (g.oh * g.ow, g.kh * g.kw);
    // Every column of a row is written when the taps tile it (no dilation gap, no column
    // past the last output's reach).
    let tiled = g.kw == g.stride.w && g.dilation.w == 1 && g.ow * g.stride.w == g.w;
    for_each_chunk(gx, g.h * g.w, |ci, x_c| {
        let planes_c = &planes[ci * taps * plane..][..taps * plane];
        for (iy, row) in x_c.chunks_exact_mut(g.w).enumerate() {
            let (oy, r) = (iy / g.stride.h, iy % g.stride.h);
            let ky = r / g.dilation.h;
            let reached = oy < g.oh && r.is_multiple_of(g.dilation.h) && ky < g.kh;
            if !reached || !tiled {
                row.fill(A::ZERO);
            }
            if !reached {
                continue;
            }
            // Row `oy` of plane `(ci, ky, kx)`.
            let source = |kx: usize| &planes_c[(ky * g.kw + kx) * plane + oy * g.ow..][..g.ow];
            if (g.kw, g.stride.w, g.dilation.w) == (2, 2, 1) {
                for ((pair, &a), &b) in row.chunks_exact_mut(2).zip(source(0)).zip(source(1)) {
                    pair[0] = a;
                    pair[1] = b;
                }
                continue;
            }
            for kx in 0..g.kw {
                let dst = row[kx * g.dilation.w..].iter_mut().step_by(g.stride.w);
                for (d, &v) in dst.zip(source(kx)) {
                    *d = v;
                }
            }
        }
    });
}

/// Input channels per group up to which a weight gradient runs on the patch planes: with
/// more, `im2col-gemm`'s own blocks of channels share the work out well, and staging the
/// planes first costs more than it saves (`conv2d-bench`, 2026-12-03, Intel Xeon, two
/// threads: 2x2 stride-2 layers of 64-128 input channels 0.92-0.94x, 96 even); a first
/// layer's 3 input channels make 3 such blocks for 2 threads, where the patch planes make
/// 2 balanced ones of 24 and more (ConvNeXt's 4x4 stem 1.23x, ViT's 16x16 one 1.34x).
const WEIGHT_MAX_CHANNELS: usize = 8;

/// [`geometry`] for the weight gradient: shapes of at most [`WEIGHT_MAX_CHANNELS`] input
/// channels per group.
pub(crate) fn weight_geometry(g: &Geometry) -> Option<Geometry> {
    geometry(g).filter(|_| g.cin_per_group() <= WEIGHT_MAX_CHANNELS)
}

/// The weight gradient for a shape with patch planes `inner` (see [`weight_geometry`]):
/// image by image, its patches staged, then `im2col-gemm`'s pointwise weight gradient over
/// them (the `gemm` crate), each later image's added to the sums in order.
pub(crate) fn backward_weight<A: Accumulator>(
    g: &Geometry,
    inner: &Geometry,
    input: &[A],
    grad_out: &[A],
    grad_w: &mut [A],
) -> Result<()> {
    let single = Geometry { n: 1, ..*inner };
    let scratch = Scratch::new();
    let (image, image_out) = (g.cin * g.h * g.w, g.cout * g.oh * g.ow);
    let mut later = Vec::new();
    let images = input
        .chunks_exact(image)
        .zip(grad_out.chunks_exact(image_out));
    for (n, (x, gy)) in images.enumerate() {
        let Some(planes) = stage(g, x, &scratch) else {
            break;
        };
        if n == 0 {
            super::backward_weight(Algorithm::Im2colGemm, &single, &planes, gy, grad_w)?;
            continue;
        }
        if later.is_empty() {
            let Some(buffer) = scratch.filled(grad_w.len(), A::ZERO) else {
                break;
            };
            later = buffer;
        }
        super::backward_weight(Algorithm::Im2colGemm, &single, &planes, gy, &mut later)?;
        add_into(grad_w, &later);
    }
    scratch.finish()
}

/// The patch planes of image `x`: plane `(ci, ky, kx)` holds, for every output `(oy, ox)`,
/// the input pixel its tap `(ky, kx)` of channel `ci` reads. `None` if the buffer cannot be
/// allocated.
#[allow(unsafe_code)] // calls `written_aligned`
fn stage<A: Accumulator>(g: &Geometry, x: &[A], scratch: &Scratch) -> Option<Aligned<A>> {
    let plane = g.oh * g.ow;
    let len = scratch.ok(checked_product(
        &[g.cin, g.kh, g.kw, plane],
        "the patch planes",
    ))?;
    // Chunk `c`: the `kw` planes of channel `c / kh`, kernel row `c % kh`.
    let write = |c: usize, planes: &mut [MaybeUninit<A>]| {
        let (ci, ky) = (c / g.kh, c % g.kh);
        let x_c = &x[ci * g.h * g.w..][..g.h * g.w];
        for oy in 0..g.oh {
            let src = &x_c[(oy * g.stride.h + ky * g.dilation.h) * g.w..][..g.w];
            let mut rows = planes
                .chunks_exact_mut(plane)
                .map(|p| &mut p[oy * g.ow..][..g.ow]);
            if (g.kw, g.stride.w, g.dilation.w) == (2, 2, 1) {
                let even = rows.next().expect("two planes");
                split_pairs(src, even, rows.next().expect("two planes"));
                continue;
            }
            for (kx, row) in rows.enumerate() {
                let taps = src[kx * g.dilation.w..].iter().step_by(g.stride.w);
                for (dst, &v) in row.iter_mut().zip(taps) {
                    dst.write(v);
                }
            }
        }
    };
    // SAFETY: each chunk is `kw` whole planes (`len` is `cin * kh` of them), and `write`
    // writes all `ow` values of each plane's `oh` rows: a row reads `src` at `kx *
    // dilation.w + ox * stride.w < w` for `ox < ow` (see `geometry`), so the zip runs
    // `ow` times; `split_pairs` writes every value of both (equally long) halves.
    unsafe { scratch.written_aligned(len, g.kw * plane, A::ZERO, write) }
}
