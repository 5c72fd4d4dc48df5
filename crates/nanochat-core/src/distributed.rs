//! Data-parallel layout (upstream `nanochat/common.py` `get_dist_info`, which reads torchrun's
//! `RANK` / `LOCAL_RANK` / `WORLD_SIZE`): how many model replicas run on this node, how many
//! nodes take part, which one this is, and where the nodes meet.
//!
//! Ranks are numbered node-major: global rank = `node_rank × devices + local_rank`. A run is
//! *distributed* when the user asked for it (`devices` set); one device then still goes through
//! the collective engine, which is how its cost is measured.

use serde::{Deserialize, Serialize};

use crate::validation::{Rule, VResult, Validate, ValidationError, check_at_most, check_positive};

const ENTITY: &str = "DistributedConfig";

/// Where this process sits in a data-parallel run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributedConfig {
    /// Model replicas (devices) on this node, one thread each.
    pub devices: usize,
    /// Nodes (processes) in the run.
    pub num_nodes: usize,
    /// This node's index, `0..num_nodes`.
    pub node_rank: usize,
    /// `host:port` of the global orchestrator (multi-node only).
    pub orchestrator: Option<String>,
    /// `host:port` other nodes reach this one at (multi-node only).
    pub node_address: Option<String>,
    /// Port of this node's tensor data service (multi-node only).
    pub data_port: Option<u16>,
    /// Seconds a rank may wait in one collective operation (registration included) before the
    /// run is declared dead: torch.distributed's `timeout` (10 minutes by default for NCCL).
    #[serde(default = "default_collective_timeout")]
    pub collective_timeout_s: u64,
}

/// torch.distributed's default for NCCL: 10 minutes.
pub const DEFAULT_COLLECTIVE_TIMEOUT_S: u64 = 600;

fn default_collective_timeout() -> u64 {
    DEFAULT_COLLECTIVE_TIMEOUT_S
}

impl DistributedConfig {
    /// `devices` replicas on one node.
    pub fn local(devices: usize) -> Self {
        Self {
            devices,
            num_nodes: 1,
            node_rank: 0,
            orchestrator: None,
            node_address: None,
            data_port: None,
            collective_timeout_s: DEFAULT_COLLECTIVE_TIMEOUT_S,
        }
    }

    /// Ranks in the whole run (upstream `WORLD_SIZE`).
    pub fn world_size(&self) -> usize {
        self.devices * self.num_nodes
    }

    /// Global rank of this node's `local_rank`-th device (upstream `RANK`).
    pub fn global_rank(&self, local_rank: usize) -> usize {
        self.node_rank * self.devices + local_rank
    }

    /// Whether more than one node takes part.
    pub fn is_multi_node(&self) -> bool {
        self.num_nodes > 1
    }

    /// Whether this process holds global rank 0, which alone writes checkpoints, the report
    /// and plots (upstream's `master_process`; other nodes get its `DummyReport`).
    pub fn is_master_node(&self) -> bool {
        self.node_rank == 0
    }
}

impl Validate for DistributedConfig {
    fn validate(&self) -> VResult {
        check_positive(ENTITY, "devices", self.devices as u64)?;
        check_positive(ENTITY, "num_nodes", self.num_nodes as u64)?;
        check_positive(ENTITY, "collective_timeout_s", self.collective_timeout_s)?;
        check_at_most(
            ENTITY,
            "node_rank",
            self.node_rank as u64,
            "num_nodes - 1",
            self.num_nodes as u64 - 1,
        )?;
        if self.is_multi_node() {
            let missing =
                |field: &str| ValidationError::new(ENTITY, field, "<unset>", Rule::NotEmpty);
            let orchestrator = self.orchestrator.as_deref().unwrap_or("");
            let node = self.node_address.as_deref().unwrap_or("");
            if orchestrator.trim().is_empty() {
                return Err(missing("orchestrator"));
            }
            if node.trim().is_empty() {
                return Err(missing("node_address"));
            }
            if self.data_port.is_none() {
                return Err(missing("data_port"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_node_major() {
        let c = DistributedConfig {
            devices: 4,
            num_nodes: 2,
            node_rank: 1,
            orchestrator: Some("10.0.0.1:3000".into()),
            node_address: Some("10.0.0.2:3001".into()),
            data_port: Some(3002),
            collective_timeout_s: DEFAULT_COLLECTIVE_TIMEOUT_S,
        };
        c.validate().unwrap();
        assert_eq!(c.world_size(), 8);
        assert_eq!(c.global_rank(0), 4);
        assert_eq!(c.global_rank(3), 7);
    }

    #[test]
    fn rejects_bad_layouts() {
        let e = DistributedConfig::local(0).validate().unwrap_err();
        assert_eq!(e.field, "devices");
        let mut c = DistributedConfig::local(2);
        c.num_nodes = 2;
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "orchestrator");
        c.node_rank = 2;
        assert_eq!(c.validate().unwrap_err().field, "node_rank");
        let mut c = DistributedConfig::local(1);
        c.collective_timeout_s = 0;
        assert_eq!(c.validate().unwrap_err().field, "collective_timeout_s");
    }
}
