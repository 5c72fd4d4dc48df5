//! Named tensors in and out of a model, under upstream's `state_dict` names and PyTorch's
//! layout (`Linear` weights `[out, in]`), through burn-store's module snapshots and adapters.
//!
//! - [`model_to_safetensors`] / [`load_safetensors`]: our checkpoint tensors;
//! - [`load_named`]: any `(name, data)` list (fixtures, imports); every expected tensor must be
//!   present with its shape and nothing else may be there — the error names each offender;
//! - bf16/f16 tensors (upstream GPU checkpoints) are upcast to float32 master weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::ParamId;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use burn_store::{
    BurnToPyTorchAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot,
};
use safetensors::tensor::{Dtype as StDtype, TensorView};

use crate::gpt::Gpt;

/// Weights that do not fit a model, or a tensor file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file is not readable as tensors.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Tensors missing, unexpected or mis-shaped for the model's config.
    #[error(
        "{path}: weights do not match the model config:{}{}{}",
        list("missing", missing),
        list("unexpected", unexpected),
        list("wrong shape", wrong_shape)
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Tensors the model needs that the file lacks.
        missing: Vec<String>,
        /// Tensors in the file the model does not have.
        unexpected: Vec<String>,
        /// `name: expected […], found […]`.
        wrong_shape: Vec<String>,
    },
}

fn list(what: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(" {what}: {}.", items.join(", "))
    }
}

/// Casts floating tensors to float32 (after the layout adapter).
#[derive(Debug, Clone)]
struct ToF32;

impl ModuleAdapter for ToF32 {
    fn adapt(&self, s: &TensorSnapshot) -> TensorSnapshot {
        if s.dtype == DType::F32 || !s.dtype.is_float() {
            return s.clone();
        }
        let data = s.clone_data_fn();
        TensorSnapshot::from_closure(
            Rc::new(move || data().map(|d| d.convert_dtype(DType::F32))),
            DType::F32,
            s.shape.clone(),
            s.path_stack.clone().unwrap_or_default(),
            s.container_stack.clone().unwrap_or_default(),
            s.tensor_id.unwrap_or_default(),
        )
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// The model's tensors under upstream's names, in PyTorch layout, as `(name, data)`.
pub fn named_tensors<B: Backend>(
    model: &Gpt<B>,
) -> Result<Vec<(String, TensorData)>, WeightsError> {
    let snaps = model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), false);
    snaps
        .into_iter()
        .map(|s| {
            let name = s.full_path();
            let data = s.to_data().map_err(|e| WeightsError::Unreadable {
                path: PathBuf::from(&name),
                reason: format!("{e:?}"),
            })?;
            Ok((name, data))
        })
        .collect()
}

fn st_dtype(d: DType) -> Option<StDtype> {
    Some(match d {
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::I64 => StDtype::I64,
        DType::I32 => StDtype::I32,
        _ => return None,
    })
}

fn burn_dtype(d: StDtype) -> Option<DType> {
    Some(match d {
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::I64 => DType::I64,
        StDtype::I32 => DType::I32,
        _ => return None,
    })
}

/// Serialises named tensors as safetensors bytes, with string metadata.
pub fn to_safetensors(
    tensors: &[(String, TensorData)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, WeightsError> {
    let bad = |reason: String| WeightsError::Unreadable {
        path: PathBuf::from("<safetensors>"),
        reason,
    };
    let views = tensors
        .iter()
        .map(|(name, d)| {
            let dtype = st_dtype(d.dtype)
                .ok_or_else(|| bad(format!("{name}: unsupported dtype {:?}", d.dtype)))?;
            let view = TensorView::new(dtype, d.shape.to_vec(), d.as_bytes())
                .map_err(|e| bad(format!("{name}: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>, WeightsError>>()?;
    safetensors::serialize(views, metadata).map_err(|e| bad(e.to_string()))
}

/// The model's weights as safetensors bytes (upstream names, PyTorch layout).
pub fn model_to_safetensors<B: Backend>(model: &Gpt<B>) -> Result<Vec<u8>, WeightsError> {
    let meta = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    to_safetensors(&named_tensors(model)?, Some(meta))
}

/// Every tensor of a safetensors buffer whose name starts with `prefix` (prefix removed).
pub fn read_safetensors(
    bytes: &[u8],
    prefix: &str,
    origin: &Path,
) -> Result<Vec<(String, TensorData)>, WeightsError> {
    let st =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Unreadable {
            path: origin.to_path_buf(),
            reason: format!("not a safetensors file: {e}"),
        })?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let Some(stripped) = name.strip_prefix(prefix) else {
            continue;
        };
        let dtype = burn_dtype(view.dtype()).ok_or_else(|| WeightsError::Unreadable {
            path: origin.to_path_buf(),
            reason: format!("{name}: unsupported dtype {:?}", view.dtype()),
        })?;
        out.push((
            stripped.to_string(),
            TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Loads `(name, data)` tensors (upstream names, PyTorch layout, any float dtype) into `model`.
/// All of the model's tensors must be given with the right shapes, and no others.
pub fn load_named<B: Backend>(
    model: &mut Gpt<B>,
    tensors: Vec<(String, TensorData)>,
    origin: &Path,
) -> Result<(), WeightsError> {
    let mut given: BTreeMap<String, ()> = BTreeMap::new();
    let snapshots: Vec<TensorSnapshot> = tensors
        .into_iter()
        .map(|(name, data)| {
            given.insert(name.clone(), ());
            let path: Vec<String> = name.split('.').map(str::to_string).collect();
            TensorSnapshot::from_data(data, path, Vec::new(), ParamId::new())
        })
        .collect();
    let adapter = PyTorchToBurnAdapter.chain(ToF32);
    let result = model.apply(snapshots, None, Some(Box::new(adapter)), false);
    let missing: Vec<String> = result.missing.iter().map(|(p, _)| p.clone()).collect();
    let mut wrong_shape = Vec::new();
    let mut unreadable = Vec::new();
    for e in &result.errors {
        match e {
            burn_store::ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => {
                // Shown in PyTorch layout, as the file holds it (burn's Linear is transposed).
                let linear = expected.num_dims() == 2
                    && !path.contains("wte")
                    && !path.starts_with("value_embeds");
                let show = |s: &burn::tensor::Shape| {
                    let mut d = s.as_slice().to_vec();
                    if linear {
                        d.reverse();
                    }
                    d
                };
                wrong_shape.push(format!(
                    "{path} (expected {:?}, found {:?})",
                    show(expected),
                    show(found)
                ));
            }
            other => unreadable.push(other.to_string()),
        }
    }
    if !unreadable.is_empty() {
        return Err(WeightsError::Unreadable {
            path: origin.to_path_buf(),
            reason: unreadable.join("; "),
        });
    }
    let unexpected = result.unused.clone();
    if !missing.is_empty() || !unexpected.is_empty() || !wrong_shape.is_empty() {
        return Err(WeightsError::Mismatch {
            path: origin.to_path_buf(),
            missing,
            unexpected,
            wrong_shape,
        });
    }
    Ok(())
}

/// Loads safetensors bytes written by [`model_to_safetensors`] (or any file with upstream's
/// names) into `model`.
pub fn load_safetensors<B: Backend>(
    model: &mut Gpt<B>,
    bytes: &[u8],
    origin: &Path,
) -> Result<(), WeightsError> {
    let tensors = read_safetensors(bytes, "", origin)?;
    load_named(model, tensors, origin)
}

/// The gradient of every parameter under upstream's names, in PyTorch layout (parameters
/// without a gradient are skipped).
pub fn named_grads<B: burn::tensor::backend::AutodiffBackend>(
    model: &Gpt<B>,
    grads: &mut B::Gradients,
) -> Result<Vec<(String, TensorData)>, WeightsError> {
    let params = burn::optim::GradientsParams::from_module(grads, model);
    named_grad_params(model, &params)
}

/// Like [`named_grads`], from gradients already collected per parameter (e.g. accumulated).
pub fn named_grad_params<B: burn::tensor::backend::AutodiffBackend>(
    model: &Gpt<B>,
    params: &burn::optim::GradientsParams,
) -> Result<Vec<(String, TensorData)>, WeightsError> {
    let mut out = Vec::new();
    for snap in model.collect(None, None, false) {
        let Some(id) = snap.tensor_id else { continue };
        let grad = match snap.shape.num_dims() {
            1 => params.get::<B::InnerBackend, 1>(id).map(|g| g.into_data()),
            2 => params.get::<B::InnerBackend, 2>(id).map(|g| g.into_data()),
            _ => None,
        };
        let Some(data) = grad else { continue };
        let with_ctx = TensorSnapshot::from_data(
            data,
            snap.path_stack.clone().unwrap_or_default(),
            snap.container_stack.clone().unwrap_or_default(),
            id,
        );
        let adapted = BurnToPyTorchAdapter.adapt(&with_ctx);
        let data = adapted.to_data().map_err(|e| WeightsError::Unreadable {
            path: PathBuf::from(snap.full_path()),
            reason: format!("{e:?}"),
        })?;
        out.push((snap.full_path(), data));
    }
    Ok(out)
}

/// Where a parameter sits in the model, for optimizers and state files.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// Upstream `state_dict` name (`transformer.h.0.attn.c_q.weight`).
    pub name: String,
    /// burn's id of the parameter (gradients are keyed by it).
    pub id: ParamId,
    /// Shape in PyTorch layout (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    /// Whether burn stores it transposed (`nn::Linear` weights are `[in, out]`).
    pub transposed: bool,
}

/// Every parameter of `model`, in module order, with its upstream name and layout.
pub fn param_infos<B: Backend>(model: &Gpt<B>) -> Vec<ParamInfo> {
    model
        .collect(None, None, false)
        .into_iter()
        .filter_map(|s| {
            let id = s.tensor_id?;
            let name = s.full_path();
            let transposed = s.module_type().as_deref() == Some("Struct:Linear")
                && name.ends_with("weight")
                && s.shape.num_dims() == 2;
            let mut shape = s.shape.as_slice().to_vec();
            if transposed {
                shape.reverse();
            }
            Some(ParamInfo {
                name,
                id,
                shape,
                transposed,
            })
        })
        .collect()
}
