//! The PyTorch reference fixtures (`$NANOCHAT_FIXTURE_DIR`, default `../shared/fixtures/model`):
//! pairs `<name>.safetensors` + `<name>.json` written from upstream's `nanochat/gpt.py`, holding
//! the model config, the parameters (`param.*`), the inputs (`input.*`) and PyTorch's outputs
//! (`output.logits`, `output.loss`, gradients, …).
//!
//! [`forward_parity`] runs a fixture's forward on any backend and compares it with the CPU
//! backend and with PyTorch: what the parity tests check on the CPU and WGPU, and what
//! `nanochat bench parity` checks on a GPU (bf16 tolerance there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use nanochat_core::{ModelConfig, Validate};
use serde::Serialize;

use crate::checkpoint::ModelError;
use crate::weights::{WeightsError, load_named, read_safetensors};
use crate::{ComputeDtype, FusedOps, Gpt};

/// One fixture pair.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// `<name>` of the pair.
    pub name: String,
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// The model it was made with.
    pub config: ModelConfig,
    /// The `.json` side (config, scalars, counts).
    pub json: serde_json::Value,
    /// Every tensor, by name.
    pub tensors: BTreeMap<String, TensorData>,
}

impl Fixture {
    /// Reads the pair whose tensors are in `path`.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::Upstream {
            path: path.to_path_buf(),
            reason,
        };
        let json_path = path.with_extension("json");
        let text =
            std::fs::read(&json_path).map_err(|e| bad(format!("{}: {e}", json_path.display())))?;
        let json: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("{}: {e}", json_path.display())))?;
        let config: ModelConfig = serde_json::from_value(json["config"].clone())
            .map_err(|e| bad(format!("{}: config: {e}", json_path.display())))?;
        config.validate().map_err(|e| ModelError::Config {
            path: json_path.clone(),
            source: Box::new(e),
        })?;
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let tensors = read_safetensors(&bytes, "", path)?.into_iter().collect();
        let name = path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        Ok(Fixture {
            name,
            path: path.to_path_buf(),
            config,
            json,
            tensors,
        })
    }

    /// Every pair in `dir`, smallest first.
    pub fn all(dir: &Path) -> Result<Vec<Self>, ModelError> {
        let entries = std::fs::read_dir(dir).map_err(|e| ModelError::Upstream {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "safetensors")
                    && p.with_extension("json").exists()
            })
            .collect();
        paths.sort_by_key(|p| std::fs::metadata(p).map_or(u64::MAX, |m| m.len()));
        paths.iter().map(|p| Self::load(p)).collect()
    }

    /// The tensors under `prefix` (e.g. `param.`), with the prefix removed.
    pub fn prefixed(&self, prefix: &str) -> Vec<(String, TensorData)> {
        self.tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
            .collect()
    }

    /// The tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<&TensorData, WeightsError> {
        self.tensors
            .get(name)
            .ok_or_else(|| WeightsError::Unreadable {
                path: self.path.clone(),
                reason: format!("no tensor `{name}`"),
            })
    }

    /// The fixture's model with its parameters on `device`.
    pub fn model<B: FusedOps>(&self, device: &B::Device) -> Result<Gpt<B>, ModelError> {
        let mut model =
            Gpt::<B>::skeleton(&self.config, device).map_err(|e| ModelError::Config {
                path: self.path.clone(),
                source: Box::new(e),
            })?;
        load_named(&mut model, self.prefixed("param."), &self.path)?;
        Ok(model)
    }

    /// The logits of `input.idx` on `device` in `dtype`, flattened, as float32.
    pub fn logits<B: FusedOps>(
        &self,
        device: &B::Device,
        dtype: ComputeDtype,
    ) -> Result<Vec<f32>, ModelError> {
        let model = self.model::<B>(device)?.with_compute_dtype(dtype);
        let idx = self.tensor("input.idx")?;
        let (shape, ids) = (idx.shape.clone(), idx.clone().convert::<i64>());
        let idx = Tensor::<B, 2, Int>::from_data(ids, device).reshape([shape[0], shape[1]]);
        let logits = model.forward(idx, None).into_data().convert::<f32>();
        logits.to_vec::<f32>().map_err(|e| ModelError::Upstream {
            path: self.path.clone(),
            reason: format!("logits: {e:?}"),
        })
    }
}

/// The largest difference of `a` and `b` relative to the largest magnitude of `b`.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(f32::MIN_POSITIVE, f32::max);
    if a.len() != b.len() {
        f32::INFINITY
    } else {
        err / scale
    }
}

/// A forward on one backend against the CPU backend and PyTorch.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardParity {
    /// The fixture.
    pub fixture: String,
    /// The compute dtype of the checked forward.
    pub dtype: String,
    /// [`max_rel_diff`] against the CPU backend in float32.
    pub vs_cpu: f32,
    /// [`max_rel_diff`] against PyTorch's `output.logits`.
    pub vs_torch: f32,
    /// The tolerance for `dtype` (float32 1e-4, bfloat16 3e-2).
    pub tolerance: f32,
    /// Both within the tolerance.
    pub ok: bool,
}

/// Runs `fixture`'s forward on `device` (backend `B`) in `dtype` and compares it with the
/// float32 forward of the CPU backend `Cpu` and with PyTorch's logits.
pub fn forward_parity<B: FusedOps, Cpu: FusedOps>(
    fixture: &Fixture,
    device: &B::Device,
    dtype: ComputeDtype,
) -> Result<ForwardParity, ModelError> {
    let cpu = fixture.logits::<Cpu>(&Default::default(), ComputeDtype::F32)?;
    let torch = fixture.tensor("output.logits")?.clone().convert::<f32>();
    let torch = torch.to_vec::<f32>().map_err(|e| ModelError::Upstream {
        path: fixture.path.clone(),
        reason: format!("output.logits: {e:?}"),
    })?;
    let ours = fixture.logits::<B>(device, dtype)?;
    let tolerance = match dtype {
        ComputeDtype::F32 => 1e-4,
        ComputeDtype::BF16 => 3e-2,
    };
    let (vs_cpu, vs_torch) = (max_rel_diff(&ours, &cpu), max_rel_diff(&ours, &torch));
    Ok(ForwardParity {
        fixture: fixture.name.clone(),
        dtype: format!("{dtype:?}"),
        vs_cpu,
        vs_torch,
        tolerance,
        ok: vs_cpu <= tolerance && vs_torch <= tolerance,
    })
}
