//! Layers with PyTorch's constructor arguments, parameter shapes and initialisation:
//! [`Conv2d`] and [`ConvTranspose2d`], each built from its config, with weights drawn as
//! PyTorch draws them or loaded from a PyTorch `state_dict` saved with safetensors.

mod conv2d;
mod conv_transpose2d;
mod init;
mod state_dict;

pub use conv2d::{Conv2d, Conv2dConfig};
pub use conv_transpose2d::{ConvTranspose2d, ConvTranspose2dConfig};
pub use state_dict::{serialize_state_dict, StateTensor};
