//! The experiment's sections other than the model, the head and training (data, checkpoints,
//! evaluation, export, logging), and the checks of the evaluation section.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::scoring;
use super::yes;
use crate::error::{Error, Result};

/// Checkpoints of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Steps between checkpoints (0: only at the end and on interruption).
    pub every: u64,
    /// How many to keep (the newest).
    pub keep: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection { every: 0, keep: 3 }
    }
}

/// The labeled set scored before and after training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// `DIR/<class>/*` (80/20 split) or `DIR/{train,test}/<class>/*`.
    pub labeled: PathBuf,
    #[serde(default = "default_eval_batch")]
    pub batch: usize,
    /// Labeled sets of other domains the model should keep doing well on (same layout as
    /// `labeled`): scored with it before, during and after training.
    #[serde(default)]
    pub retain: Vec<PathBuf>,
    /// Steps between evaluations during training (0: before and after only).
    #[serde(default)]
    pub every: u64,
    /// Keep (evaluate after, export) the model of the evaluation with the best kNN on `labeled`
    /// among those where every retain set's kNN is within `max_retain_drop` of its score before
    /// training; the last model when none is.
    #[serde(default)]
    pub keep_best: bool,
    /// The most a retain set's kNN top-1 may fall from before training (0.01: one point).
    #[serde(default = "default_max_retain_drop")]
    pub max_retain_drop: f32,
}

impl EvalSection {
    /// Images per evaluation step unless `eval.batch` says otherwise.
    pub const DEFAULT_BATCH: usize = 32;

    pub(super) fn check(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::config("eval.batch", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.max_retain_drop) {
            return Err(Error::config(
                "eval.max_retain_drop",
                format!(
                    "{} is outside [0, 1] (a fall in kNN top-1; 0.01 is one point)",
                    self.max_retain_drop
                ),
            ));
        }
        if self.keep_best && self.every == 0 {
            return Err(Error::config(
                "eval.keep_best",
                "needs evaluations during training to choose from: set eval.every (steps)",
            ));
        }
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let labeled = real(&self.labeled);
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.retain.iter().enumerate() {
            let what = if real(p) == labeled {
                "is also eval.labeled: retain sets are other domains"
            } else if self.retain[..i].iter().any(|q| real(q) == real(p)) {
                "is listed twice"
            } else if !names.insert(scoring::set_name(p)) {
                "has the folder name of another retain set (reports and TensorBoard name sets by it)"
            } else {
                continue;
            };
            return Err(Error::config(
                "eval.retain",
                format!("{} {what}", p.display()),
            ));
        }
        Ok(())
    }
}

/// Where the retrained model goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    /// Base directory: the model is written to `dir/<version>/` (TF Serving's layout).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Version number (default: the next free integer).
    #[serde(default)]
    pub version: Option<u64>,
    /// Replace the model at `model.path` (the original is kept as a backup beside it).
    #[serde(default)]
    pub in_place: bool,
}

/// What the run logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    pub tensorboard: bool,
    /// Steps between log lines and summaries.
    pub every: u64,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            tensorboard: true,
            every: 10,
        }
    }
}

fn default_max_retain_drop() -> f32 {
    0.01
}

fn default_eval_batch() -> usize {
    EvalSection::DEFAULT_BATCH
}

/// Where the unlabeled images are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Folders of image files.
    #[serde(default)]
    pub folders: Vec<PathBuf>,
    /// TFRecord files of `tf.train.Example`s, or folders of them.
    #[serde(default)]
    pub tfrecords: Vec<PathBuf>,
    /// The Example feature holding the encoded image.
    #[serde(default = "default_image_key")]
    pub image_key: String,
    /// IDX image files (MNIST's format; gzip-compressed or not).
    #[serde(default)]
    pub idx: Vec<PathBuf>,
    #[serde(default = "crate::data::default_extensions")]
    pub extensions: Vec<String>,
    #[serde(default = "yes")]
    pub recursive: bool,
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Seed of the data order and the augmentations.
    #[serde(default)]
    pub seed: u64,
    /// Batches prepared ahead of the step on the input threads (0: none, prepared in turn).
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Decoding threads (0: one per core).
    #[serde(default)]
    pub workers: usize,
    /// Niceness of the input threads (0–19; higher: they use the CPU the step leaves idle).
    #[serde(default = "default_nice")]
    pub nice: i32,
    /// Images whose header claims more pixels are skipped unread (also IDX files' images).
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
}

fn default_max_pixels() -> u64 {
    crate::data::DEFAULT_MAX_PIXELS
}

fn default_nice() -> i32 {
    crate::data::LoaderOptions::default().nice
}

fn default_image_key() -> String {
    crate::data::DEFAULT_IMAGE_KEY.into()
}

fn default_prefetch() -> usize {
    crate::data::LoaderOptions::default().prefetch
}
