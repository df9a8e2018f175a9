//! One experiment, start to end, in a run directory: resolved config, evaluation before,
//! training with checkpoints / TensorBoard / progress, stop on request or on a non-finite loss,
//! evaluation after, export, and the report. `resume` continues from the newest checkpoint.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::lock::RunLock;
use super::report::{write_atomic, Report, Status};
use super::{check, Experiment, Source};
use crate::error::{Error, Result};
use crate::eval::{evaluate, LabeledSet, Scores};
use crate::train::checkpoint::{self, RunState};
use crate::train::summary::Summaries;
use crate::train::Trainer;

/// Files of a run directory.
pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// Starts `exp` (parsed and checked) in the new directory `run_dir` (created if needed; an
/// existing run there is refused).
pub fn run(exp: &Experiment, src: &Source, run_dir: &Path, stop: &AtomicBool) -> Result<Report> {
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let lock = RunLock::acquire(run_dir)?;
    if run_dir.join("config.yaml").exists() {
        return Err(Error::config(
            "--run-dir",
            format!(
                "{} already holds a run; continue it with `pretext resume {}` or pick another directory",
                run_dir.display(),
                run_dir.display()
            ),
        ));
    }
    let checked = match check::check(exp, src) {
        Ok(c) => c,
        Err(e) => {
            // Nothing was started: leave no empty run directory behind.
            drop(lock);
            let _ = std::fs::remove_file(run_dir.join(super::lock::LOCK_FILE));
            let _ = std::fs::remove_dir(run_dir);
            return Err(e);
        }
    };
    let mut resolved = exp.clone();
    resolved.train.steps = Some(checked.steps);
    resolved.train.epochs = None;
    let yaml = serde_yaml::to_string(&resolved)
        .map_err(|e| Error::config("(config)", format!("cannot serialise: {e}")))?;
    write_atomic(&run_dir.join("config.yaml"), &yaml)?;
    start(resolved, run_dir, stop)
}

/// Trains the resolved experiment of `run_dir` from step 0.
fn start(resolved: Experiment, run_dir: &Path, stop: &AtomicBool) -> Result<Report> {
    let started = Instant::now();
    let steps = resolved.train.steps.unwrap_or(1);
    let mut t = Trainer::new(&resolved.train_config(steps))?;
    let build = started.elapsed().as_secs_f64();
    let labeled = labeled_set(&resolved)?;
    let before = score(&t, &labeled)?;
    if let Some(b) = &before {
        log::info!(
            "before: kNN top-1 {:.4}, linear probe {:.4}",
            b.knn_top1,
            b.linear_probe
        );
        let json = serde_json::to_string(b).map_err(|e| Error::config("(eval)", e.to_string()))?;
        write_atomic(&run_dir.join("eval_before.json"), &json)?;
    }
    let mut report = Report::new(run_dir, resolved, build, before);
    drive(&mut t, &mut report, &labeled, stop, Vec::new(), 0.0)?;
    Ok(report)
}

/// The experiment of an existing run directory.
fn run_config(run_dir: &Path, what: &str) -> Result<Source> {
    let p = run_dir.join("config.yaml");
    if !p.is_file() {
        return Err(Error::config(
            what,
            format!(
                "{} is not a pretext run directory (no config.yaml): nothing to {what}",
                run_dir.display()
            ),
        ));
    }
    Source::read(&p)
}

/// Restores the newest checkpoint of `run_dir` that loads (a damaged newer one is named in
/// the log and passed over); `None` when the run has no checkpoint.
fn restore_newest(t: &mut Trainer, run_dir: &Path) -> Result<Option<(PathBuf, RunState)>> {
    let all = checkpoint::list(&checkpoints_dir(run_dir));
    if all.is_empty() {
        return Ok(None);
    }
    let mut failures = Vec::new();
    for (_, ckpt) in all.iter().rev() {
        match t.restore(ckpt) {
            Ok(state) => {
                for (p, e) in &failures {
                    log::warn!("checkpoint {p} does not load ({e}); passed over");
                }
                return Ok(Some((ckpt.clone(), state)));
            }
            Err(e) => failures.push((ckpt.display().to_string(), e.to_string())),
        }
    }
    Err(Error::config(
        "resume",
        format!(
            "no checkpoint of {} loads:{}",
            run_dir.display(),
            failures
                .iter()
                .map(|(p, e)| format!("\n  {p}: {e}"))
                .collect::<String>()
        ),
    ))
}

/// Continues the run in `run_dir` from its newest checkpoint that loads, or from step 0 when
/// it was stopped before its first checkpoint.
pub fn resume(run_dir: &Path, stop: &AtomicBool) -> Result<Report> {
    let src = run_config(run_dir, "resume")?;
    let _lock = RunLock::acquire(run_dir)?;
    let exp = src.parse(&[])?;
    if checkpoint::list(&checkpoints_dir(run_dir)).is_empty() {
        log::info!(
            "{} stopped before its first checkpoint: training again from step 0",
            run_dir.display()
        );
        return start(exp, run_dir, stop);
    }
    let steps = exp.train.steps.unwrap_or(1);
    let started = Instant::now();
    let mut t = Trainer::new(&exp.train_config(steps))?;
    let (ckpt, state) =
        restore_newest(&mut t, run_dir)?.expect("the run has checkpoints (listed above)");
    let finished = std::fs::read_to_string(run_dir.join("report.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .map(|r| r["status"] == "finished" || r["status"] == "time_budget")
        .unwrap_or(false);
    // Training done but evaluation / export cut short: resume finishes those.
    if state.step >= steps && finished {
        return Err(Error::config(
            "resume",
            format!(
                "{} already finished its {steps} steps; `pretext export {}` exports it again",
                run_dir.display(),
                run_dir.display()
            ),
        ));
    }
    log::info!("resumed {} at step {}", ckpt.display(), state.step);
    let build = started.elapsed().as_secs_f64();
    let labeled = labeled_set(&exp)?;
    let before = std::fs::read_to_string(run_dir.join("eval_before.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let mut report = Report::new(run_dir, exp, build, before);
    drive(
        &mut t,
        &mut report,
        &labeled,
        stop,
        state.losses,
        state.seconds,
    )?;
    Ok(report)
}

/// Exports the newest checkpoint of `run_dir` that loads as its config says (or to `dir`).
pub fn export_run(run_dir: &Path, dir: Option<&Path>) -> Result<PathBuf> {
    let src = run_config(run_dir, "export")?;
    let _lock = RunLock::acquire(run_dir)?;
    let exp = src.parse(&[])?;
    let mut t = Trainer::new(&exp.train_config(exp.train.steps.unwrap_or(1)))?;
    if restore_newest(&mut t, run_dir)?.is_none() {
        return Err(Error::config(
            "export",
            format!(
                "{} has no checkpoint to export yet: `pretext resume {}` trains it",
                run_dir.display(),
                run_dir.display()
            ),
        ));
    }
    let x = exp.export.clone().unwrap_or(super::ExportSection {
        dir: None,
        version: None,
        in_place: false,
    });
    match (dir, &x) {
        (Some(d), _) => crate::export::export(&t.model, d, x.version),
        (None, x) => super::report::export(&t, &exp, x, None).map(|(p, _)| p),
    }
}

type Labeled = Option<(LabeledSet, usize)>;

fn labeled_set(exp: &Experiment) -> Result<Labeled> {
    exp.eval
        .as_ref()
        .map(|e| LabeledSet::scan(&e.labeled).map(|s| (s, e.batch)))
        .transpose()
}

fn score(t: &Trainer, labeled: &Labeled) -> Result<Option<Scores>> {
    labeled
        .as_ref()
        .map(|(set, batch)| evaluate(&t.model, &t.signature, &t.spec, set, *batch))
        .transpose()
}

/// A progress bar on a terminal, plain log lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(total: u64, at: u64) -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_position(at);
            b
        });
        Progress { bar }
    }

    fn update(&self, step: u64, total: u64, loss: f32, rate: f64, log_line: bool) {
        match &self.bar {
            Some(b) => {
                b.set_position(step);
                b.set_message(format!("loss {loss:.4}  {rate:.1} images/s"));
            }
            None if log_line => {
                log::info!("step {step}/{total} loss {loss:.5} ({rate:.1} images/s)")
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The training loop of a run (fresh or resumed), then evaluation, export and the report; a
/// failure on the way still leaves a report (status `failed`, the error) in the run directory.
fn drive(
    t: &mut Trainer,
    report: &mut Report,
    labeled: &Labeled,
    stop: &AtomicBool,
    losses: Vec<f32>,
    seconds_before: f64,
) -> Result<()> {
    let r = drive_inner(t, report, labeled, stop, losses, seconds_before);
    if let Err(e) = &r {
        report.status = Status::Failed;
        report.error = Some(e.to_string());
        if let Err(w) = report.write() {
            log::warn!("the report could not be written either: {w}");
        }
    }
    r
}

fn drive_inner(
    t: &mut Trainer,
    report: &mut Report,
    labeled: &Labeled,
    stop: &AtomicBool,
    mut losses: Vec<f32>,
    seconds_before: f64,
) -> Result<()> {
    let exp = report.config.clone();
    let dir = report.run_dir.clone();
    let ckpts = checkpoints_dir(&dir);
    let steps = exp.train.steps.unwrap_or(1);
    let every = exp.logging.every;
    let tb = if exp.logging.tensorboard {
        let mut images: Vec<(String, tensorflow::Output)> = t
            .feeds
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("input/{i}"), f.clone()))
            .collect();
        // Reconstructions (autoencoders, inpainting) beside their targets, both in [0, 1].
        images.extend(
            t.tensors
                .iter()
                .filter(|(k, _)| k.ends_with("/reconstruction") || k.ends_with("/target"))
                .cloned(),
        );
        Some(Summaries::new(t, &dir.join("tensorboard"), &images)?)
    } else {
        None
    };
    let budget = exp
        .train
        .max_minutes
        .map(|m| Duration::from_secs_f64(m * 60.0));
    let progress = Progress::new(steps, t.step);
    let t0 = Instant::now();
    let elapsed = |t0: &Instant| seconds_before + t0.elapsed().as_secs_f64();
    let heads: Vec<(String, tensorflow::Output)> = t.summaries.clone();
    let fetch: Vec<&tensorflow::Output> = heads.iter().map(|(_, o)| o).collect();
    let (mut window_t, mut window_n) = (Instant::now(), 0usize);
    let mut rate = 0.0;
    report.status = Status::Finished;
    while t.step < steps {
        if stop.load(Ordering::SeqCst) {
            report.status = Status::Interrupted;
            break;
        }
        if budget
            .map(|b| elapsed(&t0) >= b.as_secs_f64())
            .unwrap_or(false)
        {
            log::info!("time budget reached after {} step(s)", t.step);
            report.status = Status::TimeBudget;
            break;
        }
        let td = Instant::now();
        let xs = t.next_batch()?;
        report.wait_seconds += td.elapsed().as_secs_f64();
        let ts = Instant::now();
        let log_step = (t.step + 1) % every == 0;
        let (extra, feeds): (Vec<&tensorflow::Operation>, Vec<_>) = match (&tb, log_step) {
            (Some(s), true) => (s.step_ops.iter().collect(), vec![s.step_feed(t.step + 1)]),
            _ => (Vec::new(), Vec::new()),
        };
        let vals = t.step_with(&xs, &extra, &feeds, &fetch)?;
        report.session_seconds += ts.elapsed().as_secs_f64();
        let images = xs.first().map(|x| x.dims()[0] as usize).unwrap_or(0);
        t.recycle(xs);
        let loss = vals[0];
        if !vals.iter().all(|v| v.is_finite()) {
            let culprit = heads
                .iter()
                .zip(&vals[1..])
                .find(|(_, v)| !v.is_finite())
                .map(|((k, _), v)| format!("{k} = {v}"))
                .unwrap_or_else(|| format!("loss = {loss}"));
            let last = checkpoint::list(&ckpts)
                .pop()
                .map(|(s, p)| format!("the last good checkpoint is step {s}: {}", p.display()))
                .unwrap_or_else(|| "no checkpoint was written before it".into());
            progress.finish();
            report.fill(t, &losses, elapsed(&t0));
            return Err(Error::Diverged {
                msg: format!(
                    "head {}: non-finite loss at step {}: {culprit}; stopped, {last}",
                    exp.head.head().kind(),
                    t.step
                ),
            });
        }
        losses.push(loss);
        for ((k, _), v) in heads.iter().zip(&vals[1..]) {
            report.scalar(k, *v);
        }
        window_n += images;
        if log_step || t.step == steps {
            rate = window_n as f64 / window_t.elapsed().as_secs_f64().max(1e-9);
            (window_t, window_n) = (Instant::now(), 0);
            if let Some(s) = &tb {
                s.write_rate(t, t.step, rate as f32)?;
            }
        }
        progress.update(t.step, steps, loss, rate, log_step);
        if exp.checkpoint.every > 0 && t.step % exp.checkpoint.every == 0 && t.step < steps {
            t.checkpoint(&ckpts, &losses, elapsed(&t0), exp.checkpoint.keep)?;
        }
    }
    progress.finish();
    let secs = elapsed(&t0);
    let ck = t.checkpoint(&ckpts, &losses, secs, exp.checkpoint.keep)?;
    log::info!("checkpoint {}", ck.display());
    report.fill(t, &losses, secs);
    if report.status == Status::Interrupted {
        report.write()?;
        return Ok(());
    }
    report.eval_after = score(t, labeled)?;
    if let Some(a) = &report.eval_after {
        log::info!(
            "after: kNN top-1 {:.4}, linear probe {:.4}",
            a.knn_top1,
            a.linear_probe
        );
    }
    if let Some(x) = &exp.export {
        let (p, backup) = super::report::export(t, &exp, x, Some(&dir))?;
        report.export = Some(p);
        report.backup = backup;
    }
    report.write()
}
