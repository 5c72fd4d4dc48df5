//! Prints the model shapes upstream nanochat's depth dial gives, and the v0 release's.
//!
//! ```text
//! cargo run --example depth_dial -- 12 20 24
//! ```

use anyhow::Result;
use nanochat::core::{ModelConfig, Validate};

fn main() -> Result<()> {
    let depths: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("depths must be positive integers: {e}"))?;
    let depths = if depths.is_empty() {
        vec![4, 12, 20, 24, 26, 32]
    } else {
        depths
    };
    println!(
        "{:>5} {:>6} {:>5} {:>5} {:>8} {:>12}  windows",
        "depth", "n_embd", "heads", "kv", "head_dim", "padded_vocab"
    );
    for depth in depths {
        let c = ModelConfig::from_depth(depth)?;
        c.validate()?;
        let windows: Vec<String> = c
            .window_sizes()
            .iter()
            .map(|w| w.left.to_string())
            .collect();
        println!(
            "{:>5} {:>6} {:>5} {:>5} {:>8} {:>12}  {}",
            depth,
            c.n_embd,
            c.n_head,
            c.n_kv_head,
            c.head_dim(),
            c.padded_vocab_size(),
            windows.join(",")
        );
        match ModelConfig::v0(depth) {
            Ok(v0) => println!(
                "{:>5} {:>6} {:>5} {:>5} {:>8} {:>12}  (v0 release)",
                "",
                v0.n_embd,
                v0.n_head,
                v0.n_kv_head,
                v0.head_dim(),
                v0.padded_vocab_size()
            ),
            Err(e) => println!("{:>5} v0 release has no valid shape here: {e}", ""),
        }
    }
    Ok(())
}
