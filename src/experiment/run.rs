//! One experiment, start to end, in a run directory: resolved config, evaluation before,
//! training with checkpoints / TensorBoard / progress, stop on request or on a non-finite loss,
//! evaluation after, export, and the report. `resume` continues from the newest checkpoint.
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::evaluations::{read_points, Evaluations};
use super::hooks::{Checkpoints, Progress, Scalars, TensorBoard};
use super::lock::RunLock;
use super::report::{write_atomic, Report, Status};
use super::scoring::{log_scores, Suite};
use super::{check, Experiment, Source};
use crate::error::{Error, Result};
use crate::train::checkpoint::{self, RunState};
use crate::train::drive::{Hook, Stop, StopFlag, Tally, TimeBudget};
use crate::train::summary::ScalarWriter;
use crate::train::{Opened, Trainer};

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
    let mut checked = match check::check(exp, src) {
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
        .map_err(|e| Error::internal("serialising the resolved experiment", e))?;
    write_atomic(&run_dir.join("config.yaml"), &yaml)?;
    start(resolved, run_dir, stop, checked.opened.take())
}

/// Trains the resolved experiment of `run_dir` from step 0 (on the model and images `opened`
/// when the run was just checked).
fn start(
    resolved: Experiment,
    run_dir: &Path,
    stop: &AtomicBool,
    opened: Option<Opened>,
) -> Result<Report> {
    let started = Instant::now();
    let steps = resolved.train.steps.unwrap_or(1);
    let cfg = resolved.train_config(steps).check()?;
    let mut t = Trainer::build(&cfg, opened)?;
    let build = started.elapsed().as_secs_f64();
    let suite = Suite::scan(&resolved)?;
    let before = suite.as_ref().map(|s| s.score(&t)).transpose()?;
    if let Some(b) = &before {
        log_scores("before", b);
        let json =
            serde_json::to_string(b).map_err(|e| Error::internal("serialising the scores", e))?;
        write_atomic(&run_dir.join("eval_before.json"), &json)?;
    }
    let mut report = Report::new(run_dir, resolved, build, before);
    drive(&mut t, &mut report, suite.as_ref(), stop, Tally::default())?;
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
    Source::read_run_config(&p)
}

/// Restores the newest checkpoint of `run_dir` that loads (a damaged newer one is named in
/// the log and passed over); `None` when the run has no checkpoint.
/// With `position`, the data position too (to train on; else only the variables, to export).
fn restore_newest(
    t: &mut Trainer,
    run_dir: &Path,
    position: bool,
) -> Result<Option<(PathBuf, RunState)>> {
    let all = checkpoint::list(&checkpoints_dir(run_dir));
    if all.is_empty() {
        return Ok(None);
    }
    let mut failures = Vec::new();
    for (_, ckpt) in all.iter().rev() {
        let restored = match position {
            true => t.restore(ckpt),
            false => t.restore_variables(ckpt),
        };
        match restored {
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
        if position { "resume" } else { "export" },
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
        return start(exp, run_dir, stop, None);
    }
    let steps = exp.train.steps.unwrap_or(1);
    let started = Instant::now();
    let mut t = Trainer::new(&exp.train_config(steps))?;
    let (ckpt, state) =
        restore_newest(&mut t, run_dir, true)?.expect("the run has checkpoints (listed above)");
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
    let suite = Suite::scan(&exp)?;
    let before = std::fs::read_to_string(run_dir.join("eval_before.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let mut report = Report::new(run_dir, exp, build, before);
    let tally = Tally::resumed(state.losses, state.seconds);
    drive(&mut t, &mut report, suite.as_ref(), stop, tally)?;
    Ok(report)
}

/// Exports the newest checkpoint of `run_dir` that loads as its config says (or to `dir`).
pub fn export_run(run_dir: &Path, dir: Option<&Path>) -> Result<PathBuf> {
    let src = run_config(run_dir, "export")?;
    let _lock = RunLock::acquire(run_dir)?;
    let mut exp = src.parse(&[])?;
    // The variables need no workers: a run made on a cluster exports on this machine alone.
    if exp.cluster.take().is_some() {
        exp.model.device = None;
        exp.train.devices.clear();
    }
    let mut t = Trainer::new(&exp.train_config(exp.train.steps.unwrap_or(1)))?;
    if restore_newest(&mut t, run_dir, false)?.is_none() {
        return Err(Error::config(
            "export",
            format!(
                "{} has no checkpoint to export yet: `pretext resume {}` trains it",
                run_dir.display(),
                run_dir.display()
            ),
        ));
    }
    // The model the run kept (eval.keep_best) is the one it exported.
    let kept = std::fs::read_to_string(run_dir.join("report.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|r| r["kept_step"].as_u64());
    if let Some(step) = kept {
        let best = super::evaluations::best_dir(run_dir).join(format!("ckpt-{step}"));
        t.restore_variables(&best)?;
        log::info!(
            "exporting the model the run kept (step {step}): {}",
            best.display()
        );
    }
    let x = exp.export.clone().unwrap_or(super::ExportSection {
        dir: None,
        version: None,
        in_place: false,
    });
    match (dir, &x) {
        (Some(d), _) => crate::export::export(t.model(), d, x.version),
        (None, x) => super::report::export(&t, &exp, x, None).map(|(p, _)| p),
    }
}

/// The training loop of a run (fresh or resumed), then evaluation, export and the report; a
/// failure on the way still leaves a report (status `failed`, the error) in the run directory.
fn drive(
    t: &mut Trainer,
    report: &mut Report,
    suite: Option<&Suite>,
    stop: &AtomicBool,
    mut tally: Tally,
) -> Result<()> {
    let r = drive_inner(t, report, suite, stop, &mut tally);
    if let Err(e) = &r {
        report.fill(t, &tally);
        report.evaluations = read_points(&report.run_dir, u64::MAX);
        report.status = Status::Failed;
        report.error = Some(e.to_string());
        if let Err(w) = report.write() {
            log::warn!("the report could not be written either: {w}");
        }
    }
    r
}

/// Steps the trainer with the run's hooks; the status the loop ended with.
fn train_steps(
    t: &mut Trainer,
    report: &mut Report,
    stop: &AtomicBool,
    tally: &mut Tally,
    evals: Option<&mut Evaluations>,
) -> Result<Status> {
    let exp = report.config.clone();
    let dir = report.run_dir.clone();
    let steps = exp.train.steps.unwrap_or(1);
    let every = exp.logging.every;
    let mut tb = match exp.logging.tensorboard {
        true => Some(TensorBoard::new(t, dir.join("tensorboard"), every)?),
        false => None,
    };
    let mut progress = Progress::new(steps, t.step(), every);
    let mut ckpt = Checkpoints {
        dir: checkpoints_dir(&dir),
        every: exp.checkpoint.every,
        keep: exp.checkpoint.keep,
    };
    let mut signal = StopFlag(stop);
    let mut budget = exp.train.max_minutes.map(|m| TimeBudget(m * 60.0));
    let mut scalars = Scalars(report);
    let mut hooks: Vec<&mut dyn Hook> = vec![&mut signal, &mut progress, &mut scalars];
    if let Some(b) = budget.as_mut() {
        hooks.push(b);
    }
    if let Some(tb) = tb.as_mut() {
        hooks.push(tb);
    }
    if let Some(e) = evals {
        hooks.push(e);
    }
    hooks.push(&mut ckpt);
    let r = t.drive(steps, tally, &mut hooks);
    drop(hooks);
    progress.clear();
    Ok(match r {
        Ok(None) => Status::Finished,
        Ok(Some(Stop::Interrupted)) => Status::Interrupted,
        Ok(Some(Stop::TimeBudget)) => Status::TimeBudget,
        Err(Error::Diverged { step, msg }) => {
            let last = checkpoint::list(&ckpt.dir)
                .pop()
                .map(|(s, p)| format!("the last good checkpoint is step {s}: {}", p.display()))
                .unwrap_or_else(|| "no checkpoint was written before it".into());
            return Err(Error::Diverged {
                step,
                msg: format!("{msg}; stopped, {last}"),
            });
        }
        Err(e) => return Err(e),
    })
}

fn drive_inner(
    t: &mut Trainer,
    report: &mut Report,
    suite: Option<&Suite>,
    stop: &AtomicBool,
    tally: &mut Tally,
) -> Result<()> {
    let dir = report.run_dir.clone();
    let writer = match (suite, report.config.logging.tensorboard) {
        // Its own TensorBoard run (`eval`): its steps interleave with the step summaries'.
        (Some(_), true) => Some(ScalarWriter::new(
            t,
            &dir.join("tensorboard/eval"),
            ".pretext",
        )?),
        _ => None,
    };
    let before = report.eval_before.clone();
    if let (Some(w), Some(b), 0) = (&writer, &before, t.step()) {
        w.write(t, 0, &b.scalars())?;
    }
    let mut evals = match (suite, &before) {
        (Some(s), Some(b)) => Some(Evaluations::new(s, b, writer.as_ref(), &dir, t)),
        _ => None,
    };
    report.status = train_steps(t, report, stop, tally, evals.as_mut())?;
    report.fill(t, tally);
    if let Some(ev) = &evals {
        report.evaluations = ev.points.clone();
    }
    if report.status == Status::Interrupted {
        return report.write();
    }
    match (&mut evals, suite) {
        (Some(ev), _) => ev.finish(t, tally, report)?,
        (None, Some(s)) => {
            let a = s.score(t)?;
            log_scores("after", &a);
            report.eval_after = Some(a);
        }
        (None, None) => {}
    }
    let exp = report.config.clone();
    if let Some(x) = &exp.export {
        let (p, backup) = super::report::export(t, &exp, x, Some(&report.run_dir))?;
        report.export = Some(p);
        report.backup = backup;
    }
    report.write()
}
