//! The combined MuonAdamW optimizer (upstream HEAD `nanochat/optim.py` `MuonAdamW` and
//! `GPT.setup_optimizer` in `nanochat/gpt.py`).
//!
//! Parameter groups come from the model's upstream names: `lm_head`, `wte`, `value_embeds`,
//! `resid_lambdas`, `x0_lambdas` and the smear/backout scalars go to AdamW with their own
//! learning rates, betas and weight decays (embedding/unembedding rates scaled by
//! `(n_embd/768)^-0.5`); every block matrix goes to Muon, one group per shape, stacked so that
//! one batched matmul orthogonalises the whole group. State lives on the device, in float32,
//! and is saved/loaded as named tensors next to the model ([`MuonAdamW::state_tensors`]).
//!
//! Single process: upstream's ZeRO-2 sharding degenerates to full updates with one rank.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use nanochat_core::{OptimizerConfig, OptimizerType};
use nanochat_model::Gpt;
use nanochat_model::weights::{ParamInfo, param_infos};

use crate::adamw::{AdamHyper, AdamState, adamw_step};
use crate::muon::{MuonHyper, MuonState, muon_step};
use nanochat_model::FusedOps;

/// Why an optimizer could not be built, stepped or restored.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// A parameter name no group claims (a model this optimizer does not know).
    #[error("parameter {0} belongs to no optimizer group")]
    UnknownParam(String),
    /// A parameter got no gradient in the backward pass.
    #[error("parameter {0} has no gradient")]
    MissingGrad(String),
    /// Saved optimizer state does not fit this model.
    #[error("optimizer state does not fit the model: {0}")]
    State(String),
}

/// Values that change every step (the schedules of base_train / SFT).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScalars {
    /// Learning-rate multiplier applied to every group's initial lr.
    pub lr_multiplier: f64,
    /// Muon momentum.
    pub muon_momentum: f64,
    /// Muon (cautious) weight decay.
    pub muon_weight_decay: f64,
}

/// How a group updates its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupKind {
    /// AdamW with these betas, eps and weight decay.
    AdamW {
        /// `(beta1, beta2)`.
        betas: [f64; 2],
        /// Denominator epsilon.
        eps: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
    },
    /// Muon over same-shape matrices `[out, in]`.
    Muon {
        /// The matrix shape in PyTorch layout.
        shape: [usize; 2],
    },
}

/// One parameter group (upstream's `param_groups` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGroup {
    /// `lm_head`, `wte`, `value_embeds`, `resid_lambdas`, `x0_lambdas`, `gates`, `muon_{m}x{n}`.
    pub name: String,
    /// Update rule.
    pub kind: GroupKind,
    /// Learning rate at multiplier 1 (upstream's `initial_lr`).
    pub initial_lr: f64,
    /// Upstream names of its parameters, in module order.
    pub params: Vec<String>,
}

/// Base learning rates after batch scaling (what base_train passes to `setup_optimizer`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupLrs {
    /// lm_head.
    pub unembedding_lr: f64,
    /// wte (value embeddings get half).
    pub embedding_lr: f64,
    /// Muon matrices.
    pub matrix_lr: f64,
    /// resid (×0.01) and x0 lambdas.
    pub scalar_lr: f64,
    /// smear/backout scalars (fixed, not batch-scaled).
    pub gate_lr: f64,
}

impl GroupLrs {
    /// The config's rates times `batch_lr_scale` (√(B/B_ref)), except the fixed gate rate.
    pub fn scaled(cfg: &OptimizerConfig, batch_lr_scale: f64) -> Self {
        Self {
            unembedding_lr: cfg.unembedding_lr * batch_lr_scale,
            embedding_lr: cfg.embedding_lr * batch_lr_scale,
            matrix_lr: cfg.matrix_lr * batch_lr_scale,
            scalar_lr: cfg.scalar_lr * batch_lr_scale,
            gate_lr: cfg.gate_lr,
        }
    }
}

/// Builds upstream's parameter groups for a model with `model_dim` = n_embd.
pub fn build_groups(
    infos: &[ParamInfo],
    cfg: &OptimizerConfig,
    lrs: &GroupLrs,
    model_dim: usize,
) -> Result<Vec<ParamGroup>, OptimError> {
    let scale = (model_dim as f64 / 768.0).powf(-0.5);
    let adam = |g: &nanochat_core::AdamGroup| GroupKind::AdamW {
        betas: g.betas,
        eps: cfg.adam_eps,
        weight_decay: g.weight_decay,
    };
    let mut groups = vec![
        ("lm_head", adam(&cfg.lm_head), lrs.unembedding_lr * scale),
        ("wte", adam(&cfg.wte), lrs.embedding_lr * scale),
        (
            "value_embeds",
            adam(&cfg.value_embeds),
            lrs.embedding_lr * scale * 0.5,
        ),
        (
            "resid_lambdas",
            adam(&cfg.resid_lambdas),
            lrs.scalar_lr * 0.01,
        ),
        ("x0_lambdas", adam(&cfg.x0_lambdas), lrs.scalar_lr),
        ("gates", adam(&cfg.gates), lrs.gate_lr),
    ]
    .into_iter()
    .map(|(name, kind, lr)| ParamGroup {
        name: name.to_string(),
        kind,
        initial_lr: lr,
        params: Vec::new(),
    })
    .collect::<Vec<_>>();
    let mut matrices: BTreeMap<[usize; 2], Vec<String>> = BTreeMap::new();
    for info in infos {
        let n = info.name.as_str();
        let slot = match n {
            "lm_head.weight" => 0,
            "transformer.wte.weight" => 1,
            _ if n.starts_with("value_embeds.") => 2,
            "resid_lambdas" => 3,
            "x0_lambdas" => 4,
            "smear_gate.weight" | "smear_lambda" | "backout_lambda" => 5,
            _ if n.starts_with("transformer.h.") && info.shape.len() == 2 => {
                matrices
                    .entry([info.shape[0], info.shape[1]])
                    .or_default()
                    .push(n.to_string());
                continue;
            }
            _ => return Err(OptimError::UnknownParam(n.to_string())),
        };
        groups[slot].params.push(n.to_string());
    }
    groups.retain(|g| !g.params.is_empty());
    for (shape, params) in matrices {
        let kind = match cfg.optimizer {
            OptimizerType::MuonAdamW => GroupKind::Muon { shape },
            // AdamW everywhere: block matrices with the scalar groups' betas.
            OptimizerType::AdamW => GroupKind::AdamW {
                betas: cfg.gates.betas,
                eps: cfg.adam_eps,
                weight_decay: cfg.weight_decay,
            },
        };
        groups.push(ParamGroup {
            name: format!("muon_{}x{}", shape[0], shape[1]),
            kind,
            initial_lr: lrs.matrix_lr,
            params,
        });
    }
    Ok(groups)
}

/// A parameter and its gradient, flattened (element order of burn's layout).
struct Slot<B: Backend> {
    value: Tensor<B, 1>,
    grad: Option<Tensor<B, 1>>,
    dims: Vec<usize>,
}

struct Collect<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    slots: HashMap<ParamId, Slot<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val().inner();
        let dims = value.dims().to_vec();
        let n: usize = dims.iter().product();
        let grad = self
            .grads
            .remove::<B::InnerBackend, D>(param.id)
            .map(|g| g.reshape([n]));
        self.slots.insert(
            param.id,
            Slot {
                value: value.reshape([n]),
                grad,
                dims,
            },
        );
    }
}

struct Write<B: Backend> {
    updated: HashMap<ParamId, Tensor<B, 1>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Write<B::InnerBackend> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.updated.remove(&id) {
            Some(flat) => {
                let dims: [usize; D] = tensor.dims();
                let grad = tensor.is_require_grad();
                let t = Tensor::<B, D>::from_inner(flat.reshape(dims));
                if grad { t.require_grad() } else { t }
            }
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// The combined optimizer: AdamW groups and Muon groups over one model.
#[derive(Debug)]
pub struct MuonAdamW<B: Backend> {
    infos: HashMap<String, ParamInfo>,
    groups: Vec<ParamGroup>,
    adam: HashMap<String, AdamState<B, 1>>,
    muon: HashMap<String, MuonState<B>>,
    muon_beta2: f64,
    ns_steps: usize,
    bf16: bool,
}

impl<B: Backend> MuonAdamW<B> {
    /// Builds the optimizer for `model` (upstream `setup_optimizer`).
    pub fn new<A: AutodiffBackend<InnerBackend = B>>(
        model: &Gpt<A>,
        cfg: &OptimizerConfig,
        lrs: &GroupLrs,
    ) -> Result<Self, OptimError> {
        let infos = param_infos(model);
        let groups = build_groups(&infos, cfg, lrs, model.config().n_embd)?;
        Ok(Self {
            infos: infos.into_iter().map(|i| (i.name.clone(), i)).collect(),
            groups,
            adam: HashMap::new(),
            muon: HashMap::new(),
            muon_beta2: cfg.muon_beta2,
            ns_steps: cfg.ns_steps,
            bf16: false,
        })
    }

    /// Runs Polar Express in bfloat16 (upstream's GPU policy); float32 otherwise.
    pub fn with_bf16_orthogonalization(mut self, bf16: bool) -> Self {
        self.bf16 = bf16;
        self
    }

    /// The parameter groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Number of steps taken so far (AdamW's step count; 0 before the first step).
    pub fn steps_taken(&self) -> u64 {
        self.adam.values().map(|s| s.step).max().unwrap_or(0)
    }

    /// Optimizer state as named tensors in PyTorch layout: `adamw.<param>.exp_avg`,
    /// `adamw.<param>.exp_avg_sq`, `adamw.<param>.step` (int64 `[1]`), and
    /// `muon.<group>.momentum_buffer` / `.second_momentum_buffer` (`[K, …]`, the group's
    /// parameters in module order).
    pub fn state_tensors(&self) -> Vec<(String, TensorData)> {
        let mut out = Vec::new();
        let mut names: Vec<_> = self.adam.keys().cloned().collect();
        names.sort();
        for name in names {
            let st = &self.adam[&name];
            let info = &self.infos[&name];
            let torch = |t: &Tensor<B, 1>| {
                let flat = to_torch_layout(t.clone(), info).into_data();
                TensorData::new(
                    flat.convert::<f32>().into_vec::<f32>().unwrap_or_default(),
                    info.shape.clone(),
                )
            };
            out.push((format!("adamw.{name}.exp_avg"), torch(&st.exp_avg)));
            out.push((format!("adamw.{name}.exp_avg_sq"), torch(&st.exp_avg_sq)));
            out.push((
                format!("adamw.{name}.step"),
                TensorData::new(vec![st.step as i64], [1]),
            ));
        }
        for group in &self.groups {
            if let Some(st) = self.muon.get(&group.name) {
                let g = &group.name;
                out.push((
                    format!("muon.{g}.momentum_buffer"),
                    st.momentum_buffer.clone().into_data(),
                ));
                out.push((
                    format!("muon.{g}.second_momentum_buffer"),
                    st.second_momentum_buffer.clone().into_data(),
                ));
            }
        }
        out
    }

    /// Restores state written by [`state_tensors`](Self::state_tensors); every tensor must fit a
    /// parameter or group of this model with its shape, and nothing may be left over.
    pub fn load_state_tensors(
        &mut self,
        tensors: Vec<(String, TensorData)>,
        device: &B::Device,
    ) -> Result<(), OptimError> {
        let mut map: BTreeMap<String, TensorData> = tensors.into_iter().collect();
        let mut adam = HashMap::new();
        let mut muon = HashMap::new();
        for group in &self.groups {
            match &group.kind {
                GroupKind::AdamW { .. } => {
                    for name in &group.params {
                        let key = |s: &str| format!("adamw.{name}.{s}");
                        let (Some(m), Some(v), Some(step)) = (
                            map.remove(&key("exp_avg")),
                            map.remove(&key("exp_avg_sq")),
                            map.remove(&key("step")),
                        ) else {
                            continue; // a parameter never stepped has no state
                        };
                        let info = &self.infos[name];
                        let load =
                            |d: TensorData, what: &str| -> Result<Tensor<B, 1>, OptimError> {
                                if d.shape.as_slice() != info.shape.as_slice() {
                                    return Err(OptimError::State(format!(
                                        "{}: expected shape {:?}, found {:?}",
                                        key(what),
                                        info.shape,
                                        d.shape
                                    )));
                                }
                                from_torch_layout(d, info, device).ok_or_else(|| {
                                    OptimError::State(format!("{}: not float data", key(what)))
                                })
                            };
                        let step = step
                            .convert::<i64>()
                            .to_vec::<i64>()
                            .ok()
                            .and_then(|v| v.first().copied())
                            .ok_or_else(|| OptimError::State(key("step")))?;
                        adam.insert(
                            name.clone(),
                            AdamState {
                                step: step as u64,
                                exp_avg: load(m, "exp_avg")?,
                                exp_avg_sq: load(v, "exp_avg_sq")?,
                            },
                        );
                    }
                }
                GroupKind::Muon { shape } => {
                    let g = &group.name;
                    let (Some(m), Some(v)) = (
                        map.remove(&format!("muon.{g}.momentum_buffer")),
                        map.remove(&format!("muon.{g}.second_momentum_buffer")),
                    ) else {
                        continue;
                    };
                    let zero =
                        MuonState::<B>::zeros(group.params.len(), shape[0], shape[1], device);
                    for (what, d, z) in [
                        ("momentum_buffer", &m, &zero.momentum_buffer),
                        ("second_momentum_buffer", &v, &zero.second_momentum_buffer),
                    ] {
                        if d.shape.as_slice() != z.dims().as_slice() {
                            return Err(OptimError::State(format!(
                                "muon.{g}.{what}: expected shape {:?}, found {:?}",
                                z.dims(),
                                d.shape
                            )));
                        }
                    }
                    muon.insert(
                        g.clone(),
                        MuonState {
                            momentum_buffer: Tensor::from_data(m.convert::<f32>(), device),
                            second_momentum_buffer: Tensor::from_data(v.convert::<f32>(), device),
                        },
                    );
                }
            }
        }
        if !map.is_empty() {
            let left: Vec<_> = map.keys().cloned().collect();
            return Err(OptimError::State(format!(
                "unexpected tensors: {}",
                left.join(", ")
            )));
        }
        self.adam = adam;
        self.muon = muon;
        Ok(())
    }
}

impl<B: FusedOps> MuonAdamW<B> {
    /// Applies one step with `grads` (consumed) and returns the updated model.
    pub fn step<A: AutodiffBackend<InnerBackend = B>>(
        &mut self,
        model: Gpt<A>,
        mut grads: GradientsParams,
        s: &StepScalars,
    ) -> Result<Gpt<A>, OptimError> {
        let mut collect = Collect::<A> {
            grads: &mut grads,
            slots: HashMap::new(),
        };
        model.visit(&mut collect);
        let mut slots = collect.slots;
        let mut updated = HashMap::new();
        for group in &self.groups {
            let lr = group.initial_lr * s.lr_multiplier;
            let mut take = |name: &str| -> Result<(ParamId, Slot<B>), OptimError> {
                let info = &self.infos[name];
                let slot = slots
                    .remove(&info.id)
                    .ok_or_else(|| OptimError::UnknownParam(name.to_string()))?;
                if slot.grad.is_none() {
                    return Err(OptimError::MissingGrad(name.to_string()));
                }
                Ok((info.id, slot))
            };
            match &group.kind {
                GroupKind::AdamW {
                    betas,
                    eps,
                    weight_decay,
                } => {
                    let h = AdamHyper {
                        lr,
                        betas: *betas,
                        eps: *eps,
                        weight_decay: *weight_decay,
                    };
                    for name in &group.params {
                        let (id, slot) = take(name)?;
                        let state = self
                            .adam
                            .entry(name.clone())
                            .or_insert_with(|| AdamState::zeros_like(&slot.value));
                        let grad = slot.grad.expect("checked");
                        updated.insert(id, adamw_step(slot.value, grad, state, &h));
                    }
                }
                GroupKind::Muon { shape } => {
                    let [m, n] = *shape;
                    let mut ids = Vec::new();
                    let mut ps = Vec::new();
                    let mut gs = Vec::new();
                    for name in &group.params {
                        let (id, slot) = take(name)?;
                        let transposed = self.infos[name].transposed;
                        let to_torch = |t: Tensor<B, 1>| {
                            let t: Tensor<B, 2> = t.reshape([slot.dims[0], slot.dims[1]]);
                            if transposed { t.swap_dims(0, 1) } else { t }
                        };
                        ps.push(to_torch(slot.value.clone()));
                        gs.push(to_torch(slot.grad.clone().expect("checked")));
                        ids.push((id, transposed));
                    }
                    let params = Tensor::stack::<3>(ps, 0);
                    let grads = Tensor::stack::<3>(gs, 0);
                    let device = params.device();
                    let state = self
                        .muon
                        .entry(group.name.clone())
                        .or_insert_with(|| MuonState::zeros(ids.len(), m, n, &device));
                    let h = MuonHyper {
                        momentum: s.muon_momentum,
                        lr,
                        weight_decay: s.muon_weight_decay,
                        beta2: self.muon_beta2,
                        ns_steps: self.ns_steps,
                        bf16: self.bf16,
                    };
                    let new = muon_step(params, grads, state, &h);
                    for (k, (id, transposed)) in ids.into_iter().enumerate() {
                        let t: Tensor<B, 2> = new.clone().narrow(0, k, 1).reshape([m, n]);
                        let t = if transposed { t.swap_dims(0, 1) } else { t };
                        updated.insert(id, t.reshape([m * n]));
                    }
                }
            }
        }
        Ok(model.map(&mut Write { updated }))
    }
}

fn to_torch_layout<B: Backend>(flat: Tensor<B, 1>, info: &ParamInfo) -> Tensor<B, 1> {
    if info.transposed {
        let t: Tensor<B, 2> = flat.reshape([info.shape[1], info.shape[0]]);
        t.swap_dims(0, 1).reshape([info.shape[0] * info.shape[1]])
    } else {
        flat
    }
}

fn from_torch_layout<B: Backend>(
    d: TensorData,
    info: &ParamInfo,
    device: &B::Device,
) -> Option<Tensor<B, 1>> {
    let n: usize = info.shape.iter().product();
    let values = d.convert::<f32>().into_vec::<f32>().ok()?;
    let flat = Tensor::<B, 1>::from_data(TensorData::new(values, [n]), device);
    Some(if info.transposed {
        let t: Tensor<B, 2> = flat.reshape([info.shape[0], info.shape[1]]);
        t.swap_dims(0, 1).reshape([n])
    } else {
        flat
    })
}
