//! Peak bf16 dense FLOP/s per accelerator, for MFU (upstream `nanochat/common.py`,
//! `get_peak_flops`). Unknown devices (and CPUs) give `None`: MFU is then not shown rather
//! than guessed.

/// Patterns (all must occur in the lower-cased device name) → peak FLOP/s; more specific first.
const TABLE: &[(&[&str], f64)] = &[
    (&["gb200"], 2.5e15),
    (&["grace blackwell"], 2.5e15),
    (&["b200"], 2.25e15),
    (&["b100"], 1.8e15),
    (&["h200", "nvl"], 836e12),
    (&["h200", "pcie"], 836e12),
    (&["h200"], 989e12),
    (&["h100", "nvl"], 835e12),
    (&["h100", "pcie"], 756e12),
    (&["h100"], 989e12),
    (&["h800", "nvl"], 989e12),
    (&["h800"], 756e12),
    (&["a100"], 312e12),
    (&["a800"], 312e12),
    (&["a40"], 149.7e12),
    (&["a30"], 165e12),
    (&["l40s"], 362e12),
    (&["l40-s"], 362e12),
    (&["l40 s"], 362e12),
    (&["l4"], 121e12),
    (&["mi355"], 2.5e15),
    (&["mi325"], 1.3074e15),
    (&["mi300x"], 1.3074e15),
    (&["mi300a"], 980.6e12),
    (&["mi250x"], 383e12),
    (&["mi250"], 362.1e12),
    (&["5090"], 209.5e12),
    (&["4090"], 165.2e12),
    (&["3090"], 71e12),
];

/// Peak FLOP/s of the device called `name`, if known.
pub fn peak_flops(name: &str) -> Option<f64> {
    let name = name.to_lowercase();
    TABLE
        .iter()
        .find(|(pats, _)| pats.iter().all(|p| name.contains(p)))
        .map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_patterns_win() {
        assert_eq!(peak_flops("NVIDIA H100 80GB HBM3"), Some(989e12));
        assert_eq!(peak_flops("NVIDIA H100 PCIe"), Some(756e12));
        assert_eq!(peak_flops("NVIDIA H100 NVL"), Some(835e12));
        assert_eq!(peak_flops("NVIDIA H200"), Some(989e12));
        assert_eq!(peak_flops("NVIDIA L40S"), Some(362e12));
        assert_eq!(peak_flops("NVIDIA L4"), Some(121e12));
        assert_eq!(peak_flops("cpu"), None);
    }
}
