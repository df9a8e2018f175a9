//! Pretext heads: self-supervised losses built as graph ops on towers of the inlined backbone.
//! Each head is one file behind the `Head` trait; `HeadBuilder` gives heads towers, layers and
//! variables without them knowing how the backbone was inlined.
pub mod builder;
pub mod byol;
pub mod dae;
pub mod inpaint;
mod layers;
pub mod moco;
pub mod momentum;
pub mod multi;
mod replicas;
pub mod rotation;
pub mod simclr;

use tensorflow::Output;

use crate::error::Result;

pub use crate::graph::concat;
pub use builder::{BuiltHead, HeadBuilder, HeadInputs, HeadSettings};
pub use byol::ByolConfig;
pub use dae::DaeConfig;
pub use inpaint::InpaintConfig;
pub use layers::{batch_dims, normalize, random, xent_mean, Activation};
pub use moco::MocoConfig;
pub use multi::{MultiConfig, WeightedHead};
pub use rotation::RotationConfig;
pub use simclr::SimclrConfig;

/// The head an experiment trains, by kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HeadConfig {
    Dae(DaeConfig),
    Simclr(SimclrConfig),
    Rotation(RotationConfig),
    Moco(MocoConfig),
    Byol(ByolConfig),
    Inpaint(InpaintConfig),
    Multi(MultiConfig),
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig::Dae(DaeConfig::default())
    }
}

impl HeadConfig {
    /// The head behind the config.
    pub fn head(&self) -> &dyn Head {
        match self {
            HeadConfig::Dae(c) => c,
            HeadConfig::Simclr(c) => c,
            HeadConfig::Rotation(c) => c,
            HeadConfig::Moco(c) => c,
            HeadConfig::Byol(c) => c,
            HeadConfig::Inpaint(c) => c,
            HeadConfig::Multi(c) => c,
        }
    }

    /// Checks the settings before any graph is built (`batch`: the training batch size).
    pub fn validate(&self, batch: usize) -> Result<()> {
        match self {
            HeadConfig::Moco(c) => c.validate(batch),
            HeadConfig::Byol(c) => c.validate(),
            HeadConfig::Inpaint(c) => c.validate(),
            HeadConfig::Multi(c) => c.validate(batch),
            HeadConfig::Dae(c) => c.validate(),
            HeadConfig::Simclr(c) => c.validate(),
            HeadConfig::Rotation(_) => Ok(()),
        }
    }
}

/// A variable a head created (trained with the backbone, never exported).
#[derive(Debug, Clone)]
pub struct HeadVar {
    pub name: String,
    pub handle: Output,
    pub value: Output,
}

/// What a head adds to the graph.
pub struct HeadOutput {
    pub loss: Output,
    /// Scalars worth logging, by tag.
    pub summaries: Vec<(String, Output)>,
    /// Named intermediate tensors worth inspecting (`kind/what`, e.g. `dae/noisy`, the corrupted
    /// batch the tower saw): for parity tests and image summaries. Random ones are redrawn each
    /// session run, so fetch them in the run whose loss they should explain.
    pub tensors: Vec<(String, Output)>,
    /// Momentum targets to move after each optimizer step.
    pub ema: Vec<momentum::Ema>,
    /// (variable handle, new value) assignments after each optimizer step (e.g. a queue).
    pub post_assign: Vec<(Output, Output)>,
}

/// A self-supervised objective on the backbone.
pub trait Head {
    /// Kind name, as written in experiment files.
    fn kind(&self) -> &'static str;
    /// The views it needs: (the clean batch?, how many augmented views).
    fn views(&self) -> (bool, usize) {
        (true, 0)
    }
    /// Builds the head's towers and loss on its views (`b.input()`, `b.view(i)`).
    fn build(&self, b: &mut HeadBuilder) -> Result<HeadOutput>;
}
