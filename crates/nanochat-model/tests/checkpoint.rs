//! Model checkpoints: exact round trip, the checkpoint lifecycle through save and load,
//! corruption and mismatch errors that name the file or tensor (a corrupted checkpoint stops at
//! Loaded), and import of upstream's own checkpoint directory.

use std::fs;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use chrono::DateTime;
use nanochat_core::CheckpointState;
use nanochat_core::checkpoint_handle::{CHECKPOINT_STATE_KEY, Checkpoint};
use nanochat_core::checkpoint_manager::model_file_name;
use nanochat_core::paths::fixture_dir;
use nanochat_core::{CheckpointMetadata, ModelConfig};
use nanochat_model::Gpt;
use nanochat_model::checkpoint::{
    ModelError, build_model, import_upstream, load_checkpoint, open_checkpoint, save_checkpoint,
};
use nanochat_model::weights::{
    WeightsError, load_safetensors, model_to_safetensors, named_tensors, read_safetensors,
};

type B = Flex;

fn small(n_layer: usize) -> ModelConfig {
    ModelConfig {
        sequence_len: 64,
        vocab_size: 300,
        n_layer,
        n_head: 2,
        n_kv_head: 1,
        n_embd: 64,
        ..ModelConfig::default()
    }
}

fn tokens(n: usize) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(
            (0..n as i64).map(|i| (i * 37) % 300).collect::<Vec<_>>(),
            [1, n],
        ),
        &Default::default(),
    )
}

#[test]
fn skeleton_has_inits_parameters_all_zero() {
    // What checkpoints are loaded into: the same names and shapes as a drawn model (loading
    // is strict, so every one is overwritten), and no random draw.
    for config in [
        small(3),
        ModelConfig {
            init: nanochat_core::InitScheme::V0,
            ..small(2)
        },
    ] {
        let device = Default::default();
        let (drawn, skeleton) = (
            Gpt::<B>::init(&config, &device).unwrap(),
            Gpt::<B>::skeleton(&config, &device).unwrap(),
        );
        let shapes = |m: &Gpt<B>| {
            nanochat_model::weights::param_infos(m)
                .into_iter()
                .map(|p| (p.name, p.shape))
                .collect::<Vec<_>>()
        };
        assert_eq!(shapes(&drawn), shapes(&skeleton));
        for (name, data) in named_tensors(&skeleton).unwrap() {
            let v = data.to_vec::<f32>().unwrap();
            assert!(
                v.iter().all(|&x| x == 0.0) || name.contains("lambda"),
                "{name} not zero"
            );
        }
    }
}

#[test]
fn save_load_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = Gpt::<B>::init(&small(3), &Default::default()).unwrap();
    let mut md = CheckpointMetadata::new(42, DateTime::from_timestamp(1_760_000_000, 0).unwrap());
    md.val_bpb = Some(1.5);
    save_checkpoint(
        dir.path(),
        &model,
        md,
        &[("optim_000042_rank0.safetensors".into(), vec![1, 2, 3])],
    )
    .unwrap();
    let (back, meta) = load_checkpoint::<B>(dir.path(), 42, &Default::default()).unwrap();
    assert_eq!(meta.model_config, small(3));
    assert_eq!(meta.metadata.val_bpb, Some(1.5));
    for ((na, a), (nb, b)) in named_tensors(&model)
        .unwrap()
        .into_iter()
        .zip(named_tensors(&back).unwrap())
    {
        assert_eq!(na, nb);
        assert_eq!(a.as_bytes(), b.as_bytes(), "{na} differs");
    }
    let (x, y) = (
        model.forward(tokens(16), None),
        back.forward(tokens(16), None),
    );
    assert_eq!(x.into_data().as_bytes(), y.into_data().as_bytes());
}

#[test]
fn checkpoint_lifecycle_saved_loaded_validated_in_use() {
    use CheckpointState::*;
    let dir = tempfile::tempdir().unwrap();
    let model = Gpt::<B>::init(&small(2), &Default::default()).unwrap();
    let md = CheckpointMetadata::new(5, DateTime::from_timestamp(0, 0).unwrap());
    let saved = save_checkpoint(dir.path(), &model, md, &[]).unwrap();
    assert_eq!(saved.metadata.extra[CHECKPOINT_STATE_KEY]["state"], "saved");

    let mut checkpoint = Checkpoint::load(dir.path(), 5).unwrap();
    assert_eq!(checkpoint.state(), Loaded);
    let back = build_model::<B>(&mut checkpoint, &Default::default()).unwrap();
    assert_eq!(checkpoint.state(), Validated);
    assert_eq!(back.config(), model.config());
    checkpoint.put_in_use().unwrap();
    let history: Vec<_> = checkpoint
        .lifecycle()
        .history()
        .iter()
        .map(|h| h.0)
        .collect();
    assert_eq!(history, [Created, Saved, Loaded, Validated, InUse]);
    // Building again from a checkpoint already in use is refused.
    let err = build_model::<B>(&mut checkpoint, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("InUse → Validated"), "{err}");

    let (_, opened) = open_checkpoint::<B>(dir.path(), 5, &Default::default()).unwrap();
    assert_eq!(opened.state(), InUse);
    assert_eq!(
        opened.describe(),
        "created → saved → loaded → validated → in_use"
    );
}

#[test]
fn corrupted_model_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = Gpt::<B>::init(&small(2), &Default::default()).unwrap();
    save_checkpoint(
        dir.path(),
        &model,
        CheckpointMetadata::new(1, DateTime::from_timestamp(0, 0).unwrap()),
        &[],
    )
    .unwrap();
    let path = dir.path().join(model_file_name(1));
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    let err = load_checkpoint::<B>(dir.path(), 1, &Default::default()).unwrap_err();
    assert!(matches!(err, ModelError::Checkpoint(_)), "{err}");
    assert!(
        err.to_string().contains("model_000001.safetensors"),
        "{err}"
    );
    // The meta loads; the corrupted weights never validate.
    let mut checkpoint = Checkpoint::load(dir.path(), 1).unwrap();
    let err = build_model::<B>(&mut checkpoint, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("is corrupted: CRC32"), "{err}");
    assert_eq!(checkpoint.state(), CheckpointState::Loaded);
    assert!(checkpoint.put_in_use().is_err());
}

#[test]
fn mismatched_weights_name_every_offender() {
    let two = Gpt::<B>::init(&small(2), &Default::default()).unwrap();
    let bytes = model_to_safetensors(&two).unwrap();
    // Three layers expect layer 2's tensors; a different width mis-shapes everything.
    let mut three = Gpt::<B>::init(&small(3), &Default::default()).unwrap();
    let err = load_safetensors(&mut three, &bytes, "w.safetensors".as_ref()).unwrap_err();
    let WeightsError::Mismatch {
        missing,
        unexpected,
        wrong_shape,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert!(
        missing
            .iter()
            .any(|m| m == "transformer.h.2.attn.c_q.weight"),
        "{err}"
    );
    // Layer 1 was the last in a 2-layer model (value embedding there), not in a 3-layer one.
    assert!(
        unexpected.iter().any(|u| u == "value_embeds.1.weight"),
        "{err}"
    );
    assert!(
        wrong_shape
            .iter()
            .any(|w| w == "resid_lambdas (expected [3], found [2])"),
        "{err}"
    );
    let wide = ModelConfig {
        n_embd: 128,
        ..small(2)
    };
    let mut m = Gpt::<B>::init(&wide, &Default::default()).unwrap();
    let err = load_safetensors(&mut m, &bytes, "w.safetensors".as_ref()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("transformer.wte.weight (expected [320, 128], found [320, 64])"),
        "{msg}"
    );
    assert!(
        msg.contains("transformer.h.0.mlp.c_fc.weight (expected [512, 128], found [256, 64])"),
        "{msg}"
    );
}

#[test]
fn upstream_checkpoint_imports_with_fixture_logits() {
    let fixtures = fixture_dir();
    let (model, meta) =
        import_upstream::<B>(&fixtures.join("upstream_ckpt"), None, &Default::default()).unwrap();
    assert_eq!(meta.step, 0);
    let bytes = fs::read(fixtures.join("gpt_sssl_gqa.safetensors")).unwrap();
    let tensors: std::collections::BTreeMap<_, _> = read_safetensors(&bytes, "", "f".as_ref())
        .unwrap()
        .into_iter()
        .collect();
    let idx = tensors["input.idx"].clone();
    let shape = idx.shape.clone();
    let idx = Tensor::<B, 2, Int>::from_data(
        TensorData::new(idx.to_vec::<i64>().unwrap(), [shape[0], shape[1]]),
        &Default::default(),
    );
    let got = model
        .forward(idx, None)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let want = tensors["output.logits"].clone().to_vec::<f32>().unwrap();
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let scale = want.iter().map(|b| b.abs()).fold(0.0, f32::max);
    assert!(err / scale < 1e-4, "rel err {}", err / scale);
}
