//! Optimizers as graph ops on resource variables (`ResourceApply*`), with Keras 3 semantics:
//! SGD (+momentum, Nesterov), Adam, AdamW; decoupled weight decay; learning rate a graph tensor.
pub mod schedule;

pub use schedule::Schedule;
use serde::{Deserialize, Serialize};
use tensorflow::{ops, DataType, Operation, Output, Scope, Shape};

use crate::error::{Error, Result, TfContext};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
    /// LARS (You et al. 2017) as SimCLR uses it: L2 decay in the gradient, layer-wise trust ratio,
    /// heavy-ball momentum; rank ≤ 1 variables (biases, batch-norm scale/offset) excluded.
    Lars,
}

/// Optimizer settings (burn-style config: validate, then `.init()` builds the ops).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub learning_rate: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    /// Decoupled: `var -= lr * weight_decay * var` before each update (as Keras 3 does); for
    /// LARS, L2 decay added to the gradient (as SimCLR does).
    pub weight_decay: f32,
    /// LARS trust coefficient (eta).
    pub trust_coefficient: f32,
    pub schedule: Schedule,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            learning_rate: 3e-4,
            momentum: 0.9,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            weight_decay: 0.0,
            trust_coefficient: 0.001,
            schedule: Schedule::Constant,
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
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(Error::config(
                "optimizer.learning_rate",
                format!("{} must be a positive number", self.learning_rate),
            ));
        }
        in_range("optimizer.momentum", self.momentum, 0.0, 1.0, false)?;
        in_range("optimizer.beta1", self.beta1, 0.0, 1.0, false)?;
        in_range("optimizer.beta2", self.beta2, 0.0, 1.0, false)?;
        if !(self.epsilon > 0.0) {
            return Err(Error::config("optimizer.epsilon", "must be > 0"));
        }
        if !(self.trust_coefficient > 0.0 && self.trust_coefficient.is_finite()) {
            return Err(Error::config("optimizer.trust_coefficient", "must be > 0"));
        }
        self.schedule.validate()?;
        in_range("optimizer.weight_decay", self.weight_decay, 0.0, 1.0, true)
    }

    /// Adds the update ops for `params` under `scope`. Every update waits for `after` (the loss
    /// and gradients), so no variable changes before the whole step has read it.
    pub fn init(
        &self,
        scope: &mut Scope,
        params: &[Param],
        after: &[Operation],
    ) -> Result<Optimizer> {
        self.validate()?;
        let mut s = scope.new_sub_scope("optimizer");
        let c = |v: f32, s: &mut Scope| -> Result<Output> {
            Ok(ops::constant(v, s)
                .tf_ctx(|| "optimizer constant".into())?
                .into())
        };
        let step_var: Output = ops::VarHandleOp::new()
            .dtype(DataType::Float)
            .shape(Shape::from(Some(vec![])))
            .shared_name(unique(&s, "step"))
            .build(&mut s.with_op_name("step"))
            .tf_ctx(|| "step variable".into())?
            .into();
        let step_read: Output = ops::ReadVariableOp::new()
            .dtype(DataType::Float)
            .build(step_var.clone(), &mut s)
            .tf_ctx(|| "step read".into())?
            .into();
        let lr_default = self.schedule.build(&mut s, self.learning_rate, step_read)?;
        let lr: Output = ops::PlaceholderWithDefault::new()
            .dtype(DataType::Float)
            .shape(Shape::from(Some(vec![])))
            .build(lr_default, &mut s.with_op_name("learning_rate"))
            .tf_ctx(|| "learning rate".into())?
            .into();
        let mut inits = vec![
            ops::assign_variable_op(step_var.clone(), c(0.0, &mut s)?, &mut s)
                .tf_ctx(|| "step init".into())?,
        ];
        let mut dep_inputs: Vec<Operation> = after.to_vec();
        for p in params {
            dep_inputs.push(p.grad.operation.clone());
            dep_inputs.push(p.value.operation.clone());
        }
        let ready = ops::NoOp::new()
            .build(
                &mut s
                    .with_control_dependencies(&dep_inputs)
                    .with_op_name("grads_ready"),
            )
            .tf_ctx(|| "grads_ready".into())?;
        let mut s = s.with_control_dependencies(&[ready]);
        let step_now: Output = ops::ReadVariableOp::new()
            .dtype(DataType::Float)
            .build(step_var.clone(), &mut s)
            .tf_ctx(|| "step read".into())?
            .into();
        let t: Output = ops::add(step_now, c(1.0, &mut s)?, &mut s)
            .tf_ctx(|| "t".into())?
            .into();
        let b1 = c(self.beta1, &mut s)?;
        let b2 = c(self.beta2, &mut s)?;
        let b1p: Output = ops::pow(b1.clone(), t.clone(), &mut s)
            .tf_ctx(|| "beta1_power".into())?
            .into();
        let b2p: Output = ops::pow(b2.clone(), t, &mut s)
            .tf_ctx(|| "beta2_power".into())?
            .into();
        let mut updates = Vec::new();
        let mut slots = Vec::new();
        for p in params {
            let ctx = || format!("optimizer update of {}", p.name);
            let hop = &p.handle.operation;
            let dtype = hop.get_attr_type("dtype").tf_ctx(ctx)?;
            let shape = hop.get_attr_shape("shape").tf_ctx(ctx)?;
            let mut vs = s.new_sub_scope(&sanitize(&p.name));
            let mut slot =
                |nm: &str, vs: &mut Scope, inits: &mut Vec<Operation>| -> Result<Output> {
                    let vs = &mut vs.with_no_control_dependencies();
                    let h: Output = ops::VarHandleOp::new()
                        .dtype(dtype)
                        .shape(shape.clone())
                        .shared_name(unique(vs, nm))
                        .build(&mut vs.with_op_name(nm))
                        .tf_ctx(ctx)?
                        .into();
                    let cur = ops::ReadVariableOp::new()
                        .dtype(dtype)
                        .build(p.handle.clone(), vs)
                        .tf_ctx(ctx)?;
                    let z = ops::zeros_like(cur, vs).tf_ctx(ctx)?;
                    inits.push(ops::assign_variable_op(h.clone(), z, vs).tf_ctx(ctx)?);
                    slots.push(h.clone());
                    Ok(h)
                };
            let mut deps = Vec::new();
            if self.weight_decay > 0.0 && self.kind != OptimizerKind::Lars {
                let cur = ops::ReadVariableOp::new()
                    .dtype(dtype)
                    .build(p.handle.clone(), &mut vs)
                    .tf_ctx(ctx)?;
                let wd = c(self.weight_decay, &mut vs)?;
                let f = ops::mul(lr.clone(), wd, &mut vs).tf_ctx(ctx)?;
                let d = ops::mul(cur, f, &mut vs).tf_ctx(ctx)?;
                deps.push(ops::assign_sub_variable_op(p.handle.clone(), d, &mut vs).tf_ctx(ctx)?);
            }
            let mut us = vs.with_control_dependencies(&deps);
            let u = match self.kind {
                OptimizerKind::Sgd if self.momentum == 0.0 => ops::resource_apply_gradient_descent(
                    p.handle.clone(),
                    lr.clone(),
                    p.grad.clone(),
                    &mut us,
                )
                .tf_ctx(ctx)?,
                OptimizerKind::Sgd => {
                    let acc = slot("momentum", &mut vs, &mut inits)?;
                    let mut us = vs.with_control_dependencies(&deps);
                    let m = c(self.momentum, &mut us)?;
                    ops::ResourceApplyKerasMomentum::new()
                        .use_nesterov(self.nesterov)
                        .build(
                            p.handle.clone(),
                            acc,
                            lr.clone(),
                            p.grad.clone(),
                            m,
                            &mut us,
                        )
                        .tf_ctx(ctx)?
                }
                OptimizerKind::Lars => {
                    let acc = slot("momentum", &mut vs, &mut inits)?;
                    let mut us = vs.with_control_dependencies(&deps);
                    let rank = shape.dims().unwrap_or(0);
                    let (lr_v, g) = if rank > 1 {
                        self.lars_scaled(&mut us, p, dtype, lr.clone())?
                    } else {
                        (lr.clone(), p.grad.clone())
                    };
                    let m = c(self.momentum, &mut us)?;
                    ops::ResourceApplyKerasMomentum::new()
                        .build(p.handle.clone(), acc, lr_v, g, m, &mut us)
                        .tf_ctx(ctx)?
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let m = slot("m", &mut vs, &mut inits)?;
                    let v = slot("v", &mut vs, &mut inits)?;
                    let mut us = vs.with_control_dependencies(&deps);
                    let eps = c(self.epsilon, &mut us)?;
                    ops::resource_apply_adam(
                        p.handle.clone(),
                        m,
                        v,
                        b1p.clone(),
                        b2p.clone(),
                        lr.clone(),
                        b1.clone(),
                        b2.clone(),
                        eps,
                        p.grad.clone(),
                        &mut us,
                    )
                    .tf_ctx(ctx)?
                }
            };
            updates.push(u);
        }
        let mut fin = s.with_control_dependencies(&updates);
        let inc = ops::assign_add_variable_op(step_var.clone(), c(1.0, &mut fin)?, &mut fin)
            .tf_ctx(|| "step increment".into())?;
        let train_op = ops::NoOp::new()
            .build(&mut fin.with_control_dependencies(&[inc]).with_op_name("train"))
            .tf_ctx(|| "train op".into())?;
        let after_train = fin.with_control_dependencies(&[train_op.clone()]);
        let step: Output = ops::ReadVariableOp::new()
            .dtype(DataType::Float)
            .build(step_var, &mut after_train.with_op_name("step_after"))
            .tf_ctx(|| "step read".into())?
            .into();
        let is = scope.new_sub_scope("optimizer_init");
        let init_op = ops::NoOp::new()
            .build(&mut is.with_control_dependencies(&inits))
            .tf_ctx(|| "optimizer init".into())?;
        Ok(Optimizer {
            train_op,
            init_op,
            learning_rate: lr,
            step,
            slots,
        })
    }
}

impl OptimizerConfig {
    /// LARS for one variable: the gradient with L2 decay, and lr × eta·‖w‖/‖g‖ (1 where a norm
    /// is zero).
    fn lars_scaled(
        &self,
        s: &mut Scope,
        p: &Param,
        dtype: DataType,
        lr: Output,
    ) -> Result<(Output, Output)> {
        let ctx = || format!("LARS update of {}", p.name);
        let c = |v: f32, s: &mut Scope| -> Result<Output> {
            Ok(ops::constant(v, s).tf_ctx(ctx)?.into())
        };
        let w: Output = ops::ReadVariableOp::new()
            .dtype(dtype)
            .build(p.handle.clone(), s)
            .tf_ctx(ctx)?
            .into();
        let decay = ops::mul(w.clone(), c(self.weight_decay, s)?, s).tf_ctx(ctx)?;
        let g: Output = ops::add(p.grad.clone(), decay, s).tf_ctx(ctx)?.into();
        let norm = |t: Output, s: &mut Scope| -> Result<Output> {
            let sq = ops::square(t, s).tf_ctx(ctx)?;
            let r = ops::rank(sq.clone(), s).tf_ctx(ctx)?;
            let start = ops::constant(0i32, s).tf_ctx(ctx)?;
            let delta = ops::constant(1i32, s).tf_ctx(ctx)?;
            let axes = ops::range(start, r, delta, s).tf_ctx(ctx)?;
            let sum = ops::sum(sq, axes, s).tf_ctx(ctx)?;
            Ok(ops::sqrt(sum, s).tf_ctx(ctx)?.into())
        };
        let (wn, gn) = (norm(w, s)?, norm(g.clone(), s)?);
        let zero = c(0.0, s)?;
        let ok = ops::logical_and(
            ops::greater(wn.clone(), zero.clone(), s).tf_ctx(ctx)?,
            ops::greater(gn.clone(), zero, s).tf_ctx(ctx)?,
            s,
        )
        .tf_ctx(ctx)?;
        let safe_gn = ops::maximum(gn, c(1e-30, s)?, s).tf_ctx(ctx)?;
        let ratio = ops::mul(
            ops::div(wn, safe_gn, s).tf_ctx(ctx)?,
            c(self.trust_coefficient, s)?,
            s,
        )
        .tf_ctx(ctx)?;
        let trust = ops::select_v2(ok, ratio, c(1.0, s)?, s).tf_ctx(ctx)?;
        Ok((ops::mul(lr, trust, s).tf_ctx(ctx)?.into(), g))
    }
}

/// A node-name-safe version of a variable name.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '/' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if s.is_empty() {
        "var".into()
    } else {
        s
    }
}

/// A shared_name unique to this graph (the scope's unique op name).
fn unique(s: &Scope, nm: &str) -> String {
    s.get_unique_name_for_op(nm)
}

#[cfg(test)]
mod tests;
