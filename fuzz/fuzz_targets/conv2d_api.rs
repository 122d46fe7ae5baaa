//! Fuzzes the public API of `conv2d`: each input decodes (through `arbitrary`) to one call of
//! `conv2d`, `conv_transpose2d`, their backward functions or a plan's allocating and `*_into`
//! methods, with an arbitrary dtype, shapes, options, operand layouts and buffer lengths; the
//! sizes are bounded (at most 60k multiply-adds) except in "raw" cases, whose numbers reach
//! `usize::MAX` and must be settled by validation alone.
//!
//! Checks (`conv2d_fuzz::api`): no panic; the library accepts exactly what PyTorch accepts;
//! an accepted call's output shape is PyTorch's formula and its values equal the oracle of
//! `conv2d/tests/integration/support/reference.rs` within the tolerance of
//! `conv2d/tests/integration/support/mod.rs`.
//!
//! `cargo fuzz fmt conv2d_api <input>` prints the call an input decodes to.
#![no_main]

use conv2d_fuzz::{api, ApiCase};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: ApiCase| {
    if let Err(finding) = api::check(&case.0) {
        panic!("{finding}");
    }
});
