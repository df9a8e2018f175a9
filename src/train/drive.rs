//! The one step loop. `run`, `resume`, `train`, `bench` and the library's `Trainer::run` all
//! step through `Trainer::drive`; what differs between them (progress bar, log lines,
//! checkpoints, TensorBoard, timing, Ctrl-C, a time budget) is a `Hook`.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tensorflow::{Operation, Output, Tensor};

use super::Trainer;
use crate::error::{Error, Result};

/// Why a drive ended before its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A stop was asked for (Ctrl-C, SIGTERM): the step finished, nothing is lost.
    Interrupted,
    /// The run's time budget was used up.
    TimeBudget,
}

/// What a run has done so far: kept across drives (a resume continues it).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// The loss of every step, in order.
    pub losses: Vec<f32>,
    /// Training seconds before the current drive started (earlier drives, a resumed run).
    pub seconds_before: f64,
    /// Seconds the loop waited for input, and spent in session steps (this process).
    pub wait_seconds: f64,
    pub session_seconds: f64,
    started: Option<Instant>,
    /// Seconds of the current drive hooks spent outside training (evaluations).
    excluded: f64,
}

impl Tally {
    /// A run that already trained `seconds` and took `losses` (from a checkpoint).
    pub fn resumed(losses: Vec<f32>, seconds: f64) -> Tally {
        Tally {
            losses,
            seconds_before: seconds,
            ..Default::default()
        }
    }

    /// Training seconds so far, the current drive's included.
    pub fn seconds(&self) -> f64 {
        let drive = self.started.map(|s| s.elapsed().as_secs_f64());
        self.seconds_before + drive.map_or(0.0, |d| (d - self.excluded).max(0.0))
    }
}

/// One finished step, as hooks see it.
#[derive(Debug)]
pub struct StepInfo<'a> {
    /// Steps taken so far (this one included).
    pub step: u64,
    /// The step the drive runs to.
    pub until: u64,
    pub loss: f32,
    /// The head's scalars (`Trainer::summaries`), by tag.
    pub scalars: &'a [(String, f32)],
    /// Images in this step's batch.
    pub images: usize,
    /// Seconds this step waited for its batch, and spent in the session.
    pub wait_seconds: f64,
    pub session_seconds: f64,
}

/// Ops and feeds a hook adds to the next step (e.g. TensorBoard's summary writers).
#[derive(Default)]
pub struct Extras {
    pub ops: Vec<Operation>,
    pub feeds: Vec<(Output, Tensor<i64>)>,
}

/// Something that runs beside the step loop. Every method has a default that does nothing.
pub trait Hook {
    /// Before each step; `Some` ends the drive there.
    fn stop(&mut self, _t: &Trainer, _tally: &Tally) -> Option<Stop> {
        None
    }
    /// Ops to run with step `next` (1-based).
    fn extras(&mut self, _t: &Trainer, _next: u64, _x: &mut Extras) {}
    /// After each step (its loss already in `tally.losses`).
    fn after_step(&mut self, _t: &mut Trainer, _s: &StepInfo, _tally: &Tally) -> Result<()> {
        Ok(())
    }
    /// Seconds its last `after_step` spent on work that is not training (an evaluation): the
    /// run's training time and time budget leave them out.
    fn outside_training(&mut self) -> f64 {
        0.0
    }
    /// Once the loop ends without an error (at `until`, or stopped).
    fn finish(&mut self, _t: &mut Trainer, _stop: Option<Stop>, _tally: &Tally) -> Result<()> {
        Ok(())
    }
}

/// Where batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Feed {
    /// A fresh batch from the input pipeline each step.
    #[default]
    Pipeline,
    /// The first batch, fed every step (a benchmark of the step without the input pipeline).
    Memory,
}

impl Trainer {
    /// Steps until `self.step == until` or a hook stops the drive. A non-finite loss or head
    /// scalar ends it with `Error::Diverged` naming the step and the value.
    pub fn drive(
        &mut self,
        until: u64,
        tally: &mut Tally,
        hooks: &mut [&mut dyn Hook],
    ) -> Result<Option<Stop>> {
        self.drive_from(Feed::Pipeline, until, tally, hooks)
    }

    /// `drive` with batches from `feed`.
    pub fn drive_from(
        &mut self,
        feed: Feed,
        until: u64,
        tally: &mut Tally,
        hooks: &mut [&mut dyn Hook],
    ) -> Result<Option<Stop>> {
        tally.started = Some(Instant::now());
        tally.excluded = 0.0;
        let r = self.drive_loop(feed, until, tally, hooks);
        tally.seconds_before = tally.seconds();
        tally.started = None;
        tally.excluded = 0.0;
        let stop = r?;
        for h in hooks.iter_mut() {
            h.finish(self, stop, tally)?;
        }
        Ok(stop)
    }

    fn drive_loop(
        &mut self,
        feed: Feed,
        until: u64,
        tally: &mut Tally,
        hooks: &mut [&mut dyn Hook],
    ) -> Result<Option<Stop>> {
        let tags: Vec<String> = self.summaries().iter().map(|(k, _)| k.clone()).collect();
        let fetch: Vec<Output> = self.summaries().iter().map(|(_, o)| o.clone()).collect();
        let mut fixed: Option<Vec<Tensor<f32>>> = None;
        while self.step < until {
            if let Some(s) = hooks.iter_mut().find_map(|h| h.stop(self, tally)) {
                return Ok(Some(s));
            }
            let mut extras = Extras::default();
            for h in hooks.iter_mut() {
                h.extras(self, self.step + 1, &mut extras);
            }
            let tw = Instant::now();
            let mut fresh = match (feed, &fixed) {
                (Feed::Memory, Some(_)) => None,
                _ => Some(self.next_batch()?),
            };
            if feed == Feed::Memory && fixed.is_none() {
                fixed = fresh.take();
            }
            let wait = tw.elapsed().as_secs_f64();
            let xs = fresh.as_ref().or(fixed.as_ref()).expect("a batch");
            // No feeds: the workers read the batch.
            let images = xs.first().map_or(self.batch, |x| x.dims()[0] as usize);
            let ts = Instant::now();
            let extra: Vec<&Operation> = extras.ops.iter().collect();
            let fetch_refs: Vec<&Output> = fetch.iter().collect();
            let vals = self.step_with(xs, &extra, &extras.feeds, &fetch_refs)?;
            let session = ts.elapsed().as_secs_f64();
            if let Some(xs) = fresh {
                self.recycle(xs);
            }
            tally.wait_seconds += wait;
            tally.session_seconds += session;
            let loss = vals[0];
            let scalars: Vec<(String, f32)> = tags
                .iter()
                .cloned()
                .zip(vals[1..].iter().copied())
                .collect();
            if !vals.iter().all(|v| v.is_finite()) {
                return Err(self.diverged(loss, &scalars));
            }
            tally.losses.push(loss);
            let info = StepInfo {
                step: self.step,
                until,
                loss,
                scalars: &scalars,
                images,
                wait_seconds: wait,
                session_seconds: session,
            };
            for h in hooks.iter_mut() {
                h.after_step(self, &info, tally)?;
                tally.excluded += h.outside_training();
            }
        }
        Ok(None)
    }

    fn diverged(&self, loss: f32, scalars: &[(String, f32)]) -> Error {
        let culprit = scalars
            .iter()
            .find(|(_, v)| !v.is_finite())
            .map(|(k, v)| format!("{k} = {v}"))
            .unwrap_or_else(|| format!("loss = {loss}"));
        Error::Diverged {
            step: self.step,
            msg: format!(
                "head {}: non-finite loss at step {}: {culprit}",
                self.head_kind, self.step
            ),
        }
    }
}

/// Stops the drive when a flag is set (the signal handler of the command line sets it).
pub struct StopFlag<'a>(pub &'a AtomicBool);

impl Hook for StopFlag<'_> {
    fn stop(&mut self, _t: &Trainer, _tally: &Tally) -> Option<Stop> {
        self.0.load(Ordering::SeqCst).then_some(Stop::Interrupted)
    }
}

/// Stops the drive once the run has trained `seconds` (resumed runs count their earlier time).
pub struct TimeBudget(pub f64);

impl Hook for TimeBudget {
    fn stop(&mut self, t: &Trainer, tally: &Tally) -> Option<Stop> {
        (tally.seconds() >= self.0).then(|| {
            log::info!("time budget reached after {} step(s)", t.step);
            Stop::TimeBudget
        })
    }
}

/// Images per second over windows of steps ending at every `every`-th step (and the last).
#[derive(Debug)]
pub struct Rate {
    every: u64,
    window: Instant,
    images: usize,
    /// The last window's rate.
    pub value: f64,
}

impl Rate {
    pub fn new(every: u64) -> Rate {
        Rate {
            every: every.max(1),
            window: Instant::now(),
            images: 0,
            value: 0.0,
        }
    }

    /// Counts a step; true when it closes a window (`value` is then updated).
    pub fn count(&mut self, s: &StepInfo) -> bool {
        self.images += s.images;
        if s.step % self.every != 0 && s.step != s.until {
            return false;
        }
        self.value = self.images as f64 / self.window.elapsed().as_secs_f64().max(1e-9);
        (self.window, self.images) = (Instant::now(), 0);
        true
    }
}

/// Log lines every `every` steps: the loss and the rate.
pub struct LogLines(pub Rate);

impl Hook for LogLines {
    fn after_step(&mut self, _t: &mut Trainer, s: &StepInfo, _tally: &Tally) -> Result<()> {
        if self.0.count(s) {
            log::info!(
                "step {}/{} loss {:.5} ({:.1} images/s)",
                s.step,
                s.until,
                s.loss,
                self.0.value
            );
        }
        Ok(())
    }
}
