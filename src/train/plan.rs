//! The last stage of building a trainer: what each step updates. Gradients of the loss to the
//! variables that train, the optimizer's update, and the ops after it (batch-norm moving
//! statistics, momentum targets, queues), the head warm-up phase, the checkpoint saver.
use std::collections::HashSet;

use tensorflow::{ops, Operation, Output};

use super::build::{self, checkpoint_vars, global_norm, post_step_ops};
use super::{checkpoint, TrainConfig};
use crate::autodiff;
use crate::error::{Result, TfContext};
use crate::heads::BuiltHead;
use crate::optim::Optimizer;
use crate::savedmodel::Loaded;

/// What a step runs besides its loss.
pub(super) struct UpdatePlan {
    pub optimizer: Optimizer,
    /// Global L2 norm of the gradients.
    pub grad_norm: Output,
    /// Batch-norm moving-statistics updates (train mode), run with the step.
    pub bn_updates: Vec<Operation>,
    /// Ops after the optimizer's update: momentum targets (EMA), queues.
    pub post_step: Vec<Operation>,
    pub warmup: Option<build::HeadWarmup>,
    /// Names of the variables the optimizer updates (model handles, `head/…`).
    pub param_names: Vec<String>,
    pub trained_vars: usize,
    pub saver: checkpoint::Saver,
}

/// Differentiates the head's loss to the model variables in `trainable` and the head's own,
/// and builds the updates of one step.
pub(super) fn plan(
    model: &mut Loaded,
    cfg: &TrainConfig,
    head: &BuiltHead,
    trainable: &HashSet<String>,
    switched: &[String],
) -> Result<UpdatePlan> {
    let loss = &head.out.loss;
    let reads = build::trained_reads(head, |h| trainable.contains(h));
    let grads = autodiff::gradients_reduced(
        &mut model.scope,
        &head.towers,
        loss.clone(),
        &reads,
        "pretext/gradients",
        cfg.gradient_reduce,
    )?;
    let params = build::params_of(model, &grads, &head.vars)?;
    let grad_norm = {
        let mut s = model.scope.new_sub_scope("pretext/grad_norm");
        let gs: Vec<Output> = grads.iter().map(|g| g.grad.clone()).collect();
        global_norm(&mut s, &gs)?
    };
    let trained_vars = params.len() - head.vars.len().min(params.len());
    log::info!(
        "training {} model variable(s) and {} head variable(s); {} tower(s)",
        trained_vars,
        head.vars.len(),
        head.towers.len(),
    );
    let bn_updates = bn_updates(model, head, switched)?;
    let optimizer = {
        let mut s = model.scope.new_sub_scope("pretext");
        cfg.optimizer
            .init(&mut s, &params, std::slice::from_ref(&loss.operation))?
    };
    let warmup = match cfg.head_warmup_steps {
        0 => None,
        _ => Some(build::head_warmup(model, cfg, head, &bn_updates)?),
    };
    let post_step = post_step_ops(model, &optimizer, &head.out.ema, &head.out.post_assign)?;
    let vars = checkpoint_vars(model)?;
    let saver = checkpoint::Saver::new(model, &vars)?;
    Ok(UpdatePlan {
        optimizer,
        grad_norm,
        bn_updates,
        post_step,
        warmup,
        param_names: params.iter().map(|p| p.name.clone()).collect(),
        trained_vars,
        saver,
    })
}

/// The moving-statistics assignments of the batch norms switched to train mode, per tower.
fn bn_updates(model: &mut Loaded, head: &BuiltHead, switched: &[String]) -> Result<Vec<Operation>> {
    let mut out = Vec::new();
    let mut s = model.scope.new_sub_scope("pretext/bn_update");
    // The model's own update ops (a TF1 graph's UPDATE_OPS: read-modify-write moving averages)
    // run once per step, from the first tower (the clean view when the head has one): each
    // tower's would compound the decay and race on the same variables.
    let own = head
        .towers
        .first()
        .map(|t| t.updates.clone())
        .unwrap_or_default();
    out.extend(own.iter().cloned());
    let own = own.len();
    for t in &head.towers {
        for (handle, value) in t.bn_updates(model, switched)? {
            out.push(
                ops::assign_variable_op(handle, value, &mut s)
                    .tf_ctx(|| "moving-statistics update".into())?,
            );
        }
    }
    if own > 0 {
        log::info!("the model's update ops (UPDATE_OPS): {own} run each step");
    }
    if !switched.is_empty() {
        log::info!(
            "batch norm in train mode: {} op(s), moving statistics updated each step",
            switched.len()
        );
    }
    Ok(out)
}
