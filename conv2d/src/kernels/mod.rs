//! The kernels, written once over [`Accumulator`](crate::element::Accumulator): one module
//! per [`Algorithm`], each with the forward pass and both gradients, and the dispatchers
//! below that pick one. All work in conv2d orientation (see
//! [`Geometry`](crate::geometry::Geometry)): a transposed convolution runs `backward_input`
//! as its forward pass. Each output element is summed by one thread in a fixed order, so
//! results do not depend on the thread count.
//!
//! Non-finite values follow PyTorch's definition of zero padding as a convolution of the
//! padded input: in the forward pass and the weight gradient the padding contributes terms
//! `0 * w` and `0 * grad_out`, so a non-finite weight (or output gradient) gives NaN where
//! it meets the padding; the input gradient has no padding terms. `direct-rows` skips
//! padded taps, so the dispatchers hand its forward pass and weight gradient to `direct`
//! when the weight or the output gradient is not finite; `direct`'s stride-1 input
//! gradient sums over zero-padded gradients, so it runs the row kernel for a non-finite
//! weight. Each check costs one pass over the weight or the output gradient.

mod backward_bias;
#[allow(unsafe_code)] // dispatch to the target-feature builds in `crate::arch`
pub(crate) mod direct;
mod direct_rows;
#[allow(unsafe_code)] // raw-buffer code: GEMM writes disjoint output blocks through one pointer
mod im2col_gemm;
mod patches;
#[allow(unsafe_code)] // dispatch to the target-feature builds in `crate::arch`
pub(crate) mod rows;
#[allow(unsafe_code)] // dispatch to the target-feature builds in `crate::arch`
mod small;

pub(crate) use backward_bias::backward_bias;

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use half::bf16;

use crate::algorithm::Algorithm;
use crate::element::{Accumulator, Element};
use crate::error::{try_filled, try_reserve, ConvError, Result};
use crate::geometry::Geometry;
use crate::threading::for_each_chunk;

/// Elements from which [`Scratch::filled`] shares the writing out among the threads.
const FILL_CHUNK: usize = 64 * 1024;

/// Scratch buffers of parallel tasks, which cannot return errors: a task whose buffer
/// cannot be allocated skips its work and records why, and the kernel's dispatcher returns
/// that error (leaving the output unspecified) instead of aborting.
pub(crate) struct Scratch(OnceLock<ConvError>);

impl Scratch {
    fn new() -> Self {
        Self(OnceLock::new())
    }

    /// The value, or `None` once the error is recorded.
    pub(crate) fn ok<T>(&self, result: Result<T>) -> Option<T> {
        result
            .map_err(|e| {
                let _ = self.0.set(e);
            })
            .ok()
    }

    /// `len` copies of `value`, or `None` once the failure is recorded; from
    /// [`FILL_CHUNK`] elements on, written in chunks by the call's threads (a kernel's
    /// scratch is often as large as its input: filled by the calling thread alone, the
    /// others would wait meanwhile).
    pub(crate) fn filled<T: Copy + Send + Sync>(&self, len: usize, value: T) -> Option<Vec<T>> {
        if len < FILL_CHUNK {
            return self.ok(try_filled(len, value));
        }
        let mut v = Vec::new();
        self.ok(extend_filled(&mut v, len, value))?;
        Some(v)
    }

    /// [`filled`](Self::filled), the first element 64-byte aligned: for buffers whose rows
    /// the AMX tiles load and store 64 bytes at a time (`bf16` `resnet_3x3_c128` on one
    /// thread ran 1.2x slower when a change elsewhere moved its buffers off that alignment).
    #[allow(unsafe_code)] // calls `written_aligned`
    pub(crate) fn filled_aligned<T: Copy + Send + Sync>(
        &self,
        len: usize,
        value: T,
    ) -> Option<Aligned<T>> {
        let fill = |_, chunk: &mut [MaybeUninit<T>]| chunk.fill(MaybeUninit::new(value));
        // SAFETY: `fill` writes every element of each chunk.
        unsafe { self.written_aligned(len, FILL_CHUNK, value, fill) }
    }

    /// `len` values, the first 64-byte aligned, written once (no filling pass first) in
    /// chunks of `chunk` by `write(index, chunk)` on the call's threads; `None` once the
    /// failure is recorded. For copies that also pad, such as padded planes.
    ///
    /// # Safety
    /// `write` initialises every element of each chunk it is given.
    #[allow(unsafe_code)] // calls `extend_in_chunks`
    pub(crate) unsafe fn written_aligned<T: Copy + Send + Sync>(
        &self,
        len: usize,
        chunk: usize,
        lead: T,
        write: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
    ) -> Option<Aligned<T>> {
        let (mut buffer, offset) = self.aligned_start(len, lead)?;
        // SAFETY: `write` initialises every element of each chunk (this function's
        // contract).
        unsafe { extend_in_chunks(&mut buffer, len, chunk, write) };
        Some(Aligned {
            buffer,
            offset,
            len,
        })
    }

    /// A copy of `values` whose first element is 64-byte aligned, written once (no filling
    /// pass first) in chunks by the call's threads; `None` once the failure is recorded.
    /// For inputs read a vector at a time: the pointwise kernel ran `resnet_1x1_expand`
    /// 1.2x slower on planes 16 bytes off a line (a `Vec` from `malloc`) than on aligned
    /// ones, the copy included.
    #[allow(unsafe_code)] // calls `written_aligned`
    pub(crate) fn copied_aligned<T: Copy + Send + Sync>(&self, values: &[T]) -> Option<Aligned<T>> {
        let Some(&first) = values.first() else {
            return Some(Aligned::default());
        };
        let copy = |c: usize, chunk: &mut [MaybeUninit<T>]| {
            chunk.write_copy_of_slice(&values[c * FILL_CHUNK..][..chunk.len()]);
        };
        // SAFETY: `write_copy_of_slice` writes every element of each chunk.
        unsafe { self.written_aligned(values.len(), FILL_CHUNK, first, copy) }
    }

    /// A vector with room for `len` more elements after its `offset` (fewer than a line's
    /// worth) copies of `lead`, its end then 64-byte aligned; `None` once the failure is
    /// recorded.
    fn aligned_start<T: Copy + 'static>(&self, len: usize, lead: T) -> Option<(Vec<T>, usize)> {
        let slack = ALIGN / std::mem::size_of::<T>().max(1);
        let total = len.checked_add(slack);
        let mut buffer: Vec<T> = self.ok(crate::spare::take(
            self.ok(total.ok_or_else(|| ConvError::overflow("a buffer")))?,
        ))?;
        let offset = buffer.as_ptr().align_offset(ALIGN).min(slack);
        buffer.extend(std::iter::repeat_n(lead, offset));
        Some((buffer, offset))
    }

    fn finish(self) -> Result<()> {
        self.0.into_inner().map_or(Ok(()), Err)
    }
}

/// Appends `len` copies of `value` to `v` (an `Allocation` error if it cannot grow), from
/// [`FILL_CHUNK`] elements on written in chunks by the call's threads (see
/// [`Scratch::filled`]).
#[allow(unsafe_code)] // calls `extend_in_chunks`
pub(crate) fn extend_filled<T: Copy + Send + Sync>(
    v: &mut Vec<T>,
    len: usize,
    value: T,
) -> Result<()> {
    try_reserve(v, len)?;
    // SAFETY: `fill` writes every element of each chunk.
    unsafe {
        extend_in_chunks(v, len, FILL_CHUNK, |_, chunk| {
            chunk.fill(MaybeUninit::new(value));
        });
    };
    Ok(())
}

/// Appends `map(x)` for every `x` of `values` to `v` (an `Allocation` error if it cannot
/// grow), from [`FILL_CHUNK`] elements on written in chunks by the call's threads.
#[allow(unsafe_code)] // calls `extend_in_chunks`
pub(crate) fn extend_mapped<S: Copy + Sync, T: Send + Sync>(
    v: &mut Vec<T>,
    values: &[S],
    map: impl Fn(S) -> T + Sync,
) -> Result<()> {
    try_reserve(v, values.len())?;
    let write = |c: usize, chunk: &mut [MaybeUninit<T>]| {
        for (o, &x) in chunk.iter_mut().zip(&values[c * FILL_CHUNK..]) {
            o.write(map(x));
        }
    };
    // SAFETY: chunk `c` holds at most `FILL_CHUNK` elements from `c * FILL_CHUNK`, all of
    // them before `values.len()`: the zip writes every one.
    unsafe { extend_in_chunks(v, values.len(), FILL_CHUNK, write) };
    Ok(())
}

/// Bytes of alignment [`Scratch::filled_aligned`] gives.
const ALIGN: usize = 64;

/// Elements from the start of `values` to the first on a 64-byte line, the alignment
/// [`Scratch::filled_aligned`] gives (0 if it starts on one, `usize::MAX` if no element can).
pub(crate) fn elements_to_line<T>(values: &[T]) -> usize {
    values.as_ptr().align_offset(ALIGN)
}

/// Appends `len` elements to `v` (whose capacity holds them), written in chunks of
/// `chunk` by `write(index, chunk)`: on the call's threads, or on this one for a single
/// chunk.
///
/// # Safety
/// `write` initialises every element of each chunk it is given.
#[allow(unsafe_code)] // raw-buffer code: a vector's capacity written, then its length set
unsafe fn extend_in_chunks<T: Send + Sync>(
    v: &mut Vec<T>,
    len: usize,
    chunk: usize,
    write: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) {
    let (start, chunk) = (v.len(), chunk.max(1));
    let spare = &mut v.spare_capacity_mut()[..len];
    if spare.len() <= chunk {
        write(0, spare);
    } else {
        for_each_chunk(spare, chunk, &write);
    }
    // SAFETY: the capacity holds `len` elements after the first `start`
    // (`spare_capacity_mut()[..len]` above would have panicked otherwise), and every one
    // was written (`write`'s contract; `for_each_chunk` returns once every chunk is done).
    unsafe { v.set_len(start + len) };
}

/// A buffer of [`Scratch::filled_aligned`]: `len` values from an aligned element of a
/// vector, kept for the thread's next buffer when dropped (see [`crate::spare`]).
pub(crate) struct Aligned<T: 'static> {
    buffer: Vec<T>,
    offset: usize,
    len: usize,
}

impl<T: 'static> Drop for Aligned<T> {
    fn drop(&mut self) {
        crate::spare::recycle(std::mem::take(&mut self.buffer));
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buffer[self.offset..][..self.len]
    }
}

impl<T> Default for Aligned<T> {
    fn default() -> Self {
        Self {
            buffer: Vec::new(),
            offset: 0,
            len: 0,
        }
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buffer[self.offset..][..self.len]
    }
}

/// `out = conv2d(input, weight) + bias` by `algorithm`, overwriting every element of `out`.
pub(crate) fn forward<A: Accumulator>(
    algorithm: Algorithm,
    g: &Geometry,
    input: &[A],
    weight: &[A],
    bias: Option<&[A]>,
    out: &mut [A],
) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    if input.is_empty() || weight.is_empty() {
        // No terms (zero input channels): the bias alone, as PyTorch's empty-input backend.
        let plane = out.len() / (g.n * g.cout);
        for (p, out_plane) in out.chunks_exact_mut(plane).enumerate() {
            out_plane.fill(bias.map_or(A::ZERO, |b| b[p % g.cout]));
        }
        return Ok(());
    }
    if algorithm == Algorithm::DirectSmall && small::applies::<A>(g) {
        small::forward(g, input, weight, bias, out);
        return Ok(());
    }
    let algorithm = exact(unsmall(algorithm), g, weight);
    // The GEMM algorithms run shapes whose taps never overlap as a pointwise GEMM on
    // their patches.
    if let (Algorithm::ImplicitGemm | Algorithm::Im2colGemm, Some(inner)) =
        (algorithm, patches::geometry(g))
    {
        let pointwise = match algorithm {
            Algorithm::ImplicitGemm => Algorithm::choose(&inner),
            _ => Algorithm::Im2colGemm,
        };
        return patches::forward(pointwise, g, &inner, input, weight, bias, out);
    }
    let algorithm = match algorithm {
        Algorithm::ImplicitGemm if !direct::implicit_gemm::<A>(g) => Algorithm::DirectTiled,
        chosen => chosen,
    };
    let algorithm = match algorithm {
        Algorithm::DirectTiled if !direct::tiles::<A>(g) => Algorithm::untiled(g),
        chosen => chosen,
    };
    let scratch = Scratch::new();
    match algorithm {
        Algorithm::Direct => direct::forward(g, input, weight, bias, out, &scratch),
        Algorithm::DirectRows => direct_rows::forward(g, input, weight, bias, out),
        Algorithm::DirectSmall => unreachable!("unsmall() maps it"),
        Algorithm::DirectTiled => direct::tiled_forward(g, input, weight, bias, out, &scratch),
        Algorithm::ImplicitGemm => direct::implicit_forward(g, input, weight, bias, out, &scratch),
        Algorithm::Im2colGemm => im2col_gemm::forward(g, input, weight, bias, out, &scratch),
    }
    scratch.finish()
}

/// The `bf16` forward pass on the CPU's AMX tiles, where `algorithm` is a tiled one and the
/// tiles apply to the shape (see `direct::amx`), overwriting `out`; `None` (nothing
/// written, no thread woken) elsewhere: other types, shapes and CPUs.
pub(crate) fn forward_bf16<T: Element>(
    algorithm: Algorithm,
    g: &Geometry,
    input: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
) -> Option<Result<()>> {
    let (input, weight) = (
        direct::as_type::<T, bf16>(input)?,
        direct::as_type::<T, bf16>(weight)?,
    );
    let bias = bias.map(direct::as_type::<T, bf16>);
    let tiled = matches!(
        unsmall(algorithm),
        Algorithm::DirectTiled | Algorithm::ImplicitGemm
    );
    if !tiled || bias == Some(None) || input.is_empty() || !direct::amx::applies(g) {
        return None;
    }
    let out = direct::as_type_mut::<T, bf16>(out)?;
    Some(algorithm.install(g, || {
        let scratch = Scratch::new();
        direct::amx::forward(g, input, weight, false, bias.flatten(), out, &scratch);
        scratch.finish()
    }))
}

/// The `bf16` input gradient plus `bias` per channel on the CPU's AMX tiles (a stride-1
/// convolution's as the forward pass of its flipped convolution, a strided one's in stride
/// phases), where `algorithm` is a tiled one and the tiles apply, overwriting `grad_in`;
/// `None` (nothing written) elsewhere, as [`forward_bf16`].
pub(crate) fn backward_input_bf16<T: Element>(
    algorithm: Algorithm,
    g: &Geometry,
    grad_out: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    grad_in: &mut [T],
) -> Option<Result<()>> {
    let grad_out = direct::as_type::<T, bf16>(grad_out)?;
    let weight = direct::as_type::<T, bf16>(weight)?;
    let bias = bias.map(direct::as_type::<T, bf16>);
    let tiled = matches!(
        unsmall(algorithm),
        Algorithm::DirectTiled | Algorithm::ImplicitGemm
    );
    if !tiled || grad_out.is_empty() || weight.is_empty() || bias == Some(None) {
        return None;
    }
    let bias = bias.flatten();
    // Stride 1: the flipped convolution's forward pass; strided: stride phases.
    enum Route {
        Flipped(Geometry),
        Phases(Vec<direct::amx_phases::Phase>),
    }
    let route = match g.stride.h > 1 || g.stride.w > 1 {
        true => Route::Phases(direct::amx_phases::tiled_phases(g, weight)?),
        false => Route::Flipped(direct::amx::flipped(g, weight)?),
    };
    let grad_in = direct::as_type_mut::<T, bf16>(grad_in)?;
    Some(algorithm.install(g, || {
        let scratch = Scratch::new();
        match &route {
            Route::Flipped(f) => {
                direct::amx::forward(f, grad_out, weight, true, bias, grad_in, &scratch)
            }
            Route::Phases(phases) => direct::amx_phases::backward_input(
                g, phases, grad_out, weight, bias, grad_in, &scratch,
            ),
        }
        scratch.finish()
    }))
}

/// The `bf16` weight gradient on the CPU's AMX tiles (stride 1, finite input), where
/// `algorithm` is a tiled one and the tiles apply (see `direct::amx_weight`), overwriting
/// `grad_w`; `None` (nothing written) elsewhere, as [`forward_bf16`].
pub(crate) fn backward_weight_bf16<T: Element>(
    algorithm: Algorithm,
    g: &Geometry,
    input: &[T],
    grad_out: &[T],
    grad_w: &mut [T],
) -> Option<Result<()>> {
    let input = direct::as_type::<T, bf16>(input)?;
    let grad_out = direct::as_type::<T, bf16>(grad_out)?;
    let tiled = matches!(
        unsmall(algorithm),
        Algorithm::DirectTiled | Algorithm::ImplicitGemm
    );
    if !tiled || grad_out.is_empty() || !direct::amx_weight::applies(g, input) {
        return None;
    }
    let grad_w = direct::as_type_mut::<T, bf16>(grad_w)?;
    Some(algorithm.install(g, || {
        let scratch = Scratch::new();
        direct::amx_weight::backward_weight(g, input, grad_out, grad_w, &scratch);
        scratch.finish()
    }))
}

/// The input gradient by `algorithm`, overwriting every element of `grad_in`; callers pass
/// the conjugated weight for complex gradients.
pub(crate) fn backward_input<A: Accumulator>(
    algorithm: Algorithm,
    g: &Geometry,
    grad_out: &[A],
    weight: &[A],
    grad_in: &mut [A],
) -> Result<()> {
    if grad_out.is_empty() || weight.is_empty() {
        grad_in.fill(A::ZERO);
        return Ok(());
    }
    // The GEMM algorithms run shapes whose taps never overlap as a pointwise convolution
    // into their patch planes.
    if let (Algorithm::ImplicitGemm | Algorithm::Im2colGemm, Some(inner)) =
        (algorithm, patches::geometry(g))
    {
        return patches::backward_input(g, &inner, grad_out, weight, grad_in);
    }
    let scratch = Scratch::new();
    use direct::Flipped::{ImplicitGemm as Gemm, Small, Tiles};
    match algorithm {
        Algorithm::DirectRows => direct_rows::backward_input(g, grad_out, weight, grad_in),
        Algorithm::DirectSmall => {
            if !direct::backward_input_flipped(g, grad_out, weight, grad_in, &scratch, Small) {
                return backward_input(Algorithm::DirectTiled, g, grad_out, weight, grad_in);
            }
        }
        Algorithm::DirectTiled => {
            if !direct::backward_input_flipped(g, grad_out, weight, grad_in, &scratch, Tiles) {
                return backward_input(Algorithm::untiled(g), g, grad_out, weight, grad_in);
            }
        }
        Algorithm::ImplicitGemm => {
            if !direct::backward_input_flipped(g, grad_out, weight, grad_in, &scratch, Gemm)
                && !direct::backward_input_subpixel(g, grad_out, weight, grad_in, &scratch)
            {
                return backward_input(Algorithm::DirectTiled, g, grad_out, weight, grad_in);
            }
        }
        Algorithm::Direct => direct::backward_input(g, grad_out, weight, grad_in, &scratch),
        Algorithm::Im2colGemm => {
            im2col_gemm::backward_input(g, grad_out, weight, grad_in, &scratch)
        }
    }
    scratch.finish()
}

/// `grad_w = sum conj(input) * grad_out` by `algorithm`, overwriting every element.
pub(crate) fn backward_weight<A: Accumulator>(
    algorithm: Algorithm,
    g: &Geometry,
    input: &[A],
    grad_out: &[A],
    grad_w: &mut [A],
) -> Result<()> {
    if input.is_empty() || grad_out.is_empty() {
        grad_w.fill(A::ZERO);
        return Ok(());
    }
    let algorithm = exact(unsmall(algorithm), g, grad_out);
    if let (Algorithm::ImplicitGemm | Algorithm::Im2colGemm, Some(inner)) =
        (algorithm, patches::weight_geometry(g))
    {
        return patches::backward_weight(g, &inner, input, grad_out, grad_w);
    }
    let scratch = Scratch::new();
    match algorithm {
        Algorithm::DirectRows => direct_rows::backward_weight(g, input, grad_out, grad_w),
        Algorithm::Direct => direct::backward_weight(g, input, grad_out, grad_w, &scratch),
        Algorithm::DirectTiled | Algorithm::ImplicitGemm => {
            if !direct::backward_weight_tiled(g, input, grad_out, grad_w, &scratch) {
                // A pointwise weight gradient is one GEMM, whatever its size.
                let fallback = match direct::pointwise(g) {
                    true => Algorithm::Im2colGemm,
                    false => Algorithm::untiled(g),
                };
                return backward_weight(fallback, g, input, grad_out, grad_w);
            }
        }
        Algorithm::Im2colGemm => im2col_gemm::backward_weight(g, input, grad_out, grad_w, &scratch),
        Algorithm::DirectSmall => unreachable!("unsmall() maps it"),
    }
    scratch.finish()
}

/// `algorithm`, but `direct-tiled` for `direct-small`, which runs the forward pass (and its
/// flipped counterpart, the stride-1 input gradient) of the shapes, types and CPUs
/// [`small::applies`] to only: `direct-tiled` runs the rest.
fn unsmall(algorithm: Algorithm) -> Algorithm {
    match algorithm {
        Algorithm::DirectSmall => Algorithm::DirectTiled,
        chosen => chosen,
    }
}

/// The algorithm that computes `algorithm`'s pass exactly as PyTorch defines it: `direct-rows`
/// skips padded taps, so a non-finite weight (or output gradient, `factor`) needs `direct`;
/// `direct` and `direct-tiled` stage padded rows, so a shape whose staged rows would dwarf
/// the input and output (a huge stride, padding or dilation) runs `im2col-gemm`, whose
/// columns scale with the output.
fn exact<A: Accumulator>(algorithm: Algorithm, g: &Geometry, factor: &[A]) -> Algorithm {
    match algorithm {
        Algorithm::DirectRows if all_finite(factor) => Algorithm::DirectRows,
        Algorithm::DirectRows
        | Algorithm::Direct
        | Algorithm::DirectTiled
        | Algorithm::ImplicitGemm
            if !direct::fits(g) =>
        {
            Algorithm::Im2colGemm
        }
        Algorithm::DirectRows => Algorithm::Direct,
        chosen => chosen,
    }
}

/// `dst[i] = src[i * step]` for every `i`; `src` holds `(dst.len() - 1) * step + 1` values
/// or more. Steps of 2 (the common stride) take whole pairs, which the compiler vectorises.
#[inline]
pub(crate) fn every_nth<A: Accumulator>(dst: &mut [A], src: &[A], step: usize) {
    if step == 1 {
        dst.copy_from_slice(&src[..dst.len()]);
        return;
    }
    if step == 2 {
        let pairs = dst.len().min(src.len() / 2);
        for (d, pair) in dst[..pairs].iter_mut().zip(src.chunks_exact(2)) {
            *d = pair[0];
        }
        if let Some(d) = dst.get_mut(pairs) {
            *d = src[2 * pairs];
        }
        return;
    }
    for (d, &v) in dst.iter_mut().zip(src.iter().step_by(step)) {
        *d = v;
    }
}

/// `sums[i] += values[i]` for every `i` of both: a later part's sums added, in order.
pub(crate) fn add_into<A: Accumulator>(sums: &mut [A], values: &[A]) {
    for (sum, &v) in sums.iter_mut().zip(values) {
        *sum += v;
    }
}

/// Whether no value is NaN or infinite (in chunks without early exit, which vectorise).
pub(crate) fn all_finite<A: Accumulator>(values: &[A]) -> bool {
    values
        .chunks(256)
        .all(|chunk| chunk.iter().fold(true, |ok, v| ok & v.is_finite()))
}

/// `out[n, c, ..] += bias[c]` for an NCHW `out` of `batch` images.
pub(crate) fn add_bias<A: Accumulator>(out: &mut [A], bias: &[A], batch: usize) {
    if out.is_empty() {
        return;
    }
    let plane = out.len() / (batch * bias.len());
    for_each_chunk(out, plane, |p, values| {
        let b = bias[p % bias.len()];
        for v in values {
            *v += b;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_aligned_copies_every_value_onto_a_line() {
        // Several chunks of `FILL_CHUNK`, from every element offset of a line.
        let values: Vec<f32> = (0..3 * FILL_CHUNK + 5).map(|i| i as f32).collect();
        let scratch = Scratch::new();
        for shift in 0..16 {
            let copy = scratch.copied_aligned(&values[shift..]).expect("a buffer");
            assert_eq!(elements_to_line(&copy), 0, "shift {shift}");
            assert_eq!(&copy[..], &values[shift..], "shift {shift}");
        }
        assert!(scratch
            .copied_aligned::<f32>(&[])
            .expect("a buffer")
            .is_empty());
        assert!(scratch.finish().is_ok());
    }
}
