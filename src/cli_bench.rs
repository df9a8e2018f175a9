//! `pretext bench`: the training step of `pretext train`'s experiment, timed (images/s after
//! untimed steps, where the time goes, peak memory), without a run directory.
use std::path::PathBuf;

use pretext::Error;

use crate::cli_train::TrainArgs;

/// `pretext bench`: the step's speed on `pretext train`'s experiment, no run directory.
#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    train: TrainArgs,
    /// Write timings (images/s after --untimed-steps, first-step time, peak RSS) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Make one batch and feed it every step (the step's cost without the input pipeline).
    #[arg(long)]
    from_memory: bool,
    /// Steps left out of the steady-state images/s.
    #[arg(long, default_value_t = 2)]
    untimed_steps: u64,
}

pub fn bench(a: BenchArgs) -> Result<(), Error> {
    let (_, exp) = a.train.experiment()?;
    // What bench would silently not do is refused.
    let refused = [
        (
            exp.train.epochs.is_some(),
            "--set train.epochs",
            "bench runs a number of steps: give --steps",
        ),
        (
            exp.train.max_minutes.is_some(),
            "--set train.max_minutes",
            "bench runs a number of steps: give --steps",
        ),
        (
            exp.export.is_some(),
            "--export",
            "bench writes no model: use pretext train",
        ),
        (
            exp.eval.is_some(),
            "--labeled",
            "bench does not evaluate: use pretext train",
        ),
    ];
    if let Some((_, flag, msg)) = refused.into_iter().find(|(given, _, _)| *given) {
        return Err(Error::Flag {
            flag: flag.into(),
            msg: msg.into(),
        });
    }
    // No `check` pass: what is timed from the start is what Trainer::new reads, once.
    let steps = exp.steps(0);
    let started = std::time::Instant::now();
    let mut t = pretext::train::Trainer::new(&exp.train_config(steps))?;
    let build = started.elapsed().as_secs_f64();
    let feed = match a.from_memory {
        true => pretext::train::Feed::Memory,
        false => pretext::train::Feed::Pipeline,
    };
    let tm = t.timed_run(steps, a.untimed_steps, feed)?;
    println!(
        "{} steps of batch {}{}: {:.1} images/s after {} untimed step(s) ({:.3} s/step); graph built in {build:.1}s; input waited {:.1}s, session {:.1}s, input threads {:.1}s",
        tm.steps,
        tm.batch,
        if tm.from_memory { " from memory" } else { "" },
        tm.images_per_second,
        tm.untimed_steps,
        tm.step_seconds,
        tm.wait_seconds,
        tm.session_seconds,
        tm.data_seconds
    );
    if let Some(out) = &a.json {
        let mut v = serde_json::to_value(&tm).map_err(|e| Error::internal("timings", e))?;
        v["engine"] = "pretext".into();
        v["size"] = t.spec().height.into();
        v["graph_build_seconds"] = build.into();
        v["peak_rss_mb"] = pretext::train::timing::peak_rss_mb().into();
        v["images_read"] = t.input().images_read().into();
        v["images_skipped"] = t.input().skipped().len().into();
        v["dataset_images"] = t.input().len().into();
        let text = serde_json::to_string_pretty(&v).expect("JSON of numbers");
        std::fs::write(out, text).map_err(|e| Error::io(out, e))?;
    }
    Ok(())
}
