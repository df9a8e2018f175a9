//! Experiments as YAML files: the schema (one struct per section, unknown keys refused), and its
//! `.init()` into the library's configs. Parsing, locations and `--set` overrides are in `load`.
pub mod check;
pub mod evaluations;
mod hooks;
mod load;
pub mod lock;
mod overrides;
pub mod report;
pub mod run;
pub mod scoring;
mod sections;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use load::{locate, Source};
pub use overrides::Override;
pub use sections::{CheckpointSection, DataSection, EvalSection, ExportSection, LoggingSection};

use crate::data::augment::AugmentConfig;
use crate::error::{Error, Result};
use crate::graph::bn::BnMode;
use crate::heads::HeadConfig;
use crate::optim::{OptimizerConfig, Schedule};
use crate::train::select::VarSelection;
use crate::train::TrainConfig;

/// A whole experiment (see docs/EXPERIMENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub augment: AugmentConfig,
    #[serde(default)]
    pub head: HeadConfig,
    /// A term that keeps what the model knew (`{kind: l2sp|distill|none, weight: W}`).
    #[serde(default)]
    pub retain: crate::retain::RetainConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub eval: Option<EvalSection>,
    #[serde(default)]
    pub export: Option<ExportSection>,
    #[serde(default)]
    pub logging: LoggingSection,
    /// Train on several machines (docs/DISTRIBUTED.md): `{chief: [HOST:PORT], worker:
    /// [HOST:PORT, …], timeout_seconds: S}`, the shape of `TF_CONFIG`'s cluster. This process is
    /// the chief; one tower per worker unless `train.devices` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// The SavedModel and how it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub path: PathBuf,
    #[serde(default = "default_signature")]
    pub signature: String,
    /// The graph variant to load, by tag set (a TF1 Hub module's `[]` or `[train]`); default:
    /// a TF1 Hub module's `train` variant when it has one, else its inference one; a TF2
    /// SavedModel's `serve` graph.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Values for signature inputs other than the image batch (a `training` flag, a rate):
    /// `{KEY: VALUE}`, VALUE a number, a boolean or nested lists of them.
    #[serde(default)]
    pub fixed_inputs: std::collections::BTreeMap<String, serde_yaml::Value>,
    /// Input side for signatures with a free spatial size (default 224).
    #[serde(default)]
    pub size: Option<u32>,
    /// Pixel range the model expects.
    #[serde(default = "default_range")]
    pub range: (f32, f32),
    #[serde(default)]
    pub bn: BnMode,
    #[serde(default = "default_bn_momentum")]
    pub bn_momentum: f32,
    /// Fold each inference-mode batch norm (`bn: frozen`, or a frozen layer's with `bn: train`)
    /// into the convolution before it (same values; less time and memory per step). `false`
    /// keeps the batch-norm ops as exported.
    #[serde(default = "yes")]
    pub bn_fold: bool,
    /// With several `train.devices`: batch norms in train mode normalise with the statistics
    /// of the whole batch, summed across the replicas (`false`: each replica's own share;
    /// their moving averages are averaged).
    #[serde(default)]
    pub bn_sync: bool,
    /// `all`, `{regex: PATTERN}` or `{last_layers: N}`.
    #[serde(default)]
    pub train_vars: VarSelection,
    /// Recompute batch-norm outputs in the backward pass instead of keeping them in memory:
    /// auto (when oneDNN is off), on, off.
    #[serde(default)]
    pub recompute: crate::graph::recompute::Recompute,
    /// Nodes with a custom gradient (`tf.custom_gradient`): `saved` differentiates them with the
    /// gradient function the model stores, as TF does; `forward` through their forward ops.
    #[serde(default)]
    pub custom_gradients: crate::graph::custom::CustomGradients,
    /// Device of every op of the training step (e.g. `/device:GPU:0`).
    #[serde(default)]
    pub device: Option<String>,
    /// Load the model even if its graph touches files, processes or the network
    /// (`savedmodel::audit`); only for models you trust.
    #[serde(default)]
    pub trust: bool,
}

/// How long and how big.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimizer steps (exclusive with `epochs`; default 100).
    pub steps: Option<u64>,
    /// Passes over the data, converted to steps from the number of images.
    pub epochs: Option<f64>,
    pub batch: usize,
    /// Stop (after a whole step) once this much training time has passed.
    pub max_minutes: Option<f64>,
    /// Steps at the start that train the head alone (the model's variables wait).
    pub head_warmup_steps: u64,
    /// Seed of the graph's random ops (head initialisation, noise, masks).
    pub seed: u64,
    /// Devices the tower is replicated on, the batch split evenly over them (`[]`: one tower).
    pub devices: Vec<String>,
    /// How a variable's gradients from several devices are added up: `variable` (beside it)
    /// or `collective` (TF's all-reduce across the devices).
    pub gradient_reduce: crate::autodiff::reduce::GradientReduce,
}

impl TrainSection {
    /// Steps of a run that gives neither `steps` nor `epochs`.
    pub const DEFAULT_STEPS: u64 = 100;
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            steps: None,
            epochs: None,
            batch: 32,
            max_minutes: None,
            head_warmup_steps: 0,
            seed: 0,
            devices: Vec::new(),
            gradient_reduce: Default::default(),
        }
    }
}

fn default_signature() -> String {
    crate::savedmodel::DEFAULT_SIGNATURE.into()
}
fn default_range() -> (f32, f32) {
    (0.0, 1.0)
}
fn default_bn_momentum() -> f32 {
    0.99
}
pub(super) fn yes() -> bool {
    true
}

impl Experiment {
    /// The experiment on `model` over the image folders `folders` with every other setting at
    /// its default: the schema's defaults are the only ones pretext has.
    pub fn new(model: PathBuf, folders: Vec<PathBuf>) -> Experiment {
        use serde_yaml::{Mapping, Value};
        let section = |k: &str, v: Value| {
            let mut m = Mapping::new();
            m.insert(Value::from(k), v);
            Value::Mapping(m)
        };
        let path = |p: PathBuf| Value::from(p.to_string_lossy().into_owned());
        let mut root = Mapping::new();
        root.insert("model".into(), section("path", path(model)));
        let folders = Value::Sequence(folders.into_iter().map(path).collect());
        root.insert("data".into(), section("folders", folders));
        serde_yaml::from_value(Value::Mapping(root)).expect("every other key has a default")
    }

    /// Steps the run takes on `images` unlabeled images.
    pub fn steps(&self, images: usize) -> u64 {
        match (self.train.steps, self.train.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => ((e * images as f64) / self.train.batch.max(1) as f64).ceil() as u64,
            (None, None) => TrainSection::DEFAULT_STEPS,
        }
    }

    /// Checks what can be checked without reading the model or the images.
    /// The most steps a run may plan, from train.steps or (once the images are counted, in
    /// `check`) train.epochs: years of training on any machine.
    pub const MAX_STEPS: u64 = 1_000_000_000;

    pub fn check_settings(&self) -> Result<()> {
        // The largest evaluation batch (one tensor of batch × side² × 3 floats).
        const MAX_EVAL_BATCH: usize = 4096;
        if self.train.steps.is_some() && self.train.epochs.is_some() {
            return Err(Error::config(
                "train.epochs",
                "give train.steps or train.epochs, not both",
            ));
        }
        if let Some(e) = self.train.epochs {
            if !(e > 0.0 && e.is_finite()) {
                return Err(Error::config("train.epochs", format!("{e} must be > 0")));
            }
        }
        if self.train.steps == Some(0) {
            return Err(Error::config("train.steps", "must be ≥ 1"));
        }
        if let Some(s) = self.train.steps.filter(|s| *s > Self::MAX_STEPS) {
            return Err(Error::config(
                "train.steps",
                format!(
                    "{s} is over {} (years of training; use train.max_minutes to stop by time)",
                    Self::MAX_STEPS
                ),
            ));
        }
        if let Some(ev) = self.eval.as_ref().filter(|e| e.batch > MAX_EVAL_BATCH) {
            return Err(Error::config(
                "eval.batch",
                format!(
                    "{} is over {MAX_EVAL_BATCH} images per evaluation step",
                    ev.batch
                ),
            ));
        }
        if let Some(m) = self.train.max_minutes {
            if !(m > 0.0 && m.is_finite()) {
                return Err(Error::config(
                    "train.max_minutes",
                    format!("{m} must be > 0"),
                ));
            }
        }
        let d = &self.data;
        if d.folders.is_empty() && d.tfrecords.is_empty() && d.idx.is_empty() {
            return Err(Error::config(
                "data.folders",
                "list at least one folder of images (or data.tfrecords / data.idx files)",
            ));
        }
        if !(0..=19).contains(&d.nice) {
            return Err(Error::config(
                "data.nice",
                format!("{} is outside 0..=19", d.nice),
            ));
        }
        if d.image_key.is_empty() {
            return Err(Error::config(
                "data.image_key",
                "empty; the Example feature with the encoded image, e.g. image/encoded",
            ));
        }
        if self.data.extensions.is_empty() {
            return Err(Error::config(
                "data.extensions",
                format!("list at least one of {:?}", crate::data::EXTENSIONS),
            ));
        }
        if self.logging.every == 0 {
            return Err(Error::config("logging.every", "must be ≥ 1"));
        }
        if self.checkpoint.keep == 0 {
            return Err(Error::config("checkpoint.keep", "must be ≥ 1"));
        }
        if let Some(x) = &self.export {
            if x.in_place && x.dir.is_some() {
                return Err(Error::config(
                    "export.in_place",
                    "give export.dir or export.in_place: true, not both",
                ));
            }
            if !x.in_place && x.dir.is_none() {
                return Err(Error::config(
                    "export.dir",
                    "missing: where to write <dir>/<version>/ (or in_place: true)",
                ));
            }
        }
        if let Some(e) = &self.eval {
            e.check()?;
        }
        // Everything `TrainConfig` checks (epochs: steps unknown until the images are counted).
        let steps = match (self.train.steps, self.train.epochs) {
            (Some(s), _) => s,
            (None, Some(_)) => u64::MAX / 2,
            (None, None) => self.steps(0),
        };
        self.train_config(steps).check().map(|_| ())
    }

    /// The library config for a run of `steps` steps.
    pub fn train_config(&self, steps: u64) -> TrainConfig {
        let (m, d, c) = (&self.model, &self.data, self.cluster.as_ref());
        let mut optimizer = self.optimizer.clone();
        if let Schedule::WarmupCosine { total_steps, .. } = optimizer.schedule_mut() {
            if *total_steps == 0 {
                *total_steps = steps;
            }
        }
        TrainConfig {
            model: m.path.clone(),
            trust: crate::savedmodel::Trust::from_flag(m.trust),
            signature: m.signature.clone(),
            tags: m.tags.clone(),
            fixed_inputs: m.fixed_inputs.clone(),
            data: crate::data::DataSources {
                folders: d.folders.clone(),
                recursive: d.recursive,
                extensions: d.extensions.clone(),
                tfrecords: d.tfrecords.clone(),
                image_key: d.image_key.clone(),
                idx: d.idx.clone(),
                max_pixels: Some(d.max_pixels),
            },
            shuffle: d.shuffle,
            data_seed: Some(d.seed),
            loader: crate::data::LoaderOptions {
                prefetch: d.prefetch,
                workers: d.workers,
                nice: d.nice,
            },
            steps,
            head_warmup_steps: self.train.head_warmup_steps,
            batch: self.train.batch,
            size: m.size,
            range: m.range,
            optimizer,
            head: self.head.clone(),
            retain: self.retain.clone(),
            augment: self.augment.clone(),
            train_vars: m.train_vars.clone(),
            bn: m.bn,
            bn_momentum: m.bn_momentum,
            bn_fold: m.bn_fold,
            bn_sync: m.bn_sync,
            recompute: m.recompute,
            custom_gradients: m.custom_gradients,
            seed: self.train.seed,
            device: m.device.clone().or_else(|| c.map(|c| c.chief_device())),
            devices: match (self.train.devices.is_empty(), c) {
                (true, Some(c)) => c.worker_devices(),
                _ => self.train.devices.clone(),
            },
            gradient_reduce: self.train.gradient_reduce,
            cluster: self.cluster.clone(),
        }
    }

    /// Relative paths made absolute against `cwd` (a run directory's config must not depend
    /// on where `resume` is started).
    pub fn absolutize(&mut self, cwd: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = cwd.join(&*p);
            }
        };
        abs(&mut self.model.path);
        self.data.folders.iter_mut().for_each(abs);
        self.data.tfrecords.iter_mut().for_each(abs);
        self.data.idx.iter_mut().for_each(abs);
        if let Some(e) = &mut self.eval {
            abs(&mut e.labeled);
            e.retain.iter_mut().for_each(abs);
        }
        if let Some(x) = &mut self.export {
            if let Some(d) = &mut x.dir {
                abs(d);
            }
        }
    }
}

#[cfg(test)]
mod tests;
