//! `pretext train`'s flags as key-path overrides on the default experiment. Each flag names one
//! key of the experiment schema (`FLAGS`), so defaults, validation and errors are the schema's;
//! `train` then runs the experiment like `pretext run` (`bench` times its steps: cli_bench).
use std::path::PathBuf;

use pretext::experiment::{Experiment, Override, Source};
use pretext::Error;
use serde_yaml::Value;

/// The flags of `pretext train` that set one key each: (flag, key path).
pub(crate) const FLAGS: &[(&str, &str)] = &[
    ("model", "model.path"),
    ("trust-model", "model.trust"),
    ("signature", "model.signature"),
    ("tags", "model.tags"),
    ("size", "model.size"),
    ("range", "model.range"),
    ("bn", "model.bn"),
    ("bn-momentum", "model.bn_momentum"),
    ("bn-fold", "model.bn_fold"),
    ("bn-sync", "model.bn_sync"),
    ("recompute", "model.recompute"),
    ("custom-gradients", "model.custom_gradients"),
    ("train-vars", "model.train_vars"),
    ("device", "model.device"),
    ("devices", "train.devices"),
    ("gradient-reduce", "train.gradient_reduce"),
    ("images", "data.folders"),
    ("tfrecords", "data.tfrecords"),
    ("image-key", "data.image_key"),
    ("idx", "data.idx"),
    ("prefetch", "data.prefetch"),
    ("workers", "data.workers"),
    ("nice", "data.nice"),
    ("steps", "train.steps"),
    ("batch", "train.batch"),
    ("head-warmup", "train.head_warmup_steps"),
    ("seed", "train.seed"),
    ("optimizer", "optimizer.kind"),
    ("lr", "optimizer.learning_rate"),
    ("weight-decay", "optimizer.weight_decay"),
    ("lr-warmup", "optimizer.schedule"),
    ("head", "head"),
    ("multi", "head"),
    ("mask-ratio", "head.mask_ratio"),
    ("queue-size", "head.queue_size"),
    ("temperature", "head.temperature"),
    ("noise", "head.noise"),
    ("noise-level", "head.noise_level"),
    ("target-size", "head.target_size"),
    ("decoder", "head.decoder"),
    ("hidden", "head.hidden"),
    ("retain", "retain"),
    ("retain-weight", "retain.weight"),
    ("labeled", "eval.labeled"),
    ("retain-set", "eval.retain"),
    ("export", "export.dir"),
];

/// Flags of `pretext train` (and `pretext bench`). Unset flags keep the experiment schema's
/// defaults (shown in `--help`); `--set KEY.PATH=VALUE` reaches every other key.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long)]
    model: PathBuf,
    /// Load the model even if its graph touches files, processes or the network.
    #[arg(long)]
    trust_model: bool,
    /// A folder of images (repeat for several).
    #[arg(long, required_unless_present_any = ["tfrecords", "idx"])]
    images: Vec<PathBuf>,
    /// A TFRecord file of tf.train.Examples, or a folder of them (repeat for several).
    #[arg(long)]
    tfrecords: Vec<PathBuf>,
    /// The Example feature holding the encoded image.
    #[arg(long)]
    image_key: Option<String>,
    /// An IDX image file, gzip-compressed or not (repeat for several).
    #[arg(long)]
    idx: Vec<PathBuf>,
    /// Batches prepared ahead of the step on the input threads (0: none).
    #[arg(long, value_parser = number::<usize>)]
    prefetch: Option<String>,
    /// Decoding threads (0: one per core).
    #[arg(long, value_parser = number::<usize>)]
    workers: Option<String>,
    /// Niceness of the input threads (0-19; higher: they run in the CPU time the step leaves).
    #[arg(long, value_parser = number::<i32>)]
    nice: Option<String>,
    #[arg(long, value_parser = number::<u64>)]
    steps: Option<String>,
    #[arg(long, value_parser = number::<usize>)]
    batch: Option<String>,
    /// Where to write OUT/<version>/ (next integer version).
    #[arg(long)]
    export: Option<PathBuf>,
    #[arg(long)]
    signature: Option<String>,
    /// The graph variant to load, by tags, comma-separated (a TF1 Hub module's "train", or ""
    /// for its untagged inference variant); default: "train" when the module has it.
    #[arg(long)]
    tags: Option<String>,
    /// Input side, for signatures with free spatial size.
    #[arg(long, value_parser = number::<u32>)]
    size: Option<String>,
    #[arg(long, value_parser = ["sgd", "adam", "adamw", "lars"])]
    optimizer: Option<String>,
    #[arg(long, value_parser = number::<f32>)]
    lr: Option<String>,
    #[arg(long, value_parser = number::<f32>)]
    weight_decay: Option<String>,
    /// Batch norm while training: frozen (inference statistics), train (batch statistics in the
    /// layers that train, moving statistics updated with --bn-momentum; frozen layers keep
    /// inference mode) or train-all (batch statistics everywhere).
    #[arg(long, value_parser = ["frozen", "train", "train-all"])]
    bn: Option<String>,
    #[arg(long, value_parser = number::<f32>)]
    bn_momentum: Option<String>,
    /// Fold each inference-mode batch norm into the convolution before it (same values, less
    /// time and memory); false keeps them.
    #[arg(long, value_parser = ["true", "false"])]
    bn_fold: Option<String>,
    /// With --devices: batch norms in train mode normalise with the statistics of the whole
    /// batch, summed across the replicas (false: each replica's own share).
    #[arg(long, value_parser = ["true", "false"])]
    bn_sync: Option<String>,
    /// Recompute batch-norm outputs in the backward pass (less memory): auto (when oneDNN is
    /// off), on or off.
    #[arg(long, value_parser = ["auto", "on", "off"])]
    recompute: Option<String>,
    /// Nodes with a custom gradient: saved (the gradient function the model stores, as TF
    /// computes it) or forward (differentiate their forward ops instead).
    #[arg(long, value_parser = ["saved", "forward"])]
    custom_gradients: Option<String>,
    /// Which variables train: all, regex:PATTERN (on variable names) or last:N (layers).
    #[arg(long)]
    train_vars: Option<String>,
    /// Learning rate: linear warmup over this many steps, then cosine decay to 0 at --steps.
    #[arg(long, value_parser = number::<u64>)]
    lr_warmup: Option<String>,
    /// The first N steps train the head alone; the model's variables train after them.
    #[arg(long, value_parser = number::<u64>)]
    head_warmup: Option<String>,
    /// Pixel range the model expects, "LOW,HIGH".
    #[arg(long)]
    range: Option<String>,
    /// Seed of the graph's random ops and of the data order.
    #[arg(long, value_parser = number::<u64>)]
    seed: Option<String>,
    /// Pretext head: dae (denoising autoencoder), simclr (contrastive, two augmented views),
    /// rotation (4-way rotation prediction), moco (MoCo v2: momentum encoder + queue), byol
    /// (momentum target, predictor), simsiam (byol with momentum 0) or inpaint (masked block).
    #[arg(long, value_parser = ["dae", "simclr", "rotation", "moco", "byol", "simsiam", "inpaint"])]
    head: Option<String>,
    /// Multi-task instead of --head: "KIND=WEIGHT,…" (e.g. "dae=1,rotation=0.5").
    #[arg(long, conflicts_with = "head")]
    multi: Option<String>,
    /// Inpainting: fraction of each image hidden (one random block).
    #[arg(long, value_parser = number::<f32>)]
    mask_ratio: Option<String>,
    /// MoCo: keys in the queue (a multiple of --batch).
    #[arg(long, value_parser = number::<i64>)]
    queue_size: Option<String>,
    /// SimCLR / MoCo: contrastive temperature.
    #[arg(long, value_parser = number::<f32>)]
    temperature: Option<String>,
    /// Denoising AE: gaussian (std = level × range), masking (drop rate) or salt-pepper.
    #[arg(long, value_parser = ["gaussian", "masking", "salt-pepper"])]
    noise: Option<String>,
    /// Denoising AE: noise level (see --noise).
    #[arg(long, value_parser = number::<f32>)]
    noise_level: Option<String>,
    /// Denoising AE: side of the reconstructed image.
    #[arg(long, value_parser = number::<i64>)]
    target_size: Option<String>,
    /// Denoising AE decoder: auto (conv if the backbone has a spatial map), dense or conv.
    #[arg(long, value_parser = ["auto", "dense", "conv"])]
    decoder: Option<String>,
    /// Denoising AE: decoder hidden units.
    #[arg(long, value_parser = number::<i64>)]
    hidden: Option<String>,
    /// Labeled set to evaluate on before and after training (see `pretext eval`).
    #[arg(long)]
    labeled: Option<PathBuf>,
    /// A labeled set of another domain, scored like --labeled, that the model should keep
    /// doing well on (repeat for several).
    #[arg(long, requires = "labeled")]
    retain_set: Vec<PathBuf>,
    /// A term that keeps what the model knew: l2sp (weights near the original ones), distill
    /// (embeddings near a frozen original backbone's) or none.
    #[arg(long, value_parser = ["none", "l2sp", "distill"])]
    retain: Option<String>,
    /// Weight of the --retain term in the loss.
    #[arg(long, value_parser = number::<f32>, requires = "retain")]
    retain_weight: Option<String>,
    /// Ask every op of the step for this device (e.g. /device:GPU:0).
    #[arg(long)]
    device: Option<String>,
    /// Replicate the tower on these devices, comma-separated (e.g. /device:GPU:0,/device:GPU:1).
    #[arg(long)]
    devices: Option<String>,
    /// With --devices: add up a variable's gradients beside it (variable) or with TF's
    /// collective all-reduce across the devices (collective).
    #[arg(long, value_parser = ["variable", "collective"])]
    gradient_reduce: Option<String>,
    /// Any other experiment key: KEY.PATH=VALUE (VALUE read as YAML), e.g. data.max_pixels=1e6.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    set: Vec<String>,
}

/// A flag's number, checked when the command line is read (clap names the flag); kept as typed.
fn number<T: std::str::FromStr>(s: &str) -> Result<String, String>
where
    T::Err: std::fmt::Display,
{
    let t = s.trim();
    t.parse::<T>()
        .map(|_| t.to_string())
        .map_err(|e| format!("{e}"))
}

fn push(out: &mut Vec<Override>, key: &str, shown: &str, value: Value) {
    out.push(Override {
        key: key.to_string(),
        value,
        shown: shown.to_string(),
    });
}

fn path_value(p: &std::path::Path) -> Value {
    Value::from(p.to_string_lossy().into_owned())
}

/// A flag's value read as YAML (numbers, booleans, words).
fn word(raw: &str) -> Value {
    serde_yaml::from_str(raw).unwrap_or_else(|_| Value::from(raw))
}

impl TrainArgs {
    /// The overrides the given flags make, in an order where sections come before their keys.
    fn overrides(&self) -> Result<Vec<Override>, Error> {
        let mut out = Vec::new();
        let mut put = |flag: &str, value: Value| {
            let key = FLAGS
                .iter()
                .find(|(f, _)| *f == flag)
                .expect("a flag of FLAGS");
            push(&mut out, key.1, &format!("--{flag}"), value);
        };
        let paths = |ps: &[PathBuf]| Value::Sequence(ps.iter().map(|p| path_value(p)).collect());
        put("model", path_value(&self.model));
        put("images", paths(&self.images));
        if !self.tfrecords.is_empty() {
            put("tfrecords", paths(&self.tfrecords));
        }
        if !self.idx.is_empty() {
            put("idx", paths(&self.idx));
        }
        if self.trust_model {
            put("trust-model", Value::Bool(true));
        }
        match (self.head.as_deref(), &self.multi) {
            (Some("simsiam"), _) => put("head", word("{kind: byol, momentum: 0.0}")),
            (Some(kind), _) => put("head", word(&format!("{{kind: {kind}}}"))),
            (None, Some(spec)) => {
                let multi = pretext::heads::MultiConfig::parse(spec)
                    .map_err(|e| flag_error("--multi", e))?;
                let v = serde_yaml::to_value(pretext::heads::HeadConfig::Multi(multi))
                    .expect("a head config");
                put("multi", v);
            }
            (None, None) => {}
        }
        if let Some(kind) = &self.retain {
            put("retain", word(&format!("{{kind: {kind}}}")));
        }
        if let Some(r) = &self.range {
            put("range", word(&format!("[{r}]")));
        }
        if let Some(t) = &self.tags {
            let tags = t.split(',').map(str::trim).filter(|t| !t.is_empty());
            put("tags", Value::Sequence(tags.map(Value::from).collect()));
        }
        if let Some(d) = &self.devices {
            let devices = d.split(',').map(str::trim).filter(|d| !d.is_empty());
            put(
                "devices",
                Value::Sequence(devices.map(Value::from).collect()),
            );
        }
        if let Some(w) = &self.lr_warmup {
            put(
                "lr-warmup",
                word(&format!("{{kind: warmup_cosine, warmup_steps: {w}}}")),
            );
        }
        for (flag, v) in self.plain() {
            let Some(v) = v else { continue };
            if v.trim().is_empty() {
                return Err(Error::Flag {
                    flag: format!("--{flag}"),
                    msg: "empty value".into(),
                });
            }
            let value = match flag {
                "image-key" | "signature" | "device" | "train-vars" => Value::from(v.as_str()),
                "bn" | "noise" => Value::from(v.replace('-', "_")),
                _ => word(v),
            };
            put(flag, value);
        }
        for (flag, p) in [("labeled", &self.labeled), ("export", &self.export)] {
            if let Some(p) = p {
                put(flag, path_value(p));
            }
        }
        if !self.retain_set.is_empty() {
            put("retain-set", paths(&self.retain_set));
        }
        if let Some(s) = &self.seed {
            push(&mut out, "data.seed", "--seed", word(s));
        }
        for s in &self.set {
            out.push(Override::parse(s)?);
        }
        Ok(out)
    }

    /// The flags that give their key's value as typed.
    fn plain(&self) -> Vec<(&'static str, Option<&String>)> {
        vec![
            ("image-key", self.image_key.as_ref()),
            ("prefetch", self.prefetch.as_ref()),
            ("workers", self.workers.as_ref()),
            ("nice", self.nice.as_ref()),
            ("steps", self.steps.as_ref()),
            ("batch", self.batch.as_ref()),
            ("signature", self.signature.as_ref()),
            ("size", self.size.as_ref()),
            ("optimizer", self.optimizer.as_ref()),
            ("lr", self.lr.as_ref()),
            ("weight-decay", self.weight_decay.as_ref()),
            ("bn", self.bn.as_ref()),
            ("bn-momentum", self.bn_momentum.as_ref()),
            ("bn-fold", self.bn_fold.as_ref()),
            ("bn-sync", self.bn_sync.as_ref()),
            ("recompute", self.recompute.as_ref()),
            ("custom-gradients", self.custom_gradients.as_ref()),
            ("train-vars", self.train_vars.as_ref()),
            ("head-warmup", self.head_warmup.as_ref()),
            ("seed", self.seed.as_ref()),
            ("mask-ratio", self.mask_ratio.as_ref()),
            ("queue-size", self.queue_size.as_ref()),
            ("temperature", self.temperature.as_ref()),
            ("noise", self.noise.as_ref()),
            ("noise-level", self.noise_level.as_ref()),
            ("target-size", self.target_size.as_ref()),
            ("decoder", self.decoder.as_ref()),
            ("hidden", self.hidden.as_ref()),
            ("device", self.device.as_ref()),
            ("gradient-reduce", self.gradient_reduce.as_ref()),
            ("retain-weight", self.retain_weight.as_ref()),
        ]
    }

    /// The experiment these flags describe, checked, with its source (errors name the flags).
    pub fn experiment(&self) -> Result<(Source, Experiment), Error> {
        let flags = FLAGS
            .iter()
            .map(|(f, k)| (k.to_string(), format!("--{f}")))
            .collect();
        let src = Source::flags(flags);
        let mut exp = src.parse_with(&self.overrides()?)?;
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        exp.absolutize(&cwd);
        Ok((src, exp))
    }
}

fn flag_error(flag: &str, e: Error) -> Error {
    let msg = match e {
        Error::Config { msg, .. } => msg,
        e => e.to_string(),
    };
    Error::Flag {
        flag: flag.into(),
        msg,
    }
}
