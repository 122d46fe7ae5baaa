//! Shared code of the fuzz targets in `fuzz_targets/`: the test support of `conv2d` (its oracle
//! and tolerances), the decoding and checks of each target, and `arbitrary` glue.
//!
//! The checks live in modules that `conv2d/tests/integration/fuzz_properties.rs` includes
//! too, so that a bounded property test runs the same checks in `cargo test`.

#[path = "../../conv2d/tests/integration/support/mod.rs"]
pub mod support;

pub mod api;
pub mod state_dict;

use arbitrary::{Arbitrary, Unstructured};

impl api::Source for Unstructured<'_> {
    fn int_in(&mut self, lo: u64, hi: u64) -> u64 {
        self.int_in_range(lo..=hi).unwrap_or(lo)
    }
}

/// An [`api::Case`] decoded from fuzz bytes, so that `cargo fuzz fmt conv2d_api <input>`
/// prints what an input means.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCase(pub api::Case);

impl<'a> Arbitrary<'a> for ApiCase {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(ApiCase(api::Case::decode(u)))
    }
}
