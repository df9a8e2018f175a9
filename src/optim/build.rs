//! `OptimizerConfig::init`: the update ops of one step. The skeleton (step counter, learning
//! rate, waiting for the step's gradients, decoupled decay, the increment) is shared; each kind
//! adds its slots and its `ResourceApply*` op.
use tensorflow::{ops, DataType, Operation, Output, Scope, Shape};

use super::{AdamConfig, LarsConfig, Optimizer, OptimizerConfig, Param};
use crate::error::{Result, TfContext};

fn constant(v: f32, s: &mut Scope) -> Result<Output> {
    Ok(ops::constant(v, s)
        .tf_ctx(|| "optimizer constant".into())?
        .into())
}

fn read(handle: Output, dtype: DataType, s: &mut Scope, what: &str) -> Result<Output> {
    Ok(ops::ReadVariableOp::new()
        .dtype(dtype)
        .build(handle, s)
        .tf_ctx(|| format!("reading {what}"))?
        .into())
}

/// Adam's per-step constants: beta1, beta2 and their powers at the step being taken.
struct AdamTerms {
    b1: Output,
    b2: Output,
    b1p: Output,
    b2p: Output,
}

/// Slot variables (zeroed by the init op) and the init ops, as the updates create them.
#[derive(Default)]
struct Slots {
    inits: Vec<Operation>,
    handles: Vec<Output>,
}

impl Slots {
    /// A zeroed slot `nm` shaped like `p`'s variable.
    fn add(&mut self, vs: &mut Scope, p: &Param, nm: &str) -> Result<Output> {
        let ctx = || format!("optimizer slot {nm} of {}", p.name);
        let hop = &p.handle.operation;
        let dtype = hop.get_attr_type("dtype").tf_ctx(ctx)?;
        let shape = hop.get_attr_shape("shape").tf_ctx(ctx)?;
        let vs = &mut vs.with_no_control_dependencies();
        let h: Output = ops::VarHandleOp::new()
            .dtype(dtype)
            .shape(shape)
            .shared_name(unique(vs, nm))
            .build(&mut vs.with_op_name(nm))
            .tf_ctx(ctx)?
            .into();
        let cur = read(p.handle.clone(), dtype, vs, &p.name)?;
        let z = ops::zeros_like(cur, vs).tf_ctx(ctx)?;
        self.inits
            .push(ops::assign_variable_op(h.clone(), z, vs).tf_ctx(ctx)?);
        self.handles.push(h.clone());
        Ok(h)
    }
}

impl OptimizerConfig {
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
        let step_var: Output = ops::VarHandleOp::new()
            .dtype(DataType::Float)
            .shape(Shape::from(Some(vec![])))
            .shared_name(unique(&s, "step"))
            .build(&mut s.with_op_name("step"))
            .tf_ctx(|| "step variable".into())?
            .into();
        let step_read = read(step_var.clone(), DataType::Float, &mut s, "the step")?;
        let lr_default = self
            .schedule()
            .build(&mut s, self.learning_rate(), step_read)?;
        let lr: Output = ops::PlaceholderWithDefault::new()
            .dtype(DataType::Float)
            .shape(Shape::from(Some(vec![])))
            .build(lr_default, &mut s.with_op_name("learning_rate"))
            .tf_ctx(|| "learning rate".into())?
            .into();
        let mut slots = Slots::default();
        let zero = constant(0.0, &mut s)?;
        slots.inits.push(
            ops::assign_variable_op(step_var.clone(), zero, &mut s)
                .tf_ctx(|| "step init".into())?,
        );
        let ready = grads_ready(&mut s, params, after)?;
        let mut s = s.with_control_dependencies(&[ready]);
        let adam = match self {
            OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c) => {
                Some(adam_terms(&mut s, c, step_var.clone())?)
            }
            _ => None,
        };
        let mut updates = Vec::new();
        for p in params {
            let mut vs = s.new_sub_scope(&sanitize(&p.name));
            let deps = self.decay(&mut vs, p, &lr)?;
            let mut us = vs.with_control_dependencies(&deps);
            updates.push(self.apply(&mut us, p, &lr, adam.as_ref(), &mut slots)?);
        }
        finish(scope, &mut s, step_var, &updates, slots, lr)
    }

    /// Decoupled weight decay before the update (`var -= lr * wd * var`); LARS puts its decay
    /// in the gradient instead.
    fn decay(&self, vs: &mut Scope, p: &Param, lr: &Output) -> Result<Vec<Operation>> {
        let wd = self.weight_decay();
        if wd == 0.0 || matches!(self, OptimizerConfig::Lars(_)) {
            return Ok(Vec::new());
        }
        let ctx = || format!("weight decay of {}", p.name);
        let dtype = p.handle.operation.get_attr_type("dtype").tf_ctx(ctx)?;
        let cur = read(p.handle.clone(), dtype, vs, &p.name)?;
        let wd = constant(wd, vs)?;
        let f = ops::mul(lr.clone(), wd, vs).tf_ctx(ctx)?;
        let d = ops::mul(cur, f, vs).tf_ctx(ctx)?;
        Ok(vec![
            ops::assign_sub_variable_op(p.handle.clone(), d, vs).tf_ctx(ctx)?
        ])
    }

    /// The kind's update of one variable.
    fn apply(
        &self,
        us: &mut Scope,
        p: &Param,
        lr: &Output,
        adam: Option<&AdamTerms>,
        slots: &mut Slots,
    ) -> Result<Operation> {
        let ctx = || format!("optimizer update of {}", p.name);
        let (h, g) = (p.handle.clone(), p.grad.clone());
        match (self, adam) {
            (OptimizerConfig::Sgd(c), _) if c.momentum == 0.0 => {
                ops::resource_apply_gradient_descent(h, lr.clone(), g, us).tf_ctx(ctx)
            }
            (OptimizerConfig::Sgd(c), _) => {
                let acc = slots.add(us, p, "momentum")?;
                let m = constant(c.momentum, us)?;
                ops::ResourceApplyKerasMomentum::new()
                    .use_nesterov(c.nesterov)
                    .build(h, acc, lr.clone(), g, m, us)
                    .tf_ctx(ctx)
            }
            (OptimizerConfig::Lars(c), _) => {
                let acc = slots.add(us, p, "momentum")?;
                let rank = p
                    .handle
                    .operation
                    .get_attr_shape("shape")
                    .tf_ctx(ctx)?
                    .dims()
                    .unwrap_or(0);
                let (lr_v, g) = match rank > 1 {
                    true => lars_scaled(c, us, p, lr.clone())?,
                    false => (lr.clone(), g),
                };
                let m = constant(c.momentum, us)?;
                ops::ResourceApplyKerasMomentum::new()
                    .build(h, acc, lr_v, g, m, us)
                    .tf_ctx(ctx)
            }
            (OptimizerConfig::Adam(c) | OptimizerConfig::Adamw(c), Some(a)) => {
                let m = slots.add(us, p, "m")?;
                let v = slots.add(us, p, "v")?;
                let eps = constant(c.epsilon, us)?;
                ops::resource_apply_adam(
                    h,
                    m,
                    v,
                    a.b1p.clone(),
                    a.b2p.clone(),
                    lr.clone(),
                    a.b1.clone(),
                    a.b2.clone(),
                    eps,
                    g,
                    us,
                )
                .tf_ctx(ctx)
            }
            (OptimizerConfig::Adam(_) | OptimizerConfig::Adamw(_), None) => {
                unreachable!("init computes Adam's terms for Adam")
            }
        }
    }
}

/// A no-op that runs after `after` and after every gradient and forward read of `params`.
fn grads_ready(s: &mut Scope, params: &[Param], after: &[Operation]) -> Result<Operation> {
    let mut deps: Vec<Operation> = after.to_vec();
    for p in params {
        deps.push(p.grad.operation.clone());
        deps.push(p.value.operation.clone());
    }
    ops::NoOp::new()
        .build(
            &mut s
                .with_control_dependencies(&deps)
                .with_op_name("grads_ready"),
        )
        .tf_ctx(|| "grads_ready".into())
}

/// beta1, beta2 and their powers at step t = (updates done) + 1.
fn adam_terms(s: &mut Scope, c: &AdamConfig, step_var: Output) -> Result<AdamTerms> {
    let now = read(step_var, DataType::Float, s, "the step")?;
    let one = constant(1.0, s)?;
    let t: Output = ops::add(now, one, s).tf_ctx(|| "t".into())?.into();
    let (b1, b2) = (constant(c.beta1, s)?, constant(c.beta2, s)?);
    let b1p = ops::pow(b1.clone(), t.clone(), s)
        .tf_ctx(|| "beta1_power".into())?
        .into();
    let b2p = ops::pow(b2.clone(), t, s)
        .tf_ctx(|| "beta2_power".into())?
        .into();
    Ok(AdamTerms { b1, b2, b1p, b2p })
}

/// The train op (every update, then the step increment), the step read after it, the init op.
fn finish(
    scope: &mut Scope,
    s: &mut Scope,
    step_var: Output,
    updates: &[Operation],
    slots: Slots,
    lr: Output,
) -> Result<Optimizer> {
    let mut fin = s.with_control_dependencies(updates);
    let one = constant(1.0, &mut fin)?;
    let inc = ops::assign_add_variable_op(step_var.clone(), one, &mut fin)
        .tf_ctx(|| "step increment".into())?;
    let train_op = ops::NoOp::new()
        .build(&mut fin.with_control_dependencies(&[inc]).with_op_name("train"))
        .tf_ctx(|| "train op".into())?;
    let after_train = fin.with_control_dependencies(std::slice::from_ref(&train_op));
    let step = read(
        step_var,
        DataType::Float,
        &mut after_train.with_op_name("step_after"),
        "the step",
    )?;
    let is = scope.new_sub_scope("optimizer_init");
    let init_op = ops::NoOp::new()
        .build(&mut is.with_control_dependencies(&slots.inits))
        .tf_ctx(|| "optimizer init".into())?;
    Ok(Optimizer {
        train_op,
        init_op,
        learning_rate: lr,
        step,
        slots: slots.handles,
    })
}

/// LARS for one variable: the gradient with L2 decay, and lr × eta·‖w‖/‖g‖ (1 where a norm is
/// zero).
fn lars_scaled(c: &LarsConfig, s: &mut Scope, p: &Param, lr: Output) -> Result<(Output, Output)> {
    let ctx = || format!("LARS update of {}", p.name);
    let dtype = p.handle.operation.get_attr_type("dtype").tf_ctx(ctx)?;
    let w = read(p.handle.clone(), dtype, s, &p.name)?;
    let decay = ops::mul(w.clone(), constant(c.weight_decay, s)?, s).tf_ctx(ctx)?;
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
    let zero = constant(0.0, s)?;
    let ok = ops::logical_and(
        ops::greater(wn.clone(), zero.clone(), s).tf_ctx(ctx)?,
        ops::greater(gn.clone(), zero, s).tf_ctx(ctx)?,
        s,
    )
    .tf_ctx(ctx)?;
    let safe_gn = ops::maximum(gn, constant(1e-30, s)?, s).tf_ctx(ctx)?;
    let ratio = ops::mul(
        ops::div(wn, safe_gn, s).tf_ctx(ctx)?,
        constant(c.trust_coefficient, s)?,
        s,
    )
    .tf_ctx(ctx)?;
    let trust = ops::select_v2(ok, ratio, constant(1.0, s)?, s).tf_ctx(ctx)?;
    Ok((ops::mul(lr, trust, s).tf_ctx(ctx)?.into(), g))
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
