//! The evaluations of a run: every `eval.every` steps and at the end, scored on every set,
//! logged, written to TensorBoard and kept in `RUN/evaluations.json` (a resumed run continues
//! the list); and `eval.keep_best`'s rule: the model kept is the one with the best target kNN
//! among the points where every retain set's kNN stayed within `eval.max_retain_drop` of its
//! score before training (its checkpoint in `RUN/best/`), else the last one.
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::report::{write_atomic, Report};
use super::scoring::{log_scores, EvalPoint, Suite, SuiteScores};
use crate::error::{Error, Result};
use crate::train::checkpoint;
use crate::train::drive::{Hook, StepInfo, Tally};
use crate::train::summary::ScalarWriter;
use crate::train::Trainer;

/// Where the kept model's checkpoint and its evaluation live.
pub fn best_dir(run: &Path) -> PathBuf {
    run.join("best")
}

fn points_file(run: &Path) -> PathBuf {
    run.join("evaluations.json")
}

/// The evaluations a run recorded up to `step` (a resumed run drops those after its
/// checkpoint: it takes them again).
pub fn read_points(run: &Path, step: u64) -> Vec<EvalPoint> {
    let s = std::fs::read_to_string(points_file(run)).unwrap_or_default();
    let all: Vec<EvalPoint> = serde_json::from_str(&s).unwrap_or_default();
    all.into_iter().filter(|p| p.step <= step).collect()
}

fn read_best(run: &Path, step: u64) -> Option<EvalPoint> {
    let s = std::fs::read_to_string(best_dir(run).join("best.json")).ok()?;
    serde_json::from_str::<EvalPoint>(&s)
        .ok()
        .filter(|b| b.step <= step)
}

/// Whether the rule keeps `p` over `best`: `p` is within the allowed fall and scores higher.
pub fn better(p: &EvalPoint, best: Option<&EvalPoint>) -> bool {
    p.within && best.is_none_or(|b| p.scores.target.knn_top1 > b.scores.target.knn_top1)
}

/// The evaluations hook (`Trainer::drive`) and the end-of-run decision.
pub struct Evaluations<'a> {
    suite: &'a Suite,
    before: &'a SuiteScores,
    writer: Option<&'a ScalarWriter>,
    run_dir: PathBuf,
    pub points: Vec<EvalPoint>,
    best: Option<EvalPoint>,
    /// Seconds the last `after_step` spent evaluating (not training time).
    spent: f64,
}

impl<'a> Evaluations<'a> {
    /// The evaluations of the run in `run_dir`, continued at `t`'s step.
    pub fn new(
        suite: &'a Suite,
        before: &'a SuiteScores,
        writer: Option<&'a ScalarWriter>,
        run_dir: &Path,
        t: &Trainer,
    ) -> Self {
        Evaluations {
            suite,
            before,
            writer,
            run_dir: run_dir.to_path_buf(),
            points: read_points(run_dir, t.step()),
            best: read_best(run_dir, t.step()),
            spent: 0.0,
        }
    }

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
            write_json(&dir.join("best.json"), &p)?;
            self.best = Some(p.clone());
        }
        self.points.push(p.clone());
        write_json(&points_file(&self.run_dir), &self.points)?;
        Ok(p)
    }

    /// The last evaluation, then `eval.keep_best`'s decision: restores the kept model when it
    /// is not the last one, scores it again (`eval_after` is the exported model's), and fills
    /// the report's evaluation fields.
    pub fn finish(&mut self, t: &mut Trainer, tally: &Tally, report: &mut Report) -> Result<()> {
        let now = match self.points.last() {
            Some(p) if p.step == t.step() => p.clone(),
            _ => self.evaluate(t, tally)?,
        };
        report.evaluations = self.points.clone();
        report.eval_after = Some(now.scores.clone());
        if !self.suite.keep_best {
            return Ok(());
        }
        report.keep_best_met = Some(self.best.is_some());
        let Some(best) = self.best.clone().filter(|b| keeps(b, &now)) else {
            if self.best.is_none() {
                log::warn!(
                    "eval.keep_best: no evaluation kept every retain set within {} of its score \
                     before training; the last model is kept",
                    self.suite.max_drop
                );
            }
            return Ok(());
        };
        let ckpt = checkpoint::list(&best_dir(&self.run_dir))
            .into_iter()
            .find(|(s, _)| *s == best.step)
            .map(|(_, p)| p)
            .ok_or_else(|| {
                Error::config(
                    "eval.keep_best",
                    format!(
                        "the checkpoint of step {} is missing from {}",
                        best.step,
                        best_dir(&self.run_dir).display()
                    ),
                )
            })?;
        log::info!(
            "eval.keep_best: the model of step {} (kNN {:.4}, retain sets within {}) over step {}'s",
            best.step,
            best.scores.target.knn_top1,
            self.suite.max_drop,
            now.step
        );
        t.restore(&ckpt)?;
        let again = self.suite.score(t)?;
        log_scores(&format!("kept step {}", best.step), &again);
        report.kept_step = Some(best.step);
        report.eval_after = Some(again);
        Ok(())
    }
}

/// Whether the rule keeps `best` (an earlier point) over the last point `now`.
pub fn keeps(best: &EvalPoint, now: &EvalPoint) -> bool {
    best.step != now.step && (!now.within || better(best, Some(now)))
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    let json = serde_json::to_string_pretty(v)
        .map_err(|e| Error::internal("serialising the evaluations", e))?;
    write_atomic(path, &json)
}

impl Hook for Evaluations<'_> {
    fn after_step(&mut self, t: &mut Trainer, s: &StepInfo, tally: &Tally) -> Result<()> {
        let every = self.suite.every;
        if every > 0 && s.step % every == 0 && s.step < s.until {
            let started = Instant::now();
            self.evaluate(t, tally)?;
            self.spent = started.elapsed().as_secs_f64();
        }
        Ok(())
    }

    fn outside_training(&mut self) -> f64 {
        std::mem::take(&mut self.spent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Scores;

    fn point(step: u64, knn: f32, within: bool) -> EvalPoint {
        EvalPoint {
            step,
            scores: SuiteScores {
                target: Scores {
                    knn_top1: knn,
                    linear_probe: 0.0,
                },
                retain: Vec::new(),
            },
            retain_drop: if within { 0.0 } else { 0.05 },
            within,
        }
    }

    #[test]
    fn the_rule_keeps_the_best_point_within_the_allowed_fall() {
        let (a, b) = (point(500, 0.80, true), point(1000, 0.84, true));
        assert!(better(&a, None) && better(&b, Some(&a)) && !better(&a, Some(&b)));
        assert!(
            !better(&point(1500, 0.90, false), Some(&b)),
            "over the fall"
        );
        // The last point loses to an earlier one when it scores lower or fell too far.
        assert!(keeps(&b, &point(2000, 0.83, true)));
        assert!(keeps(&b, &point(2000, 0.95, false)));
        assert!(!keeps(&b, &point(2000, 0.85, true)));
        assert!(!keeps(&b, &point(1000, 0.84, true)), "the same point");
    }
}
