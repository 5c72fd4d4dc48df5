//! Data parallelism on the CPU through burn's collective engine:
//!
//! - 2 ranks × 1 micro-batch give the same parameters as 1 rank × 2 micro-batches of the same
//!   rows (the same total batch), within float32 reduction-order tolerance, over 3 steps;
//! - `--devices 1` (one rank through the collective) is bit-identical to no collective;
//! - a rank failing mid-step stops every rank with an error naming it, the last checkpoint
//!   stays loadable, and resuming from it with 2 ranks reproduces the uninterrupted 2-rank run
//!   bit for bit (loader states of both ranks included).
//!
//! - chat evals sharded over 2 ranks count the same passes as one rank.
//!
//! The collective engine is one per backend type and process, so these tests take a lock.

mod common;

use common::{byte_tokenizer, write_shards};

use std::path::Path;
use std::sync::Mutex;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use nanochat_core::checkpoint_manager::{self as files, checkpoint_dir};
use nanochat_core::{
    DistributedConfig, LRSchedule, ModelConfig, OptimizerConfig, Source, TrainingConfiguration,
};
use nanochat_data::pretraining::local_dataset;
use nanochat_model::checkpoint::load_checkpoint;
use nanochat_model::distributed::{Rank, run_ranks};
use nanochat_model::weights::named_tensors;
use nanochat_model::{ComputeDtype, Gpt};
use nanochat_train::data_parallel::{MicroBatch, train_step};
use nanochat_train::{BaseTrainArgs, GroupLrs, MuonAdamW, StepScalars, TrainError, base_train};

type B = Autodiff<Flex>;
type Inner = Flex;

static COLLECTIVE: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny_model() -> ModelConfig {
    ModelConfig {
        sequence_len: 16,
        vocab_size: 64,
        n_layer: 2,
        n_head: 2,
        n_kv_head: 1,
        n_embd: 64,
        window_pattern: "L".into(),
        ..ModelConfig::from_depth(2).unwrap()
    }
}

/// Deterministic rows: `[steps][micro][B × (T+1)]` token ids below 64.
fn rows(steps: usize, micro: usize, b: usize, t: usize) -> Vec<Vec<Vec<i64>>> {
    (0..steps)
        .map(|s| {
            (0..micro)
                .map(|m| {
                    (0..b * (t + 1))
                        .map(|i| ((i * 7 + s * 13 + m * 29 + (i * i) % 11) % 64) as i64)
                        .collect()
                })
                .collect()
        })
        .collect()
}

fn batch(row: &[i64], b: usize, t: usize) -> MicroBatch<B> {
    let full = Tensor::<B, 2, Int>::from_data(
        TensorData::new(row.to_vec(), [b, t + 1]),
        &Default::default(),
    );
    (full.clone().narrow(1, 0, t), full.narrow(1, 1, t))
}

fn scalars(step: usize) -> StepScalars {
    StepScalars {
        lr_multiplier: 1.0 - 0.2 * step as f64,
        muon_momentum: 0.9,
        muon_weight_decay: 0.1,
    }
}

/// Trains `steps` steps; rank `r` of `world` takes micro-batches `r, r + world, …` of each
/// step, with `micro / world` accumulation steps.
fn train(model: Gpt<B>, data: &[Vec<Vec<i64>>], rank: &Rank<Inner>, b: usize, t: usize) -> Gpt<B> {
    let cfg = OptimizerConfig::default();
    let mut opt = MuonAdamW::new(&model, &cfg, &GroupLrs::scaled(&cfg, 1.0)).unwrap();
    let mut model = model;
    for (s, step_rows) in data.iter().enumerate() {
        let mine: Vec<&Vec<i64>> = step_rows
            .iter()
            .skip(rank.rank)
            .step_by(rank.world_size)
            .collect();
        let mut it = mine.into_iter();
        let next = || Ok::<_, TrainError>(batch(it.next().unwrap(), b, t));
        let accum = (step_rows.len() / rank.world_size) as u64;
        model = train_step(model, &mut opt, next, accum, &scalars(s), rank, None)
            .unwrap()
            .0;
    }
    model
}

fn max_rel_diff(a: &Gpt<B>, b: &Gpt<B>) -> f32 {
    let (ta, tb) = (named_tensors(a).unwrap(), named_tensors(b).unwrap());
    assert_eq!(ta.len(), tb.len());
    let mut worst = 0f32;
    for ((na, da), (nb, db)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        let (va, vb) = (da.to_vec::<f32>().unwrap(), db.to_vec::<f32>().unwrap());
        let scale = va.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
        for (x, y) in va.iter().zip(&vb) {
            worst = worst.max((x - y).abs() / scale);
        }
    }
    worst
}

fn bits(m: &Gpt<B>) -> Vec<Vec<u8>> {
    named_tensors(m)
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.into_bytes().to_vec())
        .collect()
}

#[test]
fn two_ranks_match_one_rank_with_the_same_total_batch() {
    let _g = lock();
    let (b, t) = (2, 16);
    let data = rows(3, 2, b, t);
    let device = Default::default();
    B::seed(&device, 7);
    let init = Gpt::<B>::init(&tiny_model(), &device).unwrap();

    let single = train(init.clone(), &data, &Rank::single(device), b, t);
    let ranks = run_ranks::<Inner, _, String, _>(&DistributedConfig::local(2), &device, |rank| {
        Ok(train(init.clone().fork(&rank.device), &data, &rank, b, t))
    })
    .unwrap();
    assert_eq!(ranks.len(), 2);
    // The replicas apply the same averaged update: identical bits.
    assert!(
        bits(&ranks[0]) == bits(&ranks[1]),
        "the two replicas differ"
    );
    let d = max_rel_diff(&single, &ranks[0]);
    eprintln!("2 ranks vs 1 rank: max relative difference {d}");
    assert!(d < 1e-4, "2 ranks vs 1 rank: max relative difference {d}");
    // …and the steps did move the weights by far more than that.
    let moved = max_rel_diff(&init, &single);
    assert!(moved > 1e-2, "training barely moved the weights ({moved})");
}

#[test]
fn one_device_through_the_collective_is_bit_identical() {
    let _g = lock();
    let (b, t) = (2, 16);
    let data = rows(2, 2, b, t);
    let device = Default::default();
    B::seed(&device, 11);
    let init = Gpt::<B>::init(&tiny_model(), &device).unwrap();
    let plain = train(init.clone(), &data, &Rank::single(device), b, t);
    let through = run_ranks::<Inner, _, String, _>(&DistributedConfig::local(1), &device, |rank| {
        assert!(rank.uses_collective());
        Ok(train(init.clone(), &data, &rank, b, t))
    })
    .unwrap();
    assert!(bits(&plain) == bits(&through[0]));
}

fn config(resume: Option<u64>) -> TrainingConfiguration {
    TrainingConfiguration {
        depth: 2,
        aspect_ratio: 32,
        head_dim: 32,
        max_seq_len: 32,
        window_pattern: "SL".into(),
        num_iterations: Some(5),
        device_batch_size: 2,
        total_batch_size: Some(256),
        schedule: LRSchedule {
            warmup_steps: 1,
            ..LRSchedule::default()
        },
        eval_every: Some(2),
        eval_tokens: 256,
        core_metric_every: None,
        sample_every: None,
        save_every: Some(2),
        resume_from_step: resume,
        ..TrainingConfiguration::default()
    }
}

fn args(
    base: &Path,
    data: &Path,
    resume: Option<u64>,
    fail_at: Option<(usize, u64)>,
) -> BaseTrainArgs {
    BaseTrainArgs {
        config: config(resume),
        base_dir: base.to_path_buf(),
        dataset: local_dataset(data).unwrap(),
        compute_dtype: ComputeDtype::F32,
        peak_flops: None,
        stop_after: None,
        progress: false,
        distributed: Some(DistributedConfig::local(2)),
        fail_at,
    }
}

#[test]
fn a_failing_rank_stops_the_run_and_the_last_checkpoint_resumes() {
    let _g = lock();
    let data = tempfile::tempdir().unwrap();
    write_shards(data.path(), 48);
    let tok = byte_tokenizer();
    let dev = Default::default();

    let straight_dir = tempfile::tempdir().unwrap();
    let straight = base_train::<B>(
        &args(straight_dir.path(), data.path(), None, None),
        tok.clone(),
        &dev,
    )
    .unwrap();
    assert_eq!(straight.step, 5);
    // 2 ranks × 2 rows × 32 tokens × 2 micro-steps = 256.
    assert_eq!(straight.plan.grad_accum_steps, 2);

    let failed_dir = tempfile::tempdir().unwrap();
    let err = base_train::<B>(
        &args(failed_dir.path(), data.path(), None, Some((1, 3))),
        tok.clone(),
        &dev,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("rank 1 of 2 failed: injected failure at step 3"),
        "{msg}"
    );
    assert!(msg.contains("(rank 0 was stopped)"), "{msg}");
    let dir = checkpoint_dir(failed_dir.path(), Source::Base, "d2");
    assert_eq!(files::find_last_step(&dir).unwrap(), 2);
    // The checkpoint before the failure is whole: meta, CRCs, every tensor.
    let (_, meta) = load_checkpoint::<Inner>(&dir, 2, &dev).unwrap();
    assert_eq!(meta.metadata.extra["world_size"], 2);
    assert_eq!(
        meta.metadata.extra["dataloader_states"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let resumed = base_train::<B>(
        &args(failed_dir.path(), data.path(), Some(2), None),
        tok,
        &dev,
    )
    .unwrap();
    assert_eq!(resumed.step, 5);
    let read = |base: &Path| {
        let dir = checkpoint_dir(base, Source::Base, "d2");
        let meta = files::load_meta(&dir, 5).unwrap();
        (
            files::read_file(&dir, &meta, &files::model_file_name(5)).unwrap(),
            files::read_file(&dir, &meta, &files::optim_file_name(5, 0)).unwrap(),
        )
    };
    let (m1, o1) = read(straight_dir.path());
    let (m2, o2) = read(failed_dir.path());
    assert!(
        m1 == m2,
        "model after fail + resume differs from the straight run"
    );
    assert!(
        o1 == o2,
        "optimizer after fail + resume differs from the straight run"
    );
    assert_eq!(
        straight.val_bpb.map(f64::to_bits),
        resumed.val_bpb.map(f64::to_bits)
    );
}

#[test]
fn sharded_chat_eval_counts_like_one_rank() {
    use nanochat_data::tasks::{TaskSpec, TaskSplit};
    use nanochat_eval::chat_eval::{ChatEvalOptions, evaluate_task};
    use nanochat_infer::Engine;

    let _g = lock();
    let tok = byte_tokenizer();
    let device = Default::default();
    Inner::seed(&device, 5);
    let cfg = ModelConfig {
        sequence_len: 1024,
        vocab_size: tok.vocab_size(),
        ..tiny_model()
    };
    let model = Gpt::<Inner>::init(&cfg, &device).unwrap();
    let task = TaskSpec::load(
        "MMLU",
        TaskSplit::Test,
        &nanochat_core::paths::data_dir(),
        0,
    )
    .unwrap();
    let opts = ChatEvalOptions {
        max_problems: Some(7),
        batch_size: 3,
        ..ChatEvalOptions::default()
    };
    let engine = Engine::new(model.clone(), tok.clone()).unwrap();
    let one = evaluate_task(&engine, task.as_ref(), &opts, &Rank::single(device)).unwrap();
    let two = run_ranks::<Inner, _, String, _>(&DistributedConfig::local(2), &device, |rank| {
        let engine = Engine::new(model.clone(), tok.clone()).map_err(|e| e.to_string())?;
        evaluate_task(&engine, task.as_ref(), &opts, &rank).map_err(|e| e.to_string())
    })
    .unwrap();
    // Seeded: 2 of the 7 are right, so the sum across ranks is really tested.
    assert!(one.passed > 0 && one.passed < one.total, "{}", one.passed);
    assert_eq!(one.total, 7);
    for o in &two {
        assert_eq!((o.total, o.passed), (one.total, one.passed));
    }
}
