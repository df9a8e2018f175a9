//! pretext: retrain TensorFlow SavedModels without labels, in TF's own runtime.
//!
//! The flow, one module per stage:
//!
//! | stage | module | does |
//! |---|---|---|
//! | read, audit, load | [`savedmodel`] | parses `saved_model.pb`, refuses models that touch files or the network, loads it in a TF session as TF Serving does |
//! | rewrite | [`graph`] | inlines the signature into a flat subgraph that reads the model's own variables; batch-norm folding and mode, recompute |
//! | differentiate | [`autodiff`] | TF's gradient registry (and Rust fallbacks) over the flat graph |
//! | pretext loss | [`heads`] | denoising AE, SimCLR, MoCo, BYOL, rotation, inpainting, multi-task, as graph ops |
//! | keep what it knew | [`retain`] | L2-SP toward the original weights, distillation from a frozen original backbone, added to the head's loss |
//! | update | [`optim`] | Adam, AdamW, SGD, LARS as `ResourceApply*` ops, in-graph schedules |
//! | input | [`data`] | folders, TFRecord, IDX; decoding and augmentation on worker threads |
//! | several machines | [`cluster`] | `pretext worker`'s TF gRPC server, the chief's session on its own one, `TF_CONFIG`, which task a failed step waited on |
//! | step | [`train`] | [`train::Trainer`] builds it all; [`train::Trainer::drive`] is the one step loop, extended by [`train::Hook`]s |
//! | out | [`export`], [`eval`] | `OUT/<version>/` for TF Serving and `hub.load`; kNN and linear-probe scores |
//!
//! [`experiment::Experiment`] is the one schema (YAML files, `pretext train`'s flags and library
//! users all start from it; its defaults are the only ones); [`experiment::run`] runs one end
//! to end in a run directory. Every error is an [`Error`] naming the file, key, node or op.
//!
//! Retraining a SavedModel from Rust (`examples/retrain.rs`):
//!
//! ```no_run
//! use pretext::experiment::Experiment;
//! use pretext::heads::{HeadConfig, SimclrConfig};
//! use pretext::train::Trainer;
//!
//! # fn main() -> pretext::Result<()> {
//! let mut exp = Experiment::new("models/mobilenet".into(), vec!["photos/".into()]);
//! exp.head = HeadConfig::Simclr(SimclrConfig::default());
//! exp.train.batch = 16;
//! exp.check_settings()?;
//! let mut trainer = Trainer::new(&exp.train_config(50))?;
//! let losses = trainer.run(50)?;
//! println!("loss {:.4} → {:.4}", losses[0], losses[losses.len() - 1]);
//! let dir = pretext::export::export(trainer.model(), "served/mobilenet".as_ref(), None)?;
//! println!("exported {}", dir.display());
//! # Ok(())
//! # }
//! ```
pub mod autodiff;
pub mod cluster;
pub mod data;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod graph;
pub mod heads;
pub mod inspect;
pub mod optim;
pub mod proto;
pub mod retain;
pub mod runtime;
pub mod savedmodel;
pub mod train;

pub use error::{Error, Key, Result};
