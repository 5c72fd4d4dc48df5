//! # nanochat-train
//!
//! nanochat's training stages: parquet shards and their download (upstream
//! `nanochat/dataset.py`), the BOS-aligned best-fit data loader with exact resume
//! (`dataloader.py`), the combined MuonAdamW optimizer (`optim.py`), and the loops of
//! `base_train.py`, midtraining (v0 `mid_train.py`), `chat_sft.py` and `chat_rl.py`.
//!
//! **Status: skeleton.** Configuration types (training, optimizer, LR schedule, datasets) are
//! in [`nanochat_core`]; the loops are being ported here next.

#![warn(missing_docs)]
