//! Property: every valid config and entity round-trips through JSON and TOML unchanged (and
//! still validates on the way back in).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;

use chrono::{DateTime, Utc};
use nanochat_core::config_file::{from_json_str, from_toml_str};
use nanochat_core::*;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + Validate + PartialEq + Debug,
{
    value
        .validate()
        .expect("the strategy only makes valid values");
    let json = serde_json::to_string_pretty(value).unwrap();
    let back: T = from_json_str(Path::new("x.json"), &json).unwrap();
    assert_eq!(&back, value, "JSON:\n{json}");
    let toml = toml::to_string(value).unwrap();
    let back: T =
        from_toml_str(Path::new("x.toml"), &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(&back, value, "TOML:\n{toml}");
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_000_000_000, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _.,!?éü中\"'\\\\\n\t-]{0,24}".prop_map(|s| format!("x{s}"))
}

fn model_config() -> impl Strategy<Value = ModelConfig> {
    (
        (
            1usize..=32,
            prop::sample::select(vec![32usize, 64, 128]),
            prop::sample::select(vec![32usize, 64, 128]),
        ),
        (16usize..=8192, 256usize..=70_000, "[SLsl]{1,5}"),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (1e3f64..1e7, 0.1f64..3.0, 0.0f64..50.0, 0.0f64..=1.0),
        (
            prop::sample::select(vec![1usize, 8, 64, 128]),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (depth, aspect, head),
                (seq, vocab, pattern),
                (ve, smear, backout, lambdas),
                floats,
                (pad, v0),
            )| {
                let dial = DepthDial {
                    depth,
                    aspect_ratio: aspect,
                    head_dim: head,
                    max_seq_len: seq,
                    vocab_size: vocab,
                    window_pattern: pattern,
                    arch: Default::default(),
                };
                let mut c = dial.build().unwrap();
                c.value_embeds = ve;
                c.smear = smear;
                c.backout = backout;
                c.layer_lambdas = lambdas;
                (c.rope_base, c.qk_scale, c.logit_softcap, c.dropout) = floats;
                c.vocab_pad_multiple = pad;
                c.init = if v0 { InitScheme::V0 } else { InitScheme::Head };
                c
            },
        )
}

fn optimizer() -> impl Strategy<Value = OptimizerConfig> {
    let beta = 0.01f64..0.999;
    (
        (
            1e-5f64..1.0,
            1e-5f64..1.0,
            1e-5f64..1.0,
            1e-5f64..1.0,
            1e-5f64..1.0,
        ),
        (0.0f64..1.0, 1e-12f64..1e-3),
        (beta.clone(), beta.clone(), beta.clone(), 0.0f64..0.1),
        (1usize..10, any::<bool>()),
    )
        .prop_map(
            |((e, u, m, s, g), (wd, eps), (b1, b2, mom, gwd), (ns, adamw))| {
                let mut o = OptimizerConfig {
                    optimizer: if adamw {
                        OptimizerType::AdamW
                    } else {
                        OptimizerType::MuonAdamW
                    },
                    embedding_lr: e,
                    unembedding_lr: u,
                    matrix_lr: m,
                    scalar_lr: s,
                    gate_lr: g,
                    weight_decay: wd,
                    adam_eps: eps,
                    muon_momentum: mom,
                    muon_beta2: b2,
                    ns_steps: ns,
                    ..OptimizerConfig::default()
                };
                o.wte = AdamGroup {
                    betas: [b1, b2],
                    weight_decay: gwd,
                };
                o
            },
        )
}

fn training() -> impl Strategy<Value = TrainingConfiguration> {
    (
        (
            1usize..=24,
            prop::sample::select(vec![64usize, 128]),
            16usize..=4096,
        ),
        (
            prop::option::of(100u64..100_000),
            prop::option::of(1e15f64..1e20),
            prop::option::of(1.0f64..40.0),
        ),
        (1usize..=64, prop::option::of(1u64..1 << 22)),
        (optimizer(), 0u64..100, 0.0f64..=1.0, 0.0f64..=1.0),
        (
            prop::option::of(1u64..1000),
            prop::option::of(1u64..1000),
            prop::option::of("[a-z0-9_]{1,8}"),
            any::<u64>(),
        ),
    )
        .prop_filter_map(
            "a run needs a horizon",
            |(
                (depth, head_dim, seq),
                (iters, flops, ratio),
                (dbs, tbs),
                (opt, warmup, wd_ratio, final_frac),
                (ev, save, tag, seed),
            )| {
                let c = TrainingConfiguration {
                    run: "dummy".into(),
                    depth,
                    head_dim,
                    max_seq_len: seq,
                    num_iterations: iters.map(|n| n + warmup),
                    target_flops: flops,
                    target_param_data_ratio: ratio,
                    device_batch_size: dbs,
                    total_batch_size: tbs,
                    optimizer: opt,
                    schedule: LRSchedule {
                        warmup_steps: warmup,
                        warmdown_ratio: wd_ratio,
                        final_lr_frac: final_frac,
                    },
                    eval_every: ev,
                    save_every: save,
                    model_tag: tag,
                    seed: seed >> 1, // TOML integers are i64
                    ..TrainingConfiguration::default()
                };
                c.validate().is_ok().then_some(c)
            },
        )
}

fn generation() -> impl Strategy<Value = GenerationParams> {
    (
        (
            0.0f64..=2.0,
            prop::option::of(1usize..1000),
            0.01f64..=1.0,
            0.0f64..=1.0,
        ),
        (
            0.5f64..2.0,
            0usize..256,
            1usize..4096,
            prop::option::of(0u64..1 << 62),
        ),
        (
            prop::collection::vec("[a-z\n]{1,4}", 0..3),
            1usize..8,
            prop::option::of(0usize..=20),
        ),
        (
            -2.0f64..=2.0,
            -2.0f64..=2.0,
            prop::collection::btree_map(0u32..100_000, -100.0f64..=100.0, 0..4),
        ),
    )
        .prop_map(
            |(
                (temperature, top_k, top_p, min_p),
                (rp, rw, max_tokens, seed),
                (stop, n, logprobs),
                (presence_penalty, frequency_penalty, logit_bias),
            )| {
                GenerationParams {
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    repetition_penalty: rp,
                    repetition_window: rw,
                    presence_penalty,
                    frequency_penalty,
                    logit_bias,
                    max_tokens,
                    seed,
                    stop,
                    num_samples: n,
                    logprobs,
                    response_format: None,
                }
            },
        )
}

fn message() -> impl Strategy<Value = MessageContent> {
    prop_oneof![
        text().prop_map(MessageContent::Text),
        prop::collection::vec(
            (0..3u8, text()).prop_map(|(k, text)| match k {
                0 => ContentPart::Text { text },
                1 => ContentPart::Python { text },
                _ => ContentPart::PythonOutput { text },
            }),
            1..4
        )
        .prop_map(MessageContent::Parts),
    ]
}

fn session() -> impl Strategy<Value = ConversationSession> {
    (
        "[a-f0-9]{8}",
        time(),
        prop::collection::vec(
            (message(), 0i64..100_000, prop::option::of(1usize..500)),
            0..6,
        ),
        any::<bool>(),
        (1usize..4096, 0usize..4096),
        (any::<bool>(), 0.0f64..2.0),
    )
        .prop_map(
            |(id, t0, msgs, system, (ctx, extra), (attached, temperature))| {
                let mut now = t0;
                let mut messages = Vec::new();
                if system {
                    messages.push(Message::new(MessageRole::System, "be brief").at(now));
                }
                for (i, (content, dt, tokens)) in msgs.into_iter().enumerate() {
                    now += chrono::Duration::milliseconds(dt);
                    let role = if i % 2 == 0 {
                        MessageRole::User
                    } else {
                        MessageRole::Assistant
                    };
                    messages.push(Message {
                        role,
                        content,
                        timestamp: Some(now),
                        token_count: tokens,
                    });
                }
                let mut s = ConversationSession::new(id, ctx, ctx + extra, t0).unwrap();
                if attached {
                    s.attach_model(t0).unwrap();
                }
                s.generation.temperature = temperature;
                s.updated_at = now;
                s.messages = messages;
                s
            },
        )
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<bool>().prop_map(serde_json::Value::from),
        (-1_000_000i64..1_000_000).prop_map(serde_json::Value::from),
        (-1e6f64..1e6).prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
        prop::collection::btree_map(
            "[a-z]{1,6}",
            (0u32..100).prop_map(serde_json::Value::from),
            0..3
        )
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
    ]
}

fn extra() -> impl Strategy<Value = BTreeMap<String, serde_json::Value>> {
    prop::collection::btree_map("u_[a-z_]{1,10}", json_value(), 0..4)
}

fn checkpoint_meta() -> impl Strategy<Value = CheckpointMeta> {
    (
        model_config(),
        (
            0u64..1 << 40,
            prop::option::of(0.0f64..20.0),
            prop::option::of(0.0f64..3.0),
            prop::option::of(0.0f64..1.0),
        ),
        (time(), 0.0f64..1e6, extra()),
        prop::collection::btree_map(
            "[a-z_0-9]{1,12}\\.safetensors",
            (0u64..1 << 40, any::<u32>()),
            0..4,
        ),
    )
        .prop_map(
            |(cfg, (step, loss, bpb, lr), (created, total, extra), files)| {
                let mut md = CheckpointMetadata::new(step, created);
                md.train_loss = loss;
                md.val_bpb = bpb;
                md.learning_rate = lr;
                md.timings.total_training_time = total;
                md.extra = extra;
                let mut meta = CheckpointMeta::new(cfg, md);
                meta.crc32 = 0xdead_beef;
                meta.files = files
                    .into_iter()
                    .map(|(k, (bytes, crc32))| (k, FileRecord { bytes, crc32 }))
                    .collect();
                meta
            },
        )
}

fn evaluation() -> impl Strategy<Value = EvaluationResult> {
    (
        prop::collection::btree_map("[a-z_]{1,12}", (0.0f64..=1.0, -3.0f64..=1.0), 1..6),
        time(),
        extra(),
    )
        .prop_map(|(tasks, created_at, extra)| EvaluationResult {
            model: "base/d4@100".into(),
            checkpoint: Some("/base/base_checkpoints/d4".into()),
            step: Some(100),
            config: Some(EvaluationConfig::Core {
                bundle_dir: "/data/eval_bundle".into(),
                max_per_task: (tasks.len() > 2).then_some(tasks.len()),
                world_size: 1,
            }),
            measure: Measure::Accuracy,
            metric: format!("CORE-{}", tasks.len()),
            aggregate: Some(tasks.values().map(|v| v.1).sum::<f64>() / tasks.len() as f64),
            scores: tasks.iter().map(|(k, v)| (k.clone(), v.0)).collect(),
            centered: tasks.iter().map(|(k, v)| (k.clone(), v.1)).collect(),
            created_at,
            extra,
        })
}

fn dataset() -> impl Strategy<Value = TrainingDataset> {
    let source = (
        "[a-z]{1,8}",
        prop::sample::select(vec![
            SourceType::Local,
            SourceType::HuggingFace,
            SourceType::Http,
        ]),
        prop::sample::select(vec![
            DataFormat::Parquet,
            DataFormat::Jsonl,
            DataFormat::Text,
        ]),
        0.01f64..10.0,
        prop::collection::vec("shard_[0-9]{5}\\.parquet", 0..3),
    )
        .prop_map(|(name, source_type, format, weight, shards)| DataSource {
            location: format!("/data/{name}"),
            name,
            source_type,
            format,
            weight,
            shards: shards.into_iter().map(Into::into).collect(),
        });
    let step = prop_oneof![
        (1usize..100_000).prop_map(|max_chars| PreprocessingStep::DocCap { max_chars }),
        Just(PreprocessingStep::PrependBos),
        (1usize..16).prop_map(|threads| PreprocessingStep::Tokenize { threads }),
        (1usize..4096, 1usize..2000, any::<bool>()).prop_map(|(seq_len, buffer_docs, pad)| {
            PreprocessingStep::BestFitPack {
                seq_len,
                buffer_docs,
                pad,
            }
        }),
        (0u64..1 << 62).prop_map(|seed| PreprocessingStep::Shuffle { seed }),
    ];
    let meta = (
        prop::collection::vec((0u64..1000, 0u64..1 << 40), 0..4),
        any::<bool>(),
        time(),
    )
        .prop_map(|(shards, tokenized, created_at)| DatasetMetadata {
            tokenizer: tokenized.then(|| "tokenizer.tiktoken".into()),
            total_documents: shards.iter().map(|s| s.0).sum(),
            total_tokens: tokenized.then(|| shards.iter().map(|s| s.1).sum()),
            shards: shards
                .into_iter()
                .enumerate()
                .map(|(i, (documents, tokens))| ShardInfo {
                    path: format!("shard_{i:05}.parquet").into(),
                    documents,
                    tokens: tokenized.then_some(tokens),
                })
                .collect(),
            created_at,
        });
    (
        prop::collection::vec(source, 1..4),
        prop::collection::vec(step, 0..4),
        prop::option::of(meta),
    )
        .prop_map(|(sources, preprocessing, metadata)| TrainingDataset {
            name: "mix".into(),
            kind: DatasetKind::Pretraining,
            sources,
            preprocessing,
            metadata,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn model_config_round_trips(c in model_config()) { round_trip(&c); }

    #[test]
    fn training_config_round_trips(c in training()) { round_trip(&c); }

    #[test]
    fn optimizer_config_round_trips(c in optimizer()) { round_trip(&c); }

    #[test]
    fn generation_params_round_trip(p in generation()) { round_trip(&p); }

    #[test]
    fn session_round_trips(s in session()) { round_trip(&s); }

    #[test]
    fn checkpoint_meta_round_trips(m in checkpoint_meta()) { round_trip(&m); }

    #[test]
    fn evaluation_result_round_trips(r in evaluation()) { round_trip(&r); }

    #[test]
    fn dataset_round_trips(d in dataset()) { round_trip(&d); }

    #[test]
    fn tokenizer_config_round_trips(n in 265usize..100_000) { round_trip(&TokenizerConfig::upstream(n)); }
}
