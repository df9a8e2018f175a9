//! Learning-rate schedules built in-graph from the optimizer's step variable: constant, or
//! linear warmup then cosine decay (Keras 3's `CosineDecay` with `warmup_steps`).
use serde::{Deserialize, Serialize};
use tensorflow::{ops, Output, Scope};

use crate::error::{Error, Result, TfContext};

/// How the learning rate moves with the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    #[default]
    Constant,
    /// 0 → base over `warmup_steps`, then cosine to `alpha`·base at `total_steps`, flat after.
    WarmupCosine {
        warmup_steps: u64,
        /// Where the cosine ends; 0 in an experiment file: the run's number of steps.
        #[serde(default)]
        total_steps: u64,
        #[serde(default)]
        alpha: f32,
    },
}

impl Schedule {
    pub fn validate(&self) -> Result<()> {
        if let Schedule::WarmupCosine {
            warmup_steps,
            total_steps,
            alpha,
        } = self
        {
            if warmup_steps >= total_steps {
                return Err(Error::config(
                    "optimizer.schedule.warmup_steps",
                    format!("{warmup_steps} must be below total_steps ({total_steps})"),
                ));
            }
            if !(0.0..=1.0).contains(alpha) {
                return Err(Error::config(
                    "optimizer.schedule.alpha",
                    format!("{alpha} is outside [0, 1]"),
                ));
            }
        }
        Ok(())
    }

    /// The learning rate at `step` (a float32 scalar counting updates done so far).
    pub fn build(&self, s: &mut Scope, base: f32, step: Output) -> Result<Output> {
        let ctx = || "building the learning-rate schedule".to_string();
        let c = |v: f32, s: &mut Scope| -> Result<Output> {
            Ok(ops::constant(v, s).tf_ctx(ctx)?.into())
        };
        match *self {
            Schedule::Constant => c(base, s),
            Schedule::WarmupCosine {
                warmup_steps,
                total_steps,
                alpha,
            } => {
                let (w, d) = (warmup_steps as f32, (total_steps - warmup_steps) as f32);
                let warm = ops::mul(step.clone(), c(base / w.max(1.0), s)?, s).tf_ctx(ctx)?;
                let t = ops::sub(step.clone(), c(w, s)?, s).tf_ctx(ctx)?;
                let t = ops::clip_by_value(t, c(0.0, s)?, c(d, s)?, s).tf_ctx(ctx)?;
                let cos = ops::cos(
                    ops::mul(t, c(std::f32::consts::PI / d, s)?, s).tf_ctx(ctx)?,
                    s,
                )
                .tf_ctx(ctx)?;
                let decayed = ops::mul(
                    ops::add(cos, c(1.0, s)?, s).tf_ctx(ctx)?,
                    c(0.5 * (1.0 - alpha), s)?,
                    s,
                )
                .tf_ctx(ctx)?;
                let decayed = ops::add(decayed, c(alpha, s)?, s).tf_ctx(ctx)?;
                let after = ops::mul(decayed, c(base, s)?, s).tf_ctx(ctx)?;
                let in_warmup = ops::less(step, c(w, s)?, s).tf_ctx(ctx)?;
                Ok(ops::select_v2(in_warmup, warm, after, s)
                    .tf_ctx(ctx)?
                    .into())
            }
        }
    }
}
