//! The run report (`report.json` for tools, `report.md` for people) and the export step a run
//! ends with.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::scoring::{EvalPoint, SuiteScores};
use super::{Experiment, ExportSection};
use crate::error::{Error, Result};
use crate::train::Trainer;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Finished,
    /// Stopped at `train.max_minutes` (evaluated and exported like a finished run).
    TimeBudget,
    /// Ctrl-C / SIGTERM: checkpointed, resumable.
    Interrupted,
    /// A non-finite loss.
    Failed,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_dir: PathBuf,
    pub status: Status,
    /// Cores and CPU the run had: 15-minute budgets mean different step counts on different
    /// machines (one "AMD EPYC" KVM guest here stepped 2-3x slower than another).
    pub machine: String,
    pub config: Experiment,
    pub images_read: u64,
    pub images_skipped: Vec<(String, String)>,
    pub steps: u64,
    pub steps_planned: u64,
    pub batch: usize,
    pub build_seconds: f64,
    pub train_seconds: f64,
    /// Decoding and augmenting the batches consumed (this session, on the input threads, which
    /// overlap the steps) …
    pub data_seconds: f64,
    /// … of which the step loop waited for (input not hidden behind the previous step) …
    pub wait_seconds: f64,
    /// … and TF session steps (this session).
    pub session_seconds: f64,
    pub images_per_second: f64,
    pub loss_first10: f32,
    pub loss_last10: f32,
    /// Each scalar the head reports (e.g. `loss/dae`, `rotation/accuracy`): first-10 and
    /// last-10 means over this session's steps.
    pub head_scalars: Vec<HeadScalar>,
    /// Loss of every step.
    pub losses: Vec<f32>,
    /// Scores on `eval.labeled` (`knn_top1`, `linear_probe`) and on each `eval.retain` set
    /// (`retain`), before training and after (of the kept model: `kept_step`).
    pub eval_before: Option<SuiteScores>,
    pub eval_after: Option<SuiteScores>,
    /// The evaluations during training (`eval.every`) and at its end.
    pub evaluations: Vec<EvalPoint>,
    /// `eval.keep_best`: the step whose model was kept (evaluated after, exported) instead of
    /// the last one.
    pub kept_step: Option<u64>,
    /// `eval.keep_best`: whether any evaluation met the rule (else the last model was kept).
    pub keep_best_met: Option<bool>,
    pub export: Option<PathBuf>,
    /// In-place retraining: where the original model was kept.
    pub backup: Option<PathBuf>,
    /// Why the run failed (status `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where TF ran the step's ops, when devices were asked (`graph::placement`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::graph::placement::Placement>,
}

/// One head scalar over a session's steps.
#[derive(Debug, Clone, Serialize)]
pub struct HeadScalar {
    pub tag: String,
    pub first10: f32,
    pub last10: f32,
    #[serde(skip)]
    values: Vec<f32>,
}

/// Writes `text` to `path` through a temp file and a rename.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// "N cores, <model name>, family F model M, <vector extensions>" from `/proc/cpuinfo`
/// (just the core count where that file is missing).
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_line(cores, &info)
}

fn cpu_line(cores: usize, cpuinfo: &str) -> String {
    let first = cpuinfo.split("\n\n").next().unwrap_or("");
    let field = |k: &str| {
        first.lines().find_map(|l| {
            let (key, v) = l.split_once(':')?;
            (key.trim() == k).then(|| v.trim().to_string())
        })
    };
    let Some(name) = field("model name") else {
        return format!("{cores} cores");
    };
    let flags = field("flags").unwrap_or_default();
    let flags: Vec<&str> = flags.split_whitespace().collect();
    let vec: Vec<&str> = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
    ]
    .into_iter()
    .filter(|f| flags.contains(f))
    .collect();
    let vec = if vec.is_empty() {
        "no AVX2".to_string()
    } else {
        vec.join("/")
    };
    format!(
        "{cores} cores, {name}, family {} model {}, {vec}",
        field("cpu family").unwrap_or_else(|| "?".into()),
        field("model").unwrap_or_else(|| "?".into())
    )
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        f32::NAN
    } else {
        v.iter().sum::<f32>() / v.len() as f32
    }
}

impl Report {
    pub fn new(
        run_dir: &Path,
        config: Experiment,
        build: f64,
        before: Option<SuiteScores>,
    ) -> Self {
        Report {
            run_dir: run_dir.to_path_buf(),
            status: Status::Finished,
            machine: machine(),
            steps_planned: config.train.steps.unwrap_or(0),
            batch: config.train.batch,
            config,
            images_read: 0,
            images_skipped: Vec::new(),
            steps: 0,
            build_seconds: build,
            train_seconds: 0.0,
            data_seconds: 0.0,
            wait_seconds: 0.0,
            session_seconds: 0.0,
            images_per_second: 0.0,
            loss_first10: f32::NAN,
            loss_last10: f32::NAN,
            head_scalars: Vec::new(),
            losses: Vec::new(),
            eval_before: before,
            eval_after: None,
            evaluations: Vec::new(),
            kept_step: None,
            keep_best_met: None,
            export: None,
            error: None,
            backup: None,
            placement: None,
        }
    }

    /// Records a step's value of a head scalar.
    pub fn scalar(&mut self, tag: &str, v: f32) {
        let i = match self.head_scalars.iter().position(|h| h.tag == tag) {
            Some(i) => i,
            None => {
                self.head_scalars.push(HeadScalar {
                    tag: tag.to_string(),
                    first10: f32::NAN,
                    last10: f32::NAN,
                    values: Vec::new(),
                });
                self.head_scalars.len() - 1
            }
        };
        let h = &mut self.head_scalars[i];
        h.values.push(v);
        let k = h.values.len().min(10);
        h.first10 = mean(&h.values[..k]);
        h.last10 = mean(&h.values[h.values.len() - k..]);
    }

    /// Takes the trainer's counters and the losses so far.
    pub fn fill(&mut self, t: &Trainer, tally: &crate::train::Tally) {
        let (losses, seconds) = (&tally.losses, tally.seconds());
        self.wait_seconds = tally.wait_seconds;
        self.session_seconds = tally.session_seconds;
        self.images_read = t.input().images_read();
        self.images_skipped = t
            .input()
            .dataset()
            .scan_skipped
            .iter()
            .cloned()
            .chain(t.input().skipped())
            .collect();
        self.data_seconds = t.input().data_seconds();
        self.steps = t.step();
        self.train_seconds = seconds;
        self.images_per_second = (t.step() as usize * self.batch) as f64 / seconds.max(1e-9);
        let k = losses.len().min(10);
        self.loss_first10 = mean(&losses[..k]);
        self.loss_last10 = mean(&losses[losses.len() - k..]);
        self.losses = losses.to_vec();
        self.placement = t.placement().cloned();
    }

    /// Writes `report.json` and `report.md` into the run directory.
    pub fn write(&self) -> Result<()> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::internal("serialising the report", e))?;
        write_atomic(&self.run_dir.join("report.json"), &json)?;
        write_atomic(&self.run_dir.join("report.md"), &self.markdown())
    }

    /// The human-readable report.
    pub fn markdown(&self) -> String {
        let r = self;
        let mut s = format!("# pretext run {}\n\n", r.run_dir.display());
        s += &format!(
            "- status: {:?}\n- machine: {}\n- model: {}\n- head: {}\n",
            r.status,
            r.machine,
            r.config.model.path.display(),
            r.config.head.head().kind()
        );
        if let Some(e) = &r.error {
            s += &format!("- error: {e}\n");
        }
        s += &format!(
            "- steps: {} of {} planned, batch {}; {:.1} s training ({:.1} images/s), graph built in {:.1} s\n",
            r.steps, r.steps_planned, r.batch, r.train_seconds, r.images_per_second, r.build_seconds
        );
        s += &format!(
            "- time in this session: {:.1} s in TF session steps; {:.1} s decoding + augmenting batches on the input threads, of which the steps waited {:.1} s\n",
            r.session_seconds, r.data_seconds, r.wait_seconds
        );
        s += &format!(
            "- loss: first-10 mean {:.5}, last-10 mean {:.5}\n",
            r.loss_first10, r.loss_last10
        );
        for h in &r.head_scalars {
            s += &format!(
                "  - {}: first-10 mean {:.5}, last-10 mean {:.5}\n",
                h.tag, h.first10, h.last10
            );
        }
        s += &format!(
            "- images read: {}, skipped: {}\n",
            r.images_read,
            r.images_skipped.len()
        );
        for (p, why) in &r.images_skipped {
            s += &format!("  - {p}: {why}\n");
        }
        s += &super::scoring::markdown(r);
        s += &r
            .placement
            .as_ref()
            .map(|p| p.markdown())
            .unwrap_or_default();
        match (&r.export, &r.backup) {
            (Some(p), Some(b)) => {
                s += &format!(
                    "\nretrained in place: {} (original kept in {})\n",
                    p.display(),
                    b.display()
                )
            }
            (Some(p), None) => s += &format!("\nexported: {}\n", p.display()),
            _ => s += "\nnot exported\n",
        }
        s += &format!(
            "\nTensorBoard: tensorboard --logdir {}\n",
            r.run_dir.join("tensorboard").display()
        );
        s
    }
}

/// Exports `t`'s model as `x` says: `dir/<version>/`, or in place of `model.path` (then the
/// backup of the original is returned too).
pub fn export(
    t: &Trainer,
    exp: &Experiment,
    x: &ExportSection,
    run_dir: Option<&Path>,
) -> Result<(PathBuf, Option<PathBuf>)> {
    if x.in_place {
        let measured = exp.eval.as_ref().is_some_and(|e| !e.retain.is_empty());
        if !measured || exp.retain.retain().is_none() {
            log::warn!(
                "retraining {} in place: every consumer of it gets the new model, and {}",
                exp.model.path.display(),
                match measured {
                    false => "what it does on their domains was not measured (eval.retain)",
                    true => "nothing held it near the original (retain: l2sp or distill)",
                }
            );
        }
        let (p, backup) = crate::export::export_in_place(t.model(), &exp.model.path)?;
        log::info!(
            "retrained in place: {} (original kept in {})",
            p.display(),
            backup.display()
        );
        return Ok((p, Some(backup)));
    }
    let dir = x
        .dir
        .as_ref()
        .ok_or_else(|| Error::config("export.dir", "missing: where to write <dir>/<version>/"))?;
    let Some(run_dir) = run_dir else {
        return Ok((crate::export::export(t.model(), dir, x.version)?, None));
    };
    // A run exports each trained state once: the version is recorded before it is written, so
    // a run killed after the export but before its report finds that version on `resume`.
    let intent_path = run_dir.join("export.json");
    let intent: Option<ExportIntent> = std::fs::read_to_string(&intent_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let version = match intent {
        Some(i) if i.step == t.step() && i.dir == *dir => {
            let done = dir.join(i.version.to_string());
            if done.join("saved_model.pb").is_file() {
                log::info!(
                    "step {} was already exported to {}",
                    t.step(),
                    done.display()
                );
                return Ok((done, None));
            }
            i.version
        }
        _ => crate::export::next_version(dir, x.version),
    };
    let intent = ExportIntent {
        step: t.step(),
        dir: dir.clone(),
        version,
    };
    let json = serde_json::to_string(&intent)
        .map_err(|e| Error::internal("serialising the export intent", e))?;
    write_atomic(&intent_path, &json)?;
    Ok((crate::export::export(t.model(), dir, Some(version))?, None))
}

/// The export a run is making (`RUN/export.json`): which trained step goes to which version.
#[derive(Serialize, Deserialize)]
struct ExportIntent {
    step: u64,
    dir: PathBuf,
    version: u64,
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
