//! Optimizers as graph ops on resource variables (`ResourceApply*`), with Keras 3 semantics:
//! SGD (+momentum, Nesterov), Adam, AdamW; decoupled weight decay; learning rate a graph tensor.
mod build;
pub mod schedule;

pub use build::sanitize;
pub use schedule::Schedule;
use serde::{Deserialize, Serialize};
use tensorflow::{Operation, Output};

use crate::error::{Error, Result};

/// Optimizer settings, by kind (`optimizer.kind`, default adam): each kind has its own
/// settings only, so a setting that means nothing for the kind (`nesterov` for Adam) is an
/// unknown key, not silently ignored. `.init()` builds the update ops (burn-style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    Sgd(SgdConfig),
    Adam(AdamConfig),
    /// Adam with decoupled weight decay (the same settings; `weight_decay` is its point).
    Adamw(AdamConfig),
    /// LARS (You et al. 2017) as SimCLR uses it: L2 decay in the gradient, layer-wise trust
    /// ratio, heavy-ball momentum; rank ≤ 1 variables (biases, batch-norm scale/offset) excluded.
    Lars(LarsConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Adam(AdamConfig::default())
    }
}

/// SGD with optional (Nesterov) momentum, Keras 3's update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    pub learning_rate: f32,
    pub momentum: f32,
    pub nesterov: bool,
    /// Decoupled: `var -= lr * weight_decay * var` before each update (as Keras 3 does).
    pub weight_decay: f32,
    pub schedule: Schedule,
}

/// Adam (and AdamW), Keras 3's update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamConfig {
    pub learning_rate: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    /// Decoupled: `var -= lr * weight_decay * var` before each update (as Keras 3 does).
    pub weight_decay: f32,
    pub schedule: Schedule,
}

/// LARS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LarsConfig {
    pub learning_rate: f32,
    pub momentum: f32,
    /// L2 decay added to the gradient (as SimCLR does).
    pub weight_decay: f32,
    /// The trust coefficient (eta).
    pub trust_coefficient: f32,
    pub schedule: Schedule,
}

/// The learning rate pretext starts from, whatever the kind.
const LEARNING_RATE: f32 = 3e-4;
const MOMENTUM: f32 = 0.9;

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            learning_rate: LEARNING_RATE,
            momentum: MOMENTUM,
            nesterov: false,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
        }
    }
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            learning_rate: LEARNING_RATE,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
        }
    }
}

impl Default for LarsConfig {
    fn default() -> Self {
        LarsConfig {
            learning_rate: LEARNING_RATE,
            momentum: MOMENTUM,
            weight_decay: 0.0,
            trust_coefficient: 0.001,
            schedule: Schedule::Constant,
        }
    }
}

impl OptimizerConfig {
    /// The kind's name, as in `optimizer.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adam(_) => "adam",
            OptimizerConfig::Adamw(_) => "adamw",
            OptimizerConfig::Lars(_) => "lars",
        }
    }

    /// The base learning rate.
    pub fn learning_rate(&self) -> f32 {
        match self {
            OptimizerConfig::Sgd(c) => c.learning_rate,
            OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c) => c.learning_rate,
            OptimizerConfig::Lars(c) => c.learning_rate,
        }
    }

    /// Sets the base learning rate.
    pub fn set_learning_rate(&mut self, lr: f32) {
        match self {
            OptimizerConfig::Sgd(c) => c.learning_rate = lr,
            OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c) => c.learning_rate = lr,
            OptimizerConfig::Lars(c) => c.learning_rate = lr,
        }
    }

    pub fn weight_decay(&self) -> f32 {
        match self {
            OptimizerConfig::Sgd(c) => c.weight_decay,
            OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c) => c.weight_decay,
            OptimizerConfig::Lars(c) => c.weight_decay,
        }
    }

    pub fn schedule(&self) -> &Schedule {
        match self {
            OptimizerConfig::Sgd(c) => &c.schedule,
            OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c) => &c.schedule,
            OptimizerConfig::Lars(c) => &c.schedule,
        }
    }

    pub fn schedule_mut(&mut self) -> &mut Schedule {
        match self {
            OptimizerConfig::Sgd(c) => &mut c.schedule,
            OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c) => &mut c.schedule,
            OptimizerConfig::Lars(c) => &mut c.schedule,
        }
    }
}

/// A variable to update: its handle, the read the forward pass used, and its gradient.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub handle: Output,
    pub value: Output,
    pub grad: Output,
}

/// The built optimizer.
pub struct Optimizer {
    /// Runs one update of every parameter, then increments the step.
    pub train_op: Operation,
    /// Zeroes slots and the step; run once before the first step.
    pub init_op: Operation,
    /// Learning rate (a PlaceholderWithDefault: feed it to schedule).
    pub learning_rate: Output,
    /// Number of updates done so far (float32 scalar, read after the step).
    pub step: Output,
    /// Slot variables created (for checkpoints and tests).
    pub slots: Vec<Output>,
}

fn in_range(key: &str, v: f32, lo: f32, hi: f32, closed_hi: bool) -> Result<()> {
    let ok = v.is_finite() && v >= lo && (v < hi || (closed_hi && v <= hi));
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!(
                "{v} is outside the valid range [{lo}, {hi}{}",
                if closed_hi { "]" } else { ")" }
            ),
        ))
    }
}

impl OptimizerConfig {
    /// Checks every value, naming the key of the first bad one.
    pub fn validate(&self) -> Result<()> {
        let lr = self.learning_rate();
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::config(
                "optimizer.learning_rate",
                format!("{lr} must be a positive number"),
            ));
        }
        match self {
            OptimizerConfig::Sgd(c) => in_range("optimizer.momentum", c.momentum, 0.0, 1.0, false)?,
            OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c) => {
                in_range("optimizer.beta1", c.beta1, 0.0, 1.0, false)?;
                in_range("optimizer.beta2", c.beta2, 0.0, 1.0, false)?;
                if !(c.epsilon > 0.0) {
                    return Err(Error::config("optimizer.epsilon", "must be > 0"));
                }
            }
            OptimizerConfig::Lars(c) => {
                in_range("optimizer.momentum", c.momentum, 0.0, 1.0, false)?;
                if !(c.trust_coefficient > 0.0 && c.trust_coefficient.is_finite()) {
                    return Err(Error::config("optimizer.trust_coefficient", "must be > 0"));
                }
            }
        }
        self.schedule().validate()?;
        in_range(
            "optimizer.weight_decay",
            self.weight_decay(),
            0.0,
            1.0,
            true,
        )
    }
}

#[cfg(test)]
mod tests;
