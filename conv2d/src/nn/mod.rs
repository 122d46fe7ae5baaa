//! Layers with PyTorch's constructor arguments, parameter shapes and initialisation:
//! [`Conv2d`] and [`ConvTranspose2d`], each built from its config.

mod conv2d;
mod conv_transpose2d;
mod init;

pub use conv2d::{Conv2d, Conv2dConfig};
pub use conv_transpose2d::{ConvTranspose2d, ConvTranspose2dConfig};
