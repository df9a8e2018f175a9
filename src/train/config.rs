//! What a training run is asked to do, checked before anything is built, and the image layout
//! a signature asks for.
use std::path::PathBuf;

use super::select;
use crate::data::augment::AugmentConfig;
use crate::data::ImageSpec;
use crate::error::{Error, Result};
use crate::graph::bn::BnMode;
use crate::heads::HeadConfig;
use crate::optim::OptimizerConfig;
use crate::savedmodel::Signature;

/// Everything a training run needs (the YAML experiment layer builds one of these).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub model: PathBuf,
    /// Whether the model is audited before TF runs it (`savedmodel::audit`).
    pub trust: crate::savedmodel::Trust,
    pub signature: String,
    /// The graph variant to load (`model.tags`); `None`: the model's default.
    pub tags: Option<Vec<String>>,
    /// Signature inputs bound to fixed values (`model.fixed_inputs`).
    pub fixed_inputs: std::collections::BTreeMap<String, serde_yaml::Value>,
    /// Where the unlabeled images are: folders, TFRecord files, IDX files (their union).
    pub data: crate::data::DataSources,
    /// Seeded shuffle each epoch (else sorted order).
    pub shuffle: bool,
    /// Seed of the data order and augmentations (None: `seed`).
    pub data_seed: Option<u64>,
    /// Prefetch depth and decoding threads.
    pub loader: crate::data::LoaderOptions,
    pub steps: u64,
    /// The first steps train the head's variables alone (the backward pass stops at the
    /// backbone's output), so a fresh head does not push its noise into pretrained features.
    pub head_warmup_steps: u64,
    pub batch: usize,
    /// Input side when the signature leaves it free.
    pub size: Option<u32>,
    /// Pixel range the model expects.
    pub range: (f32, f32),
    pub optimizer: OptimizerConfig,
    pub head: HeadConfig,
    /// A term that holds the model near what it was (L2-SP, distillation), added to the loss.
    pub retain: crate::retain::RetainConfig,
    /// Augmentations of the views heads ask for.
    pub augment: AugmentConfig,
    /// Which model variables train.
    pub train_vars: select::VarSelection,
    /// Batch norm: frozen (inference statistics) or train (batch statistics, moving ones updated).
    pub bn: BnMode,
    pub bn_momentum: f32,
    /// Fold frozen batch norms into their convolutions (`graph::fold`; same values, less work).
    pub bn_fold: bool,
    /// Batch statistics summed across `devices` (`graph::replicate`).
    pub bn_sync: bool,
    /// Recompute batch-norm outputs in the backward pass instead of keeping them (less memory).
    pub recompute: crate::graph::recompute::Recompute,
    /// Custom gradients: the model's saved gradient functions, or the forward ops' gradients.
    pub custom_gradients: crate::graph::custom::CustomGradients,
    pub seed: u64,
    /// Device of every op of the step (e.g. `/device:GPU:0`); None lets TF place them (or,
    /// with `devices`, the first of those).
    pub device: Option<String>,
    /// Devices the tower is replicated on (`train.devices`; empty: one tower).
    pub devices: Vec<String>,
    /// Where gradients from several devices are added up (`train.gradient_reduce`).
    pub gradient_reduce: crate::autodiff::reduce::GradientReduce,
    /// The cluster this process is the chief of (`cluster`); None: one process.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// A `TrainConfig` that passed `TrainConfig::check`; read through `Deref`.
#[derive(Debug, Clone)]
pub struct Checked(TrainConfig);

impl std::ops::Deref for Checked {
    type Target = TrainConfig;
    fn deref(&self) -> &TrainConfig {
        &self.0
    }
}

impl TrainConfig {
    /// A config with the experiment schema's defaults (`Experiment::new`) for everything but
    /// the paths; the data order follows `seed`.
    pub fn new(model: PathBuf, images: PathBuf) -> Self {
        let exp = crate::experiment::Experiment::new(model, vec![images]);
        let mut c = exp.train_config(exp.steps(0));
        c.data_seed = None;
        c
    }

    /// Validates the config into the form a `Trainer` is built from (ripgrep's raw args →
    /// checked args: what passed is a type, not a convention).
    pub fn check(self) -> Result<Checked> {
        self.validate()?;
        Ok(Checked(self))
    }

    /// Checks every setting before any graph is built.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::config("train.batch", "must be ≥ 1"));
        }
        let device: Vec<String> = self.device.iter().cloned().collect();
        crate::graph::placement::check_devices("model.device", &device)?;
        super::replicas::check(self)?;
        if self.batch > MAX_BATCH {
            return Err(Error::config(
                "train.batch",
                format!(
                    "{} is over the most pretext feeds in one step ({MAX_BATCH})",
                    self.batch
                ),
            ));
        }
        if self.steps == 0 {
            return Err(Error::config("train.steps", "must be ≥ 1"));
        }
        if self.loader.prefetch > MAX_PREFETCH {
            return Err(Error::config(
                "data.prefetch",
                format!(
                    "{} is over {MAX_PREFETCH} batches ahead",
                    self.loader.prefetch
                ),
            ));
        }
        if self.loader.workers > MAX_WORKERS {
            return Err(Error::config(
                "data.workers",
                format!("{} is over {MAX_WORKERS} threads", self.loader.workers),
            ));
        }
        if self.data.max_pixels == Some(0) {
            return Err(Error::config("data.max_pixels", "must be ≥ 1"));
        }
        self.check_batch_memory()?;
        if !(self.range.0 < self.range.1) {
            return Err(Error::config(
                "model.range",
                format!("{:?}: low must be below high", self.range),
            ));
        }
        if let Some(s) = self.size {
            if !(8..=2048).contains(&s) {
                return Err(Error::config(
                    "model.size",
                    format!("{s} is outside [8, 2048]"),
                ));
            }
        }
        if self.head_warmup_steps > 0 && self.head_warmup_steps >= self.steps {
            return Err(Error::config(
                "train.head_warmup_steps",
                format!(
                    "{} must be below the run's {} step(s), or the model never trains",
                    self.head_warmup_steps, self.steps
                ),
            ));
        }
        self.optimizer.validate()?;
        self.augment.validate()?;
        self.retain.validate()?;
        self.head.validate(self.batch)
    }
}

/// The largest batch, prefetch depth and thread count `validate` accepts.
const MAX_BATCH: usize = 1 << 16;
const MAX_PREFETCH: usize = 64;
const MAX_WORKERS: usize = 1024;

impl TrainConfig {
    /// The batch buffers in flight (fed, being made, prefetched) must fit in the memory the
    /// machine has available: a number `validate` accepts is one the engine can run.
    fn check_batch_memory(&self) -> Result<()> {
        let side = self.size.unwrap_or(224) as u64;
        let (clean, augmented) = self.head.head().views();
        let views = clean as u64 + augmented as u64;
        let buffers = self.loader.prefetch as u64 + 2;
        let bytes = (self.batch as u64)
            .saturating_mul(views * side * side * 3 * 4)
            .saturating_mul(buffers);
        let Some(avail) = available_memory() else {
            return Ok(());
        };
        if bytes > avail / 2 {
            return Err(Error::config(
                "train.batch",
                format!(
                    "{} images × {views} view(s) of {side}×{side}×3 in {buffers} batch buffers need {:.1} GB; \
                     this machine has {:.1} GB available (at most half goes to batches)",
                    self.batch,
                    bytes as f64 / 1e9,
                    avail as f64 / 1e9
                ),
            ));
        }
        Ok(())
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The image layout a signature's first input asks for (NHWC float).
/// Input dtypes an image batch may have: float32, uint8, int32.
pub const IMAGE_DTYPES: &[i32] = &[1, 4, 3];

/// The image batch a signature takes. Integer inputs take pixels 0..255 (`range` must be left
/// at its default or say so).
pub fn image_spec(sig: &Signature, size: Option<u32>, range: (f32, f32)) -> Result<ImageSpec> {
    let inp = sig
        .inputs
        .first()
        .ok_or_else(|| Error::graph(&sig.name, "signature has no inputs"))?;
    let is_image = |s: &crate::savedmodel::TensorSpec| {
        IMAGE_DTYPES.contains(&s.dtype) && s.shape.as_ref().is_none_or(|d| d.len() == 4)
    };
    if sig.inputs.len() > 1 && sig.inputs.iter().filter(|s| is_image(s)).count() == 1 {
        let others: Vec<String> = sig
            .inputs
            .iter()
            .filter(|s| !is_image(s))
            .map(|s| format!("'{}' ({})", s.key, crate::proto::dtype_name(s.dtype)))
            .collect();
        return Err(Error::config(
            "model.fixed_inputs",
            format!(
                "signature '{}' takes an image batch and {}: give each a value, e.g. model.fixed_inputs: {{{}: VALUE}} (flag: --set model.fixed_inputs.KEY=VALUE)",
                sig.name,
                others.join(", "),
                sig.inputs.iter().find(|s| !is_image(s)).map(|s| s.key.as_str()).unwrap_or("KEY")
            ),
        ));
    }
    if sig.inputs.len() != 1 || !IMAGE_DTYPES.contains(&inp.dtype) {
        return Err(Error::config("model.signature", format!("signature '{}' must take one image batch (float32, uint8 or int32); it takes {} input(s), first '{}' of type {}", sig.name, sig.inputs.len(), inp.key, crate::proto::dtype_name(inp.dtype))));
    }
    let range = match (inp.dtype, range) {
        (1, r) => r,
        // Integer pixels are 0..255: pretext feeds them so and casts (graph::inline).
        (_, (lo, hi)) if (lo, hi) == (0.0, 1.0) || (lo, hi) == (0.0, 255.0) => (0.0, 255.0),
        (_, (lo, hi)) => {
            return Err(Error::config(
                "model.range",
                format!(
                    "input '{}' takes {} pixels (0..255); a range of [{lo}, {hi}] does not apply",
                    inp.key,
                    crate::proto::dtype_name(inp.dtype)
                ),
            ))
        }
    };
    let shape = inp.shape.clone().unwrap_or_else(|| vec![None; 4]);
    if shape.len() != 4 {
        return Err(Error::config(
            "model.signature",
            format!(
                "input '{}' has rank {}, an image batch has rank 4 (NHWC)",
                inp.key,
                shape.len()
            ),
        ));
    }
    let side = |d: Option<i64>| -> Result<u32> {
        match (d, size) {
            (Some(v), Some(s)) if v as u32 != s => Err(Error::config(
                "model.size",
                format!("the signature fixes the input side to {v}; {s} was asked"),
            )),
            (Some(v), _) => Ok(v as u32),
            (None, Some(s)) => Ok(s),
            (None, None) => Ok(224),
        }
    };
    let channels = shape[3].unwrap_or(3);
    if channels != 1 && channels != 3 {
        return Err(Error::config(
            "model.signature",
            format!(
                "input '{}' has {channels} channels; images give 1 or 3",
                inp.key
            ),
        ));
    }
    Ok(ImageSpec {
        height: side(shape[1])?,
        width: side(shape[2])?,
        channels: channels as u32,
        range,
    })
}
