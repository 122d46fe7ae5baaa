//! Reads the PyTorch fixtures written by `scripts/gen_fixtures.py`.

use std::collections::HashMap;
use std::path::PathBuf;

use conv2d::Element;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// One fixture file: its bytes (tensors are read from them on demand) and its cases.
pub struct FixtureFile {
    bytes: Vec<u8>,
    pub cases: Vec<Value>,
    pub torch_version: String,
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"))
}

impl FixtureFile {
    pub fn open(name: &str) -> Self {
        let path = fixture_path(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e} (run scripts/gen_fixtures.py)",
                path.display()
            )
        });
        Self::open_raw(&bytes)
    }

    /// A fixture file from its bytes; `cases` is empty when its metadata has none.
    pub fn open_raw(bytes: &[u8]) -> Self {
        let (_, meta) = SafeTensors::read_metadata(bytes).expect("safetensors header");
        let meta: HashMap<String, String> = meta.metadata().clone().unwrap_or_default();
        let cases: Vec<Value> = meta
            .get("cases")
            .map(|c| serde_json::from_str(c).expect("cases metadata is JSON"))
            .unwrap_or_default();
        Self {
            bytes: bytes.to_vec(),
            cases,
            torch_version: meta.get("torch_version").cloned().unwrap_or_default(),
        }
    }

    /// Tensor `name` with its shape (complex tensors without their trailing pair dimension),
    /// or `None` if the file has no such tensor.
    pub fn tensor<T: Element>(&self, name: &str) -> Option<(Vec<usize>, Vec<T>)> {
        let st = SafeTensors::deserialize(&self.bytes).expect("safetensors file");
        let view = st.tensor(name).ok()?;
        let raw = view.data();
        let reals: Vec<f64> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f64())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f64())
                .collect(),
            other => panic!("unexpected dtype {other:?} for {name}"),
        };
        let mut shape = view.shape().to_vec();
        let values = if T::IS_COMPLEX {
            assert_eq!(
                shape.pop(),
                Some(2),
                "{name}: complex tensors end in a pair dimension"
            );
            reals
                .chunks_exact(2)
                .map(|p| T::from_parts(p[0], p[1]))
                .collect()
        } else {
            reals.iter().map(|&r| T::from_parts(r, 0.0)).collect()
        };
        Some((shape, values))
    }
}
