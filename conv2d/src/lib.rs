//! # conv2d
//!
//! PyTorch's 2D convolution for Rust, reproduced exactly: `torch.nn.functional.conv2d`,
//! `conv_transpose2d`, `nn.Conv2d` and `nn.ConvTranspose2d`, forward and backward, every
//! parameter (stride, padding including `'same'`/`'valid'`, dilation, groups,
//! output_padding, output_size, padding modes) and the dtypes `f32`, `f64`, `f16`, `bf16`,
//! `Complex<f32>` and `Complex<f64>`.
//!
//! Three layers, each calling only downward:
//! - [`nn`]: layers that own weights, with PyTorch's constructor arguments and initialisation;
//! - the functional `ndarray` API: [`conv2d`], [`conv_transpose2d`], [`conv2d_backward`],
//!   [`conv_transpose2d_backward`], taking views of any layout, rank 3 (unbatched) or 4;
//! - plans on contiguous NCHW slices, [`Conv2dPlan`] and [`ConvTranspose2dPlan`], validated
//!   once and writing into the caller's buffers: the zero-copy entry for frameworks.
//!
//! Every invalid argument returns a [`ConvError`] naming the values; nothing panics.
//! Coming from PyTorch? [`pytorch_guide`] maps every argument of its docs to this crate.
//!
//! ```
//! use conv2d::{conv2d, Conv2dOptions, Same};
//! use ndarray::Array4;
//!
//! let x = Array4::<f32>::ones((1, 4, 5, 5));
//! let w = Array4::<f32>::ones((8, 4, 2, 2));
//! let y = conv2d(&x, &w, None, &Conv2dOptions::default().padding(Same))?;
//! assert_eq!(y.shape(), &[1, 8, 5, 5]); // 'same' with an even kernel pads one extra at the end
//! # Ok::<(), conv2d::ConvError>(())
//! ```
//!
//! ## Threads, instruction sets and determinism
//! Calls run on a pool of [`num_threads`] threads ([`set_num_threads`], or the environment
//! variable `CONV2D_NUM_THREADS`); calls with little work, and all calls when there is one
//! thread, run on the caller's thread. Every output element is summed by one thread in an
//! order fixed by the shape and the [`Algorithm`], so on one machine results are bitwise
//! identical across runs and thread counts. The library's kernels run on the instruction
//! set [`isa`] picks (lowered with `CONV2D_ISA` for testing); `direct-rows` gives the same
//! bits on every level, [`Algorithm::DirectTiled`], [`Algorithm::DirectSmall`] (the same bits
//! on AVX2 and AVX-512; the scalar level runs `direct-tiled`), [`Algorithm::ImplicitGemm`] (AVX-512
//! only; other levels run `direct-tiled`) and (for `f32`, `f16`, `bf16`)
//! [`Algorithm::Direct`] use fused multiply-adds on AVX2 and AVX-512, so their last bits may
//! differ between levels, and the GEMM behind
//! [`Algorithm::Im2colGemm`] picks its own kernels, so its last bits may differ between
//! machines. On CPUs with AMX-BF16 the tiled algorithms run the `bf16` forward pass and
//! stride-1 input gradient on the matrix unit (exact products, `f32` sums in another
//! order), which reads subnormal `bf16` operands as zero and flushes sums below
//! `f32::MIN_POSITIVE`, as PyTorch's kernels on those CPUs do.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
// An eager `ok_or(ConvError::...)` formatted its message on every call (about 15% of a
// tiny call on Zen 3).
#![deny(clippy::or_fun_call)]
#![warn(missing_docs)]

mod algorithm;
#[allow(unsafe_code)] // target-feature builds of the row kernels
mod arch;
mod denormal;
mod element;
mod error;
mod functional;
mod geometry;
mod isa;
mod kernels;
pub mod nn;
mod options;
mod padding_mode;
mod plan;
mod spare;
#[doc = include_str!("pytorch_guide.md")]
pub mod pytorch_guide {}
mod threading;

pub use algorithm::Algorithm;
pub use denormal::{flush_denormal, set_flush_denormal};
pub use element::{Accumulator, Element};
pub use error::{ConvError, ErrorKind, Result};
pub use functional::{
    conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward, Gradients,
};
pub use isa::{detected_isa, isa, Isa, ISA_ENV};
pub use nn::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
pub use options::{
    Conv2dOptions, ConvTranspose2dOptions, GradMask, Padding, PaddingMode, Pair, Same, Valid,
};
pub use plan::{Conv2dPlan, ConvTranspose2dPlan};
pub use threading::{num_threads, set_num_threads, NUM_THREADS_ENV};
