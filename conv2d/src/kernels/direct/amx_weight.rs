//! The `bf16` weight gradient of stride-1 layers on AMX tiles: `bf16` products summed
//! exactly into `f32` by the CPU's matrix unit (see [`amx`](super::amx)), instead of
//! widening both operands to `f32` first.
//!
//! On the grid of the padded input's rows (as the forward pass's shifted windows), the
//! gradient of tap `t`, input channel `ci` and output channel `co` sums
//! `slab[ci][p + shift(t)] * grad_out[co][p]` over the grid's pixels `p`, the output
//! gradient zero in the grid's padding columns. A task is one tap and 32 input channels:
//! the left operand 32 windows of the padded input planes read in place, the right one the
//! output gradient with each pixel pair's two values side by side for every output
//! channel, a step 32 pixels. Images and groups go one after another, their sums added in
//! `f32` in that order, then rounded once to `bf16`.
//!
//! The matrix unit treats subnormal operands as zero and flushes subnormal sums, as in
//! PyTorch's own AMX kernels. A product with a padding column of the output gradient is
//! `0 * input`: the input must be finite (checked by [`applies`]).

use half::{bf16, slice::HalfFloatSliceExt};

use super::amx::{all_finite, ready, run, PaddedGrid, CHANNELS};
use super::implicit_gemm::write_rows;
use super::{fits, Scratch};
use crate::element::narrow_bf16;
use crate::error::Result;
use crate::geometry::{checked_product, Geometry};
use crate::kernels::add_into;
use crate::kernels::extend_filled;
use crate::spare::{recycle, take};
use crate::threading::{for_each_chunk, for_each_item};

/// Whether the tiles compute this shape's `bf16` weight gradient from `input`: stride 1,
/// 16 or more input and output channels per group, a padded plane that [`fits`], a finite
/// input, where the tiles are [`ready`].
pub(crate) fn applies(g: &Geometry, input: &[bf16]) -> bool {
    g.stride.h == 1
        && g.stride.w == 1
        && g.cin_per_group() >= 16
        && g.cout_per_group() >= 16
        && fits(g)
        && ready(g)
        && all_finite(input)
}

/// `grad_w = sum over images of input x grad_out` for a shape that [`applies`],
/// overwriting `grad_w`.
pub(crate) fn backward_weight(
    g: &Geometry,
    input: &[bf16],
    grad_out: &[bf16],
    grad_w: &mut [bf16],
    scratch: &Scratch,
) {
    let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
    let (cin_pad, co_pad) = (
        cin_g.next_multiple_of(CHANNELS),
        cout_g.next_multiple_of(CHANNELS),
    );
    let taps = g.kh * g.kw;
    let PaddedGrid {
        row_len,
        plane_px,
        shifts,
    } = PaddedGrid::new(g);
    // The grid's pixels in whole steps (each plane holds the last step's windows).
    let grid = (g.oh * row_len).next_multiple_of(CHANNELS);
    // The sums of every group, tap, input channel (a row) and output channel; the
    // buffers are this thread's kept ones (fresh pages cost a fifth of the call).
    let per_group = taps * cin_pad * co_pad;
    let lens = || -> Result<[usize; 3]> {
        Ok([
            checked_product(&[g.groups, per_group], "AMX weight sums")?,
            checked_product(&[cin_pad, plane_px], "an AMX slab")?,
            checked_product(&[co_pad, grid], "an AMX right operand")?,
        ])
    };
    let Some([sums_len, slab_len, right_len]) = scratch.ok(lens()) else {
        return;
    };
    // `bf16` buffers as halves of `f32` ones, a line more for the alignment.
    let kept = |len: usize| scratch.ok(take::<f32>(len));
    let (Some(mut sums), Some(mut staging), Some(mut pairs)) = (
        kept(sums_len),
        kept(slab_len.max(right_len).div_ceil(2) + 16),
        kept(right_len.div_ceil(2) + 16),
    ) else {
        return;
    };
    if scratch
        .ok(extend_filled(&mut sums, sums_len, 0.0))
        .is_none()
    {
        return;
    }
    let zeros = [0f32; CHANNELS * 16];
    for n in 0..g.n {
        for (group, group_sums) in sums.chunks_exact_mut(per_group).enumerate() {
            let x = &input[(n * g.cin + group * cin_g) * g.h * g.w..][..cin_g * g.h * g.w];
            let gy =
                &grad_out[(n * g.cout + group * cout_g) * g.oh * g.ow..][..cout_g * g.oh * g.ow];
            let (Some(on_grid), Some(right)) = (
                scratch.ok(zeroed_bits(&mut staging, right_len)),
                scratch.ok(zeroed_bits(&mut pairs, right_len)),
            ) else {
                return;
            };
            pixel_pairs(g, gy.reinterpret_cast(), on_grid, right, row_len, co_pad);
            let Some(slab) = scratch.ok(zeroed_bits(&mut staging, slab_len)) else {
                return;
            };
            padded_planes(g, x.reinterpret_cast(), slab, plane_px, row_len);
            let (slab, right) = (&*slab, &*right);
            let tasks = group_sums
                .chunks_exact_mut(CHANNELS * co_pad)
                .enumerate()
                .collect::<Vec<_>>();
            for_each_item(tasks, |(task, task_sums)| {
                let (tap, block) = (task / (cin_pad / CHANNELS), task % (cin_pad / CHANNELS));
                let steps: Vec<(usize, usize)> = (0..grid / CHANNELS)
                    .map(|k| {
                        let at = block * CHANNELS * plane_px + shifts[tap] + k * CHANNELS;
                        (at, k * 16 * 2 * co_pad)
                    })
                    .collect();
                // The first image's sums go straight in, the others' are added.
                let image = match n {
                    0 => Some(Vec::new()),
                    _ => scratch.filled(CHANNELS * co_pad, 0f32),
                };
                let Some(mut image) = image else {
                    return;
                };
                run(&mut super::AmxJob {
                    a: slab,
                    a_stride: plane_px,
                    b: right,
                    b_stride: 2 * co_pad,
                    steps: &steps,
                    bias: &zeros,
                    sums: if n == 0 { &mut *task_sums } else { &mut image },
                    len: co_pad,
                    pair_gap: 1,
                    lanes: None,
                });
                add_into(task_sums, &image);
            });
        }
    }
    // `grad_w[co][ci][t]` from `sums[t][ci][co]` (transposed in blocks), rounded once.
    let kernel_len = cin_g * taps;
    let rows: Vec<usize> = (0..kernel_len)
        .map(|k| (k % taps) * cin_pad + k / taps)
        .collect();
    // Per group, tasks of 16 output channels (rows of `grad_w`).
    let sums_ref = &sums;
    for_each_chunk(grad_w, cout_g * kernel_len, |group, group_w| {
        for_each_chunk(group_w, 16 * kernel_len, |chunk, rows_w| {
            let Some(mut wide) = scratch.filled(rows_w.len(), 0f32) else {
                return;
            };
            let mut outs: Vec<&mut [f32]> = wide.chunks_exact_mut(kernel_len).collect();
            let first = group * per_group + 16 * chunk;
            write_rows(&sums_ref[first..], co_pad, &mut outs, &rows);
            narrow_bf16(&wide, rows_w);
        });
    });
    for buffer in [sums, staging, pairs] {
        recycle(buffer);
    }
}

/// The group's input planes `x` (`bf16` bits) zero-padded onto rows of `row_len`, plane
/// after plane `plane_px` apart in `slab` (zeroed, `cin_pad` planes).
fn padded_planes(g: &Geometry, x: &[u16], slab: &mut [u16], plane_px: usize, row_len: usize) {
    for_each_chunk(slab, plane_px, |ci, plane| {
        let Some(x_c) = x.get(ci * g.h * g.w..(ci + 1) * g.h * g.w) else {
            return;
        };
        for (iy, row) in x_c.chunks_exact(g.w).enumerate() {
            let at = (iy + g.pad_top) * row_len + g.pad_left;
            plane[at..at + g.w].copy_from_slice(row);
        }
    });
}

/// The right operand `pairs`: the output gradient `gy` (`bf16` bits, `cout_g` planes) on
/// the grid of `row_len` pixels a row (zero in the padding columns and past the last row),
/// as rows of pixel pairs: row `p / 2` holds, for every output channel `co < co_pad` (zero
/// past the group's), pixels `p` and `p + 1` side by side. `on_grid` (zeroed, `co_pad`
/// rows of the grid) stages the output gradient on the grid.
fn pixel_pairs(
    g: &Geometry,
    gy: &[u16],
    on_grid: &mut [u16],
    pairs: &mut [u16],
    row_len: usize,
    co_pad: usize,
) {
    let grid = on_grid.len() / co_pad;
    let cout_g = gy.len() / (g.oh * g.ow).max(1);
    for_each_chunk(&mut on_grid[..cout_g * grid], grid, |co, dst| {
        let plane = &gy[co * g.oh * g.ow..][..g.oh * g.ow];
        for (oy, row) in plane.chunks_exact(g.ow).enumerate() {
            dst[oy * row_len..][..g.ow].copy_from_slice(row);
        }
    });
    // Transposed as 32-bit words (a pixel pair, its bits moved unchanged): `pairs[w][co] =
    // on_grid[co][w]`.
    let words = grid / 2;
    let source: &[f32] = bytemuck::cast_slice(on_grid);
    for_each_chunk(
        bytemuck::cast_slice_mut(pairs),
        16 * co_pad,
        |block, rows| {
            let w0 = block * 16;
            let mut rows = rows.chunks_exact_mut(co_pad);
            let outs: [&mut [f32]; 16] =
                std::array::from_fn(|_| rows.next().expect("16 rows of pairs"));
            let starts: Vec<usize> = (0..co_pad).map(|c| c * words + w0).collect();
            super::implicit_gemm::transpose16(source, &starts, outs);
        },
    );
}

/// `len` zeroed `bf16` bit patterns from a 64-byte line (the tiles load whole lines), in
/// `buffer` (zeroed by the call's threads).
fn zeroed_bits(buffer: &mut Vec<f32>, len: usize) -> Result<&mut [u16]> {
    buffer.clear();
    extend_filled(buffer, len.div_ceil(2) + 16, 0.0)?;
    let bits: &mut [u16] = bytemuck::cast_slice_mut(buffer);
    let lead = bits.as_ptr().align_offset(64).min(32);
    Ok(&mut bits[lead..][..len])
}
