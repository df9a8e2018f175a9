//! The hooks a run drives its trainer with: progress bar or log lines, TensorBoard summaries,
//! periodic and final checkpoints, and the head's scalars for the report.
use std::path::PathBuf;

use super::report::Report;
use crate::error::Result;
use crate::train::drive::{Extras, Hook, Rate, StepInfo, Stop, Tally};
use crate::train::summary::Summaries;
use crate::train::Trainer;

/// A progress bar on a terminal, a log line every `every` steps otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    rate: Rate,
}

impl Progress {
    pub fn new(total: u64, at: u64, every: u64) -> Progress {
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
        Progress {
            bar,
            rate: Rate::new(every),
        }
    }

    /// Clears the bar (also when the drive failed).
    pub fn clear(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Hook for Progress {
    fn after_step(&mut self, _t: &mut Trainer, s: &StepInfo, _tally: &Tally) -> Result<()> {
        let log_line = self.rate.count(s);
        let rate = self.rate.value;
        match &self.bar {
            Some(b) => {
                b.set_position(s.step);
                b.set_message(format!("loss {:.4}  {rate:.1} images/s", s.loss));
            }
            None if log_line => log::info!(
                "step {}/{} loss {:.5} ({rate:.1} images/s)",
                s.step,
                s.until,
                s.loss
            ),
            None => {}
        }
        Ok(())
    }

    fn finish(&mut self, _t: &mut Trainer, _stop: Option<Stop>, _tally: &Tally) -> Result<()> {
        self.clear();
        Ok(())
    }
}

/// TensorBoard: the head's scalars, inputs and reconstructions every `every` steps, and the
/// rate.
pub struct TensorBoard {
    summaries: Summaries,
    every: u64,
    rate: Rate,
}

impl TensorBoard {
    pub fn new(t: &mut Trainer, dir: PathBuf, every: u64) -> Result<TensorBoard> {
        let mut images: Vec<(String, tensorflow::Output)> = t
            .feeds()
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("input/{i}"), f.clone()))
            .collect();
        // Reconstructions (autoencoders, inpainting) beside their targets, both in [0, 1].
        images.extend(
            t.tensors()
                .iter()
                .filter(|(k, _)| k.ends_with("/reconstruction") || k.ends_with("/target"))
                .cloned(),
        );
        Ok(TensorBoard {
            summaries: Summaries::new(t, &dir, &images)?,
            every: every.max(1),
            rate: Rate::new(every),
        })
    }
}

impl Hook for TensorBoard {
    fn extras(&mut self, _t: &Trainer, next: u64, x: &mut Extras) {
        if next % self.every == 0 {
            x.ops.extend(self.summaries.step_ops.iter().cloned());
            x.feeds.push(self.summaries.step_feed(next));
        }
    }

    fn after_step(&mut self, t: &mut Trainer, s: &StepInfo, _tally: &Tally) -> Result<()> {
        if self.rate.count(s) {
            self.summaries
                .write_rate(t, s.step, self.rate.value as f32)?;
        }
        Ok(())
    }
}

/// A checkpoint every `every` steps (0: none on the way) and one when the drive ends.
pub struct Checkpoints {
    pub dir: PathBuf,
    pub every: u64,
    pub keep: usize,
}

impl Hook for Checkpoints {
    fn after_step(&mut self, t: &mut Trainer, s: &StepInfo, tally: &Tally) -> Result<()> {
        if self.every > 0 && s.step % self.every == 0 && s.step < s.until {
            t.checkpoint(&self.dir, &tally.losses, tally.seconds(), self.keep)?;
        }
        Ok(())
    }

    fn finish(&mut self, t: &mut Trainer, _stop: Option<Stop>, tally: &Tally) -> Result<()> {
        let ck = t.checkpoint(&self.dir, &tally.losses, tally.seconds(), self.keep)?;
        log::info!("checkpoint {}", ck.display());
        Ok(())
    }
}

/// The head's scalars, step by step, into the report.
pub struct Scalars<'r>(pub &'r mut Report);

impl Hook for Scalars<'_> {
    fn after_step(&mut self, _t: &mut Trainer, s: &StepInfo, _tally: &Tally) -> Result<()> {
        for (k, v) in s.scalars {
            self.0.scalar(k, *v);
        }
        Ok(())
    }
}
