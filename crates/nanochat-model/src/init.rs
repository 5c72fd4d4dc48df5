//! Building a model with upstream's initialisation (`GPT.__init__` + `init_weights` in
//! `nanochat/gpt.py`; the v0 scheme for the original release).
//!
//! HEAD: wte N(0, 0.8); lm_head N(0, 0.001); c_q/c_k/c_v and value embeddings U(±s) with
//! s = √3/√n_embd; c_fc U(±0.4·s); both output projections zero; ve_gate and smear_gate
//! U(0, 0.02); smear_lambda 0; backout_lambda 0.2; `resid_lambdas[i] = 1.15 − 0.10·i/(L−1)`,
//! `x0_lambdas[i] = 0.20 − 0.15·i/(L−1)`.
//! v0: every Linear N(0, 1/√fan_in · min(1, √(fan_out/fan_in))), wte N(0, 1), lm_head and
//! output projections zero.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use nanochat_core::model_config::{SMEAR_GATE_CHANNELS, VE_GATE_CHANNELS};
use nanochat_core::{InitScheme, ModelConfig, Validate, ValidationError};

use crate::gpt::{Block, CausalSelfAttention, Gpt, Mlp, Transformer};

/// How one weight is drawn.
#[derive(Clone, Copy)]
enum Init {
    Normal(f64),
    Uniform(f64, f64),
    Zeros,
}

fn tensor<B: Backend>(shape: [usize; 2], init: Init, device: &B::Device) -> Tensor<B, 2> {
    match init {
        Init::Normal(std) => Tensor::random(shape, Distribution::Normal(0.0, std), device),
        Init::Uniform(lo, hi) => Tensor::random(shape, Distribution::Uniform(lo, hi), device),
        Init::Zeros => Tensor::zeros(shape, device),
    }
}

/// A bias-free `Linear` from `d_in` to `d_out` (burn layout `[d_in, d_out]`).
fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    init: Init,
    scheme: InitScheme,
    device: &B::Device,
) -> Linear<B> {
    let init = match (scheme, init) {
        // v0 draws every non-zero Linear the same way, from PyTorch's (fan_out, fan_in).
        (InitScheme::V0, Init::Zeros) => Init::Zeros,
        (InitScheme::V0, _) => {
            let (fan_in, fan_out) = (d_in as f64, d_out as f64);
            Init::Normal(1.0 / fan_in.sqrt() * (fan_out / fan_in).sqrt().min(1.0))
        }
        (InitScheme::Head, i) => i,
    };
    Linear {
        weight: Param::from_tensor(tensor([d_in, d_out], init, device)),
        bias: None,
    }
}

fn embedding<B: Backend>(n: usize, d: usize, init: Init, device: &B::Device) -> Embedding<B> {
    Embedding {
        weight: Param::from_tensor(tensor([n, d], init, device)),
    }
}

fn vector<B: Backend>(values: Vec<f32>, device: &B::Device) -> Param<Tensor<B, 1>> {
    let n = values.len();
    Param::from_tensor(Tensor::from_data(TensorData::new(values, [n]), device))
}

impl<B: Backend> Gpt<B> {
    /// A freshly initialised model (call `B::seed` first for a reproducible draw).
    pub fn init(config: &ModelConfig, device: &B::Device) -> Result<Self, ValidationError> {
        Self::build(config, device, true)
    }

    /// The model's structure with every weight zero, to load a checkpoint into (PyTorch's
    /// `meta` device in upstream's `build_model`): drawing every weight at random only to
    /// overwrite it was a fifth of `bench infer`'s start-up in `perf`. Loading is strict
    /// (every tensor must be in the file), so no zero survives.
    pub fn skeleton(config: &ModelConfig, device: &B::Device) -> Result<Self, ValidationError> {
        Self::build(config, device, false)
    }

    fn build(
        config: &ModelConfig,
        device: &B::Device,
        draw: bool,
    ) -> Result<Self, ValidationError> {
        config.validate()?;
        let r = |init: Init| if draw { init } else { Init::Zeros };
        let c = config.n_embd;
        let kv = config.kv_dim();
        let v = config.padded_vocab_size();
        let l = config.n_layer;
        let scheme = config.init;
        let s = 3f64.sqrt() / (c as f64).sqrt();
        let head = scheme == InitScheme::Head;
        let shape = Gpt::<B>::attention_shape(config);
        let blocks = (0..l)
            .map(|i| {
                let ve_gate = config.has_value_embed(i).then(|| {
                    linear(
                        VE_GATE_CHANNELS,
                        config.n_kv_head,
                        r(Init::Uniform(0.0, 0.02)),
                        scheme,
                        device,
                    )
                });
                Block {
                    attn: CausalSelfAttention::new(
                        linear(
                            c,
                            config.n_head * config.head_dim(),
                            r(Init::Uniform(-s, s)),
                            scheme,
                            device,
                        ),
                        linear(c, kv, r(Init::Uniform(-s, s)), scheme, device),
                        linear(c, kv, r(Init::Uniform(-s, s)), scheme, device),
                        linear(c, c, Init::Zeros, scheme, device),
                        ve_gate,
                        shape,
                    ),
                    mlp: Mlp {
                        c_fc: linear(
                            c,
                            4 * c,
                            r(Init::Uniform(-0.4 * s, 0.4 * s)),
                            scheme,
                            device,
                        ),
                        c_proj: linear(4 * c, c, Init::Zeros, scheme, device),
                    },
                }
            })
            .collect();
        let wte = embedding(v, c, r(Init::Normal(if head { 0.8 } else { 1.0 })), device);
        let lm_head = linear(
            c,
            v,
            if head {
                r(Init::Normal(0.001))
            } else {
                Init::Zeros
            },
            InitScheme::Head,
            device,
        );
        let denom = (l.saturating_sub(1)).max(1) as f32;
        let lambdas = config.layer_lambdas.then(|| {
            (
                vector(
                    (0..l).map(|i| 1.15 - 0.10 * i as f32 / denom).collect(),
                    device,
                ),
                vector(
                    (0..l).map(|i| 0.20 - 0.15 * i as f32 / denom).collect(),
                    device,
                ),
            )
        });
        let smear = config.smear.then(|| {
            (
                linear(
                    SMEAR_GATE_CHANNELS,
                    1,
                    r(Init::Uniform(0.0, 0.02)),
                    InitScheme::Head,
                    device,
                ),
                vector(vec![0.0], device),
            )
        });
        let backout = config.backout.then(|| vector(vec![0.2], device));
        let value_embeds = (0..l)
            .map(|i| {
                config
                    .has_value_embed(i)
                    .then(|| embedding(v, kv, r(Init::Uniform(-s, s)), device))
            })
            .collect();
        Ok(Gpt::assemble(
            config.clone(),
            Transformer { wte, h: blocks },
            lm_head,
            lambdas,
            smear,
            backout,
            value_embeds,
        ))
    }
}
