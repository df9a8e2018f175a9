//! `pretext train`: the training engine driven by flags (no run directory), and its timing
//! mode for benchmarks (`--json`, `--from-memory`). Raw flags become a `TrainConfig` here.
use std::path::PathBuf;

use pretext::heads::dae::{Decoder, Noise};
use pretext::heads::{DaeConfig, HeadConfig, SimclrConfig};
use pretext::optim::OptimizerKind;
use pretext::Error;

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
    #[arg(long, default_value = pretext::data::DEFAULT_IMAGE_KEY)]
    image_key: String,
    /// An IDX image file, gzip-compressed or not (repeat for several).
    #[arg(long)]
    idx: Vec<PathBuf>,
    /// Batches prepared ahead of the step on the input threads (0: none).
    #[arg(long, default_value_t = 2)]
    prefetch: usize,
    /// Decoding threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Niceness of the input threads (0-19; higher: they run in the CPU time the step leaves).
    #[arg(long, default_value_t = 19)]
    nice: i32,
    /// Write timings (images/s after --warmup-steps, first-step time, peak RSS) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Make one batch and feed it every step (the step's cost without the input pipeline).
    #[arg(long)]
    from_memory: bool,
    /// Steps left out of the steady-state images/s.
    #[arg(long, default_value_t = 2)]
    warmup_steps: u64,
    #[arg(long, default_value_t = 100)]
    steps: u64,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Where to write OUT/<version>/ (next integer version).
    #[arg(long)]
    export: Option<PathBuf>,
    #[arg(long, default_value = "serving_default")]
    signature: String,
    /// Input side, for signatures with free spatial size (default 224).
    #[arg(long)]
    size: Option<u32>,
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: Opt,
    #[arg(long, default_value_t = 3e-4)]
    lr: f32,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Batch norm while training: frozen (inference statistics), train (batch statistics in the
    /// layers that train, moving statistics updated with --bn-momentum; frozen layers keep
    /// inference mode) or train-all (batch statistics everywhere).
    #[arg(long, value_enum, default_value = "frozen")]
    bn: Bn,
    #[arg(long, default_value_t = 0.99)]
    bn_momentum: f32,
    /// Fold each inference-mode batch norm (--bn frozen, or the frozen layers' with --bn train)
    /// into the convolution before it (same values, less time and memory); false keeps them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    bn_fold: bool,
    /// Recompute batch-norm outputs in the backward pass (less memory): auto (when oneDNN is
    /// off), on or off.
    #[arg(long, value_enum, default_value = "auto")]
    recompute: Recompute,
    /// Which variables train: all, regex:PATTERN (on variable names) or last:N (layers).
    #[arg(long, default_value = "all")]
    train_vars: String,
    /// Linear warmup over this many steps, then cosine decay to 0 at --steps.
    #[arg(long)]
    warmup: Option<u64>,
    /// The first N steps train the head alone; the model's variables train after them.
    #[arg(long, default_value_t = 0)]
    head_warmup: u64,
    /// Pixel range the model expects, "LOW,HIGH".
    #[arg(long, default_value = "0,1")]
    range: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pretext head: dae (denoising autoencoder), simclr (contrastive, two augmented views) or
    /// rotation (4-way rotation prediction), moco (MoCo v2: momentum encoder + queue), byol
    /// (momentum target, predictor), simsiam (byol with momentum 0) or inpaint (masked block).
    #[arg(long, value_enum, default_value = "dae")]
    head: HeadKind,
    /// Multi-task instead of --head: "KIND=WEIGHT,…" (e.g. "dae=1,rotation=0.5").
    #[arg(long)]
    multi: Option<String>,
    /// Inpainting: fraction of each image hidden (one random block).
    #[arg(long, default_value_t = 0.25)]
    mask_ratio: f32,
    /// MoCo: keys in the queue (a multiple of --batch).
    #[arg(long, default_value_t = 4096)]
    queue_size: i64,
    /// SimCLR / MoCo: contrastive temperature.
    #[arg(long, default_value_t = 0.2)]
    temperature: f32,
    /// Denoising AE: gaussian (std = level × range), masking (drop rate) or salt-pepper.
    #[arg(long, value_enum, default_value = "gaussian")]
    noise: NoiseKind,
    /// Denoising AE: noise level (see --noise).
    #[arg(long, default_value_t = 0.1)]
    noise_level: f32,
    /// Denoising AE: side of the reconstructed image.
    #[arg(long, default_value_t = 24)]
    target_size: i64,
    /// Denoising AE decoder: auto (conv if the backbone has a spatial map), dense or conv.
    #[arg(long, value_enum, default_value = "auto")]
    decoder: Dec,
    /// Denoising AE: decoder hidden units.
    #[arg(long, default_value_t = 512)]
    hidden: i64,
    /// Labeled set to evaluate on before and after training (see `pretext eval`).
    #[arg(long)]
    labeled: Option<PathBuf>,
    /// Place the tower on this device (e.g. /device:GPU:0).
    #[arg(long)]
    device: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum HeadKind {
    Dae,
    Simclr,
    Rotation,
    Moco,
    Byol,
    Simsiam,
    Inpaint,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Recompute {
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Bn {
    Frozen,
    Train,
    TrainAll,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NoiseKind {
    Gaussian,
    Masking,
    SaltPepper,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Dec {
    Auto,
    Dense,
    Conv,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Opt {
    Sgd,
    Adam,
    Adamw,
    Lars,
}

pub fn parse_range(s: &str) -> Result<(f32, f32), Error> {
    let bad = || {
        Error::config(
            "--range",
            format!("'{s}' is not LOW,HIGH (e.g. 0,1 or -1,1)"),
        )
    };
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

pub fn train(a: TrainArgs) -> Result<(), Error> {
    let mut cfg = pretext::train::TrainConfig::new(a.model, PathBuf::new());
    cfg.data.folders = a.images;
    cfg.data.tfrecords = a.tfrecords;
    cfg.data.image_key = a.image_key;
    cfg.data.idx = a.idx;
    cfg.loader = pretext::data::LoaderOptions {
        prefetch: a.prefetch,
        workers: a.workers,
        nice: a.nice,
    };
    cfg.steps = a.steps;
    cfg.head_warmup_steps = a.head_warmup;
    cfg.batch = a.batch;
    cfg.signature = a.signature;
    cfg.trust = pretext::savedmodel::Trust::from_flag(a.trust_model);
    cfg.size = a.size;
    cfg.seed = a.seed;
    cfg.device = a.device;
    cfg.range = parse_range(&a.range)?;
    cfg.bn = match a.bn {
        Bn::Frozen => pretext::graph::bn::BnMode::Frozen,
        Bn::Train => pretext::graph::bn::BnMode::Train,
        Bn::TrainAll => pretext::graph::bn::BnMode::TrainAll,
    };
    cfg.bn_momentum = a.bn_momentum;
    cfg.bn_fold = a.bn_fold;
    cfg.recompute = match a.recompute {
        Recompute::Auto => pretext::graph::recompute::Recompute::Auto,
        Recompute::On => pretext::graph::recompute::Recompute::On,
        Recompute::Off => pretext::graph::recompute::Recompute::Off,
    };
    cfg.train_vars = pretext::train::select::VarSelection::parse(&a.train_vars)?;
    cfg.optimizer.kind = match a.optimizer {
        Opt::Sgd => OptimizerKind::Sgd,
        Opt::Adam => OptimizerKind::Adam,
        Opt::Adamw => OptimizerKind::Adamw,
        Opt::Lars => OptimizerKind::Lars,
    };
    if let Some(w) = a.warmup {
        cfg.optimizer.schedule = pretext::optim::Schedule::WarmupCosine {
            warmup_steps: w,
            total_steps: a.steps,
            alpha: 0.0,
        };
    }
    cfg.optimizer.learning_rate = a.lr;
    cfg.head = match a.head {
        HeadKind::Dae => HeadConfig::Dae(DaeConfig {
            noise: match a.noise {
                NoiseKind::Gaussian => Noise::Gaussian,
                NoiseKind::Masking => Noise::Masking,
                NoiseKind::SaltPepper => Noise::SaltPepper,
            },
            noise_level: a.noise_level,
            target_size: a.target_size,
            hidden: a.hidden,
            decoder: match a.decoder {
                Dec::Auto => Decoder::Auto,
                Dec::Dense => Decoder::Dense,
                Dec::Conv => Decoder::Conv,
            },
        }),
        HeadKind::Rotation => HeadConfig::Rotation(Default::default()),
        HeadKind::Byol => HeadConfig::Byol(Default::default()),
        HeadKind::Inpaint => HeadConfig::Inpaint(pretext::heads::InpaintConfig {
            mask_ratio: a.mask_ratio,
            ..Default::default()
        }),
        HeadKind::Simsiam => HeadConfig::Byol(pretext::heads::ByolConfig {
            momentum: 0.0,
            ..Default::default()
        }),
        HeadKind::Moco => HeadConfig::Moco(pretext::heads::MocoConfig {
            temperature: a.temperature,
            queue_size: a.queue_size,
            ..Default::default()
        }),
        HeadKind::Simclr => HeadConfig::Simclr(SimclrConfig {
            temperature: a.temperature,
            ..Default::default()
        }),
    };
    if let Some(spec) = &a.multi {
        cfg.head = HeadConfig::Multi(pretext::heads::MultiConfig::parse(spec)?);
    }
    cfg.optimizer.weight_decay = a.weight_decay;
    if let Some(e) = &a.export {
        // Checked before training so a long run cannot end in an unusable export path.
        if e.exists() && !e.is_dir() {
            return Err(Error::config(
                "--export",
                format!("{} is not a directory", e.display()),
            ));
        }
        pretext::export::check_model_tree(&cfg.model)?;
    }
    let started = std::time::Instant::now();
    let labeled = a
        .labeled
        .as_deref()
        .map(pretext::eval::LabeledSet::scan)
        .transpose()?;
    let mut t = pretext::train::Trainer::new(&cfg)?;
    let build = started.elapsed().as_secs_f64();
    let score = |t: &pretext::train::Trainer, set: &pretext::eval::LabeledSet| {
        pretext::eval::evaluate(&t.model, &t.signature, &t.spec, set, 32)
    };
    let before = labeled.as_ref().map(|set| score(&t, set)).transpose()?;
    if a.json.is_some() || a.from_memory {
        let tm = t.timed_run(cfg.steps, a.warmup_steps, a.from_memory)?;
        println!(
            "{} steps of batch {}{}: {:.1} images/s after {} warm-up step(s) ({:.3} s/step); graph built in {build:.1}s; input waited {:.1}s, session {:.1}s, input threads {:.1}s",
            tm.steps,
            tm.batch,
            if tm.from_memory { " from memory" } else { "" },
            tm.images_per_second,
            tm.warmup_steps,
            tm.step_seconds,
            tm.wait_seconds,
            tm.session_seconds,
            tm.data_seconds
        );
        if let Some(out) = &a.json {
            let mut v =
                serde_json::to_value(&tm).map_err(|e| Error::config("--json", e.to_string()))?;
            v["engine"] = "pretext".into();
            v["size"] = t.spec.height.into();
            v["graph_build_seconds"] = build.into();
            v["peak_rss_mb"] = pretext::train::timing::peak_rss_mb().into();
            v["images_read"] = t.input.images_read().into();
            v["images_skipped"] = t.input.skipped().len().into();
            v["dataset_images"] = t.input.len().into();
            let text = serde_json::to_string_pretty(&v).expect("JSON of numbers");
            std::fs::write(out, text).map_err(|e| Error::io(out, e))?;
        }
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    let losses = t.run(cfg.steps)?;
    let secs = t0.elapsed().as_secs_f64();
    let k = losses.len().min(10);
    let first: f32 = losses[..k].iter().sum::<f32>() / k.max(1) as f32;
    let last: f32 = losses[losses.len() - k..].iter().sum::<f32>() / k.max(1) as f32;
    println!("trained {} steps of batch {} in {secs:.1}s ({:.2} steps/s, {:.1} images/s; graph built in {build:.1}s)", losses.len(), cfg.batch, losses.len() as f64 / secs, (losses.len() * cfg.batch) as f64 / secs);
    println!(
        "loss: first-10 mean {first:.5}, last-10 mean {last:.5} ({:+.1}%)",
        (last / first - 1.0) * 100.0
    );
    println!(
        "images read {}, skipped {}",
        t.input.images_read(),
        t.input.skipped().len()
    );
    for (p, why) in t.input.skipped() {
        println!("  skipped {p}: {why}");
    }
    if let (Some(set), Some(b)) = (labeled.as_ref(), before) {
        let after = score(&t, set)?;
        println!(
            "kNN top-1: {:.4} before, {:.4} after; linear probe: {:.4} before, {:.4} after",
            b.knn_top1, after.knn_top1, b.linear_probe, after.linear_probe
        );
    }
    if let Some(out) = a.export {
        let dir = pretext::export::export(&t.model, &out, None)?;
        println!("exported {}", dir.display());
    }
    Ok(())
}
