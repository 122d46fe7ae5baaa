//! Architecture-specific builds of the portable row kernels.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;
