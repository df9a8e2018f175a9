//! Custom gradients as TF computes them. TF's C++ gradient registry (what `TF_AddGradients`
//! uses) knows nothing of `_gradient_op_type`, so each such node's outputs are cut (read through a
//! `StopGradient`) and its backward is the gradient function the SavedModel stores, called on the
//! gradients that arrive at the cuts (`staged`). Upstream nodes feeding several differentiable
//! consumers are cut too (joins), so every backward op is built once, in one stage.
use std::collections::{HashMap, HashSet};

use super::walk::{joins, live_producers, reached, reverse_topo, Index};
use crate::error::{Error, Result};
use crate::graph::custom::{Backward, CustomGrad, CustomGradients, Stage, StageKind};
use crate::graph::{attr_type, node_def, FlatGraph, GraphPass, PassContext};

/// Float dtypes (the ones gradients flow through).
pub fn is_float(dt: i32) -> bool {
    matches!(dt, 1 | 2 | 14 | 19)
}

/// The pass: cuts custom-gradient nodes and joins, and plans the backward stages.
pub struct CutCustomGradients;

impl GraphPass for CutCustomGradients {
    fn name(&self) -> &'static str {
        "custom gradients"
    }
    fn run(&self, flat: &mut FlatGraph, cx: &PassContext) -> Result<Vec<String>> {
        if flat.backward.custom.is_empty() || cx.custom_gradients == CustomGradients::Forward {
            return Ok(Vec::new());
        }
        for c in &flat.backward.custom {
            if c.saved.is_none() {
                return Err(not_saved(c));
            }
        }
        plan(flat)
    }
}

fn not_saved(c: &CustomGrad) -> Error {
    if let Some(why) = &c.unusable {
        return Error::graph(
            &c.node,
            format!(
                "{} has the custom gradient '{}': {why}; set model.custom_gradients: forward \
                 (flag --custom-gradients forward) to differentiate its forward ops instead",
                c.op, c.op_type
            ),
        );
    }
    Error::graph(
        &c.node,
        format!(
            "{} has the custom gradient '{}', which the model was saved without \
             (SaveOptions(experimental_custom_gradients=False)); set model.custom_gradients: \
             forward (flag --custom-gradients forward) to differentiate its forward ops instead",
            c.op, c.op_type
        ),
    )
}

/// Inserts `StopGradient` cuts after output `k` of each `(node, k, dtype)`, re-pointing every
/// data input that read it; returns the cut tensors in the same order.
fn cut(flat: &mut FlatGraph, outs: &[(String, usize, i32)]) -> Vec<String> {
    let mut remap: HashMap<String, String> = HashMap::new();
    let mut added = Vec::new();
    let mut cuts = Vec::new();
    for (node, k, dt) in outs {
        let name = format!("{node}/__cut/{k}");
        added.push(node_def(
            name.clone(),
            "StopGradient",
            vec![format!("{node}:{k}")],
            vec![("T", attr_type(*dt))],
        ));
        remap.insert(format!("{node}:{k}"), format!("{name}:0"));
        if *k == 0 {
            remap.insert(node.clone(), format!("{name}:0"));
        }
        cuts.push(format!("{name}:0"));
    }
    let inputs = flat
        .graph_def
        .node
        .iter_mut()
        .flat_map(|n| n.input.iter_mut());
    for i in inputs.chain(flat.outputs.iter_mut()) {
        if let Some(t) = remap.get(i.as_str()) {
            *i = t.clone();
        }
    }
    flat.graph_def.node.extend(added);
    cuts
}

/// Cuts the custom nodes and the joins upstream of them, and orders the stages; returns the
/// nodes cut. Every custom node must have its saved gradient.
pub fn plan(flat: &mut FlatGraph) -> Result<Vec<String>> {
    // 1. Custom nodes: every output cut (the stored function is their only backward).
    let idx = Index::new(&flat.graph_def.node);
    let mut outs = Vec::new();
    for c in &flat.backward.custom {
        let p = *idx
            .pos
            .get(&c.node)
            .ok_or_else(|| Error::graph(&c.node, "the custom-gradient node left the graph"))?;
        for (k, &dt) in idx.types[p].iter().enumerate() {
            outs.push((c.node.clone(), k, dt));
        }
    }
    let live = live_inputs(&flat.backward)?;
    // 2. Joins: nodes upstream of a custom node with two or more consumers that carry a gradient.
    let joins = joins(
        &flat.graph_def.node,
        &flat.inputs,
        &flat.outputs,
        &idx,
        &live,
    );
    let mut join_outs = Vec::new();
    for j in &joins {
        for (k, &dt) in idx.types[idx.pos[j]].iter().enumerate() {
            if is_float(dt) {
                join_outs.push((j.clone(), k, dt));
            }
        }
    }
    let all: Vec<_> = outs.into_iter().chain(join_outs).collect();
    let cuts = cut(flat, &all);
    // 3. Stages in reverse topological order, each with the cuts and reads its gradients reach.
    let mut cuts_of: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for ((node, k, _), t) in all.iter().zip(cuts) {
        cuts_of.entry(node.clone()).or_default().push((*k, t));
    }
    let gd = &flat.graph_def.node;
    let idx = Index::new(gd);
    let kind_of: HashMap<&str, StageKind> = flat
        .backward
        .custom
        .iter()
        .enumerate()
        .map(|(i, c)| (c.node.as_str(), StageKind::Custom(i)))
        .chain(
            joins
                .iter()
                .map(|j| (j.as_str(), StageKind::Join(j.clone()))),
        )
        .collect();
    let mut stages = Vec::new();
    for p in reverse_topo(gd, &idx) {
        let n = &gd[p];
        let Some(kind) = kind_of.get(n.name.as_str()) else {
            continue;
        };
        let start: Vec<usize> = match kind {
            StageKind::Custom(_) => live_producers(n, &idx, &live),
            StageKind::Join(_) => vec![p],
        };
        stages.push(Stage {
            kind: kind.clone(),
            cuts: cuts_of.remove(&n.name).unwrap_or_default(),
            xs: reached(gd, &idx, start),
        });
    }
    log::info!(
        "custom gradients: {} node(s) differentiated by their saved gradient functions, {} join(s)",
        live.len(),
        joins.len()
    );
    log::debug!("custom-gradient joins: {joins:?}");
    flat.backward.stages = stages;
    let mut changed: Vec<String> = flat
        .backward
        .custom
        .iter()
        .map(|c| c.node.clone())
        .collect();
    changed.extend(joins);
    Ok(changed)
}

/// Per custom node: the positions of its inputs its gradient function returns a gradient for.
fn live_inputs(bw: &Backward) -> Result<HashMap<String, HashSet<usize>>> {
    let mut out = HashMap::new();
    for c in &bw.custom {
        let saved = c.saved.as_ref().ok_or_else(|| not_saved(c))?;
        let outputs = bw.grad_fn(&saved.function)?.outputs.len();
        let map = saved.result_map(c.inputs, outputs)?;
        let live = map
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_some())
            .map(|(k, _)| k)
            .collect();
        out.insert(c.node.clone(), live);
    }
    Ok(out)
}
