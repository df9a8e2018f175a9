//! What a run is scored on: the target labeled set (`eval.labeled`) and labeled sets of other
//! domains (`eval.retain`), before training, every `eval.every` steps and after; and the rule
//! `eval.keep_best` keeps: the best target kNN among the evaluations where every retain set's
//! kNN stayed within `eval.max_retain_drop` of its score before (its checkpoint in `best/`).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::write_atomic;
use super::Experiment;
use crate::error::{Error, Result};
use crate::eval::{evaluate, LabeledSet, Scores};
use crate::train::checkpoint;
use crate::train::drive::{Hook, StepInfo, Tally};
use crate::train::summary::ScalarWriter;
use crate::train::Trainer;

/// One labeled set's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetScores {
    pub set: PathBuf,
    #[serde(flatten)]
    pub scores: Scores,
}

/// The target set's scores (`knn_top1`, `linear_probe` in JSON) and each retain set's, at one
/// point of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteScores {
    #[serde(flatten)]
    pub target: Scores,
    #[serde(default)]
    pub retain: Vec<SetScores>,
}

impl SuiteScores {
    /// The largest fall of a retain set's kNN top-1 from `before` (negative: every one rose).
    pub fn retain_drop(&self, before: &SuiteScores) -> f32 {
        let drops = self
            .retain
            .iter()
            .zip(&before.retain)
            .map(|(a, b)| b.scores.knn_top1 - a.scores.knn_top1);
        drops.reduce(f32::max).unwrap_or(0.0)
    }

    /// TensorBoard tags and values: `eval/knn_top1`, `eval/linear_probe`, then
    /// `eval/retain/<set folder>/…` for each retain set.
    pub fn scalars(&self) -> Vec<(String, f32)> {
        let mut v = vec![
            ("eval/knn_top1".to_string(), self.target.knn_top1),
            ("eval/linear_probe".to_string(), self.target.linear_probe),
        ];
        for r in &self.retain {
            let name = set_name(&r.set);
            v.push((format!("eval/retain/{name}/knn_top1"), r.scores.knn_top1));
            v.push((
                format!("eval/retain/{name}/linear_probe"),
                r.scores.linear_probe,
            ));
        }
        v
    }
}

/// A set's short name: its folder's.
pub fn set_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// An evaluation during (or at the end of) training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: u64,
    pub scores: SuiteScores,
    /// The largest fall of a retain set's kNN top-1 since before training.
    pub retain_drop: f32,
    /// Every retain set within `eval.max_retain_drop`.
    pub within: bool,
}

/// The labeled sets of an experiment, scanned.
pub struct Suite {
    target: LabeledSet,
    retain: Vec<(PathBuf, LabeledSet)>,
    batch: usize,
    pub max_drop: f32,
    pub every: u64,
    pub keep_best: bool,
}

impl Suite {
    /// The experiment's sets (`None` without an `eval` section).
    pub fn scan(exp: &Experiment) -> Result<Option<Suite>> {
        let Some(e) = &exp.eval else { return Ok(None) };
        let retain = e
            .retain
            .iter()
            .map(|p| Ok((p.clone(), LabeledSet::scan_for(p, "eval.retain")?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Suite {
            target: LabeledSet::scan(&e.labeled)?,
            retain,
            batch: e.batch,
            max_drop: e.max_retain_drop,
            every: e.every,
            keep_best: e.keep_best,
        }))
    }

    /// Scores the trainer's model on every set.
    pub fn score(&self, t: &Trainer) -> Result<SuiteScores> {
        let run = |set: &LabeledSet| evaluate(t.model(), t.signature(), t.spec(), set, self.batch);
        let target = run(&self.target)?;
        let retain = self
            .retain
            .iter()
            .map(|(p, s)| {
                Ok(SetScores {
                    set: p.clone(),
                    scores: run(s)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SuiteScores { target, retain })
    }

    /// `scores` at `step`, judged against `before`.
    pub fn point(&self, step: u64, scores: SuiteScores, before: &SuiteScores) -> EvalPoint {
        let drop = scores.retain_drop(before);
        EvalPoint {
            step,
            within: drop <= self.max_drop + 1e-6,
            retain_drop: drop,
            scores,
        }
    }
}

/// Logs a point's scores.
pub fn log_scores(when: &str, s: &SuiteScores) {
    log::info!(
        "{when}: kNN top-1 {:.4}, linear probe {:.4}",
        s.target.knn_top1,
        s.target.linear_probe
    );
    for r in &s.retain {
        log::info!(
            "{when}, retain set {}: kNN top-1 {:.4}, linear probe {:.4}",
            set_name(&r.set),
            r.scores.knn_top1,
            r.scores.linear_probe
        );
    }
}

/// Where the kept model's checkpoint and its evaluation live.
pub fn best_dir(run: &Path) -> PathBuf {
    run.join("best")
}

/// The best point kept so far (a resumed run continues from it).
pub fn read_best(run: &Path) -> Option<EvalPoint> {
    let s = std::fs::read_to_string(best_dir(run).join("best.json")).ok()?;
    serde_json::from_str(&s).ok()
}

/// Whether `p` is kept over `best` by the rule.
pub fn better(p: &EvalPoint, best: Option<&EvalPoint>) -> bool {
    p.within
        && best.map_or(true, |b| {
            p.scores.target.knn_top1 > b.scores.target.knn_top1
        })
}

/// The in-run evaluations: every `suite.every` steps, scored, logged, written to TensorBoard
/// and, under `keep_best`, the best checkpointed into `best/`.
pub struct Evaluations<'a> {
    pub suite: &'a Suite,
    pub before: &'a SuiteScores,
    pub writer: Option<&'a ScalarWriter>,
    pub run_dir: PathBuf,
    pub points: Vec<EvalPoint>,
    pub best: Option<EvalPoint>,
}

impl Evaluations<'_> {
    /// Scores the model at its current step and records the point (checkpointing a new best).
    pub fn evaluate(&mut self, t: &Trainer, tally: &Tally) -> Result<EvalPoint> {
        let scores = self.suite.score(t)?;
        log_scores(&format!("step {}", t.step()), &scores);
        if let Some(w) = self.writer {
            w.write(t, t.step(), &scores.scalars())?;
        }
        let p = self.suite.point(t.step(), scores, self.before);
        if !p.within {
            log::info!(
                "step {}: a retain set's kNN fell {:.4} (over eval.max_retain_drop {})",
                p.step,
                p.retain_drop,
                self.suite.max_drop
            );
        }
        if self.suite.keep_best && better(&p, self.best.as_ref()) {
            let dir = best_dir(&self.run_dir);
            t.checkpoint(&dir, &tally.losses, tally.seconds(), 1)?;
            let json = serde_json::to_string_pretty(&p)
                .map_err(|e| Error::internal("serialising the best evaluation", e))?;
            write_atomic(&dir.join("best.json"), &json)?;
            self.best = Some(p.clone());
        }
        self.points.push(p.clone());
        Ok(p)
    }

    /// The checkpoint of the kept point, if it is not the model's current state.
    pub fn kept_checkpoint(&self, now: &EvalPoint) -> Option<(EvalPoint, PathBuf)> {
        let best = self.best.as_ref()?;
        let keep = best.scores.target.knn_top1 > now.scores.target.knn_top1 || !now.within;
        if !self.suite.keep_best || best.step == now.step || !keep {
            return None;
        }
        let (_, ck) = checkpoint::list(&best_dir(&self.run_dir))
            .into_iter()
            .find(|(s, _)| *s == best.step)?;
        Some((best.clone(), ck))
    }
}

impl Hook for Evaluations<'_> {
    fn after_step(&mut self, t: &mut Trainer, s: &StepInfo, tally: &Tally) -> Result<()> {
        let every = self.suite.every;
        if every > 0 && s.step % every == 0 && s.step < s.until {
            self.evaluate(t, tally)?;
        }
        Ok(())
    }
}

/// The report's score tables: each set before and after, then the evaluations during training.
pub fn markdown(r: &super::report::Report) -> String {
    let (b, a) = (r.eval_before.as_ref(), r.eval_after.as_ref());
    if b.is_none() && a.is_none() {
        return String::new();
    }
    let f = |x: Option<f32>| x.map_or("–".to_string(), |v| format!("{v:.4}"));
    let d = |x: Option<f32>, y: Option<f32>| match (x, y) {
        (Some(x), Some(y)) => format!("{:+.4}", y - x),
        _ => "–".to_string(),
    };
    let mut s = String::from(
        "\n| set | kNN before | kNN after | change | probe before | probe after | change |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut row =
        |name: String, x: Option<&crate::eval::Scores>, y: Option<&crate::eval::Scores>| {
            let (kb, ka) = (x.map(|v| v.knn_top1), y.map(|v| v.knn_top1));
            let (pb, pa) = (x.map(|v| v.linear_probe), y.map(|v| v.linear_probe));
            s += &format!(
                "| {name} | {} | {} | {} | {} | {} | {} |\n",
                f(kb),
                f(ka),
                d(kb, ka),
                f(pb),
                f(pa),
                d(pb, pa)
            );
        };
    row("target".into(), b.map(|v| &v.target), a.map(|v| &v.target));
    let sets = a.or(b).map(|v| v.retain.clone()).unwrap_or_default();
    for (i, set) in sets.iter().enumerate() {
        let pick = |x: Option<&SuiteScores>| x.and_then(|v| v.retain.get(i)).map(|r| r.scores);
        let (x, y) = (pick(b), pick(a));
        row(
            format!("retain: {}", set_name(&set.set)),
            x.as_ref(),
            y.as_ref(),
        );
    }
    if let Some(k) = r.kept_step {
        s += &format!("\nkept the model of step {k} (eval.keep_best)\n");
    }
    if !r.evaluations.is_empty() {
        s += "\n| step | kNN | probe | largest retain kNN fall | within |\n|---|---|---|---|---|\n";
        for p in &r.evaluations {
            s += &format!(
                "| {} | {:.4} | {:.4} | {:+.4} | {} |\n",
                p.step,
                p.scores.target.knn_top1,
                p.scores.target.linear_probe,
                p.retain_drop,
                if p.within { "yes" } else { "no" }
            );
        }
    }
    s
}
