//! Builds a GPT from the depth dial (on the CPU backend) and prints its parameter table, counted
//! from the real tensors and by upstream's `num_scaling_params` formula, and its FLOPs.
//!
//! ```text
//! cargo run --release --example model_info -- 12          # d12, upstream's HEAD defaults
//! cargo run --release --example model_info -- 20 --v0     # the original release's d20
//! ```

use anyhow::{Context, Result};
use nanochat::core::ModelConfig;
use nanochat::model::Gpt;
use nanochat::model::backend::CpuBackend as Cpu;
use nanochat::model::weights::named_tensors;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let depth: usize = args
        .next()
        .unwrap_or_else(|| "12".into())
        .parse()
        .context("usage: model_info <depth> [--v0]")?;
    let v0 = args.any(|a| a == "--v0");
    let config = if v0 {
        ModelConfig::v0(depth)?
    } else {
        ModelConfig::from_depth(depth)?
    };
    let model = Gpt::<Cpu>::init(&config, &Default::default())?;

    let mut groups: Vec<(&str, u64)> = vec![
        ("wte", 0),
        ("value_embeds", 0),
        ("lm_head", 0),
        ("transformer_matrices", 0),
        ("scalars", 0),
    ];
    for (name, data) in named_tensors(&model)? {
        let slot = if name == "transformer.wte.weight" {
            0
        } else if name.starts_with("value_embeds.") {
            1
        } else if name == "lm_head.weight" {
            2
        } else if name.starts_with("transformer.h.") {
            3
        } else {
            4
        };
        groups[slot].1 += data.num_elements() as u64;
    }
    let formula = serde_json::to_value(model.num_scaling_params())?;
    println!(
        "d{depth}{}: n_embd {}, heads {}/{} kv, vocab {} (padded {}), context {}, windows {:?}",
        if v0 { " (v0)" } else { "" },
        config.n_embd,
        config.n_head,
        config.n_kv_head,
        config.vocab_size,
        config.padded_vocab_size(),
        config.sequence_len,
        config
            .window_sizes()
            .iter()
            .map(|w| w.left)
            .collect::<Vec<_>>()
    );
    println!("{:<22} {:>15} {:>15}", "parameters", "tensors", "formula");
    let mut total = 0;
    for (name, n) in &groups {
        total += n;
        println!("{name:<22} {n:>15} {:>15}", formula[name]);
    }
    println!("{:<22} {total:>15} {:>15}", "total", formula["total"]);
    let c = model.config();
    println!(
        "FLOPs per token (training, 6N + attention): {:.4e}",
        c.estimate_flops() as f64
    );
    println!(
        "FLOPs per decoded token at full context:    {:.4e}",
        c.estimate_decode_flops(c.sequence_len as u64) as f64
    );
    println!(
        "KV-cache bytes per token (bf16):            {}",
        c.kv_bytes_per_token(2)
    );
    Ok(())
}
