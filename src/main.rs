//! The `pretext` command line: a thin layer that turns arguments into library configs.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pretext::heads::dae::{Decoder, Noise};
use pretext::heads::{DaeConfig, HeadConfig, SimclrConfig};
use pretext::optim::OptimizerKind;
use pretext::Error;

#[derive(Parser)]
#[command(
    name = "pretext",
    version,
    about = "Retrain TensorFlow SavedModels without labels",
    after_help = "Examples:\n  pretext validate experiments/default.yaml\n  pretext run experiments/default.yaml --set train.steps=500 --set head.kind=simclr\n  pretext resume runs/default-1\n  pretext export runs/default-1 --to served/\n  pretext inspect models/mobilenet\n  pretext eval --model models/mobilenet --labeled labeled/\n  pretext train --model models/mobilenet --images photos/ --steps 200 --batch 32 --export out/\n\nExit codes: 0 ok, 1 runtime failure, 2 usage or configuration error, 130 interrupted (resume continues).\nExperiment files: docs/EXPERIMENTS.md"
)]
struct Cli {
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Tags, signatures, variables, op histogram and gradient coverage of a SavedModel.
    Inspect {
        model: PathBuf,
        #[arg(long)]
        signature: Option<String>,
    },
    /// Run a YAML experiment (see docs/EXPERIMENTS.md): train, evaluate, export, report.
    Run {
        experiment: PathBuf,
        /// Override a setting: KEY.PATH=VALUE (VALUE read as YAML), e.g. train.steps=500.
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
        /// Run directory (default: runs/<experiment name>-<n>, the next free n).
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
    /// Continue an interrupted run from its newest checkpoint.
    Resume { run_dir: PathBuf },
    /// Export the newest checkpoint of a run (as its config says, or to --to DIR/<version>/).
    Export {
        run_dir: PathBuf,
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// Check an experiment without training: schema, values, model signature, images, labeled
    /// set, export directory.
    Validate {
        experiment: PathBuf,
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
    },
    /// Retrain a SavedModel on unlabeled images with a pretext head and export it.
    Train(TrainArgs),
    /// kNN top-1 (cosine, k = 20) and linear-probe accuracy of a SavedModel's embeddings on a
    /// labeled set: DIR/<class>/* (80/20 split) or DIR/{train,test}/<class>/*.
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        labeled: PathBuf,
        #[arg(long, default_value = "serving_default")]
        signature: String,
        /// Input side, for signatures with free spatial size (default 224).
        #[arg(long)]
        size: Option<u32>,
        /// Pixel range the model expects, "LOW,HIGH".
        #[arg(long, default_value = "0,1")]
        range: String,
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    #[arg(long)]
    model: PathBuf,
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
    /// Batch norm while training: frozen (inference statistics) or train (batch statistics;
    /// moving statistics updated with --bn-momentum).
    #[arg(long, value_enum, default_value = "frozen")]
    bn: Bn,
    #[arg(long, default_value_t = 0.99)]
    bn_momentum: f32,
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

fn parse_range(s: &str) -> Result<(f32, f32), Error> {
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

fn train(a: TrainArgs) -> Result<(), Error> {
    let mut cfg = pretext::train::TrainConfig::new(a.model, PathBuf::new());
    cfg.images = a.images;
    cfg.tfrecords = a.tfrecords;
    cfg.image_key = a.image_key;
    cfg.idx = a.idx;
    cfg.loader = pretext::data::LoaderOptions {
        prefetch: a.prefetch,
        workers: a.workers,
        nice: a.nice,
    };
    cfg.steps = a.steps;
    cfg.batch = a.batch;
    cfg.signature = a.signature;
    cfg.size = a.size;
    cfg.seed = a.seed;
    cfg.device = a.device;
    cfg.range = parse_range(&a.range)?;
    cfg.bn = match a.bn {
        Bn::Frozen => pretext::graph::bn::BnMode::Frozen,
        Bn::Train => pretext::graph::bn::BnMode::Train,
    };
    cfg.bn_momentum = a.bn_momentum;
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

fn eval(
    model: &std::path::Path,
    labeled: &std::path::Path,
    signature: &str,
    size: Option<u32>,
    range: &str,
    batch: usize,
) -> Result<(), Error> {
    let set = pretext::eval::LabeledSet::scan(labeled)?;
    let m = pretext::savedmodel::Loaded::load(model)?;
    let sig = m.info.signature(signature)?;
    let spec = pretext::train::image_spec(&sig, size, parse_range(range)?)?;
    let s = pretext::eval::evaluate(&m, &sig, &spec, &set, batch)?;
    println!(
        "{} classes, {} train / {} test images",
        set.classes.len(),
        set.train.len(),
        set.test.len()
    );
    println!("kNN top-1 (cosine, k=20): {:.4}", s.knn_top1);
    println!("linear probe top-1: {:.4}", s.linear_probe);
    Ok(())
}

fn load_experiment(
    path: &std::path::Path,
    set: &[String],
) -> Result<(pretext::experiment::Source, pretext::experiment::Experiment), Error> {
    let src = pretext::experiment::Source::read(path)?;
    let mut exp = src.parse(set)?;
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    exp.absolutize(&cwd);
    Ok((src, exp))
}

/// Ctrl-C / SIGTERM set the flag (the run finishes its step and checkpoints); a second one
/// exits at once.
fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// Prints the outcome; an interrupted run is exit code 130.
fn finish(r: &pretext::experiment::report::Report) -> Result<bool, Error> {
    use pretext::experiment::report::Status;
    print!("{}", r.markdown());
    println!("report: {}", r.run_dir.join("report.md").display());
    if r.status == Status::Interrupted {
        eprintln!(
            "interrupted after step {} (checkpoint written); resume with: pretext resume {}",
            r.steps,
            r.run_dir.display()
        );
        return Ok(false);
    }
    Ok(true)
}

fn run(path: &std::path::Path, set: &[String], run_dir: Option<PathBuf>) -> Result<bool, Error> {
    let (src, exp) = load_experiment(path, set)?;
    let dir = run_dir.unwrap_or_else(|| {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        pretext::experiment::check::new_run_dir(std::path::Path::new("runs"), &stem)
    });
    println!("run directory: {}", dir.display());
    let stop = stop_flag();
    finish(&pretext::experiment::run::run(&exp, &src, &dir, &stop)?)
}

fn validate(path: &std::path::Path, set: &[String]) -> Result<(), Error> {
    let (src, exp) = load_experiment(path, set)?;
    let c = pretext::experiment::check::check(&exp, &src)?;
    println!("{}: ok", path.display());
    println!(
        "  model: {} (signature '{}', input {})",
        exp.model.path.display(),
        c.signature,
        c.input
    );
    println!(
        "  images: {} file(s); {} step(s) of batch {}",
        c.images, c.steps, exp.train.batch
    );
    println!("  head: {}", exp.head.head().kind());
    if let Some((k, tr, te)) = c.labeled {
        println!("  eval: {k} classes, {tr} train / {te} test images");
    }
    Ok(())
}

fn main() -> ExitCode {
    // TF reads these when the library loads, before main: re-exec once with them set.
    // oneDNN is off by default: TF 2.21's oneDNN Conv2DBackpropFilter crashes on 1x1, stride-2,
    // SAME convolutions of even-sized inputs (set TF_ENABLE_ONEDNN_OPTS=1 to opt back in).
    let defaults = [
        ("TF_CPP_MIN_LOG_LEVEL", "2"),
        ("TF_ENABLE_ONEDNN_OPTS", "0"),
    ];
    if defaults.iter().any(|(k, _)| std::env::var_os(k).is_none()) {
        use std::os::unix::process::CommandExt;
        if let Ok(exe) = std::env::current_exe() {
            let mut cmd = std::process::Command::new(exe);
            cmd.args(std::env::args_os().skip(1));
            for (k, v) in defaults {
                if std::env::var_os(k).is_none() {
                    cmd.env(k, v);
                }
            }
            let err = cmd.exec();
            eprintln!("warning: could not re-execute with TensorFlow's environment set: {err}");
        }
    }
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(format!("warn,pretext={level}")),
    )
    .init();
    let r = match cli.cmd {
        Cmd::Inspect { model, signature } => {
            pretext::inspect::inspect(&model, signature.as_deref()).map(|s| {
                print!("{s}");
                true
            })
        }
        Cmd::Run {
            experiment,
            set,
            run_dir,
        } => run(&experiment, &set, run_dir),
        Cmd::Resume { run_dir } => {
            let stop = stop_flag();
            pretext::experiment::run::resume(&run_dir, &stop).and_then(|r| finish(&r))
        }
        Cmd::Export { run_dir, to } => {
            pretext::experiment::run::export_run(&run_dir, to.as_deref()).map(|p| {
                println!("exported {}", p.display());
                true
            })
        }
        Cmd::Validate { experiment, set } => validate(&experiment, &set).map(|_| true),
        Cmd::Train(a) => train(a).map(|_| true),
        Cmd::Eval {
            model,
            labeled,
            signature,
            size,
            range,
            batch,
        } => eval(&model, &labeled, &signature, size, &range, batch).map(|_| true),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e}");
            let usage = matches!(
                e,
                Error::Config { .. }
                    | Error::Experiment { .. }
                    | Error::UnknownSignature { .. }
                    | Error::NotSavedModel { .. }
                    | Error::NoImages { .. }
                    | Error::Restore { .. }
            );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
