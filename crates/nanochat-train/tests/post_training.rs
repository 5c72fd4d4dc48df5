//! Post-training golden tests: SFT rows train exactly the assistant's tokens (tool outputs
//! masked out), and token-weighted gradient accumulation equals one big batch.

use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use nanochat_core::tokenizer_config::Vocabulary;
use nanochat_core::{ContentPart, Conversation, Message, MessageContent, MessageRole, ModelConfig};
use nanochat_data::TaskMixture;
use nanochat_data::chat_loader::{ChatBatch, ChatLoader, PackMode};
use nanochat_data::tasks::Task;
use nanochat_model::Gpt;
use nanochat_model::weights::named_grad_params;
use nanochat_tokenizer::{SPLIT_PATTERN, Tokenizer};
use nanochat_train::chat_train::token_weighted_grads;

type B = Autodiff<Flex>;

struct Convs(Vec<Conversation>);
impl Task for Convs {
    fn name(&self) -> &str {
        "convs"
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, i: usize) -> Conversation {
        self.0[i].clone()
    }
    fn evaluate(&self, _: usize, _: &str) -> bool {
        false
    }
}

fn tok() -> Arc<Tokenizer> {
    Arc::new(Tokenizer::from_vocab(Vocabulary::from_merges(&[]).unwrap(), SPLIT_PATTERN).unwrap())
}

/// A 2-layer, 64-wide model over the byte tokenizer `t` with context `seq`.
fn tiny_config(t: &Tokenizer, seq: usize) -> ModelConfig {
    ModelConfig {
        sequence_len: seq,
        vocab_size: t.vocab_size(),
        n_layer: 2,
        n_head: 2,
        n_kv_head: 1,
        n_embd: 64,
        window_pattern: "L".into(),
        ..ModelConfig::from_depth(2).unwrap()
    }
}

fn tool_conversation() -> Conversation {
    let parts = vec![
        ContentPart::Text { text: "a".into() },
        ContentPart::Python { text: "1+1".into() },
        ContentPart::PythonOutput { text: "2".into() },
        ContentPart::Text { text: "b".into() },
    ];
    Conversation {
        messages: vec![
            Message::new(MessageRole::User, "hi"),
            Message::new(MessageRole::Assistant, MessageContent::Parts(parts)),
            Message::new(MessageRole::User, "ok"),
            Message::new(MessageRole::Assistant, "c"),
        ],
    }
}

#[test]
fn sft_rows_train_exactly_the_assistant_tokens() {
    let t = tok();
    let s = |n: &str| t.encode_special(n).unwrap() as i64;
    let b = |c: char| t.encode(&c.to_string())[0] as i64;
    let task: Arc<dyn Task> = Arc::new(Convs(vec![tool_conversation()]));
    let mixture = TaskMixture::sequence(vec![task]);
    let seq = 32;
    let mut loader = ChatLoader::new(mixture, t.clone(), 1, seq, PackMode::Pad, None).unwrap();
    let batch = loader.next_batch().unwrap();
    let bos = t.bos_token_id() as i64;
    // The rendered conversation, token by token.
    let ids = vec![
        bos,
        s("<|user_start|>"),
        b('h'),
        b('i'),
        s("<|user_end|>"),
        s("<|assistant_start|>"),
        b('a'),
        s("<|python_start|>"),
        b('1'),
        b('+'),
        b('1'),
        s("<|python_end|>"),
        s("<|output_start|>"),
        b('2'),
        s("<|output_end|>"),
        b('b'),
        s("<|assistant_end|>"),
        s("<|user_start|>"),
        b('o'),
        b('k'),
        s("<|user_end|>"),
        s("<|assistant_start|>"),
        b('c'),
        s("<|assistant_end|>"),
    ];
    // Trained: what the assistant writes, its tool call and its end token. Not trained: the
    // user, the assistant_start cue, the tool's output, padding.
    let trained = [
        6, 7, 8, 9, 10, 11, // a <|python_start|> 1 + 1 <|python_end|>
        15, 16, // b <|assistant_end|>
        22, 23, // c <|assistant_end|>
    ];
    let mut expected_inputs = ids.clone();
    expected_inputs.resize(seq, bos);
    assert_eq!(batch.inputs, expected_inputs);
    let expected_targets: Vec<i64> = (1..=seq)
        .map(|k| if trained.contains(&k) { ids[k] } else { -1 })
        .collect();
    assert_eq!(batch.targets, expected_targets);
    assert_eq!(batch.valid_targets(), trained.len());

    // Midtraining's crop mode trains every next token.
    let task: Arc<dyn Task> = Arc::new(Convs(vec![tool_conversation()]));
    let mut crop = ChatLoader::new(
        TaskMixture::sequence(vec![task]),
        t,
        1,
        8,
        PackMode::Crop,
        None,
    )
    .unwrap();
    let b1 = crop.next_batch().unwrap();
    assert_eq!(b1.targets, ids[1..9].to_vec());
}

#[test]
fn token_weighted_accumulation_equals_one_batch() {
    let t = tok();
    // Conversations of different lengths, so micro-batches have different trained counts.
    let convs: Vec<Conversation> = ["short", "a much longer reply than the other one"]
        .iter()
        .enumerate()
        .map(|(i, r)| Conversation {
            messages: vec![
                Message::new(MessageRole::User, format!("question {i}")),
                Message::new(MessageRole::Assistant, *r),
            ],
        })
        .collect();
    let first = |c: Conversation| {
        let task: Arc<dyn Task> = Arc::new(Convs(vec![c]));
        ChatLoader::new(
            TaskMixture::sequence(vec![task]),
            t.clone(),
            1,
            64,
            PackMode::Pad,
            None,
        )
        .unwrap()
        .next_batch()
        .unwrap()
    };
    let m1 = first(convs[0].clone());
    let m2 = first(convs[1].clone());
    assert_ne!(m1.valid_targets(), m2.valid_targets());
    let both = ChatBatch {
        inputs: [m1.inputs.clone(), m2.inputs.clone()].concat(),
        targets: [m1.targets.clone(), m2.targets.clone()].concat(),
        batch_size: 2,
        seq_len: 64,
        state: m2.state.clone(),
    };
    let config = tiny_config(&t, 64);
    let dev = Default::default();
    B::seed(&dev, 5);
    let model = Gpt::<B>::init(&config, &dev).unwrap();
    let (l_acc, g_acc) = token_weighted_grads(&model, &[m1, m2], &dev);
    let (l_one, g_one) = token_weighted_grads(&model, &[both], &dev);
    assert!(
        (l_acc - l_one).abs() < 1e-5 * l_one.abs(),
        "{l_acc} vs {l_one}"
    );
    let a = named_grad_params(&model, &g_acc).unwrap();
    let b = named_grad_params(&model, &g_one).unwrap();
    assert_eq!(a.len(), b.len());
    // Relative to each tensor's largest gradient, with a floor at 1e-3 of the largest
    // gradient overall (tensors behind zero-initialised projections get ~0 gradients).
    let global = b
        .iter()
        .flat_map(|(_, t)| t.to_vec::<f32>().unwrap())
        .fold(0f32, |m, x| m.max(x.abs()));
    let mut worst = 0f32;
    let mut worst_name = String::new();
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let va = ta.to_vec::<f32>().unwrap();
        let vb = tb.to_vec::<f32>().unwrap();
        let scale = vb
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()))
            .max(1e-3 * global);
        for (x, y) in va.iter().zip(&vb) {
            let d = (x - y).abs() / scale;
            if d > worst {
                worst = d;
                worst_name = na.clone();
            }
        }
    }
    assert!(
        worst < 1e-4,
        "worst relative gradient difference {worst} in {worst_name}"
    );
}

#[test]
fn policy_gradient_raises_rewarded_and_lowers_punished_samples() {
    use burn::module::AutodiffModule;
    use burn::optim::{Optimizer, SgdConfig};
    use burn::tensor::{Int, Tensor, TensorData};
    use nanochat_model::Reduction;
    use nanochat_train::chat_rl::{Rollout, policy_gradient};

    let t = tok();
    let config = tiny_config(&t, 32);
    let dev = Default::default();
    B::seed(&dev, 9);
    let model = Gpt::<B>::init(&config, &dev).unwrap();
    let prompt: Vec<u32> = t.encode("Q: 2+2? A:");
    let good: Vec<u32> = t.encode(" 4");
    let bad: Vec<u32> = t.encode(" 5");
    let roll = |ans: &[u32], adv: f64, masks: Vec<u8>| Rollout {
        ids: [prompt.clone(), ans.to_vec()].concat(),
        prompt_len: prompt.len(),
        masks,
        advantage: adv,
        weight: 0.25,
    };
    let rollouts = [roll(&good, 0.5, vec![1, 1]), roll(&bad, -0.5, vec![1, 1])];
    // Σ −logp of the sampled tokens of one sequence.
    let nll = |m: &Gpt<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend>,
               ans: &[u32]| {
        let ids: Vec<i64> = [prompt.clone(), ans.to_vec()]
            .concat()
            .iter()
            .map(|&v| v as i64)
            .collect();
        let n = ids.len();
        let x = Tensor::<_, 2, Int>::from_data(
            TensorData::new(ids[..n - 1].to_vec(), [1, n - 1]),
            &dev,
        );
        let y: Vec<i64> = (1..n)
            .map(|k| if k >= prompt.len() { ids[k] } else { -1 })
            .collect();
        let y = Tensor::<_, 2, Int>::from_data(TensorData::new(y, [1, n - 1]), &dev);
        m.forward_loss(x, y, Reduction::None).sum().into_scalar()
    };
    let before = (nll(&model.valid(), &good), nll(&model.valid(), &bad));
    let (loss, grads) = policy_gradient(&model, &rollouts, t.bos_token_id(), 1, &dev);
    // The loss is the advantage-weighted NLL: 0.125·nll(good) − 0.125·nll(bad).
    assert!(
        (loss - 0.125 * (before.0 - before.1) as f64).abs() < 1e-4,
        "{loss} {before:?}"
    );
    let mut sgd = SgdConfig::new().init::<B, Gpt<B>>();
    let model = sgd.step(0.5, model, grads);
    let after = (nll(&model.valid(), &good), nll(&model.valid(), &bad));
    assert!(
        after.0 < before.0,
        "rewarded answer got less likely: {before:?} → {after:?}"
    );
    assert!(
        after.1 > before.1,
        "punished answer got more likely: {before:?} → {after:?}"
    );
    // Tool-forced tokens (mask 0) and zero advantages give no gradient.
    let forced = [roll(&good, 0.5, vec![0, 0]), roll(&bad, 0.0, vec![1, 1])];
    let (l0, _) = policy_gradient(&model, &forced, t.bos_token_id(), 2, &dev);
    assert_eq!(l0, 0.0);
}
