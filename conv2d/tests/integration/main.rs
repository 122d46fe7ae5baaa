//! The conv2d crate's integration tests that can share a process, one module per concern, in
//! one test binary: the library's generic kernels are compiled once for all of them (one
//! binary per file compiled them again for each, about a third of CI's test build).
//!
//! Binaries of their own, as they change what the whole process shares:
//! `tests/allocation_failure.rs` and `tests/workspace.rs` (the global allocator),
//! `tests/flush_denormal.rs` (the denormal switch) and `tests/threads_env.rs` (the
//! environment).

mod support;

mod concurrency;
mod errors;
mod fuzz_properties;
mod layers;
mod properties;
mod pytorch_fixtures;
mod small_cases;
mod state_dict;
