//! From candle's CPU storage to the contiguous slices our plans take, and back.

use std::borrow::Cow;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, WithDType};
use conv2d::Element;

/// The dtypes candle and `conv2d` share.
pub(crate) const SUPPORTED: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];

/// A computation generic over the element type: what [`run_on_cpu`] dispatches to.
pub(crate) trait Kernel {
    /// The result of the operands, each contiguous.
    fn run<T: Element>(&self, args: &[&[T]]) -> conv2d::Result<Vec<T>>;
}

/// Runs `kernel` on `args` in their common dtype; `name` prefixes the errors.
///
/// # Errors
/// Operands of different dtypes, a dtype outside [`SUPPORTED`], and the kernel's own errors.
pub(crate) fn run_on_cpu(
    name: &str,
    args: &[(&CpuStorage, &Layout)],
    kernel: &impl Kernel,
) -> Result<CpuStorage> {
    let dtype = args.first().map_or(DType::F32, |(s, _)| s.dtype());
    if let Some((s, _)) = args.iter().find(|(s, _)| s.dtype() != dtype) {
        bail!(
            "{name}: all operands must have one dtype, but got {dtype:?} and {:?}",
            s.dtype()
        );
    }
    match dtype {
        DType::F32 => typed::<f32>(name, args, kernel),
        DType::F64 => typed::<f64>(name, args, kernel),
        DType::F16 => typed::<half::f16>(name, args, kernel),
        DType::BF16 => typed::<half::bf16>(name, args, kernel),
        other => bail!("{name}: dtype {other:?} is not supported; use one of {SUPPORTED:?}"),
    }
}

fn typed<T: Element + WithDType>(
    name: &str,
    args: &[(&CpuStorage, &Layout)],
    kernel: &impl Kernel,
) -> Result<CpuStorage> {
    let data = args
        .iter()
        .map(|(s, l)| contiguous::<T>(s, l))
        .collect::<Result<Vec<_>>>()?;
    let slices: Vec<&[T]> = data.iter().map(|d| d.as_ref()).collect();
    let out = kernel
        .run(&slices)
        .map_err(|e| crate::conv_error(name, e))?;
    Ok(T::to_cpu_storage_owned(out))
}

/// The elements of `layout` in row-major order: borrowed when they already are, else copied.
fn contiguous<'a, T: WithDType>(storage: &'a CpuStorage, layout: &Layout) -> Result<Cow<'a, [T]>> {
    let data = T::cpu_storage_as_slice(storage)?;
    if let Some((start, end)) = layout.contiguous_offsets() {
        return Ok(Cow::Borrowed(&data[start..end]));
    }
    let mut out = Vec::with_capacity(layout.shape().elem_count());
    gather(
        data,
        layout.start_offset(),
        layout.dims(),
        layout.stride(),
        &mut out,
    );
    Ok(Cow::Owned(out))
}

/// Appends the elements at `offset + sum(index * stride)` in row-major order of `dims`.
fn gather<T: Copy>(data: &[T], offset: usize, dims: &[usize], strides: &[usize], out: &mut Vec<T>) {
    match (dims, strides) {
        ([n, rest @ ..], [s, rest_strides @ ..]) if !rest.is_empty() => {
            for i in 0..*n {
                gather(data, offset + i * s, rest, rest_strides, out);
            }
        }
        ([n], [s]) => out.extend((0..*n).map(|i| data[offset + i * s])),
        _ => out.push(data[offset]),
    }
}
