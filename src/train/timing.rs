//! Timed training for benchmarks: where each step's time goes (waiting for input vs the session
//! step), the steady-state rate after warm-up steps, and the step fed from memory (the same batch
//! every step) that isolates the engine's per-step cost from the input pipeline.
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::Trainer;
use crate::error::{Error, Result};

/// What a timed run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timing {
    pub steps: u64,
    pub batch: usize,
    /// Whether one batch was made once and fed every step.
    pub from_memory: bool,
    /// Steps left out of the steady-state figures.
    pub warmup_steps: u64,
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

impl Trainer {
    /// Runs `steps` steps, timing each; `from_memory` feeds the first batch every step.
    pub fn timed_run(&mut self, steps: u64, warmup: u64, from_memory: bool) -> Result<Timing> {
        let mut t = Timing {
            steps: 0,
            batch: self.batch,
            from_memory,
            warmup_steps: warmup.min(steps.saturating_sub(1)),
            images_per_second: 0.0,
            step_seconds: 0.0,
            first_step_unix: 0.0,
            wait_seconds: 0.0,
            session_seconds: 0.0,
            data_seconds: 0.0,
            loss_first: f32::NAN,
            loss_last: f32::NAN,
        };
        let mut fixed = None;
        let mut steady_from = None;
        for i in 0..steps {
            if i == t.warmup_steps {
                steady_from = Some(Instant::now());
            }
            let tw = Instant::now();
            let mut fresh = match (&fixed, from_memory) {
                (Some(_), true) => None,
                _ => Some(self.next_batch()?),
            };
            if from_memory && fixed.is_none() {
                fixed = fresh.take();
            }
            t.wait_seconds += tw.elapsed().as_secs_f64();
            let ts = Instant::now();
            let xs = fresh.as_ref().or(fixed.as_ref()).expect("a batch");
            let l = self.step_on(xs)?;
            t.session_seconds += ts.elapsed().as_secs_f64();
            if let Some(xs) = fresh {
                self.recycle(xs);
            }
            if !l.is_finite() {
                return Err(Error::graph(
                    "pretext/head",
                    format!("loss became {l} at step {}", i + 1),
                ));
            }
            if i == 0 {
                t.first_step_unix = unix_now();
                t.loss_first = l;
            }
            t.loss_last = l;
            t.steps += 1;
        }
        if let Some(s) = steady_from {
            let n = (t.steps - t.warmup_steps).max(1);
            t.step_seconds = s.elapsed().as_secs_f64() / n as f64;
            t.images_per_second = self.batch as f64 / t.step_seconds;
        }
        t.data_seconds = self.input.data_seconds;
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
