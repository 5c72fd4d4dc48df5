//! Pretraining resumes bit-identically on the CPU: 2k steps straight and k steps + resume + k
//! steps give identical parameters, optimizer state and loss log (tiny model, generated shards,
//! gradient accumulation 2, an eval at the resume point); so does a run interrupted by SIGINT
//! at whatever step the signal lands on.

mod common;

use common::{byte_tokenizer, write_shards};

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use nanochat_core::checkpoint_manager::{self as files, checkpoint_dir};
use nanochat_core::{LRSchedule, Source, TrainingConfiguration};
use nanochat_data::pretraining::local_dataset;
use nanochat_model::ComputeDtype;
use nanochat_train::{BaseTrainArgs, base_train};

type B = Autodiff<Flex>;

/// The tests of this file one at a time: SIGINT reaches every run of the process.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(k: u64) -> TrainingConfiguration {
    TrainingConfiguration {
        depth: 2,
        aspect_ratio: 32,
        head_dim: 32,
        max_seq_len: 32,
        window_pattern: "SL".into(),
        num_iterations: Some(2 * k),
        device_batch_size: 2,
        total_batch_size: Some(128),
        schedule: LRSchedule {
            warmup_steps: 1,
            ..LRSchedule::default()
        },
        eval_every: Some(k),
        eval_tokens: 128,
        core_metric_every: None,
        sample_every: None,
        save_every: None,
        ..TrainingConfiguration::default()
    }
}

fn args(base: &Path, data: &Path, cfg: TrainingConfiguration, stop: Option<u64>) -> BaseTrainArgs {
    BaseTrainArgs {
        config: cfg,
        base_dir: base.to_path_buf(),
        dataset: local_dataset(data).unwrap(),
        compute_dtype: ComputeDtype::F32,
        peak_flops: None,
        stop_after: stop,
        progress: false,
        distributed: None,
        fail_at: None,
    }
}

fn final_files(base: &Path, step: u64) -> (Vec<u8>, Vec<u8>) {
    let dir = checkpoint_dir(base, Source::Base, "d2");
    let meta = files::load_meta(&dir, step).unwrap();
    (
        files::read_file(&dir, &meta, &files::model_file_name(step)).unwrap(),
        files::read_file(&dir, &meta, &files::optim_file_name(step, 0)).unwrap(),
    )
}

#[test]
fn resume_is_bit_identical() {
    let _serial = serial();
    let k = 3;
    let data = tempfile::tempdir().unwrap();
    write_shards(data.path(), 40);
    let tok = byte_tokenizer();
    let dev = Default::default();

    let straight_dir = tempfile::tempdir().unwrap();
    let straight = base_train::<B>(
        &args(straight_dir.path(), data.path(), config(k), None),
        tok.clone(),
        &dev,
    )
    .unwrap();
    assert_eq!(straight.step, 2 * k);

    let split_dir = tempfile::tempdir().unwrap();
    let first = base_train::<B>(
        &args(split_dir.path(), data.path(), config(k), Some(k)),
        tok.clone(),
        &dev,
    )
    .unwrap();
    assert_eq!(first.step, k);
    let resumed_cfg = TrainingConfiguration {
        resume_from_step: Some(k),
        ..config(k)
    };
    let second = base_train::<B>(
        &args(split_dir.path(), data.path(), resumed_cfg, None),
        tok,
        &dev,
    )
    .unwrap();
    assert_eq!(second.step, 2 * k);

    let losses = |m: &[nanochat_train::base_train::StepMetrics]| {
        m.iter()
            .map(|m| (m.step, m.loss.to_bits(), m.smooth_loss.to_bits()))
            .collect::<Vec<_>>()
    };
    let mut joined = losses(&first.metrics);
    joined.extend(losses(&second.metrics));
    assert_eq!(losses(&straight.metrics), joined, "loss log");
    assert_eq!(
        straight.val_bpb.map(f64::to_bits),
        second.val_bpb.map(f64::to_bits),
        "final val bpb"
    );
    let (m1, o1) = final_files(straight_dir.path(), 2 * k);
    let (m2, o2) = final_files(split_dir.path(), 2 * k);
    assert!(m1 == m2, "model weights differ after resume");
    assert!(o1 == o2, "optimizer state differs after resume");
    // The checkpoints record the LR multiplier and the last validation loss (nats/token).
    let md = |base: &Path, step| {
        let dir = checkpoint_dir(base, Source::Base, "d2");
        files::load_meta(&dir, step).unwrap().metadata
    };
    let (at_k, end) = (md(split_dir.path(), k), md(straight_dir.path(), 2 * k));
    assert!(at_k.learning_rate.is_some_and(|lr| lr > 0.0), "{at_k:?}");
    assert!(at_k.val_loss.is_some_and(|l| l > 0.0), "{at_k:?}");
    let resumed_end = md(split_dir.path(), 2 * k);
    assert_eq!(end.learning_rate, resumed_end.learning_rate);
    assert_eq!(
        end.val_loss.map(f64::to_bits),
        resumed_end.val_loss.map(f64::to_bits)
    );
    assert!(end.val_loss.is_some());
    // metrics.jsonl of the resumed run has each step once.
    let text = std::fs::read_to_string(
        checkpoint_dir(split_dir.path(), Source::Base, "d2").join("metrics.jsonl"),
    )
    .unwrap();
    assert_eq!(
        text.lines().filter(|l| l.contains("\"loss\"")).count() as u64,
        2 * k
    );
    // …and the final evaluation on a line of its own.
    assert!(text.lines().last().unwrap().contains("val_bpb"));
    // The loss fell.
    assert!(straight.metrics.last().unwrap().loss < straight.metrics[0].loss);
}

#[test]
fn an_interrupted_run_saves_and_resumes_bit_identically() {
    let _serial = serial();
    let k = 4;
    let data = tempfile::tempdir().unwrap();
    write_shards(data.path(), 40);
    let tok = byte_tokenizer();
    let dev = Default::default();
    let straight_dir = tempfile::tempdir().unwrap();
    let cfg = || TrainingConfiguration {
        eval_every: None,
        ..config(k)
    };
    base_train::<B>(
        &args(straight_dir.path(), data.path(), cfg(), None),
        tok.clone(),
        &dev,
    )
    .unwrap();

    // Ctrl-C once two steps are logged: the run finishes its step, saves and says how to resume.
    let dir = tempfile::tempdir().unwrap();
    let metrics = checkpoint_dir(dir.path(), Source::Base, "d2").join("metrics.jsonl");
    let signal = std::thread::spawn(move || {
        while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 2 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        signal_hook::low_level::raise(signal_hook::consts::SIGINT).unwrap();
    });
    let err = base_train::<B>(
        &args(dir.path(), data.path(), cfg(), None),
        tok.clone(),
        &dev,
    )
    .expect_err("the run was interrupted");
    signal.join().unwrap();
    let msg = err.to_string();
    let nanochat_train::TrainError::Interrupted { step, .. } = err else {
        panic!("not an interrupt: {msg}")
    };
    assert!((2..2 * k).contains(&step), "interrupted at step {step}");
    assert!(msg.contains(&format!("--resume-from-step {step}")), "{msg}");
    // The run's lifecycle travels with its checkpoints.
    let ckpt = checkpoint_dir(dir.path(), Source::Base, "d2");
    let states = |step: u64| -> Vec<String> {
        let meta = files::load_meta(&ckpt, step).unwrap().metadata;
        let history = meta.extra["training_state"]["history"]
            .as_array()
            .unwrap()
            .clone();
        history
            .iter()
            .map(|e| e[0].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        states(step),
        ["initialized", "training", "checkpoint_saved", "interrupted"]
    );

    let resumed = TrainingConfiguration {
        resume_from_step: Some(step),
        ..cfg()
    };
    let done = base_train::<B>(&args(dir.path(), data.path(), resumed, None), tok, &dev).unwrap();
    assert_eq!(done.step, 2 * k);
    assert!(final_files(straight_dir.path(), 2 * k) == final_files(dir.path(), 2 * k));
    let resumed = ["resumed", "training", "checkpoint_saved", "completed"];
    assert_eq!(states(2 * k)[4..], resumed, "{:?}", states(2 * k));
}
