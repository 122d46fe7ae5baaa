//! PyTorch `state_dict`s in safetensors files: layers load their `weight` and `bias` by key
//! prefix, and write them back under the same keys.

use std::borrow::Cow;

use ndarray::{Array1, Array4};
use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::element::Element;
use crate::error::{fmt_shape, ConvError, Result};

/// One named parameter ready for a safetensors file: dtype, shape and little-endian bytes.
///
/// # Example
/// ```
/// use conv2d::nn::Conv2dConfig;
///
/// let m = Conv2dConfig::new(3, 8, 3).init_seeded::<f32>(0)?;
/// let entries = m.state_dict("features.0")?;
/// assert_eq!(entries[0].0, "features.0.weight");
/// assert_eq!(entries[0].1.shape(), &[8, 3, 3, 3]);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl StateTensor {
    /// The tensor's shape.
    ///
    /// # Example
    /// ```
    /// let m = conv2d::nn::Conv2dConfig::new(2, 4, 1).init_seeded::<f32>(0)?;
    /// assert_eq!(m.state_dict("conv")?[1].1.shape(), &[4]);
    /// # Ok::<(), conv2d::ConvError>(())
    /// ```
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Encodes `values` of `shape` as the safetensors dtype matching `T`.
    pub(super) fn new<T: Element>(key: &str, shape: &[usize], values: &[T]) -> Result<Self> {
        let mut data = Vec::new();
        let dtype = match T::DTYPE_NAME {
            "float32" => Dtype::F32,
            "float64" => Dtype::F64,
            "float16" => Dtype::F16,
            "bfloat16" => Dtype::BF16,
            other => {
                return Err(ConvError::invalid(format!(
                    "cannot save {key}: safetensors has no {other} dtype that PyTorch reads"
                )))
            }
        };
        for v in values {
            let re = v.to_complex64().re;
            match dtype {
                Dtype::F32 => data.extend_from_slice(&(re as f32).to_le_bytes()),
                Dtype::F64 => data.extend_from_slice(&re.to_le_bytes()),
                Dtype::F16 => data.extend_from_slice(&half::f16::from_f64(re).to_le_bytes()),
                _ => data.extend_from_slice(&half::bf16::from_f64(re).to_le_bytes()),
            }
        }
        Ok(Self {
            dtype,
            shape: shape.to_vec(),
            data,
        })
    }
}

impl View for &StateTensor {
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

/// The bytes of a safetensors file holding `entries`, which `torch.load_state_dict` accepts
/// after `safetensors.torch.load_file`.
///
/// # Errors
/// Two entries with the same key, or a failure of the safetensors encoder.
///
/// # Example
/// ```
/// use conv2d::nn::{serialize_state_dict, Conv2dConfig, ConvTranspose2dConfig};
///
/// let down = Conv2dConfig::new(3, 8, 3).init_seeded::<f32>(0)?;
/// let up = ConvTranspose2dConfig::new(8, 3, 2).stride(2).init_seeded::<f32>(1)?;
/// let mut entries = down.state_dict("down")?;
/// entries.extend(up.state_dict("up")?);
/// let bytes = serialize_state_dict(&entries)?;
/// let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
/// assert_eq!(file.len(), 4);
/// let again = Conv2dConfig::new(3, 8, 3).load::<f32>(&file, "down")?;
/// assert_eq!(again.weight, down.weight);
/// # Ok::<(), conv2d::ConvError>(())
/// ```
pub fn serialize_state_dict(entries: &[(String, StateTensor)]) -> Result<Vec<u8>> {
    for (i, (key, _)) in entries.iter().enumerate() {
        if entries[..i].iter().any(|(k, _)| k == key) {
            return Err(ConvError::invalid(format!("the key {key:?} appears twice")));
        }
    }
    safetensors::serialize(entries.iter().map(|(k, t)| (k.as_str(), t)), None)
        .map_err(|e| ConvError::invalid(format!("cannot encode the state dict: {e}")))
}

/// Reads tensor `key` of `shape` as `T` (converting from any floating-point dtype, as
/// PyTorch's `load_state_dict` copies), or `None` when the file has no such key.
fn read<T: Element>(file: &SafeTensors<'_>, key: &str, shape: &[usize]) -> Result<Option<Vec<T>>> {
    let Ok(view) = file.tensor(key) else {
        return Ok(None);
    };
    if view.shape() != shape {
        return Err(ConvError::shape(format!(
            "size mismatch for {key}: copying a param with shape {} from checkpoint, the shape \
             in current model is {}",
            fmt_shape(view.shape()),
            fmt_shape(shape)
        )));
    }
    let bytes = view.data();
    let values: Vec<f64> = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        other => {
            return Err(ConvError::invalid(format!(
                "{key} has dtype {other:?}; expected F32, F64, F16 or BF16"
            )))
        }
    };
    Ok(Some(
        values.into_iter().map(|v| T::from_parts(v, 0.0)).collect(),
    ))
}

/// `prefix.name`, or `name` for an empty prefix (a model that is a single layer).
fn param_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `{prefix}.weight` of `shape` and `{prefix}.bias` of `bias_len` (which must be absent
/// when `bias_len` is `None`), as PyTorch's strict `load_state_dict` requires.
pub(super) fn load_parameters<T: Element>(
    file: &SafeTensors<'_>,
    prefix: &str,
    shape: [usize; 4],
    bias_len: Option<usize>,
) -> Result<(Array4<T>, Option<Array1<T>>)> {
    let key = |name: &str| param_key(prefix, name);
    let (weight_key, bias_key) = (key("weight"), key("bias"));
    let require = |key: &str, shape: &[usize]| {
        read::<T>(file, key, shape)?
            .ok_or_else(|| ConvError::invalid(format!("Missing key in state_dict: {key:?}")))
    };
    let weight = Array4::from_shape_vec(shape, require(&weight_key, &shape)?)
        .map_err(|e| ConvError::shape(format!("cannot shape {weight_key}: {e}")))?;
    let bias = match bias_len {
        Some(len) => Some(Array1::from(require(&bias_key, &[len])?)),
        None if file.tensor(&bias_key).is_ok() => {
            return Err(ConvError::invalid(format!(
                "Unexpected key in state_dict: {bias_key:?} (the layer was configured with \
                 bias=false)"
            )))
        }
        None => None,
    };
    Ok((weight, bias))
}

/// The `weight` (and `bias`) entries of a layer under `prefix`.
pub(super) fn parameters_state_dict<T: Element>(
    prefix: &str,
    weight: &Array4<T>,
    bias: Option<&Array1<T>>,
) -> Result<Vec<(String, StateTensor)>> {
    let key = |name: &str| param_key(prefix, name);
    let weight_key = key("weight");
    let values: Vec<T> = weight.iter().copied().collect();
    let mut entries = vec![(
        weight_key.clone(),
        StateTensor::new(&weight_key, weight.shape(), &values)?,
    )];
    if let Some(bias) = bias {
        let bias_key = key("bias");
        let values: Vec<T> = bias.iter().copied().collect();
        entries.push((
            bias_key.clone(),
            StateTensor::new(&bias_key, &[bias.len()], &values)?,
        ));
    }
    Ok(entries)
}
