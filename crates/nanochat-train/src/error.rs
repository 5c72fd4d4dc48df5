//! The training crate's error type: each variant keeps the failing layer's error, which names
//! the file, field or tensor involved.

use nanochat_core::{CheckpointError, ValidationError};
use nanochat_data::dataloader::LoaderError;
use nanochat_data::dataset::DataError;
use nanochat_data::tasks::TaskError;
use nanochat_model::checkpoint::ModelError;
use nanochat_model::weights::WeightsError;

use crate::optim::OptimError;

/// Why a training run stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] ValidationError),
    /// Data missing or unusable.
    #[error("{0}")]
    Data(String),
    /// A shard could not be read.
    #[error(transparent)]
    Shard(#[from] DataError),
    /// The pretraining dataset was refused before training.
    #[error(transparent)]
    Dataset(#[from] nanochat_data::pretraining::DatasetError),
    /// A task or mixture could not be loaded.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The loader failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// The optimizer failed.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// Saving or loading the model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Tensor files.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Checkpoint files.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// File system.
    #[error(transparent)]
    Io(#[from] nanochat_core::fs::IoError),
    /// Rendering conversations failed.
    #[error(transparent)]
    Tokenizer(#[from] nanochat_tokenizer::TokenizerError),
    /// Generation (RL rollouts, evaluation) failed.
    #[error(transparent)]
    Engine(Box<nanochat_infer::EngineError>),
    /// Evaluation inside training failed.
    #[error(transparent)]
    Eval(Box<nanochat_eval::chat_eval::ChatEvalError>),
    /// A collective operation failed (data-parallel runs).
    #[error(transparent)]
    Dist(#[from] nanochat_model::distributed::DistError),
    /// A data-parallel rank failed and the run stopped.
    #[error(transparent)]
    Rank(#[from] nanochat_model::distributed::RunError),
    /// A fault injected on purpose (`BaseTrainArgs::fail_at`, for tests of failure handling).
    #[error("injected failure at step {step}")]
    Injected {
        /// The step it failed in.
        step: u64,
    },
    /// Ctrl-C or SIGTERM: the run finished its step, saved a checkpoint and stopped.
    #[error(
        "interrupted at step {step}: the checkpoint is saved in {}; continue with the same command and --resume-from-step {step}",
        dir.display()
    )]
    Interrupted {
        /// The step saved.
        step: u64,
        /// Its checkpoint folder.
        dir: std::path::PathBuf,
    },
    /// A training run moved through its lifecycle in a way the data model forbids.
    #[error(transparent)]
    Lifecycle(#[from] nanochat_core::lifecycle::LifecycleError),
    /// The configuration a post-training stage inherits from its source checkpoint's meta is
    /// missing, malformed or breaks a rule.
    #[error("{}: {field} {reason}", file.display())]
    Inherited {
        /// The source's meta file.
        file: std::path::PathBuf,
        /// The field, under `user_config`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint that cannot be resumed from.
    #[error("cannot resume: {0}")]
    Resume(String),
}

impl From<nanochat_infer::EngineError> for TrainError {
    fn from(e: nanochat_infer::EngineError) -> Self {
        TrainError::Engine(Box::new(e))
    }
}

impl From<nanochat_eval::chat_eval::ChatEvalError> for TrainError {
    fn from(e: nanochat_eval::chat_eval::ChatEvalError) -> Self {
        TrainError::Eval(Box::new(e))
    }
}
