//! pretext: retrain TensorFlow SavedModels without labels, in TF's own runtime.
//!
//! Flow: `savedmodel` (read + load) → `graph` (inline the signature into a flat, trainable
//! subgraph) → `autodiff` (gradients) → `heads` (pretext losses) → `optim` → `data` → `train`
//! → `export` / `eval`; `experiment` reads YAML experiments and runs them end to end.
pub mod autodiff;
pub mod data;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod graph;
pub mod heads;
pub mod inspect;
pub mod optim;
pub mod runtime;
pub mod savedmodel;
pub mod train;

pub use error::{Error, Result};
