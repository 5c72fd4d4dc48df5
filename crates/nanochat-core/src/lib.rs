//! # nanochat-core
//!
//! The data model of nanochat-rs, with no tensors: configurations, the entities that flow
//! between the stages, every validation rule as a typed error, the four lifecycles, and the
//! byte-level checkpoint file format. Every other nanochat crate builds on these types.
//!
//! | module | what | upstream |
//! |---|---|---|
//! | [`model_config`] | [`ModelConfig`], the depth dial, the v0 preset | `GPTConfig`, `base_train.build_model_meta` |
//! | [`training_config`] | [`TrainingConfiguration`] and batch arithmetic | `base_train.py` flags |
//! | [`optimizer_config`] | [`OptimizerConfig`], [`OptimizerType`], [`LRSchedule`] | `setup_optimizer`, `get_lr_multiplier` |
//! | [`tokenizer_config`] | [`TokenizerConfig`], [`SpecialTokens`], [`Vocabulary`] | `tokenizer.py` |
//! | [`conversation`] | [`Message`], [`MessageRole`], [`Conversation`] | `render_conversation` input |
//! | [`session`] | [`ConversationSession`] (history, budget, sampling defaults, inference lifecycle), [`SessionStore`] | — (upstream's web server is stateless) |
//! | [`generation`] | [`GenerationParams`] | `Engine.generate` knobs |
//! | [`evaluation`], [`evaluation_config`] | [`EvaluationResult`], [`Measure`], [`EvaluationConfig`] | `base_eval` CSV, `base_eval.py` / `chat_eval.py` flags |
//! | [`dataset`] | [`TrainingDataset`], [`DataSource`], [`DataFormat`], [`PreprocessingStep`], [`DatasetMetadata`] | `dataset.py` |
//! | [`distributed`] | [`DistributedConfig`]: devices, nodes, ranks | `common.get_dist_info` |
//! | [`lifecycle`] | checkpoint / training / inference / tokenizer state machines | — |
//! | [`checkpoint`], [`checkpoint_manager`], [`checkpoint_find`] | meta files, CRC32, atomic writes, `find_last_step` | `checkpoint_manager.py` |
//! | [`checkpoint_handle`] | [`Checkpoint`](checkpoint_handle::Checkpoint): one checkpoint through its lifecycle | `load_checkpoint` |
//! | [`validation`] | [`ValidationError`], [`Rule`], [`Validate`] | — |
//!
//! ```
//! use nanochat_core::{ModelConfig, Validate};
//!
//! let d20 = ModelConfig::from_depth(20)?;
//! assert_eq!((d20.n_embd, d20.n_head), (1280, 10));
//!
//! let broken = ModelConfig { n_head: 7, ..d20 };
//! let err = broken.validate().unwrap_err();
//! assert_eq!(err.to_string(), "invalid ModelConfig.n_embd = 1280: must be divisible by n_head (= 7)");
//! # Ok::<(), nanochat_core::ValidationError>(())
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod checkpoint_find;
pub mod checkpoint_handle;
pub mod checkpoint_manager;
pub mod config_file;
pub mod conversation;
pub mod dataset;
pub mod device;
pub mod distributed;
pub mod evaluation;
pub mod evaluation_config;
pub mod fs;
pub mod generation;
pub mod lifecycle;
pub mod model_config;
pub mod model_counts;
pub mod optimizer_config;
pub mod paths;
pub mod serde_util;
pub mod session;
pub mod tokenizer_config;
pub mod training_config;
pub mod validation;

pub use checkpoint::{CheckpointMeta, CheckpointMetadata, FileRecord, Timings};
pub use checkpoint_manager::{CheckpointError, CheckpointWriter, Source};
pub use config_file::ConfigError;
pub use conversation::{ContentPart, Conversation, Message, MessageContent, MessageRole};
pub use dataset::{
    DataFormat, DataSource, DatasetKind, DatasetMetadata, PreprocessingStep, ShardInfo, SourceType,
    TrainingDataset,
};
pub use device::DeviceSpec;
pub use distributed::{DEFAULT_COLLECTIVE_TIMEOUT_S, DistributedConfig};
pub use evaluation::{EvaluationResult, Measure};
pub use evaluation_config::EvaluationConfig;
pub use generation::{GenerationParams, MAX_TOP_LOGPROBS, ResponseFormat};
pub use lifecycle::{
    CheckpointState, InferenceState, Lifecycle, LifecycleError, LifecycleState, TokenizerState,
    TrainingState,
};
pub use model_config::{Architecture, DepthDial, InitScheme, ModelConfig, WindowSize};
pub use model_counts::ParamCounts;
pub use optimizer_config::{AdamGroup, LRSchedule, OptimizerConfig, OptimizerType};
pub use session::{ConversationSession, SessionStore};
pub use tokenizer_config::{SpecialTokens, TokenizerConfig, Vocabulary};
pub use training_config::TrainingConfiguration;
pub use validation::{Interval, Rule, Validate, ValidationError};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
