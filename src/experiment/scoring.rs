//! What a run is scored on: the target labeled set (`eval.labeled`) and labeled sets of other
//! domains (`eval.retain`), their scores at a point of the run, and the report's tables of them.
//! When the points are taken and which model is kept: `experiment::evaluations`.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Experiment;
use crate::error::Result;
use crate::eval::{evaluate, LabeledSet, Scores};
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
    if r.keep_best_met == Some(false) {
        s += "\nno evaluation met eval.keep_best's rule (every retain set within \
              eval.max_retain_drop): the last model was kept\n";
    }
    // The evaluations during training (a lone final point without retain sets says nothing new).
    if r.evaluations.len() > 1 || !sets.is_empty() {
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
