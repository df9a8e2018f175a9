//! Graph pieces the trainer adds around a head: the batch-norm patch of the flat graph,
//! post-step updates (EMA targets, queues), the gradient norm, and the list of variables a
//! checkpoint must hold.
use tensorflow::{ops, DataType, Output};

use super::TrainConfig;
use crate::autodiff::VarGrad;
use crate::error::{Error, Result, TfContext};
use crate::graph::FlatGraph;
use crate::heads::{momentum::Ema, BuiltHead, HeadVar};
use crate::optim::{Optimizer, Param, Schedule};
use crate::savedmodel::Loaded;

/// The head warm-up phase (`head_warmup_steps`): its own gradients, to the head's variables
/// only, so the backward pass stops at the backbone's output; its own optimizer (slots and
/// step, constant base learning rate); then the same batch-norm and post-step updates.
pub(super) struct HeadWarmup {
    pub steps: u64,
    pub train_op: tensorflow::Operation,
    pub init_op: tensorflow::Operation,
    /// Run with each warm-up step: the batch-norm updates, then post-step ops after its update.
    pub targets: Vec<tensorflow::Operation>,
}

pub(super) fn head_warmup(
    model: &mut Loaded,
    cfg: &TrainConfig,
    head: &BuiltHead,
    bn_updates: &[tensorflow::Operation],
) -> Result<HeadWarmup> {
    let reads = head_reads(&head.vars);
    if reads.is_empty() {
        return Err(Error::config(
            "train.head_warmup_steps",
            "the head has no variables of its own to warm up; use 0",
        ));
    }
    let grads = crate::autodiff::gradients(
        &mut model.scope,
        &head.towers,
        head.out.loss.clone(),
        &reads,
        "pretext/head_warmup_gradients",
    )?;
    let params = params_of(model, &grads, &head.vars)?;
    let mut opt_cfg = cfg.optimizer.clone();
    *opt_cfg.schedule_mut() = Schedule::Constant;
    let opt = {
        let mut s = model.scope.new_sub_scope("pretext/head_warmup");
        opt_cfg.init(
            &mut s,
            &params,
            std::slice::from_ref(&head.out.loss.operation),
        )?
    };
    let mut targets = bn_updates.to_vec();
    targets.extend(post_step_ops(
        model,
        &opt,
        &head.out.ema,
        &head.out.post_assign,
    )?);
    log::info!(
        "head warm-up: the first {} step(s) train the head's {} variable(s) alone",
        cfg.head_warmup_steps,
        params.len()
    );
    Ok(HeadWarmup {
        steps: cfg.head_warmup_steps,
        train_op: opt.train_op,
        init_op: opt.init_op,
        targets,
    })
}

/// What gradients are asked for: each tower's reads of the model variables `trains` picks (by
/// handle), then the head's variables.
pub(super) fn trained_reads(
    head: &BuiltHead,
    trains: impl Fn(&str) -> bool,
) -> Vec<(String, Output)> {
    let mut reads: Vec<(String, Output)> = head
        .towers
        .iter()
        .flat_map(|t| t.reads.iter().filter(|(h, _)| trains(h)).cloned())
        .collect();
    reads.extend(head_reads(&head.vars));
    reads
}

/// The head's variables as `(name, value read)` pairs, the form gradients are asked for in.
pub(super) fn head_reads(vars: &[HeadVar]) -> Vec<(String, Output)> {
    vars.iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect()
}

/// The optimizer's parameters for `grads`: a head variable's handle from the head, a model
/// variable's from the loaded graph.
pub(super) fn params_of(
    model: &Loaded,
    grads: &[VarGrad],
    head_vars: &[HeadVar],
) -> Result<Vec<Param>> {
    grads
        .iter()
        .map(|g| {
            let handle = match head_vars.iter().find(|v| v.name == g.handle) {
                Some(v) => v.handle.clone(),
                None => model.handle(&g.handle)?,
            };
            Ok(Param {
                name: g.handle.clone(),
                handle,
                value: g.value.clone(),
                grad: g.grad.clone(),
            })
        })
        .collect()
}

/// Ops run after the optimizer's update each step: EMA of momentum targets, heads' assignments.
pub(super) fn post_step_ops(
    model: &mut Loaded,
    opt: &Optimizer,
    ema: &[Ema],
    assign: &[(Output, Output)],
) -> Result<Vec<tensorflow::Operation>> {
    let ctx = || "post-step updates".to_string();
    let mut s = model
        .scope
        .new_sub_scope("pretext/post_step")
        .with_control_dependencies(std::slice::from_ref(&opt.train_op));
    let mut ops_out = Vec::new();
    for e in ema {
        let m: Output = ops::constant(e.momentum, &mut s).tf_ctx(ctx)?.into();
        let one_m: Output = ops::constant(1.0 - e.momentum, &mut s).tf_ctx(ctx)?.into();
        for (target, online) in &e.pairs {
            let dt = target.operation.get_attr_type("dtype").tf_ctx(ctx)?;
            let t = ops::ReadVariableOp::new()
                .dtype(dt)
                .build(target.clone(), &mut s)
                .tf_ctx(ctx)?;
            let o = ops::ReadVariableOp::new()
                .dtype(dt)
                .build(online.clone(), &mut s)
                .tf_ctx(ctx)?;
            let v = ops::add(
                ops::mul(t, m.clone(), &mut s).tf_ctx(ctx)?,
                ops::mul(o, one_m.clone(), &mut s).tf_ctx(ctx)?,
                &mut s,
            )
            .tf_ctx(ctx)?;
            ops_out.push(ops::assign_variable_op(target.clone(), v, &mut s).tf_ctx(ctx)?);
        }
    }
    for (h, v) in assign {
        ops_out.push(ops::assign_variable_op(h.clone(), v.clone(), &mut s).tf_ctx(ctx)?);
    }
    Ok(ops_out)
}

/// Global L2 norm of `grads`.
pub(super) fn global_norm(s: &mut tensorflow::Scope, grads: &[Output]) -> Result<Output> {
    let ctx = || "gradient norm".to_string();
    let mut total: Option<Output> = None;
    for g in grads {
        let sq = ops::square(g.clone(), s).tf_ctx(ctx)?;
        let r = ops::rank(sq.clone(), s).tf_ctx(ctx)?;
        let axes = ops::range(
            ops::constant(0i32, s).tf_ctx(ctx)?,
            r,
            ops::constant(1i32, s).tf_ctx(ctx)?,
            s,
        )
        .tf_ctx(ctx)?;
        let part: Output = ops::sum(sq, axes, s).tf_ctx(ctx)?.into();
        total = Some(match total {
            None => part,
            Some(t) => ops::add(t, part, s).tf_ctx(ctx)?.into(),
        });
    }
    let t = match total {
        Some(t) => t,
        None => ops::constant(0.0f32, s).tf_ctx(ctx)?.into(),
    };
    Ok(ops::sqrt(t, s).tf_ctx(ctx)?.into())
}

/// Every variable a run changes or depends on: the model's (those its signatures use) and
/// everything pretext created (head, momentum targets, queues, optimizer slots and step).
pub(super) fn checkpoint_vars(model: &Loaded) -> Result<Vec<(String, Output, DataType)>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for v in model.info.variables() {
        if seen.insert(v.handle.clone()) {
            let h = model.handle(&v.handle)?;
            let dt = h
                .operation
                .get_attr_type("dtype")
                .tf_ctx(|| format!("dtype of {}", v.handle))?;
            out.push((v.handle.clone(), h, dt));
        }
    }
    // Variables pretext created: every VarHandleOp the SavedModel's own graph does not have
    // (scopes get uniquified, e.g. `pretext_1/optimizer/…`, so names are no guide).
    let original: std::collections::HashSet<&str> =
        model.info.nodes().iter().map(|n| n.name.as_str()).collect();
    let g = model.scope.graph();
    for op in g.operation_iter() {
        let (Ok(name), Ok(t)) = (op.name(), op.op_type()) else {
            continue;
        };
        // A TF1 Hub module's inference variant shares the model's variables (by shared name).
        let variant = name.starts_with(&format!("{}/", crate::savedmodel::INFERENCE_PREFIX));
        if t == "VarHandleOp"
            && !variant
            && !original.contains(name.as_str())
            && seen.insert(name.clone())
        {
            let dt = op
                .get_attr_type("dtype")
                .tf_ctx(|| format!("dtype of {name}"))?;
            out.push((
                name,
                Output {
                    operation: op,
                    index: 0,
                },
                dt,
            ));
        }
    }
    Ok(out)
}

/// Model variables (outer handle names) in the order the inlined serving path reads them (a
/// throwaway import would cost a tower; the flat graph's node order is the inliner's
/// topological order).
pub(super) fn read_order(flat: &FlatGraph) -> Vec<String> {
    let ext = flat.external_ops();
    flat.graph_def
        .node
        .iter()
        .filter(|n| n.op == "ReadVariableOp")
        .filter_map(|n| {
            let placeholder = crate::proto::TensorRef::node_of(n.input.first()?);
            ext.get(placeholder).map(|h| h.to_string())
        })
        .collect()
}
