//! Timed training for benchmarks: where each step's time goes (waiting for input vs the session
//! step), the steady-state rate after warm-up steps, and the step fed from memory (the same batch
//! every step) that isolates the engine's per-step cost from the input pipeline.
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::drive::{Feed, Hook, StepInfo, Stop, Tally};
use super::Trainer;
use crate::error::Result;

/// What a timed run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timing {
    pub steps: u64,
    pub batch: usize,
    /// Whether one batch was made once and fed every step.
    pub from_memory: bool,
    /// Steps left out of the steady-state figures.
    pub untimed_steps: u64,
    /// Images per second over the steps after the warm-up ones (end to end: input + step).
    pub images_per_second: f64,
    /// Mean seconds per step after the warm-up ones.
    pub step_seconds: f64,
    /// Wall clock (seconds since the Unix epoch) when the first step finished.
    pub first_step_unix: f64,
    /// Seconds the loop waited for input, and spent in session steps (all steps).
    pub wait_seconds: f64,
    pub session_seconds: f64,
    /// Seconds the input threads spent decoding and augmenting the batches consumed.
    pub data_seconds: f64,
    pub loss_first: f32,
    pub loss_last: f32,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The timing of a drive: per-step seconds, the steady state after `untimed` steps.
struct Timer {
    t: Timing,
    steady_from: Option<Instant>,
    /// The trainer's step when the timed run began.
    start: u64,
}

impl Hook for Timer {
    fn stop(&mut self, t: &Trainer, _tally: &Tally) -> Option<Stop> {
        if t.step - self.start == self.t.untimed_steps && self.steady_from.is_none() {
            self.steady_from = Some(Instant::now());
        }
        None
    }

    fn after_step(&mut self, _t: &mut Trainer, s: &StepInfo, _tally: &Tally) -> Result<()> {
        if s.step == self.start + 1 {
            self.t.first_step_unix = unix_now();
            self.t.loss_first = s.loss;
        }
        self.t.loss_last = s.loss;
        self.t.steps += 1;
        self.t.wait_seconds += s.wait_seconds;
        self.t.session_seconds += s.session_seconds;
        Ok(())
    }
}

impl Trainer {
    /// Runs `steps` more steps, timing each; `feed` says where batches come from.
    pub fn timed_run(&mut self, steps: u64, untimed: u64, feed: Feed) -> Result<Timing> {
        let mut timer = Timer {
            t: Timing {
                steps: 0,
                batch: self.batch,
                from_memory: feed == Feed::Memory,
                untimed_steps: untimed.min(steps.saturating_sub(1)),
                images_per_second: 0.0,
                step_seconds: 0.0,
                first_step_unix: 0.0,
                wait_seconds: 0.0,
                session_seconds: 0.0,
                data_seconds: 0.0,
                loss_first: f32::NAN,
                loss_last: f32::NAN,
            },
            steady_from: None,
            start: self.step,
        };
        let until = self.step + steps;
        self.drive_from(feed, until, &mut Tally::default(), &mut [&mut timer])?;
        let mut t = timer.t;
        if let Some(s) = timer.steady_from {
            let n = (t.steps - t.untimed_steps).max(1);
            t.step_seconds = s.elapsed().as_secs_f64() / n as f64;
            t.images_per_second = self.batch as f64 / t.step_seconds;
        }
        t.data_seconds = self.input.data_seconds();
        Ok(t)
    }
}

/// This process's peak resident set size in MiB (Linux `VmHWM`; None elsewhere).
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}
