//! The fuzz targets' checks as bounded property tests: `fuzz/src/api.rs` and
//! `fuzz/src/state_dict.rs`, included here as they are, decode and check proptest-generated
//! bytes, so that `cargo test` runs the checks of `cargo fuzz` between fuzzing campaigns (and
//! keeps that code compiling with the library). See `fuzz/README.md`.

#[path = "../../../fuzz/src/api.rs"]
mod api;
#[path = "../../../fuzz/src/state_dict.rs"]
mod state_dict;

use proptest::collection::vec;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// One call of the public API per case, checked against PyTorch's rules and the oracle.
    #[test]
    fn api_calls_match_pytorch_and_the_reference(bytes in vec(any::<u8>(), 0..96)) {
        api::check_bytes(&bytes).map_err(TestCaseError::fail)?;
    }

    /// A layer's own state dict loads (and survives being saved again); changed bytes and
    /// arbitrary bytes load or fail without a panic.
    #[test]
    fn state_dicts_load_or_fail_cleanly(
        bytes in vec(any::<u8>(), 0..48),
        seed in any::<u64>(),
        flips in vec((any::<u16>(), any::<u8>()), 0..3),
    ) {
        let setup = state_dict::Setup::decode(&mut api::Bytes(&bytes));
        if let Some(mut file) = setup.own_file(seed) {
            for &(at, xor) in &flips {
                let i = usize::from(at) % file.len();
                file[i] ^= xor;
            }
            state_dict::check(&setup, &file, flips.is_empty()).map_err(TestCaseError::fail)?;
        }
        state_dict::check(&setup, &bytes, false).map_err(TestCaseError::fail)?;
    }
}

/// Bytes that run out decode as zeros: the smallest valid call, which must pass.
#[test]
fn empty_bytes_decode_to_a_valid_call() {
    let case = api::Case::decode(&mut api::Bytes(&[]));
    assert!(
        matches!(case.verdict(), api::Verdict::Valid(_)),
        "{case:#?}"
    );
    api::check(&case).unwrap();
}
