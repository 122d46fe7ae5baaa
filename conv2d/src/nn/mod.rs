//! Layers with PyTorch's constructor arguments, parameter shapes and initialisation:
//! [`Conv2d`] and [`ConvTranspose2d`], each built from its config, with weights drawn as
//! PyTorch draws them or loaded from a PyTorch `state_dict` saved with safetensors.
//!
//! ```
//! use conv2d::nn::{Conv2dConfig, ConvTranspose2dConfig};
//! use ndarray::Array4;
//!
//! let down = Conv2dConfig::new(3, 8, 4).stride(2).padding(1).init_seeded::<f32>(0)?;
//! let up = ConvTranspose2dConfig::new(8, 3, 4).stride(2).padding(1).init_seeded::<f32>(1)?;
//! let x = Array4::<f32>::zeros((2, 3, 32, 32));
//! let code = down.forward(&x)?;
//! assert_eq!(code.shape(), &[2, 8, 16, 16]);
//! assert_eq!(up.forward(&code)?.shape(), x.shape());
//! # Ok::<(), conv2d::ConvError>(())
//! ```

mod conv2d;
mod conv_transpose2d;
mod init;
mod state_dict;

pub use conv2d::{Conv2d, Conv2dConfig};
pub use conv_transpose2d::{ConvTranspose2d, ConvTranspose2dConfig};
pub use state_dict::{serialize_state_dict, StateTensor};
