//! The checks of the `state_dict` fuzz target, shared with
//! `conv2d/tests/integration/fuzz_properties.rs`.
//!
//! A layer (`nn.Conv2d` or `nn.ConvTranspose2d` with every constructor argument), an element
//! type and a key prefix are decoded with [`Setup::decode`]; [`check`] then loads the layer
//! from a safetensors file of arbitrary bytes and checks that
//! - neither `SafeTensors::deserialize` nor `load` panics, and a file holding exactly the
//!   layer's parameters (`must_load`) loads;
//! - a loaded layer has PyTorch's parameter shapes and the file's values, converted as
//!   `load_state_dict` converts them;
//! - it survives `state_dict` + `serialize_state_dict` + `load` unchanged (complex layers must
//!   refuse to be saved instead);
//! - its `forward` on a small input is exactly the functional call with its options.

use conv2d::nn::{serialize_state_dict, Conv2dConfig, ConvTranspose2dConfig};
use conv2d::{conv2d, conv_transpose2d, Element, Padding, PaddingMode, Pair};
use half::{bf16, f16};
use ndarray::{Array, Array1, Array4, Dimension};
use num_complex::Complex;
use rand::{rngs::StdRng, Rng, SeedableRng};
use safetensors::{Dtype as FileDtype, SafeTensors};

use super::api::Source;

/// Most elements of a layer's weight that [`check`] runs `forward` with.
const MAX_PARAMS: usize = 4096;

/// The layer a file is loaded into.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layer {
    Conv(Conv2dConfig),
    Transposed(ConvTranspose2dConfig),
}

/// The element type the layer is loaded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    F16,
    Bf16,
    Complex32,
    Complex64,
}

/// What a file is loaded into.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    pub layer: Layer,
    pub dtype: Dtype,
    pub prefix: &'static str,
}

impl Setup {
    /// Reads a setup: small arguments mostly, zeros and huge values now and then.
    pub fn decode(src: &mut impl Source) -> Setup {
        let mut int = |lo: usize, hi: usize| src.int_in(lo as u64, hi as u64) as usize;
        let mut size = |lo: usize, hi: usize| match int(0, 15) {
            0 => 0,
            1 => usize::MAX,
            2 => 1 << 40,
            _ => int(lo, hi),
        };
        let (cin, cout) = (size(1, 6), size(1, 6));
        let kernel = Pair::new(size(1, 4), size(1, 4));
        let (stride, dilation) = (Pair::new(size(1, 3), size(1, 3)), Pair::new(size(1, 2), 1));
        let groups = size(1, 3);
        let padding = Pair::new(size(0, 2), size(0, 2));
        let bias = int(0, 1) == 1;
        let padding_mode = [
            PaddingMode::Zeros,
            PaddingMode::Zeros,
            PaddingMode::Reflect,
            PaddingMode::Replicate,
            PaddingMode::Circular,
        ][int(0, 4)];
        let layer = if int(0, 1) == 0 {
            let padding = match int(0, 5) {
                4 => Padding::Same,
                5 => Padding::Valid,
                _ => Padding::Explicit(padding),
            };
            Layer::Conv(
                Conv2dConfig::new(cin, cout, kernel)
                    .stride(stride)
                    .padding(padding)
                    .dilation(dilation)
                    .groups(groups)
                    .bias(bias)
                    .padding_mode(padding_mode),
            )
        } else {
            let output_padding = Pair::new(int(0, 2), int(0, 2));
            Layer::Transposed(
                ConvTranspose2dConfig::new(cin, cout, kernel)
                    .stride(stride)
                    .padding(padding)
                    .output_padding(output_padding)
                    .dilation(dilation)
                    .groups(groups)
                    .bias(bias)
                    .padding_mode(padding_mode),
            )
        };
        let dtype = [
            Dtype::F32,
            Dtype::F64,
            Dtype::F16,
            Dtype::Bf16,
            Dtype::Complex32,
            Dtype::Complex64,
        ][int(0, 5)];
        let prefix = ["", "conv", "features.0", "model.up.1"][int(0, 3)];
        Setup {
            layer,
            dtype,
            prefix,
        }
    }

    /// The keys of the layer's weight and bias.
    pub fn keys(&self) -> [String; 2] {
        ["weight", "bias"].map(|name| match self.prefix {
            "" => name.to_string(),
            prefix => format!("{prefix}.{name}"),
        })
    }

    /// PyTorch's weight shape for the layer and its bias length (without checking the
    /// arguments).
    pub fn shapes(&self) -> ([usize; 4], Option<usize>) {
        match self.layer {
            Layer::Conv(c) => (
                [
                    c.out_channels,
                    c.in_channels / c.groups.max(1),
                    c.kernel_size.h,
                    c.kernel_size.w,
                ],
                c.bias.then_some(c.out_channels),
            ),
            Layer::Transposed(c) => (
                [
                    c.in_channels,
                    c.out_channels / c.groups.max(1),
                    c.kernel_size.h,
                    c.kernel_size.w,
                ],
                c.bias.then_some(c.out_channels),
            ),
        }
    }

    /// The layer's own parameters (drawn from `seed`) as a safetensors file, when its
    /// arguments are valid and the weight is small.
    pub fn own_file(&self, seed: u64) -> Option<Vec<u8>> {
        let (shape, _) = self.shapes();
        if shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b))? > MAX_PARAMS {
            return None;
        }
        let entries = match self.layer {
            Layer::Conv(c) => c.init_seeded::<f32>(seed).ok()?.state_dict(self.prefix),
            Layer::Transposed(c) => c.init_seeded::<f32>(seed).ok()?.state_dict(self.prefix),
        };
        serialize_state_dict(&entries.ok()?).ok()
    }
}

/// Loads `file` into the layer of `setup` and checks the result; `Err` describes a finding.
pub fn check(setup: &Setup, file: &[u8], must_load: bool) -> Result<(), String> {
    let outcome = match setup.dtype {
        Dtype::F32 => load::<f32>(setup, file, must_load),
        Dtype::F64 => load::<f64>(setup, file, must_load),
        Dtype::F16 => load::<f16>(setup, file, must_load),
        Dtype::Bf16 => load::<bf16>(setup, file, must_load),
        Dtype::Complex32 => load::<Complex<f32>>(setup, file, must_load),
        Dtype::Complex64 => load::<Complex<f64>>(setup, file, must_load),
    };
    outcome.map_err(|finding| format!("{finding}\nin {setup:#?}"))
}

/// Equal, with NaN equal to NaN (bit patterns of NaN payloads aside).
fn same<T: Element>(a: &T, b: &T) -> bool {
    let (a, b) = (a.to_complex64(), b.to_complex64());
    let part = |x: f64, y: f64| x == y || (x.is_nan() && y.is_nan());
    part(a.re, b.re) && part(a.im, b.im)
}

fn same_all<'a, T: Element>(
    a: impl IntoIterator<Item = &'a T>,
    b: impl IntoIterator<Item = &'a T>,
) -> bool {
    let (a, b): (Vec<_>, Vec<_>) = (a.into_iter().collect(), b.into_iter().collect());
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| same(*x, *y))
}

/// The file's values of `key` as `T`, as `load_state_dict` converts them.
fn file_values<T: Element>(file: &SafeTensors<'_>, key: &str) -> Result<Vec<T>, String> {
    let view = file
        .tensor(key)
        .map_err(|e| format!("{key} loaded, but the file has none: {e}"))?;
    let bytes = view.data();
    let values: Vec<f64> = match view.dtype() {
        FileDtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        FileDtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        FileDtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        FileDtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        other => return Err(format!("{key} of dtype {other:?} loaded")),
    };
    Ok(values.into_iter().map(|v| T::from_parts(v, 0.0)).collect())
}

/// A loaded layer of either kind.
enum AnyLayer<T: Element> {
    Conv(conv2d::nn::Conv2d<T>),
    Transposed(conv2d::nn::ConvTranspose2d<T>),
}

impl<T: Element> AnyLayer<T> {
    fn load(setup: &Setup, file: &SafeTensors<'_>) -> conv2d::Result<Self> {
        Ok(match setup.layer {
            Layer::Conv(c) => AnyLayer::Conv(c.load::<T>(file, setup.prefix)?),
            Layer::Transposed(c) => AnyLayer::Transposed(c.load::<T>(file, setup.prefix)?),
        })
    }

    fn weight(&self) -> &Array4<T> {
        match self {
            AnyLayer::Conv(m) => &m.weight,
            AnyLayer::Transposed(m) => &m.weight,
        }
    }

    fn bias(&self) -> Option<&Array1<T>> {
        match self {
            AnyLayer::Conv(m) => m.bias.as_ref(),
            AnyLayer::Transposed(m) => m.bias.as_ref(),
        }
    }
}

fn load<T: Element>(setup: &Setup, bytes: &[u8], must_load: bool) -> Result<(), String> {
    let file = match SafeTensors::deserialize(bytes) {
        Ok(file) => file,
        Err(e) if must_load => return Err(format!("the layer's own file is unreadable: {e}")),
        Err(_) => return Ok(()),
    };
    let loaded = match AnyLayer::<T>::load(setup, &file) {
        Ok(loaded) => loaded,
        Err(e) if must_load => return Err(format!("the layer's own file did not load: {e:?}")),
        Err(_) => return Ok(()),
    };
    let (shape, bias_len) = setup.shapes();
    let [weight_key, bias_key] = setup.keys();
    if loaded.weight().shape() != shape {
        return Err(format!(
            "weight of shape {:?}, PyTorch's is {shape:?}",
            loaded.weight().shape()
        ));
    }
    if loaded.bias().map(Array1::len) != bias_len {
        return Err(format!(
            "bias of length {:?}, expected {bias_len:?}",
            loaded.bias().map(Array1::len)
        ));
    }
    if !same_all(loaded.weight(), &file_values::<T>(&file, &weight_key)?) {
        return Err("the weight differs from the file's".into());
    }
    if let Some(bias) = loaded.bias() {
        if !same_all(bias, &file_values::<T>(&file, &bias_key)?) {
            return Err("the bias differs from the file's".into());
        }
    }
    round_trip(setup, &loaded)?;
    forward(setup, &loaded)
}

/// `state_dict` + `serialize_state_dict` + `load` gives the same parameters back.
fn round_trip<T: Element>(setup: &Setup, loaded: &AnyLayer<T>) -> Result<(), String> {
    let entries = match loaded {
        AnyLayer::Conv(m) => m.state_dict(setup.prefix),
        AnyLayer::Transposed(m) => m.state_dict(setup.prefix),
    };
    let entries = match entries {
        Err(_) if T::IS_COMPLEX => return Ok(()),
        Err(e) => return Err(format!("state_dict: {e:?}")),
        Ok(_) if T::IS_COMPLEX => return Err("a complex layer was saved".into()),
        Ok(entries) => entries,
    };
    let bytes = serialize_state_dict(&entries).map_err(|e| format!("serialize: {e:?}"))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| format!("deserialize: {e}"))?;
    let again = AnyLayer::<T>::load(setup, &file).map_err(|e| format!("reload: {e:?}"))?;
    let same_bias = match (again.bias(), loaded.bias()) {
        (Some(a), Some(b)) => same_all(a, b),
        (a, b) => a.is_none() && b.is_none(),
    };
    if !same_all(again.weight(), loaded.weight()) || !same_bias {
        return Err("the parameters changed through state_dict and load".into());
    }
    Ok(())
}

/// Whether two results are the same error or the same values.
fn same_result<T: Element, D: Dimension>(
    a: &conv2d::Result<Array<T, D>>,
    b: &conv2d::Result<Array<T, D>>,
) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a.shape() == b.shape() && same_all(a, b),
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

/// The layer's forward on a small input equals the functional call with its options.
fn forward<T: Element>(setup: &Setup, loaded: &AnyLayer<T>) -> Result<(), String> {
    let (shape, _) = setup.shapes();
    let channels = match setup.layer {
        Layer::Conv(c) => c.in_channels,
        Layer::Transposed(c) => c.in_channels,
    };
    let (kh, kw) = (shape[2], shape[3]);
    // Huge strides, paddings and dilations are the `conv2d_api` target's business.
    let options = match setup.layer {
        Layer::Conv(c) => match c.padding {
            Padding::Explicit(p) => [c.stride, c.dilation, p],
            Padding::Same | Padding::Valid => [c.stride, c.dilation, c.kernel_size],
        },
        Layer::Transposed(c) => [c.stride, c.dilation, c.padding],
    };
    let large = options.iter().any(|p| p.h.max(p.w) > 64);
    if large || loaded.weight().len() > MAX_PARAMS || channels > 64 || kh > 8 || kw > 8 {
        return Ok(());
    }
    let mut rng = StdRng::seed_from_u64(kh as u64 * 31 + kw as u64);
    let dims = (1, channels, 2 * kh + 1, 2 * kw + 3);
    let x = Array4::from_shape_fn(dims, |_| T::from_parts(rng.random_range(-1.0..1.0), 0.0));
    let bias = loaded.bias().map(|b| b.view());
    let (layer, functional) = match (loaded, setup.layer) {
        (AnyLayer::Conv(m), Layer::Conv(c)) => {
            (m.forward(&x), conv2d(&x, &m.weight, bias, &c.options()))
        }
        (AnyLayer::Transposed(m), Layer::Transposed(c)) => (
            m.forward(&x),
            conv_transpose2d(&x, &m.weight, bias, &c.options()),
        ),
        _ => unreachable!("loaded as configured"),
    };
    if !same_result(&layer, &functional) {
        return Err(format!(
            "the layer's forward and the functional call differ: {:?} vs {:?}",
            layer.as_ref().map(|y| y.shape().to_vec()),
            functional.as_ref().map(|y| y.shape().to_vec())
        ));
    }
    Ok(())
}
