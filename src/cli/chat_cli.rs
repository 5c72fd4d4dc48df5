//! `nanochat chat-cli`: talk to a trained model in the terminal (upstream
//! `scripts/chat_cli.py`): an interactive loop (`quit`/`exit` to leave, `clear` for a new
//! conversation) or one answer with `-p`.

use nanochat::infer::tool_text::ToolText;
use nanochat::model::TrainBackend;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nanochat::core::{DeviceSpec, GenerationParams};
use nanochat::infer::{Chat, Engine};
use nanochat::model::{BackendTask, ComputeDtype, dispatch};
use nanochat::tokenizer::Tokenizer;

/// Most tokens per answer unless `--max-tokens` says otherwise.
const DEFAULT_MAX_TOKENS: usize = 256;

/// Flags of `chat-cli`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    checkpoint: super::CheckpointArgs,
    /// Answer this one prompt and exit.
    #[arg(short = 'p', long)]
    prompt: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(short = 't', long, default_value_t = 0.6)]
    temperature: f64,
    /// Top-k sampling (0 = off).
    #[arg(short = 'k', long, default_value_t = 50)]
    top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Most tokens per answer (default 256, or what the model's context has left when less).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Random seed (answers are reproducible for a given seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Device: auto, cpu, wgpu[:N], cuda[:N].
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
}

struct Task {
    args: Args,
    base: PathBuf,
    tokenizer: Arc<Tokenizer>,
    dtype: ComputeDtype,
}

impl BackendTask for Task {
    type Output = anyhow::Result<()>;
    fn run<B: TrainBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let a = &self.args;
        let (model, meta, dir) = a.checkpoint.load::<B::InnerBackend>(&self.base, &device)?;
        anyhow::ensure!(
            model.config().vocab_size == self.tokenizer.vocab_size(),
            "{}: the model's vocabulary ({}) is not the tokenizer's ({})",
            dir.display(),
            model.config().vocab_size,
            self.tokenizer.vocab_size()
        );
        let model = model.with_compute_dtype(self.dtype);
        eprintln!("loaded {} step {}", dir.display(), meta.step());
        let engine = Engine::new(model, self.tokenizer.clone())?;
        let params = GenerationParams {
            temperature: a.temperature,
            top_k: (a.top_k > 0).then_some(a.top_k),
            top_p: a.top_p,
            max_tokens: a.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            seed: a.seed,
            ..GenerationParams::default()
        };
        let mut chat = Chat::new(&engine);
        let answer = |chat: &mut Chat<'_, B::InnerBackend>, text: &str| -> anyhow::Result<()> {
            let mut out = std::io::stdout();
            // Our own default never becomes an error: it shrinks to the room left. What the
            // user asked for explicitly is checked as given.
            let room = chat.room_for(text);
            let mut params = params.clone();
            if a.max_tokens.is_none() && room < params.max_tokens {
                anyhow::ensure!(
                    room > 0,
                    "the conversation fills the model's context: `clear` starts a new one"
                );
                eprintln!(
                    "(answers are capped at {room} tokens: that is what the model's context has left)"
                );
                params.max_tokens = room;
            }
            // Calculator calls read as `12+10` → 22, not as special tokens.
            let mut tool_text = ToolText::default();
            chat.send(text, &params, |piece| {
                let _ = out.write_all(tool_text.push(piece).as_bytes());
                let _ = out.flush();
            })?;
            let _ = out.write_all(tool_text.finish().as_bytes());
            println!();
            Ok(())
        };
        if let Some(p) = &a.prompt {
            return answer(&mut chat, p);
        }
        println!(
            "nanochat interactive mode: `quit` or `exit` to leave, `clear` for a new conversation"
        );
        let stdin = std::io::stdin();
        loop {
            print!("\nUser: ");
            std::io::stdout().flush()?;
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 {
                break;
            }
            let line = line.trim();
            match line {
                "quit" | "exit" => break,
                "clear" => {
                    chat.clear();
                    println!("Conversation cleared.");
                }
                "" => {}
                text => {
                    print!("\nAssistant: ");
                    if let Err(e) = answer(&mut chat, text) {
                        // A too-long conversation is an error for this turn, not the session.
                        println!("\n[{e}]");
                    }
                }
            }
        }
        Ok(())
    }
}

pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    let device = super::resolve_device(args.device);
    let task = Task {
        args,
        base: base.to_path_buf(),
        tokenizer: Arc::new(super::load_tokenizer(base)?),
        dtype: super::default_dtype(device),
    };
    dispatch(device, task)?
}
