//! Which compute device to run on, as users write it: `cpu`, `wgpu[:N]`, `cuda[:N]` or `auto`
//! (upstream's `--device-type`, plus an index). Mapping a spec to a real backend device is
//! `nanochat-model`'s job; this is only the parsed, validated choice.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::validation::{Rule, ValidationError};

/// A device choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// The best backend compiled in: CUDA, then WGPU, then the CPU.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// A WGPU adapter (Vulkan, Metal, DX12): the default (most powerful) one, or the N-th
    /// discrete GPU.
    Wgpu(Option<usize>),
    /// A CUDA device by index.
    Cuda(usize),
}

impl DeviceSpec {
    /// The backend's name: `auto`, `cpu`, `wgpu` or `cuda`.
    pub fn backend_name(self) -> &'static str {
        match self {
            DeviceSpec::Auto => "auto",
            DeviceSpec::Cpu => "cpu",
            DeviceSpec::Wgpu(_) => "wgpu",
            DeviceSpec::Cuda(_) => "cuda",
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Wgpu(None) => f.write_str("wgpu"),
            DeviceSpec::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ValidationError::new(
                "DeviceSpec",
                "device",
                format!("{s:?}"),
                Rule::Pattern {
                    expected: "one of auto, cpu, wgpu, wgpu:N, cuda, cuda:N",
                },
            )
        };
        let lower = s.trim().to_ascii_lowercase();
        let (name, index) = match lower.split_once(':') {
            Some((n, i)) => (n, Some(i.parse::<usize>().map_err(|_| bad())?)),
            None => (lower.as_str(), None),
        };
        match (name, index) {
            ("auto", None) => Ok(DeviceSpec::Auto),
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("wgpu", i) => Ok(DeviceSpec::Wgpu(i)),
            ("cuda", i) => Ok(DeviceSpec::Cuda(i.unwrap_or(0))),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(1));
        assert_eq!(
            "wgpu".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Wgpu(None)
        );
        assert_eq!(
            "wgpu:1".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Wgpu(Some(1))
        );
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        for bad in ["gpu", "cuda:x", "cpu:1", "", "cuda:-1"] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
        assert_eq!(
            DeviceSpec::Cuda(2)
                .to_string()
                .parse::<DeviceSpec>()
                .unwrap(),
            DeviceSpec::Cuda(2)
        );
    }
}
