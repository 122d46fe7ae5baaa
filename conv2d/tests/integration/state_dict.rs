//! PyTorch `state_dict`s: a small CNN saved by PyTorch (`scripts/gen_state_dict_fixture.py`)
//! loads into our layers and gives PyTorch's output; our layers save files with the same
//! keys, shapes, dtypes and values.

use crate::support::fixtures::{fixture_path, FixtureFile};
use conv2d::nn::{serialize_state_dict, Conv2dConfig, ConvTranspose2dConfig};
use conv2d::{Element, PaddingMode};
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use safetensors::SafeTensors;

fn configs() -> (Conv2dConfig, Conv2dConfig, ConvTranspose2dConfig) {
    (
        Conv2dConfig::new(3, 8, 3).padding(1),
        Conv2dConfig::new(8, 8, 3)
            .stride(2)
            .padding(1)
            .groups(2)
            .padding_mode(PaddingMode::Reflect)
            .bias(false),
        ConvTranspose2dConfig::new(8, 4, 4).stride(2).padding(1),
    )
}

/// Loads the model in `T` and checks its output against PyTorch's, within the rounding of
/// three layers in the storage type (PyTorch rounds after each layer, as we do).
fn small_cnn_matches_pytorch<T: Element>(name: &str, tolerance: f64) {
    let bytes = std::fs::read(fixture_path(name)).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let (c0, c2, up) = configs();
    let (l0, l2, lup) = (
        c0.load::<T>(&file, "features.0").unwrap(),
        c2.load::<T>(&file, "features.2").unwrap(),
        up.load::<T>(&file, "up").unwrap(),
    );
    let fixtures = FixtureFile::open_raw(&bytes);
    let (xs, x) = fixtures.tensor::<T>("input").unwrap();
    let (ys, y) = fixtures.tensor::<T>("output").unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&xs), x).unwrap();
    let h = l0.forward(&x).unwrap();
    let h = h.mapv(|v| {
        if v.to_complex64().re > 0.0 {
            v
        } else {
            T::ZERO
        }
    });
    let out = lup.forward(&l2.forward(&h).unwrap()).unwrap();
    assert_eq!(out.shape(), ys.as_slice());
    let scale = y
        .iter()
        .map(|v| v.to_complex64().norm())
        .fold(0.0, f64::max);
    for (i, (o, t)) in out.iter().zip(&y).enumerate() {
        let err = (o.to_complex64() - t.to_complex64()).norm();
        assert!(
            err <= tolerance * scale,
            "{name} output[{i}]: {o:?} vs PyTorch {t:?}"
        );
    }
}

#[test]
fn a_pytorch_state_dict_loads_and_reproduces_pytorch_f32() {
    small_cnn_matches_pytorch::<f32>("small_cnn_f32", 1e-5);
}

#[test]
fn a_pytorch_state_dict_loads_and_reproduces_pytorch_half() {
    // Three layers, each rounded once to the storage type: a few units in the last place.
    small_cnn_matches_pytorch::<f16>("small_cnn_f16", 8.0 * 2f64.powi(-11));
    small_cnn_matches_pytorch::<bf16>("small_cnn_bf16", 8.0 * 2f64.powi(-8));
}

#[test]
fn saved_state_dicts_have_pytorchs_keys_shapes_dtypes_and_values() {
    for name in ["small_cnn_f32", "small_cnn_f16", "small_cnn_bf16"] {
        let bytes = std::fs::read(fixture_path(name)).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let (c0, c2, up) = configs();
        let mut entries = match name {
            "small_cnn_f32" => c0
                .load::<f32>(&file, "features.0")
                .unwrap()
                .state_dict("features.0")
                .unwrap(),
            "small_cnn_f16" => c0
                .load::<f16>(&file, "features.0")
                .unwrap()
                .state_dict("features.0")
                .unwrap(),
            _ => c0
                .load::<bf16>(&file, "features.0")
                .unwrap()
                .state_dict("features.0")
                .unwrap(),
        };
        match name {
            "small_cnn_f32" => {
                entries.extend(
                    c2.load::<f32>(&file, "features.2")
                        .unwrap()
                        .state_dict("features.2")
                        .unwrap(),
                );
                entries.extend(
                    up.load::<f32>(&file, "up")
                        .unwrap()
                        .state_dict("up")
                        .unwrap(),
                );
            }
            "small_cnn_f16" => {
                entries.extend(
                    c2.load::<f16>(&file, "features.2")
                        .unwrap()
                        .state_dict("features.2")
                        .unwrap(),
                );
                entries.extend(
                    up.load::<f16>(&file, "up")
                        .unwrap()
                        .state_dict("up")
                        .unwrap(),
                );
            }
            _ => {
                entries.extend(
                    c2.load::<bf16>(&file, "features.2")
                        .unwrap()
                        .state_dict("features.2")
                        .unwrap(),
                );
                entries.extend(
                    up.load::<bf16>(&file, "up")
                        .unwrap()
                        .state_dict("up")
                        .unwrap(),
                );
            }
        }
        let saved = serialize_state_dict(&entries).unwrap();
        let ours = SafeTensors::deserialize(&saved).unwrap();
        let mut keys: Vec<String> = ours.names().into_iter().map(String::from).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "features.0.bias",
                "features.0.weight",
                "features.2.weight",
                "up.bias",
                "up.weight"
            ]
        );
        for key in keys {
            let (a, b) = (ours.tensor(&key).unwrap(), file.tensor(&key).unwrap());
            assert_eq!(
                (a.dtype(), a.shape(), a.data()),
                (b.dtype(), b.shape(), b.data()),
                "{name} {key}"
            );
        }
    }
}

#[test]
fn bad_state_dicts_are_errors_that_name_the_key() {
    let bytes = std::fs::read(fixture_path("small_cnn_f32")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let err = Conv2dConfig::new(3, 8, 5)
        .padding(1)
        .load::<f32>(&file, "features.0")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("size mismatch for features.0.weight")
            && err.to_string().contains("[8, 3, 3, 3]"),
        "{err}"
    );
    let err = Conv2dConfig::new(3, 8, 3)
        .load::<f32>(&file, "features.1")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Missing key in state_dict: \"features.1.weight\""),
        "{err}"
    );
    let err = Conv2dConfig::new(8, 8, 3)
        .groups(2)
        .load::<f32>(&file, "features.2")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Missing key in state_dict: \"features.2.bias\""),
        "{err}"
    );
    let err = Conv2dConfig::new(3, 8, 3)
        .bias(false)
        .load::<f32>(&file, "features.0")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Unexpected key in state_dict: \"features.0.bias\""),
        "{err}"
    );
    let complex = Conv2dConfig::new(1, 1, 1)
        .init_seeded::<num_complex::Complex<f32>>(0)
        .unwrap();
    assert!(complex
        .state_dict("c")
        .unwrap_err()
        .to_string()
        .contains("complex64"));
    let m = Conv2dConfig::new(1, 1, 1).init_seeded::<f32>(0).unwrap();
    let twice = [m.state_dict("a").unwrap(), m.state_dict("a").unwrap()].concat();
    assert!(serialize_state_dict(&twice)
        .unwrap_err()
        .to_string()
        .contains("\"a.weight\" appears twice"));
}
