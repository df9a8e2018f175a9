//! The `pretext` command line: a thin layer that turns arguments into library configs.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use pretext::Error;

mod cli_bench;
mod cli_train;
mod cli_train_help;
use cli_bench::{bench, BenchArgs};
use cli_train::TrainArgs;
use cli_train_help::with_defaults;

#[derive(Parser)]
#[command(
    name = "pretext",
    version,
    about = "Retrain TensorFlow SavedModels without labels",
    after_help = "Examples:\n  pretext validate experiments/default.yaml\n  pretext run experiments/default.yaml --set train.steps=500 --set head.kind=simclr\n  pretext resume runs/default-1\n  pretext export runs/default-1 --to served/\n  pretext inspect models/mobilenet\n  pretext eval --model models/mobilenet --labeled labeled/\n  pretext train --model models/mobilenet --images photos/ --steps 200 --batch 32 --export out/\n  pretext bench --model models/mobilenet --images photos/ --steps 20 --json timing.json\n\nExit codes: 0 ok, 1 runtime failure, 2 usage or configuration error, 130 interrupted (resume continues).\nExperiment files: docs/EXPERIMENTS.md"
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
        /// The graph variant to inspect, by tags, comma-separated ("" for an untagged one).
        #[arg(long)]
        tags: Option<String>,
        /// Load the model even if its graph touches files, processes or the network.
        #[arg(long)]
        trust_model: bool,
        /// Run the model's forward and backward ops once on this device (e.g. /device:GPU:0)
        /// and list every op TF could not place there.
        #[arg(long)]
        device: Option<String>,
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
    /// Retrain a SavedModel on unlabeled images: `run` of the experiment these flags describe
    /// (the defaults of docs/EXPERIMENTS.md; checkpoints, report, Ctrl-C and `resume` alike).
    Train {
        #[command(flatten)]
        args: TrainArgs,
        /// Run directory (default: runs/train-<n>, the next free n).
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
    /// Serve as a worker of a cluster (docs/DISTRIBUTED.md): a TF server the chief's `pretext
    /// run` places towers on. Runs until stopped.
    Worker {
        /// The cluster: '{"chief": [HOST:PORT], "worker": [HOST:PORT, …]}' (JSON or YAML) or a
        /// file holding it; default: TF_CONFIG's.
        #[arg(long)]
        cluster: Option<String>,
        /// This worker's index in the cluster's worker list; default: TF_CONFIG's task.
        #[arg(long)]
        task: Option<usize>,
    },
    /// Time the training step of `train`'s experiment (no run directory): images/s, where the
    /// time goes, peak memory.
    Bench(BenchArgs),
    /// kNN top-1 (cosine, k = 20) and linear-probe accuracy of a SavedModel's embeddings on a
    /// labeled set: DIR/<class>/* (80/20 split) or DIR/{train,test}/<class>/*.
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        labeled: PathBuf,
        #[arg(long, default_value = pretext::savedmodel::DEFAULT_SIGNATURE)]
        signature: String,
        /// Input side, for signatures with free spatial size (default 224).
        #[arg(long)]
        size: Option<u32>,
        /// Pixel range the model expects, "LOW,HIGH".
        #[arg(long, default_value = "0,1")]
        range: String,
        #[arg(long, default_value_t = pretext::experiment::EvalSection::DEFAULT_BATCH)]
        batch: usize,
        /// The graph variant to evaluate, by tags, comma-separated ("" for an untagged one).
        #[arg(long)]
        tags: Option<String>,
        /// Load the model even if its graph touches files, processes or the network.
        #[arg(long)]
        trust_model: bool,
    },
}

/// `--tags a,b` as a tag set (`--tags ""`: the empty one).
fn parse_tags(tags: Option<String>) -> Option<Vec<String>> {
    tags.map(|t| {
        t.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// "LOW,HIGH" of `eval --range`.
fn parse_range(s: &str) -> Result<(f32, f32), Error> {
    let bad = || Error::Flag {
        flag: "--range".into(),
        msg: format!("'{s}' is not LOW,HIGH (e.g. 0,1 or -1,1)"),
    };
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

/// `eval`'s errors about settings, named by its flags.
fn eval_flags(e: Error) -> Error {
    match e {
        Error::Config { key, msg } => {
            let flag = match key.as_str() {
                "eval.labeled" => "--labeled",
                "eval.batch" => "--batch",
                "model.signature" => "--signature",
                "model.size" => "--size",
                "model.range" => "--range",
                "model.tags" => "--tags",
                _ => return Error::Config { key, msg },
            };
            Error::Flag {
                flag: flag.into(),
                msg,
            }
        }
        e => e,
    }
}

fn eval(
    model: &std::path::Path,
    labeled: &std::path::Path,
    signature: &str,
    size: Option<u32>,
    range: &str,
    (batch, trust, tags): (usize, bool, Option<Vec<String>>),
) -> Result<(), Error> {
    let set = pretext::eval::LabeledSet::scan(labeled)?;
    let trust = pretext::savedmodel::Trust::from_flag(trust);
    let info = pretext::savedmodel::SavedModelInfo::read_tagged(model, tags.as_deref())?;
    let m = pretext::savedmodel::Loaded::load_parsed(info, trust)?;
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
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    run_experiment(&src, &exp, run_dir, &stem)
}

/// Runs `exp` in `run_dir` (default: runs/<stem>-<n>).
fn run_experiment(
    src: &pretext::experiment::Source,
    exp: &pretext::experiment::Experiment,
    run_dir: Option<PathBuf>,
    stem: &str,
) -> Result<bool, Error> {
    let dir = match run_dir {
        Some(d) => d,
        None => pretext::experiment::check::new_run_dir(std::path::Path::new("runs"), stem)?,
    };
    println!("run directory: {}", dir.display());
    let stop = stop_flag();
    finish(&pretext::experiment::run::run(exp, src, &dir, &stop)?)
}

fn validate(path: &std::path::Path, set: &[String]) -> Result<(), Error> {
    let (src, exp) = load_experiment(path, set)?;
    let c = pretext::experiment::check::check(&exp, &src)?;
    let vars = pretext::experiment::check::check_variables(&exp, &src)?;
    println!("{}: ok", path.display());
    println!(
        "  model: {} (signature '{}', input {}; {vars} variables restored)",
        exp.model.path.display(),
        c.signature,
        c.input
    );
    println!(
        "  images: {} file(s); {} step(s) of batch {}",
        c.images, c.steps, exp.train.batch
    );
    println!("  head: {}", exp.head.head().kind());
    if let Some(r) = exp.retain.retain() {
        println!("  retain: {} (weight {})", r.kind(), r.weight());
    }
    if let Some((k, tr, te)) = c.labeled {
        println!("  eval: {k} classes, {tr} train / {te} test images");
    }
    for (dir, (k, tr, te)) in &c.retain_sets {
        println!(
            "  eval.retain: {}: {k} classes, {tr} train / {te} test images",
            dir.display()
        );
    }
    if let Some(ev) = exp.eval.as_ref().filter(|e| e.keep_best) {
        println!(
            "  eval.keep_best: best target kNN with every retain set within {}, every {} steps",
            ev.max_retain_drop, ev.every
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cmd = Cli::command()
        .mut_subcommand("train", with_defaults)
        .mut_subcommand("bench", with_defaults);
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
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
        Cmd::Inspect {
            model,
            signature,
            tags,
            trust_model,
            device,
        } => {
            let trust = pretext::savedmodel::Trust::from_flag(trust_model);
            let tags = parse_tags(tags);
            let (sig, tags) = (signature.as_deref(), tags.as_deref());
            pretext::inspect::inspect_on(&model, sig, tags, trust, device.as_deref()).map(|s| {
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
        Cmd::Train { args, run_dir } => args
            .experiment()
            .and_then(|(src, exp)| run_experiment(&src, &exp, run_dir, "train")),
        Cmd::Bench(a) => bench(a).map(|_| true),
        Cmd::Worker { cluster, task } => pretext::cluster::worker_task(cluster.as_deref(), task)
            .and_then(|(c, i)| pretext::cluster::serve(&c, i))
            .map(|_| true),
        Cmd::Eval {
            model,
            labeled,
            signature,
            size,
            range,
            batch,
            tags,
            trust_model,
        } => eval(
            &model,
            &labeled,
            &signature,
            size,
            &range,
            (batch, trust_model, parse_tags(tags)),
        )
        .map_err(eval_flags)
        .map(|_| true),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(pretext::error::EXIT_INTERRUPTED),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
