//! Data-parallel flags shared by the training and evaluation subcommands (upstream's torchrun
//! `--nproc_per_node`, `--nnodes`, `--node_rank`, `--master_addr`), and `nanochat orchestrator`,
//! the meeting point of a multi-node run.

use nanochat::core::{DEFAULT_COLLECTIVE_TIMEOUT_S, DistributedConfig};

/// Data parallelism: one model replica per device, gradients averaged with burn's collective
/// all-reduce.
#[derive(clap::Args, Debug, Clone)]
pub struct DistArgs {
    /// Model replicas on this machine, one per device (`cuda:N`, `cuda:N+1`, …; CPU ranks
    /// share the cores). Unset: no collective at all. `--devices 1` goes through the
    /// collective with a single rank.
    #[arg(long, visible_alias = "nproc", help_heading = "Data parallel")]
    pub devices: Option<usize>,
    /// Machines (nodes) in the run; each runs this command with its own --node-rank.
    #[arg(long, default_value_t = 1, help_heading = "Data parallel")]
    pub num_nodes: usize,
    /// This machine's index, 0..num-nodes (global rank = node-rank × devices + local rank).
    #[arg(long, default_value_t = 0, help_heading = "Data parallel")]
    pub node_rank: usize,
    /// host:port of `nanochat orchestrator` (multi-node).
    #[arg(long, help_heading = "Data parallel")]
    pub orchestrator: Option<String>,
    /// host:port at which the other nodes reach this one (multi-node).
    #[arg(long, help_heading = "Data parallel")]
    pub node_address: Option<String>,
    /// Port of this node's tensor data service (multi-node; the port of --node-address).
    #[arg(long, help_heading = "Data parallel")]
    pub data_port: Option<u16>,
    /// Seconds a rank may wait in one collective operation (node registration included)
    /// before the run stops with an error: a dead, hung or unreachable node then ends the run
    /// instead of hanging it (torch.distributed's `timeout`).
    #[arg(long, default_value_t = DEFAULT_COLLECTIVE_TIMEOUT_S, help_heading = "Data parallel")]
    pub collective_timeout: u64,
}

impl DistArgs {
    /// Whether this process writes the report and plots: only the node holding global rank 0
    /// does, as upstream's non-master ranks get a `DummyReport`.
    pub fn writes_report(&self) -> bool {
        self.node_rank == 0
    }

    /// The validated layout, or `None` when `--devices` and `--num-nodes` were left unset.
    pub fn config(&self) -> anyhow::Result<Option<DistributedConfig>> {
        if self.devices.is_none() && self.num_nodes == 1 {
            return Ok(None);
        }
        let c = DistributedConfig {
            devices: self.devices.unwrap_or(1),
            num_nodes: self.num_nodes,
            node_rank: self.node_rank,
            orchestrator: self.orchestrator.clone(),
            node_address: self.node_address.clone(),
            data_port: self.data_port,
            collective_timeout_s: self.collective_timeout,
        };
        nanochat::core::Validate::validate(&c)?;
        Ok(Some(c))
    }
}

/// Flags of `orchestrator`.
#[derive(clap::Args, Debug)]
pub struct OrchestratorArgs {
    /// Port to listen on (the nodes' --orchestrator points here).
    #[arg(long, default_value_t = 3000)]
    port: u16,
}

/// Runs burn's global collective orchestrator until Ctrl-C.
pub fn orchestrator(args: OrchestratorArgs) -> anyhow::Result<()> {
    tracing::info!("collective orchestrator listening on port {}", args.port);
    tokio::runtime::Runtime::new()?.block_on(burn_collective::start_global_orchestrator(args.port));
    Ok(())
}
