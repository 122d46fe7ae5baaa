//! The register-tile kernels of `direct-tiled` and of the masked AVX-512 tiles: output
//! channels times pixel vectors of sums in registers, forward and weight gradient.

use std::arch::x86_64::*;

use crate::kernels::direct::{
    ChannelWeightTile, MaskedTile, Tile, WeightTile, AVX2_CO, CCO, CO, CTAPS, WCO, WTAPS,
};

use super::rows_avx2::lanes_between;
use super::{MaskedRegister, Register, TileElement};

/// The direct tile kernel for `f32` and `f64` with AVX-512: the job's channels (2, 4, 6 or
/// [`CO`]) by 4 vectors of sums in registers (by 3 for [`CO`]: 24 of the 32 registers),
/// the pixel vectors loaded and each channel's weight broadcast per tap; a last run of
/// fewer vectors takes as many.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `Tile::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_tile_avx512<E: TileElement>(job: &mut Tile<'_, E>) {
    match job.channels {
        // SAFETY: this function's contract, which `tile_sweep` shares.
        2 => unsafe { tile_sweep::<E::Zmm, 4, 2>(job) },
        // SAFETY: see above.
        4 => unsafe { tile_sweep::<E::Zmm, 4, 4>(job) },
        // SAFETY: see above.
        6 => unsafe { tile_sweep::<E::Zmm, 4, 6>(job) },
        // SAFETY: see above.
        _ => unsafe { tile_sweep::<E::Zmm, 3, CO>(job) },
    }
}

/// [`direct_tile_avx512`] for `CH` channels, in runs of `VECTORS` registers.
///
/// # Safety
/// As [`direct_tile_avx512`].
#[inline(always)]
unsafe fn tile_sweep<R: Register, const VECTORS: usize, const CH: usize>(
    job: &mut Tile<'_, R::Elem>,
) {
    let (lanes, len) = (R::LANES, job.len);
    let full = len / (VECTORS * lanes) * (VECTORS * lanes);
    let pointers = job.pointers(CH);
    let job = &*job;
    for q in (0..full).step_by(VECTORS * lanes) {
        // SAFETY: `R`'s instructions are present (this function's contract); `q + VECTORS
        // * lanes <= full <= len`; `pointers` are the job's, checked.
        unsafe { tile::<R, VECTORS, CH, false>(job, pointers, q) };
    }
    // SAFETY (each arm): as above, with `full + lanes * vectors == len` (`len` is a
    // multiple of 16, hence of `lanes`).
    match (len - full) / lanes {
        0 => {}
        // SAFETY: see above.
        1 => unsafe { tile::<R, 1, CH, false>(job, pointers, full) },
        // SAFETY: see above.
        2 => unsafe { tile::<R, 2, CH, false>(job, pointers, full) },
        // SAFETY: see above.
        _ => unsafe { tile::<R, 3, CH, false>(job, pointers, full) },
    }
}

/// The masked tile kernel for `f32` and `f64` with AVX-512: the job's channels (2, 4, 6 or
/// [`CO`]) by 4 vectors of sums in registers (by 3 for [`CO`]), as
/// [`direct_tile_avx512`], the taps swept kernel column by kernel column with that
/// column's lane masks held; a last run of fewer vectors takes as many, and a last partial
/// vector stores only its own lanes. Returns whether every sum stored is finite (checked
/// only when `check`; `true` otherwise).
///
/// # Safety
/// The CPU must support AVX-512 F and DQ (the job's bounds are checked by
/// `MaskedTile::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn masked_tile_avx512<E: TileElement>(
    job: &mut MaskedTile<'_, E>,
    check: bool,
) -> bool {
    match job.tile.channels {
        // SAFETY: this function's contract, which `masked_sweep` shares.
        2 => unsafe { masked_sweep::<E::Zmm, 4, 2>(job, check) },
        // SAFETY: see above.
        4 => unsafe { masked_sweep::<E::Zmm, 4, 4>(job, check) },
        // SAFETY: see above.
        6 => unsafe { masked_sweep::<E::Zmm, 4, 6>(job, check) },
        // SAFETY: see above.
        _ => unsafe { masked_sweep::<E::Zmm, 3, CO>(job, check) },
    }
}

/// [`masked_tile_avx512`] for `CH` channels, in runs of `VECTORS` registers.
///
/// # Safety
/// As [`masked_tile_avx512`].
#[inline(always)]
unsafe fn masked_sweep<R: MaskedRegister, const VECTORS: usize, const CH: usize>(
    job: &mut MaskedTile<'_, R::Elem>,
    check: bool,
) -> bool {
    let lanes = R::LANES;
    let pointers = job.pointers(lanes, CH);
    let vectors = job.tile.len.div_ceil(lanes) - job.from / lanes;
    let full = job.from + vectors / VECTORS * VECTORS * lanes;
    let job = &*job;
    let mut finite = true;
    for q in (job.from..full).step_by(VECTORS * lanes) {
        // SAFETY: AVX-512 F and DQ are present (this function's contract); the run's
        // vectors start below `len`; `pointers` are the job's, checked for `CH` channels.
        finite &= unsafe { masked_tile::<R, VECTORS, CH>(job, pointers, q, check) };
    }
    // SAFETY (each arm): as above, the run's vectors covering `full..len`.
    finite
        & match vectors % VECTORS {
            0 => true,
            // SAFETY: see above.
            1 => unsafe { masked_tile::<R, 1, CH>(job, pointers, full, check) },
            // SAFETY: see above.
            2 => unsafe { masked_tile::<R, 2, CH>(job, pointers, full, check) },
            // SAFETY: see above.
            _ => unsafe { masked_tile::<R, 3, CH>(job, pointers, full, check) },
        }
}

/// One run of `VECTORS` registers of outputs from `q` of the first `CH` channels, for
/// [`masked_tile_avx512`]; lanes at or past the tile's `len` are neither summed nor stored.
/// Whether every stored sum is finite (when `check`).
///
/// # Safety
/// The CPU must support AVX-512 F and DQ; `q + R::LANES * (VECTORS - 1) < len` (the
/// tile's), and `pointers` are the job's, checked by `MaskedTile::pointers` for `CH`
/// channels.
#[inline(always)]
unsafe fn masked_tile<R: MaskedRegister, const VECTORS: usize, const CH: usize>(
    job: &MaskedTile<'_, R::Elem>,
    (slab, rows, outs): (*const R::Elem, [*const R::Elem; CO], [*mut R::Elem; CO]),
    q: usize,
    check: bool,
) -> bool {
    let lanes = R::LANES;
    let (columns, tile) = (job.columns, &job.tile);
    // The lanes of each vector below `len`.
    let inside: [u16; VECTORS] = std::array::from_fn(|v| {
        let left = tile.len - q - lanes * v;
        if left >= lanes {
            u16::MAX
        } else {
            (1 << left) - 1
        }
    });
    // SAFETY: `R`'s instructions are present (this function's contract).
    let zero = unsafe { R::splat(tile.init[0]) };
    let mut acc = [[zero; VECTORS]; CH];
    for (c, acc_c) in acc.iter_mut().enumerate() {
        for (v, a) in acc_c.iter_mut().enumerate() {
            // SAFETY: as above; the masked lanes are inside channel `c`'s `len` sums, as for
            // the stores below.
            *a = unsafe {
                match tile.resume {
                    true => R::load_where(outs[c].add(q + lanes * v), inside[v]),
                    false => R::splat(tile.init[c]),
                }
            };
        }
    }
    if tile.resume {
        // The next run's sums, from L2 (the previous block swept every run), into L1 while
        // this run's taps go: its first multiply-adds would wait on them otherwise
        // (`deeplab_dil2_3x3` 1.02-1.04x, one and two threads). Its vectors span at most
        // one line more than their count; a prefetch never faults, even past a row's end.
        for out in &outs[..CH] {
            for line in 0..=VECTORS {
                let next = out.wrapping_add(q + lanes * (VECTORS + line));
                _mm_prefetch::<_MM_HINT_T0>(next.cast());
            }
        }
    }
    let first = q / lanes;
    for kx in 0..columns {
        let masks: [u16; VECTORS] =
            std::array::from_fn(|v| job.masks[(first + v) * columns + kx] & inside[v]);
        let x0 = slab.wrapping_add(q + job.column_offsets[kx]);
        let w0 = rows.map(|r| r.wrapping_add(kx));
        for (&row, &taps) in tile.starts.iter().zip(job.weight_taps) {
            // SAFETY: `row + column_offsets[kx] + q + lanes * VECTORS` is within the reach of
            // `len` rounded up to whole vectors, inside the slab; every channel's row holds
            // `taps + columns` weights (`pointers` checked both).
            unsafe {
                let x = x0.add(row);
                if kx == 0 {
                    // The next run's window of this tap row into L1 while this run's
                    // multiply-adds go (the first kernel column's pass is the one that
                    // brings each window in): the suite's masked 3x3 layers 1.006-1.031x
                    // as fast on one and two threads, the stem 1.00x and 1.03x (Intel
                    // Xeon, 25 alternated rounds, 2026-12-07). A prefetch never faults.
                    for v in 0..VECTORS {
                        _mm_prefetch::<_MM_HINT_T0>(x.wrapping_add(lanes * (VECTORS + v)).cast());
                    }
                }
                let xs: [R; VECTORS] = std::array::from_fn(|v| R::load(x.add(lanes * v)));
                for (acc_c, w) in acc.iter_mut().zip(w0) {
                    let wc = R::splat(*w.add(taps));
                    for ((a, &xv), &m) in acc_c.iter_mut().zip(&xs).zip(&masks) {
                        *a = R::fmadd_where(wc, xv, *a, m);
                    }
                }
            }
        }
    }
    let mut finite = true;
    for (c, acc_c) in acc.iter().enumerate() {
        for (v, &a) in acc_c.iter().enumerate() {
            // SAFETY: the masked lanes are inside channel `c`'s `len` sums (`pointers`
            // checked it).
            unsafe {
                R::store_where(outs[c].add(q + lanes * v), a, inside[v]);
                if check {
                    finite &= R::finite_where(a, inside[v]);
                }
            }
        }
    }
    finite
}

/// `partials[p][c * 16 + l] += sum over t with t % lanes == l of weights[rows[c] + t] *
/// columns[p][t]` for `P` columns `p` (of one length), the [`CO`] channels `c` and the lanes
/// `l` of a register, `f32` or `f64`, with AVX-512: each column's partial sums of each
/// channel in a register, each weight vector loaded once for the `P` columns and each column
/// vector once for all channels (the last masked to the columns' length). The weights come
/// from L2 here (the tiles' windows have pushed them out of L1): two columns at once halve
/// their traffic per multiply-add (`resnet_3x3_c256`'s 4-pixel tails, one thread, AMD Zen 4,
/// 2026-12-07: 2.14 -> 2.11 ms, the tails 4.5% -> 2.5% of the samples).
///
/// # Safety
/// The CPU must support AVX-512 F and DQ (the bounds are checked: panics if the columns'
/// lengths differ, a weight row `rows[c]..rows[c] + len` is not inside `weights` or a
/// partial holds fewer than `16 * CO` values).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn dot_rows_avx512<E: TileElement, const P: usize>(
    weights: &[E],
    rows: &[usize; CO],
    columns: [&[E]; P],
    partials: [&mut [E]; P],
) {
    let (lanes, len) = (E::Zmm::LANES, columns.first().map_or(0, |c| c.len()));
    assert!(columns.iter().all(|c| c.len() == len));
    assert!(rows.iter().all(|&r| r + len <= weights.len()));
    assert!(partials.iter().all(|p| p.len() >= 16 * CO));
    let w = rows.map(|r| weights[r..].as_ptr());
    let mut acc: [[E::Zmm; CO]; P] = std::array::from_fn(|p| {
        std::array::from_fn(|c| {
            // SAFETY: channel `c`'s partial sums are `partials[p][16 * c..][..lanes]`,
            // inside (checked).
            unsafe { E::Zmm::load(partials[p].as_ptr().add(16 * c)) }
        })
    });
    for t in (0..len).step_by(lanes) {
        let mask = match len - t >= lanes {
            true => u16::MAX,
            false => (1 << (len - t)) - 1,
        };
        // SAFETY: the lanes loaded are below `len` (the mask): inside every column and
        // weight row (checked above).
        unsafe {
            let x: [E::Zmm; P] =
                std::array::from_fn(|p| E::Zmm::load_where(columns[p].as_ptr().add(t), mask));
            for (c, w) in w.iter().enumerate() {
                let w = E::Zmm::load_where(w.add(t), mask);
                for (acc, &x) in acc.iter_mut().zip(&x) {
                    acc[c] = E::Zmm::fmadd_where(w, x, acc[c], mask);
                }
            }
        }
    }
    for (acc, partial) in acc.into_iter().zip(partials) {
        for (c, a) in acc.into_iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe { E::Zmm::store(partial.as_mut_ptr().add(16 * c), a) };
        }
    }
}

/// The direct tile kernel for `f32` and `f64` with AVX2 and FMA: [`AVX2_CO`] x 2 vectors of
/// sums in 12 of the 16 registers, two pixel vectors loaded and each channel's weight
/// broadcast per tap (15 registers: a wider tile spills a sum to the stack, whose store and
/// reload then chain every tap).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `Tile::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn direct_tile_avx2<E: TileElement>(job: &mut Tile<'_, E>) {
    let step = 2 * E::Ymm::LANES;
    let pointers = job.pointers(AVX2_CO);
    let job = &*job;
    for q in (0..job.len).step_by(step) {
        // SAFETY: AVX2 and FMA are present (this function's contract); `q + step <= len`
        // (`pointers` checked that `len` is a multiple of 16, hence of `step`: 16 `f32` or
        // 8 `f64`); `pointers` are the job's, checked.
        unsafe {
            match job.prefetch {
                true => tile::<E::Ymm, 2, AVX2_CO, true>(job, pointers, q),
                false => tile::<E::Ymm, 2, AVX2_CO, false>(job, pointers, q),
            }
        };
    }
}

/// The first `CH` channels (at most [`CO`]) of one run of `VECTORS` registers of outputs
/// from `q`, for [`direct_tile_avx512`] and [`direct_tile_avx2`]: the sums in registers,
/// each tap's pixel vectors loaded once and each channel's weight broadcast; where
/// `PREFETCH` (`Tile::prefetch`), each tap's pixels two runs on prefetched.
///
/// # Safety
/// The CPU must support `R`'s instructions; `q + R::LANES * VECTORS <= job.len`, and
/// `pointers` are the job's, checked by `Tile::pointers` for `CH` channels.
#[inline(always)]
unsafe fn tile<R: Register, const VECTORS: usize, const CH: usize, const PREFETCH: bool>(
    job: &Tile<'_, R::Elem>,
    (slab, rows, outs): (*const R::Elem, [*const R::Elem; CO], [*mut R::Elem; CO]),
    q: usize,
) {
    let lanes = R::LANES;
    // SAFETY: `R`'s instructions are present (this function's contract).
    let first = unsafe { R::splat(job.init[0]) };
    let mut acc = [[first; VECTORS]; CH];
    for (c, acc_c) in acc.iter_mut().enumerate() {
        for (v, a) in acc_c.iter_mut().enumerate() {
            // SAFETY: as above; the load is inside channel `c`'s sums, as for the stores
            // below.
            *a = unsafe {
                match job.resume {
                    true => R::load(outs[c].add(q + lanes * v)),
                    false => R::splat(job.init[c]),
                }
            };
        }
    }
    for (t, &start) in job.starts.iter().enumerate() {
        // SAFETY: `start + q + lanes * VECTORS <= start + len <= slab.len()`, and every
        // row holds a weight for tap `t` (`pointers` checked both).
        unsafe {
            let x = slab.add(start + q);
            if PREFETCH {
                // Two runs on; a prefetch never faults, even past the slab's end.
                _mm_prefetch::<_MM_HINT_T0>(x.wrapping_add(2 * lanes * VECTORS).cast());
            }
            let xs: [R; VECTORS] = std::array::from_fn(|v| R::load(x.add(lanes * v)));
            for (c, acc_c) in acc.iter_mut().enumerate() {
                let wc = R::splat(*rows[c].add(t));
                for (a, &xv) in acc_c.iter_mut().zip(&xs) {
                    *a = R::fmadd(wc, xv, *a);
                }
            }
        }
    }
    for (c, acc_c) in acc.iter().enumerate() {
        for (v, &a) in acc_c.iter().enumerate() {
            // SAFETY: `q + lanes * (v + 1) <= len`, and channel `c`'s sums hold `len` values
            // (`pointers` checked it).
            unsafe { R::store(outs[c].add(q + lanes * v), a) };
        }
    }
}

/// The tiled weight-gradient kernel for `f32` with AVX-512: per tile of [`WTAPS`] taps,
/// [`WCO`] x [`WTAPS`] vectors of partial sums, per 16 outputs of a row four
/// output-gradient vectors and six input windows loaded (a row's last vector masked to its
/// columns).
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by `WeightTile::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn direct_weight_tile_f32_avx512(job: &mut WeightTile<'_, f32>) {
    let (slab, grad_out) = job.pointers();
    let shape = (job.rows, job.width, job.row_step);
    for t0 in (0..job.starts.len()).step_by(WTAPS) {
        let starts = job.tile_starts(t0);
        // SAFETY: AVX-512 F is present (this function's contract); every channel's rows
        // and every window's rows are inside their buffers, which `pointers` checked.
        let sums = unsafe { weight_tile_avx512(slab, grad_out, &starts, shape) };
        job.add(t0, &sums);
    }
}

/// The [`WCO`] x [`WTAPS`] dot products of one tap tile over `rows` rows of `width`
/// outputs (`row_step` apart in the slab).
///
/// # Safety
/// The CPU must support AVX-512 F; `grad_out[c][..rows * width]` and `slab[start + r *
/// row_step..][..width]` for every start and row `r < rows` must be readable.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn weight_tile_avx512(
    slab: *const f32,
    grad_out: [*const f32; WCO],
    starts: &[usize; WTAPS],
    (rows, width, row_step): (usize, usize, usize),
) -> [[f32; WTAPS]; WCO] {
    let mut acc = [[_mm512_setzero_ps(); WTAPS]; WCO];
    let full = width / 16 * 16;
    let tail = (1u16 << (width - full)).wrapping_sub(1);
    for r in 0..rows {
        let ys_row = grad_out.map(|p| p.wrapping_add(r * width));
        let xs_row = slab.wrapping_add(r * row_step);
        for q in (0..full).step_by(16) {
            // SAFETY: `q + 16 <= width`: inside row `r` of each channel and of each window
            // (this function's contract).
            let load = |p| unsafe { _mm512_loadu_ps(p) };
            // SAFETY: AVX-512 F is present (this function's contract).
            unsafe { weight_step(&mut acc, ys_row, xs_row, starts, q, load) };
        }
        if tail != 0 {
            // SAFETY: as above, the lanes read (`tail`) those of columns `full..width`
            // (masked loads touch no other lane).
            let load = |p| unsafe { _mm512_maskz_loadu_ps(tail, p) };
            // SAFETY: as above.
            unsafe { weight_step(&mut acc, ys_row, xs_row, starts, full, load) };
        }
    }
    let mut sums = [[0.0f32; WTAPS]; WCO];
    for c in 0..WCO {
        for t in 0..WTAPS {
            sums[c][t] = _mm512_reduce_add_ps(acc[c][t]);
        }
    }
    sums
}

/// One step of the weight-gradient tiles: `acc[c][t] += y_c * x_t` for each channel's
/// vector `y_c` from `ys_row[c] + q` and each tap's `x_t` from `xs_row + starts[t] + q`,
/// every vector loaded by `load`.
///
/// # Safety
/// The CPU must support the instructions of `R` (`load` reads what its caller vouches for).
#[inline(always)]
unsafe fn weight_step<R: Register, const CH: usize>(
    acc: &mut [[R; WTAPS]; CH],
    ys_row: [*const f32; CH],
    xs_row: *const f32,
    starts: &[usize; WTAPS],
    q: usize,
    load: impl Fn(*const f32) -> R,
) {
    let ys = ys_row.map(|p| load(p.wrapping_add(q)));
    for t in 0..WTAPS {
        let x = load(xs_row.wrapping_add(starts[t] + q));
        for c in 0..CH {
            // SAFETY: `R`'s instructions are present (this function's contract).
            acc[c][t] = unsafe { R::fmadd(ys[c], x, acc[c][t]) };
        }
    }
}

/// The tiled weight-gradient kernel for `f32` with AVX2 and FMA: as the AVX-512 one, in two
/// sweeps of half the channels (12 vectors of sums of the 16 registers), 8 outputs a step.
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by `WeightTile::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn direct_weight_tile_f32_avx2(job: &mut WeightTile<'_, f32>) {
    const HALF: usize = WCO / 2;
    let (rows, width, row_step) = (job.rows, job.width, job.row_step);
    let (slab, grad_out) = job.pointers();
    let full = width / 8 * 8;
    let tail = lanes_between(0, (width - full) as isize);
    for t0 in (0..job.starts.len()).step_by(WTAPS) {
        let starts = job.tile_starts(t0);
        let mut sums = [[0.0f32; WTAPS]; WCO];
        for c0 in [0, HALF] {
            let mut acc = [[_mm256_setzero_ps(); WTAPS]; HALF];
            for r in 0..rows {
                let ys_row: [*const f32; HALF] =
                    std::array::from_fn(|c| grad_out[c0 + c].wrapping_add(r * width));
                let xs_row = slab.wrapping_add(r * row_step);
                for q in (0..full).step_by(8) {
                    // SAFETY: `q + 8 <= width`: inside row `r` of each channel and of each
                    // window, which `pointers` checked.
                    let load = |p| unsafe { _mm256_loadu_ps(p) };
                    // SAFETY: AVX2 and FMA are present (this function's contract).
                    unsafe { weight_step(&mut acc, ys_row, xs_row, &starts, q, load) };
                }
                if full < width {
                    // SAFETY: as above, the lanes read (`tail`) those of columns
                    // `full..width` (masked loads touch no other lane).
                    let load = |p| unsafe { _mm256_maskload_ps(p, tail) };
                    // SAFETY: as above.
                    unsafe { weight_step(&mut acc, ys_row, xs_row, &starts, full, load) };
                }
            }
            for c in 0..HALF {
                for t in 0..WTAPS {
                    let mut lanes = [0.0f32; 8];
                    // SAFETY: `lanes` holds 8 floats.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[c][t]) };
                    sums[c0 + c][t] = lanes.iter().sum();
                }
            }
        }
        job.add(t0, &sums);
    }
}

/// The channel-vectorised weight-gradient kernel for `f32` with AVX-512: [`CTAPS`] taps x
/// the job's vectors (up to 4) of 16 output channels of sums (24 registers for 4); per
/// output pixel as many output-gradient vectors loaded and each tap's input value
/// broadcast.
///
/// # Safety
/// The CPU must support AVX-512 F (the job's bounds are checked by
/// `ChannelWeightTile::pointers`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(crate) unsafe fn channel_weight_tile_f32_avx512(job: &mut ChannelWeightTile<'_>) {
    match job.vectors {
        // SAFETY: this function's contract, which `channel_weight_tile` shares (each arm's
        // `V` is at most 4; `pointers` checks that the job's vectors are 1 to 4).
        1 => unsafe { channel_weight_tile::<1>(job) },
        // SAFETY: see above.
        2 => unsafe { channel_weight_tile::<2>(job) },
        // SAFETY: see above.
        3 => unsafe { channel_weight_tile::<3>(job) },
        // SAFETY: see above.
        _ => unsafe { channel_weight_tile::<{ CCO / 16 }>(job) },
    }
}

/// [`channel_weight_tile_f32_avx512`] for `V` vectors of channels.
///
/// # Safety
/// As [`channel_weight_tile_f32_avx512`], with `V <= CCO / 16`.
#[inline(always)]
unsafe fn channel_weight_tile<const V: usize>(job: &mut ChannelWeightTile<'_>) {
    let (rows, width, row_step, pitch) = (job.rows, job.width, job.row_step, job.pitch);
    let (windows, grad_out, sums) = job.pointers();
    let mut acc = [[_mm512_setzero_ps(); V]; CTAPS];
    // SAFETY: AVX-512 F is present (this function's contract); `sums` holds CTAPS x CCO
    // values, output-gradient pixel `r * width + x` CCO values from its `pitch` multiple,
    // and every window `(rows - 1) * row_step + width` values (`pointers` checked all
    // three), and `16 * V <= CCO`.
    unsafe {
        if job.resume {
            for (j, acc_j) in acc.iter_mut().enumerate() {
                for (v, a) in acc_j.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(sums.add(j * CCO + 16 * v));
                }
            }
        }
        for r in 0..rows {
            let row = grad_out.add(r * width * pitch);
            let inputs = windows.map(|w| w.add(r * row_step));
            for x in 0..width {
                let ys: [__m512; V] =
                    std::array::from_fn(|v| _mm512_loadu_ps(row.add(x * pitch + 16 * v)));
                for (acc_j, input) in acc.iter_mut().zip(inputs) {
                    let x = _mm512_set1_ps(*input.add(x));
                    for (a, &y) in acc_j.iter_mut().zip(&ys) {
                        *a = _mm512_fmadd_ps(y, x, *a);
                    }
                }
            }
        }
        for (j, acc_j) in acc.iter().enumerate() {
            for (v, &a) in acc_j.iter().enumerate() {
                _mm512_storeu_ps(sums.add(j * CCO + 16 * v), a);
            }
        }
    }
}

/// The channel-vectorised weight-gradient kernel for `f32` with AVX2 and FMA: as the
/// AVX-512 one, in four sweeps of 16 channels (2 vectors of 8 x [`CTAPS`] taps, 12 of
/// the 16 registers).
///
/// # Safety
/// The CPU must support AVX2 and FMA (the job's bounds are checked by
/// `ChannelWeightTile::pointers`).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn channel_weight_tile_f32_avx2(job: &mut ChannelWeightTile<'_>) {
    let (rows, width, row_step, pitch) = (job.rows, job.width, job.row_step, job.pitch);
    let (windows, grad_out, sums) = job.pointers();
    for c0 in (0..16 * job.vectors).step_by(16) {
        let mut acc = [[_mm256_setzero_ps(); 2]; CTAPS];
        // SAFETY: AVX2 and FMA are present (this function's contract); `c0 + 16 <= CCO`,
        // so every access is inside what `pointers` checked (as in the AVX-512 kernel).
        unsafe {
            if job.resume {
                for (j, acc_j) in acc.iter_mut().enumerate() {
                    for (v, a) in acc_j.iter_mut().enumerate() {
                        *a = _mm256_loadu_ps(sums.add(j * CCO + c0 + 8 * v));
                    }
                }
            }
            for r in 0..rows {
                let row = grad_out.add(r * width * pitch + c0);
                let inputs = windows.map(|w| w.add(r * row_step));
                for x in 0..width {
                    let at = row.add(x * pitch);
                    let ys = [_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8))];
                    for (acc_j, input) in acc.iter_mut().zip(inputs) {
                        let x = _mm256_set1_ps(*input.add(x));
                        for (a, &y) in acc_j.iter_mut().zip(&ys) {
                            *a = _mm256_fmadd_ps(y, x, *a);
                        }
                    }
                }
            }
            for (j, acc_j) in acc.iter().enumerate() {
                for (v, &a) in acc_j.iter().enumerate() {
                    _mm256_storeu_ps(sums.add(j * CCO + c0 + 8 * v), a);
                }
            }
        }
    }
}
