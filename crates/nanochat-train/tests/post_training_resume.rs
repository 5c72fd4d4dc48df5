//! Midtraining, SFT and RL each run end to end on the CPU from a tiny base checkpoint on the
//! offline data, and each resumes bit-identically: N steps straight equal k steps + resume.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use burn::backend::{Autodiff, Flex};
use nanochat_core::checkpoint_manager::{self as files, checkpoint_dir};
use nanochat_core::paths::data_dir;
use nanochat_core::tokenizer_config::Vocabulary;
use nanochat_core::{DistributedConfig, LRSchedule, Source, TrainingConfiguration};
use nanochat_data::pretraining::local_dataset;
use nanochat_model::ComputeDtype;
use nanochat_tokenizer::{SPLIT_PATTERN, Tokenizer};
use nanochat_train::{
    BaseTrainArgs, ChatRlArgs, ChatStage, ChatTrainArgs, base_train, chat_rl, chat_train,
};
use parquet::arrow::ArrowWriter;

type B = Autodiff<Flex>;

fn write_shards(dir: &Path) {
    for s in 0..2 {
        let docs: Vec<String> = (0..30)
            .map(|d| {
                format!("document {d} of shard {s}: the cat sat on the mat and the dog ran home.")
            })
            .collect();
        let array: ArrayRef = Arc::new(StringArray::from(docs));
        let batch = RecordBatch::try_from_iter([("text", array)]).unwrap();
        let f = std::fs::File::create(dir.join(format!("shard_{s:05}.parquet"))).unwrap();
        let mut w = ArrowWriter::try_new(f, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

fn tok() -> Arc<Tokenizer> {
    Arc::new(Tokenizer::from_vocab(Vocabulary::from_merges(&[]).unwrap(), SPLIT_PATTERN).unwrap())
}

/// A 2-step d2 base model with T = 64 in `base`.
fn base_model(base: &Path) {
    let data = tempfile::tempdir().unwrap();
    write_shards(data.path());
    let cfg = TrainingConfiguration {
        depth: 2,
        aspect_ratio: 32,
        head_dim: 32,
        max_seq_len: 64,
        window_pattern: "L".into(),
        num_iterations: Some(2),
        device_batch_size: 2,
        total_batch_size: Some(256),
        schedule: LRSchedule {
            warmup_steps: 1,
            ..LRSchedule::default()
        },
        eval_every: None,
        core_metric_every: None,
        sample_every: None,
        ..TrainingConfiguration::default()
    };
    let args = BaseTrainArgs {
        config: cfg,
        base_dir: base.to_path_buf(),
        dataset: local_dataset(data.path()).unwrap(),
        compute_dtype: ComputeDtype::F32,
        peak_flops: None,
        stop_after: None,
        progress: false,
        distributed: None,
        fail_at: None,
    };
    base_train::<B>(&args, tok(), &Default::default()).unwrap();
}

fn files_at(base: &Path, source: Source, step: u64) -> (Vec<u8>, Vec<u8>) {
    let dir = checkpoint_dir(base, source, "d2");
    let meta = files::load_meta(&dir, step).unwrap();
    (
        files::read_file(&dir, &meta, &files::model_file_name(step)).unwrap(),
        files::read_file(&dir, &meta, &files::optim_file_name(step, 0)).unwrap(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn chat_args(stage: ChatStage, base: &Path, jsonl: &Path) -> ChatTrainArgs {
    let mut a = ChatTrainArgs::new(stage, base.to_path_buf(), data_dir());
    a.source = Some(match stage {
        ChatStage::Mid => Source::Base,
        ChatStage::Sft => Source::Mid,
    });
    a.mixture = vec![
        "GSM8K:40".into(),
        "SpellingBee:20".into(),
        format!("{}*2", jsonl.display()),
    ];
    a.val_mixture = vec![jsonl.display().to_string(), "SimpleSpelling:8".into()];
    a.device_batch_size = Some(2);
    a.total_batch_size = Some(256);
    a.num_iterations = Some(4);
    a.eval_every = Some(2);
    a.eval_tokens = 256;
    a
}

#[test]
fn mid_sft_rl_resume_bit_identically() {
    run_stages(None);
}

/// The same on 2 data-parallel ranks: each rank's loader state is stored and restored, and the
/// ranks agree on when the epoch ends.
#[test]
fn mid_sft_rl_on_two_ranks_resume_bit_identically() {
    run_stages(Some(DistributedConfig::local(2)));
}

fn run_stages(dist: Option<DistributedConfig>) {
    let straight = tempfile::tempdir().unwrap();
    base_model(straight.path());
    let split = tempfile::tempdir().unwrap();
    copy_dir(straight.path(), split.path());
    let jsonl = straight.path().join("mine.jsonl");
    std::fs::write(
        &jsonl,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Who are you?\"},{\"role\":\"assistant\",\"content\":\"I am nanochat.\"}]}\n",
    )
    .unwrap();
    let dev = Default::default();

    for stage in [ChatStage::Mid, ChatStage::Sft] {
        let mut a = chat_args(stage, straight.path(), &jsonl);
        a.distributed = dist.clone();
        let s = chat_train::<B>(&a, tok(), &dev).unwrap();
        assert_eq!(s.step, 4);
        assert!(s.val_bpb.is_some_and(f64::is_finite));
        // The checkpoint records the LR multiplier and the last validation loss (nats/token).
        let ckpt = checkpoint_dir(straight.path(), stage.source(), "d2");
        let md = files::load_meta(&ckpt, 4).unwrap().metadata;
        assert!(md.learning_rate.is_some_and(|lr| lr >= 0.0), "{md:?}");
        assert!(
            md.val_loss.is_some_and(|l| l.is_finite() && l > 0.0),
            "{md:?}"
        );
        let mut a = chat_args(stage, split.path(), &jsonl);
        a.distributed = dist.clone();
        a.stop_after = Some(2);
        assert_eq!(chat_train::<B>(&a, tok(), &dev).unwrap().step, 2);
        a.stop_after = None;
        a.resume_from_step = Some(2);
        let r = chat_train::<B>(&a, tok(), &dev).unwrap();
        assert_eq!(r.step, 4);
        let losses = |m: &[nanochat_train::chat_train::ChatStepMetrics]| {
            m.iter().map(|m| m.loss.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(
            losses(&s.metrics[2..]),
            losses(&r.metrics),
            "{stage:?} losses"
        );
        let src = stage.source();
        if let Some(d) = &dist {
            let dir = checkpoint_dir(split.path(), src, "d2");
            let meta = files::load_meta(&dir, 2).unwrap();
            let states = meta.metadata.extra["loader_states"].as_array().unwrap();
            assert_eq!(states.len(), d.world_size());
            assert_ne!(
                states[0], states[1],
                "the ranks read different conversations"
            );
        }
        assert!(
            files_at(straight.path(), src, 4) == files_at(split.path(), src, 4),
            "{stage:?} files differ"
        );
    }

    let rl = |base: &Path| {
        let mut a = ChatRlArgs::new(base.to_path_buf(), data_dir());
        a.examples_per_step = 2;
        a.num_samples = 3;
        a.max_new_tokens = 6;
        a.num_steps = Some(2);
        a.eval_every = 1;
        a.eval_examples = 2;
        a.eval_k = 2;
        a.save_every = 1;
        a.device_batch_size = 4;
        a.distributed = dist.clone();
        a
    };
    let s = chat_rl::<B>(&rl(straight.path()), tok(), &dev).unwrap();
    assert_eq!(s.step, 2);
    // RL's multiplier decays linearly to 0 at its last step.
    let lr = |step| {
        let ckpt = checkpoint_dir(straight.path(), Source::Rl, "d2");
        files::load_meta(&ckpt, step)
            .unwrap()
            .metadata
            .learning_rate
    };
    let init = rl(straight.path()).init_lr_frac;
    assert_eq!((lr(1), lr(2)), (Some(init * 0.5), Some(0.0)));
    let mut a = rl(split.path());
    a.stop_after = Some(1);
    chat_rl::<B>(&a, tok(), &dev).unwrap();
    a.stop_after = None;
    a.resume_from_step = Some(1);
    chat_rl::<B>(&a, tok(), &dev).unwrap();
    assert!(
        files_at(straight.path(), Source::Rl, 2) == files_at(split.path(), Source::Rl, 2),
        "RL files differ"
    );
}

#[test]
fn bad_settings_are_refused_before_any_weights_load() {
    let base = tempfile::tempdir().unwrap();
    base_model(base.path());
    // Without its weights: a stage that got as far as loading them would fail on the file.
    let dir = checkpoint_dir(base.path(), Source::Base, "d2");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("model_") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let jsonl = base.path().join("mine.jsonl");
    let chat =
        r#"{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."}]}"#;
    std::fs::write(&jsonl, format!("{chat}\n")).unwrap();
    let dev = Default::default();
    let refused = |stage: ChatStage, tweak: &dyn Fn(&mut ChatTrainArgs)| {
        let mut a = chat_args(stage, base.path(), &jsonl);
        a.source = Some(Source::Base);
        tweak(&mut a);
        chat_train::<B>(&a, tok(), &dev).unwrap_err().to_string()
    };
    let e = refused(ChatStage::Mid, &|a| a.lrs.matrix_lr = Some(-1.0));
    assert!(e.contains("matrix_lr") && e.contains("-1"), "{e}");
    let e = refused(ChatStage::Sft, &|a| a.warmdown_ratio = Some(1.5));
    assert!(e.contains("warmdown_ratio"), "{e}");
    let mut rl = ChatRlArgs::new(base.path().to_path_buf(), data_dir());
    rl.source = Source::Base;
    rl.temperature = 3.0;
    let e = chat_rl::<B>(&rl, tok(), &dev).unwrap_err().to_string();
    assert!(e.contains("temperature"), "{e}");
    // Valid settings get as far as the weights.
    let e = refused(ChatStage::Mid, &|_| {});
    assert!(e.contains("model_"), "{e}");
    // The inherited configuration is checked too: malformed, breaking a rule, or missing is
    // an error naming the source's meta file and the field, never a silent default.
    // (Rewritten through the checkpoint writer's encoder, so the meta's own CRC still holds.)
    let step = files::find_last_step(&dir).unwrap();
    let name = files::meta_file_name(step);
    let good = files::load_meta(&dir, step).unwrap();
    let with_user_config = |user_config: Option<serde_json::Value>| {
        let mut meta = good.clone();
        match user_config {
            Some(u) => meta.metadata.extra.insert("user_config".into(), u),
            None => meta.metadata.extra.remove("user_config"),
        };
        std::fs::write(dir.join(&name), files::encode_meta(&mut meta)).unwrap();
    };
    let mut corrupt = good.metadata.extra["user_config"].clone();
    corrupt["optimizer"]["matrix_lr"] = "fast".into();
    for (user_config, field) in [
        (Some(corrupt), "user_config.optimizer.matrix_lr"),
        (
            Some(serde_json::json!({"optimizer": {"embedding_lr": -0.3}})),
            "user_config.optimizer.embedding_lr",
        ),
        (
            Some(serde_json::json!({"schedule": {"warmdown_ratio": 2.0}})),
            "user_config.schedule.warmdown_ratio",
        ),
        (
            Some(serde_json::json!({"num_iterations": 10, "schedule": {"warmup_steps": 50}})),
            "user_config.schedule.warmup_steps",
        ),
        (None, "user_config"),
    ] {
        with_user_config(user_config);
        for e in [
            refused(ChatStage::Mid, &|_| {}),
            chat_rl::<B>(
                &ChatRlArgs {
                    source: Source::Base,
                    ..ChatRlArgs::new(base.path().to_path_buf(), data_dir())
                },
                tok(),
                &dev,
            )
            .unwrap_err()
            .to_string(),
        ] {
            assert!(e.contains(&name) && e.contains(field), "{field}: {e}");
        }
    }
}
