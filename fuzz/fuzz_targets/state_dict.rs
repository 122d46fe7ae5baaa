//! Fuzzes loading `nn.Conv2d` and `nn.ConvTranspose2d` layers from safetensors files: each
//! input decodes to a layer configuration, an element type and a key prefix, then a file,
//! either the raw remaining bytes or tensors written by safetensors' own encoder (keys, dtypes
//! and shapes near the layer's, the values of a seeded generator) with some bytes changed.
//!
//! Checks (`conv2d_fuzz::state_dict`): no panic; a file holding exactly the layer's
//! parameters loads; a loaded layer has PyTorch's parameter shapes and the file's values,
//! survives `state_dict` + `load` unchanged, and its `forward` equals the functional call.
#![no_main]

use std::borrow::Cow;

use arbitrary::{Arbitrary, Unstructured};
use conv2d_fuzz::state_dict::{self, Setup};
use libfuzzer_sys::fuzz_target;
use rand::{rngs::StdRng, Rng, SeedableRng};
use safetensors::tensor::{Dtype, View};

/// A file: bytes as they are, or tensors encoded by safetensors and then changed.
#[derive(Arbitrary, Debug)]
enum File<'a> {
    Raw(&'a [u8]),
    Built {
        tensors: Vec<TensorSpec>,
        /// `(position, xor)` pairs applied to the encoded bytes.
        flips: Vec<(u16, u8)>,
    },
}

#[derive(Arbitrary, Debug)]
struct TensorSpec {
    key: Key,
    dtype: FileDtype,
    shape: Shape,
    seed: u64,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Key {
    Weight,
    Bias,
    Other,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum FileDtype {
    F32,
    F64,
    F16,
    Bf16,
    I32,
    U8,
    Bool,
}

#[derive(Arbitrary, Debug)]
enum Shape {
    /// The layer's own shape for the key.
    Expected,
    /// One dimension changed by a small amount.
    Off {
        axis: u8,
        by: i8,
    },
    Any(Vec<u8>),
}

/// A tensor to encode.
struct Tensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The encoded file, and whether it holds exactly the layer's parameters unchanged.
fn build(setup: &Setup, tensors: &[TensorSpec], flips: &[(u16, u8)]) -> Option<(Vec<u8>, bool)> {
    let (weight_shape, bias_len) = setup.shapes();
    let [weight_key, bias_key] = setup.keys();
    let mut named = Vec::new();
    for t in tensors.iter().take(4) {
        let (key, expected) = match t.key {
            Key::Weight => (weight_key.clone(), weight_shape.to_vec()),
            Key::Bias => (bias_key.clone(), vec![bias_len.unwrap_or(1)]),
            Key::Other => ("other".to_string(), vec![2]),
        };
        let shape = match &t.shape {
            Shape::Expected => expected,
            Shape::Off { axis, by } => {
                let mut s = expected;
                let i = usize::from(*axis) % s.len();
                s[i] = s[i].saturating_add_signed(isize::from(*by));
                s
            }
            Shape::Any(dims) => dims.iter().take(5).map(|&d| usize::from(d % 8)).collect(),
        };
        let (dtype, size) = match t.dtype {
            FileDtype::F32 => (Dtype::F32, 4),
            FileDtype::F64 => (Dtype::F64, 8),
            FileDtype::F16 => (Dtype::F16, 2),
            FileDtype::Bf16 => (Dtype::BF16, 2),
            FileDtype::I32 => (Dtype::I32, 4),
            FileDtype::U8 => (Dtype::U8, 1),
            FileDtype::Bool => (Dtype::BOOL, 1),
        };
        let len = shape
            .iter()
            .try_fold(size, |a: usize, &d| a.checked_mul(d))?;
        if len > 1 << 16 {
            return None;
        }
        let mut rng = StdRng::seed_from_u64(t.seed);
        let data = (0..len).map(|_| rng.random::<u8>()).collect();
        let exact = t.dtype != FileDtype::I32
            && t.dtype != FileDtype::U8
            && t.dtype != FileDtype::Bool
            && matches!(t.shape, Shape::Expected);
        named.push((key, t.key, exact, Tensor { dtype, shape, data }));
    }
    let mut keys: Vec<&String> = named.iter().map(|(k, ..)| k).collect();
    keys.sort();
    keys.dedup();
    if keys.len() != named.len() {
        return None; // one key twice: not a file safetensors writes
    }
    let has = |want: Key| named.iter().any(|(_, k, exact, _)| *k == want && *exact);
    let exactly_the_layer = flips.is_empty()
        && named.len() == 1 + usize::from(bias_len.is_some())
        && has(Key::Weight)
        && (bias_len.is_none() || has(Key::Bias));
    let mut bytes =
        safetensors::serialize(named.iter().map(|(k, _, _, t)| (k.as_str(), t)), None).ok()?;
    for &(at, xor) in flips {
        if !bytes.is_empty() {
            let i = usize::from(at) % bytes.len();
            bytes[i] ^= xor;
        }
    }
    Some((bytes, exactly_the_layer))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let setup = Setup::decode(&mut u);
    let Ok(file) = File::arbitrary_take_rest(u) else {
        return;
    };
    let (bytes, exactly_the_layer) = match file {
        File::Raw(bytes) => (bytes.to_vec(), false),
        File::Built { tensors, flips } => match build(&setup, &tensors, &flips) {
            Some(built) => built,
            None => return,
        },
    };
    // A file of exactly the layer's parameters must load when the arguments are valid (the
    // layer could then be built with `init`, which makes the same checks).
    let valid = setup.own_file(0).is_some();
    if let Err(finding) = state_dict::check(&setup, &bytes, exactly_the_layer && valid) {
        panic!("{finding}");
    }
});
