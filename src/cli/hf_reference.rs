//! Our model's own outputs on a few prompts, written beside an export (`nanochat export
//! --reference FILE`) so that `cargo xtask hf-check` can compare what transformers computes
//! from the exported folder with what we compute (`xtask/scripts/hf_check.py` reads it):
//! float32 logits, a greedy continuation, and the chat rendering of a conversation.

use nanochat::core::{Conversation, Message, MessageRole};
use nanochat::model::burn::module::Module;
use nanochat::model::burn::tensor::{Int, Tensor, TensorData};
use nanochat::model::{FusedOps, Gpt};
use nanochat::tokenizer::Tokenizer;
use serde_json::{Value, json};

/// Prompts of different kinds: prose, code, a number.
pub const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:",
    "In 1969, the first",
];

/// Tokens each greedy continuation runs for (no stop token).
pub const GREEDY_TOKENS: usize = 8;

fn logits<B: FusedOps>(model: &Gpt<B>, ids: &[u32]) -> anyhow::Result<Vec<Vec<f32>>> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let idx = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i as i64).collect(), [1, ids.len()]),
        &device,
    );
    let out = model.forward(idx, None);
    let vocab = out.dims()[2];
    let flat: Vec<f32> = out
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| anyhow::anyhow!("logits: {e:?}"))?;
    Ok(flat.chunks(vocab).map(<[f32]>::to_vec).collect())
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// The reference JSON: `prompts` (text, ids with BOS, logits, greedy) and `chat` (messages,
/// ids rendered for completion).
pub fn reference<B: FusedOps>(model: &Gpt<B>, tok: &Tokenizer) -> anyhow::Result<Value> {
    let context = model.config().sequence_len;
    let mut prompts = Vec::new();
    for text in PROMPTS {
        let ids = tok.encode_with(text, Some(tok.bos_token_id()), None);
        anyhow::ensure!(
            ids.len() + GREEDY_TOKENS <= context,
            "reference prompt {text:?} does not fit the model's {context}-token context"
        );
        let rows = logits(model, &ids)?;
        let mut seq = ids.clone();
        let mut greedy = Vec::new();
        for _ in 0..GREEDY_TOKENS {
            let next = argmax(logits(model, &seq)?.last().expect("non-empty sequence"));
            greedy.push(next);
            seq.push(next);
        }
        prompts.push(json!({"text": text, "ids": ids, "logits": rows, "greedy": greedy}));
    }
    let messages = [
        (MessageRole::System, "You are a helpful assistant."),
        (MessageRole::User, "What is 2 + 2?"),
        (MessageRole::Assistant, "2 + 2 = 4."),
        (MessageRole::User, "And 3 + 3?"),
    ];
    let mut conversation = Conversation {
        messages: messages
            .iter()
            .map(|(role, text)| Message::new(*role, *text))
            .collect(),
    };
    conversation
        .messages
        .push(Message::new(MessageRole::Assistant, ""));
    let chat_ids = tok.render_for_completion(&conversation, usize::MAX)?;
    let chat_messages: Vec<Value> = messages
        .iter()
        .map(|(role, text)| json!({"role": role.as_str(), "content": text}))
        .collect();
    Ok(json!({
        "model": format!("{:?}", model.config()),
        "prompts": prompts,
        "chat": {"messages": chat_messages, "ids": chat_ids},
    }))
}
