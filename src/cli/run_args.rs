//! The flags every training and evaluation command shares (`--device`, `--dtype`,
//! `--data-dir`, `--no-progress` and the data-parallel flags), defined once and flattened into
//! each subcommand.

use std::path::PathBuf;

use nanochat::core::DeviceSpec;
use nanochat::model::ComputeDtype;

use super::distributed::DistArgs;

/// `--dtype`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dtype {
    /// Upstream's policy: bfloat16 on CUDA, float32 elsewhere.
    #[default]
    Auto,
    /// float32 activations and matmuls.
    F32,
    /// bfloat16 activations and matmuls (master weights stay float32).
    Bf16,
}

/// Where a command computes: device, dtype, data-parallel layout.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Device: auto, cpu, wgpu[:N], cuda[:N] (with --devices: the first rank's device).
    #[arg(long, default_value = "auto", help_heading = "Run")]
    pub device: DeviceSpec,
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = Dtype::Auto, help_heading = "Run")]
    pub dtype: Dtype,
    #[command(flatten)]
    pub dist: DistArgs,
}

impl DeviceArgs {
    /// `--device`, with `auto` resolved to the device that will run.
    pub fn device(&self) -> DeviceSpec {
        super::resolve_device(self.device)
    }

    /// The compute dtype on `device`.
    pub fn compute_dtype(&self, device: DeviceSpec) -> ComputeDtype {
        match self.dtype {
            Dtype::Auto => super::default_dtype(device),
            Dtype::F32 => ComputeDtype::F32,
            Dtype::Bf16 => ComputeDtype::BF16,
        }
    }
}

/// Where and how a training or evaluation command runs.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub on: DeviceArgs,
    /// Data folder. base-train, base-eval: the parquet shards (default
    /// $NANOCHAT_DATA_DIR/pretrain, else <base-dir>/base_data_climbmix, else
    /// ../shared/data/pretrain); the other commands: the offline data root (default
    /// $NANOCHAT_DATA_DIR, else ../shared/data).
    #[arg(long, help_heading = "Run")]
    pub data_dir: Option<PathBuf>,
    /// No progress bar (the status lines are logged either way).
    #[arg(long, help_heading = "Run")]
    pub no_progress: bool,
}

impl RunArgs {
    /// `--device`, with `auto` resolved to the device that will run.
    pub fn device(&self) -> DeviceSpec {
        self.on.device()
    }

    /// The compute dtype on `device`.
    pub fn compute_dtype(&self, device: DeviceSpec) -> ComputeDtype {
        self.on.compute_dtype(device)
    }

    /// The data-parallel layout (`None`: no collective).
    pub fn distributed(&self) -> anyhow::Result<Option<nanochat::core::DistributedConfig>> {
        self.on.dist.config()
    }

    /// Whether this process writes the report, plots and result files (only the node
    /// holding global rank 0 does).
    pub fn writes_report(&self) -> bool {
        self.on.dist.writes_report()
    }

    /// `--data-dir`, else the offline data root.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(nanochat::core::paths::data_dir)
    }

    /// `--data-dir`, else the pretraining shards' folder.
    pub fn pretrain_data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(nanochat::core::paths::pretrain_data_dir)
    }

    /// Whether to draw progress bars.
    pub fn progress(&self) -> bool {
        !self.no_progress
    }
}
