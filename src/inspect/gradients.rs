//! `inspect`'s gradient sections: which ops on the serving path TF can differentiate (cutting
//! each op without a gradient and trying again), the custom gradients and the control flow.
use std::fmt::Write;

use tensorflow::ops;

use crate::autodiff;
use crate::error::{Error, Result, TfContext};
use crate::graph::{FlatGraph, Tower};
use crate::proto::{GraphDef, NodeDef, TensorRef};
use crate::savedmodel::Loaded;

/// The gradient coverage line(s): all differentiable (and how many nodes through fallback
/// rules), or each op without a gradient and its first nodes.
pub(super) fn coverage_lines(o: &mut String, model: &mut Loaded, flat: &FlatGraph) -> Result<()> {
    let (rewritten, missing) = coverage(model, flat)?;
    if missing.is_empty() {
        let extra = match rewritten.len() {
            0 => String::new(),
            n => format!(" ({n} node(s) through Rust fallback rules)"),
        };
        let _ = writeln!(o, "gradient coverage: all differentiable{extra}");
        return Ok(());
    }
    let _ = writeln!(
        o,
        "gradient coverage: NOT differentiable — no gradient for:"
    );
    for (op, nodes) in &missing {
        let shown: Vec<_> = nodes.iter().take(5).cloned().collect();
        let more = if nodes.len() > 5 { ", …" } else { "" };
        let _ = writeln!(
            o,
            "  {op} ({} node(s)): {}{more}",
            nodes.len(),
            shown.join(", ")
        );
    }
    Ok(())
}

/// Replaces every node of op type `op` by placeholders, so differentiation can look past it.
fn cut_op(gd: &mut GraphDef, op: &str, types: &dyn Fn(&str, usize) -> i32) {
    let cut: Vec<NodeDef> = gd.node.iter().filter(|n| n.op == op).cloned().collect();
    for n in cut {
        for i in gd.node.iter_mut().flat_map(|m| m.input.iter_mut()) {
            let TensorRef {
                node: src,
                index: k,
            } = TensorRef::parse(i);
            if src == n.name && k >= 0 && !i.starts_with('^') {
                *i = format!("{}/__cut{k}:0", n.name);
            }
        }
        for k in 0..16 {
            let dt = types(&n.name, k);
            if dt == 0 {
                break;
            }
            let mut attr = std::collections::HashMap::new();
            attr.insert("dtype".to_string(), crate::graph::attr_type(dt));
            gd.node.push(NodeDef {
                name: format!("{}/__cut{k}", n.name),
                op: "Placeholder".into(),
                attr,
                ..Default::default()
            });
        }
    }
}

/// Op types without a gradient, each with the nodes that have it.
type Missing = Vec<(String, Vec<String>)>;

/// Gradient coverage of the graph training differentiates (fallback rules and the strided 1×1
/// rewrite applied): the fallback-rewritten nodes and the missing (op, nodes) list.
fn coverage(model: &mut Loaded, flat: &FlatGraph) -> Result<(Vec<String>, Missing)> {
    let mut flat = flat.clone();
    // As training differentiates by default: saved custom gradients when the model has them all.
    let saved = flat.backward.custom.iter().all(|c| c.saved.is_some());
    let rewritten = autodiff::fallback::apply_but(&mut flat.graph_def, |n| {
        saved && crate::graph::custom::gradient_op_type(n).is_some()
    });
    crate::graph::unstride::apply(&mut flat, &model.info);
    let trainable = model.info.trainable_handles();
    // Kept control flow off every gradient path is read through StopGradients, as in training.
    let verdicts = autodiff::control_flow::check(&flat, &trainable)?;
    autodiff::control_flow::stop_gradients(&mut flat, &verdicts)?;
    let mut missing: Vec<(String, Vec<String>)> = Vec::new();
    for attempt in 0..12 {
        let prefix = format!("pretext_inspect/tower{attempt}");
        // Planned anew each attempt: cutting an op without a gradient changes the graph.
        let mut planned = flat.clone();
        if saved && !planned.backward.custom.is_empty() {
            autodiff::custom::plan(&mut planned)?;
        }
        let tower = Tower::import(model, &planned, &prefix, None, None)?;
        let reads: Vec<_> = tower
            .reads
            .iter()
            .filter(|(h, _)| trainable.contains(h))
            .cloned()
            .collect();
        let mut s = model
            .scope
            .new_sub_scope(&format!("pretext_inspect/loss{attempt}"));
        let Some(loss) = sum_of_outputs(&tower, &mut s)? else {
            return Ok((rewritten, missing));
        };
        match autodiff::gradients(
            &mut model.scope,
            std::slice::from_ref(&tower),
            loss,
            &reads,
            &format!("pretext_inspect/grad{attempt}"),
        ) {
            Ok(_) => return Ok((rewritten, missing)),
            Err(Error::NoGradient { ops }) => {
                let op = ops[0].0.clone();
                let nodes: Vec<String> = flat
                    .graph_def
                    .node
                    .iter()
                    .filter(|n| n.op == op)
                    .map(|n| n.name.clone())
                    .collect();
                let g = model.scope.graph();
                let types = |n: &str, k: usize| -> i32 {
                    g.operation_by_name(&format!("{prefix}/{n}"))
                        .ok()
                        .flatten()
                        .filter(|o| k < o.num_outputs())
                        .map(|o| crate::graph::dtype_code(o.output_type(k)))
                        .unwrap_or(0)
                };
                cut_op(&mut flat.graph_def, &op, &types);
                missing.push((op, nodes));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((rewritten, missing))
}

/// The custom gradients (`tf.custom_gradient`) on the serving path and how training takes each.
pub(super) fn custom_gradients(o: &mut String, flat: &FlatGraph) {
    let custom = &flat.backward.custom;
    if custom.is_empty() {
        return;
    }
    let unsaved = custom.iter().filter(|c| c.saved.is_none()).count();
    let how = match unsaved {
        0 => "each differentiated by the gradient function the model stores, as TF does".into(),
        n => format!(
            "{n} without a usable gradient function: training refuses them unless \
             --custom-gradients forward (model.custom_gradients: forward) differentiates their \
             forward ops"
        ),
    };
    let _ = writeln!(o, "custom gradients: {} node(s); {how}", custom.len());
    for c in custom.iter().take(8) {
        let f = match (&c.saved, &c.unusable) {
            (Some(s), _) => format!("{} ({} capture(s))", s.function, s.captures.len()),
            (None, Some(why)) => format!("unusable: {why}"),
            (None, None) => "not saved".into(),
        };
        let _ = writeln!(o, "  {} {} [{}]: {f}", c.op, c.node, c.op_type);
    }
    if custom.len() > 8 {
        let _ = writeln!(o, "  … {} more", custom.len() - 8);
    }
}

/// The functional control flow (`If`, `Case`, `While`) on the serving path and how each node is
/// handled: a constant predicate's branch inlined, or kept — off every gradient path (trains), or
/// on one (not differentiable: training refuses it unless the variables behind it are frozen).
pub(super) fn control_flow(o: &mut String, model: &Loaded, flat: &FlatGraph) -> Result<()> {
    if flat.control_flow.is_empty() {
        return Ok(());
    }
    let verdicts = autodiff::control_flow::check(flat, &model.info.trainable_handles())?;
    let _ = writeln!(o, "control flow: {} node(s)", flat.control_flow.len());
    for c in &flat.control_flow {
        let line = match verdicts.iter().find(|v| v.node == c.node) {
            None => c.describe(),
            Some(v) if v.on_path() => format!(
                "{}; on the gradient path from {} to {}: not differentiable (TF's C API has no \
                 gradient for {}): training refuses it unless those variables are frozen",
                c.describe(),
                v.vars.join(", "),
                v.output.as_deref().unwrap_or("?"),
                c.op
            ),
            Some(_) => format!(
                "{}; off every gradient path (read through StopGradient): trains",
                c.describe()
            ),
        };
        let _ = writeln!(o, "  {line}");
    }
    Ok(())
}

/// The sum of every element of the tower's float outputs (None without one): a loss whose
/// gradient reaches every variable an output depends on.
fn sum_of_outputs(tower: &Tower, s: &mut tensorflow::Scope) -> Result<Option<tensorflow::Output>> {
    let mut total: Option<tensorflow::Output> = None;
    for o in &tower.outputs {
        if o.operation.output_type(o.index as usize) != tensorflow::DataType::Float {
            continue;
        }
        let ctx = || format!("the sum of inspected output {}", o.index);
        let r = ops::rank(o.clone(), s).tf_ctx(ctx)?;
        let axes = ops::range(
            ops::constant(0i32, s).tf_ctx(ctx)?,
            r,
            ops::constant(1i32, s).tf_ctx(ctx)?,
            s,
        )
        .tf_ctx(ctx)?;
        let sum: tensorflow::Output = ops::sum(o.clone(), axes, s).tf_ctx(ctx)?.into();
        total = Some(match total {
            None => sum,
            Some(t) => ops::add(t, sum, s).tf_ctx(ctx)?.into(),
        });
    }
    Ok(total)
}
