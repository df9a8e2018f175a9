//! Custom gradients as TF computes them. TF's C++ gradient registry (what `TF_AddGradients`
//! uses) knows nothing of `_gradient_op_type`, so each such node's outputs are cut (read through a
//! `StopGradient`) and its backward is the gradient function the SavedModel stores, called on the
//! gradients that arrive at the cuts (`staged`). Upstream nodes feeding several differentiable
//! consumers are cut too (joins), so every backward op is built once, in one stage.
use std::collections::{HashMap, HashSet};

use tensorflow::Graph;

use crate::error::{Error, Result};
use crate::graph::custom::{Backward, CustomGrad, CustomGradients, Stage, StageKind};
use crate::graph::{attr_type, node_def, FlatGraph, GraphPass, PassContext};
use crate::proto::opdefs::output_types;
use crate::proto::{NodeDef, OpDefs, TensorRef};

/// Float dtypes (the ones gradients flow through).
pub fn is_float(dt: i32) -> bool {
    matches!(dt, 1 | 2 | 14 | 19)
}

/// Consumers through which no gradient flows (they read shapes, or stop it).
const NO_GRAD: &[&str] = &[
    "Shape",
    "ShapeN",
    "Size",
    "Rank",
    "StopGradient",
    "ZerosLike",
    "OnesLike",
];

/// Nodes that start a backward path (nothing upstream to differentiate).
const SOURCES: &[&str] = &["ReadVariableOp", "Const", "Placeholder", "VarHandleOp"];

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

/// The flat graph's nodes, their output dtypes, and who consumes what.
struct Index {
    pos: HashMap<String, usize>,
    types: Vec<Vec<i32>>,
}

impl Index {
    fn new(gd: &[NodeDef]) -> Self {
        let g = Graph::new();
        let mut defs = OpDefs::default();
        let types = gd
            .iter()
            .map(|n| match defs.get(&g, &n.op, &n.name) {
                Ok(d) => output_types(&d.clone(), n).unwrap_or_default(),
                Err(_) => Vec::new(),
            })
            .collect();
        let pos = gd
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Index { pos, types }
    }

    /// The float data inputs of `n`, as (producer position, output index).
    fn float_inputs(&self, n: &NodeDef) -> Vec<(usize, usize)> {
        self.float_edges(n)
            .into_iter()
            .map(|(_, p, k)| (p, k))
            .collect()
    }

    /// As `float_inputs`, with each input's position among `n`'s data inputs first.
    fn float_edges(&self, n: &NodeDef) -> Vec<(usize, usize, usize)> {
        n.input
            .iter()
            .filter(|i| !i.starts_with('^'))
            .enumerate()
            .filter_map(|(j, i)| {
                let t = TensorRef::parse(i);
                let p = *self.pos.get(t.node)?;
                let k = t.index.max(0) as usize;
                is_float(*self.types[p].get(k)?).then_some((j, p, k))
            })
            .collect()
    }
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

/// The producers of `n`'s inputs that a gradient reaches: for a custom node its live inputs.
fn live_producers(n: &NodeDef, idx: &Index, live: &HashMap<String, HashSet<usize>>) -> Vec<usize> {
    let keep = |j: usize| live.get(&n.name).map(|l| l.contains(&j)).unwrap_or(true);
    idx.float_edges(n)
        .into_iter()
        .filter(|(j, _, _)| keep(*j))
        .map(|(_, p, _)| p)
        .collect()
}

/// Up the float data edges from `start`, stopping at `StopGradient` and custom nodes.
fn walk_up(
    gd: &[NodeDef],
    idx: &Index,
    start: Vec<usize>,
    live: &HashMap<String, HashSet<usize>>,
) -> HashSet<usize> {
    let mut stack = start;
    let mut seen = HashSet::new();
    while let Some(p) = stack.pop() {
        let n = &gd[p];
        if !seen.insert(p) || n.op == "StopGradient" || live.contains_key(&n.name) {
            continue;
        }
        stack.extend(idx.float_inputs(n).into_iter().map(|(q, _)| q));
    }
    seen
}

/// Nodes upstream of a custom node's live inputs whose float outputs feed two or more consumers
/// that carry a gradient (toward a live input or a tower output); sources and custom nodes
/// are not joins.
fn joins(
    gd: &[NodeDef],
    inputs: &[String],
    outputs: &[String],
    idx: &Index,
    live: &HashMap<String, HashSet<usize>>,
) -> Vec<String> {
    let customs: Vec<usize> = gd
        .iter()
        .enumerate()
        .filter(|(_, n)| live.contains_key(&n.name))
        .map(|(p, _)| p)
        .collect();
    let seeds: Vec<usize> = customs
        .iter()
        .flat_map(|&p| live_producers(&gd[p], idx, live))
        .collect();
    let upstream = walk_up(gd, idx, seeds.clone(), live);
    let mut tail: Vec<usize> = outputs
        .iter()
        .filter_map(|o| idx.pos.get(TensorRef::node_of(o)).copied())
        .collect();
    tail.extend(seeds);
    let carries = walk_up(gd, idx, tail, live);
    let mut consumers: HashMap<usize, HashSet<usize>> = HashMap::new();
    for (ci, n) in gd.iter().enumerate() {
        let custom = live.get(&n.name);
        for (j, p, _) in idx.float_edges(n) {
            let edge_live = match custom {
                Some(l) => l.contains(&j),
                None => carries.contains(&ci) && !NO_GRAD.contains(&n.op.as_str()),
            };
            if edge_live {
                consumers.entry(p).or_default().insert(ci);
            }
        }
    }
    // Nodes the tower's inputs do not reach compute from variables alone (a folded batch norm's
    // per-channel scale): carrying their small gradients back twice costs less than a stage.
    let activations = walk_down(gd, idx, inputs);
    let mut out: Vec<String> = upstream
        .into_iter()
        .filter(|p| activations.contains(p))
        .filter(|p| consumers.get(p).map(|c| c.len() >= 2).unwrap_or(false))
        .map(|p| &gd[p])
        .filter(|n| !SOURCES.contains(&n.op.as_str()) && !live.contains_key(&n.name))
        .map(|n| n.name.clone())
        .collect();
    out.sort();
    out
}

/// Positions of the nodes that depend (through data edges) on the tensors `from`.
fn walk_down(gd: &[NodeDef], idx: &Index, from: &[String]) -> HashSet<usize> {
    let mut consumers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (c, n) in gd.iter().enumerate() {
        for i in n.input.iter().filter(|i| !i.starts_with('^')) {
            if let Some(&p) = idx.pos.get(TensorRef::node_of(i)) {
                consumers.entry(p).or_default().push(c);
            }
        }
    }
    let mut stack: Vec<usize> = from
        .iter()
        .filter_map(|t| idx.pos.get(TensorRef::node_of(t)).copied())
        .collect();
    let mut seen = HashSet::new();
    while let Some(p) = stack.pop() {
        if seen.insert(p) {
            stack.extend(consumers.get(&p).into_iter().flatten().copied());
        }
    }
    seen
}

/// From `start` up the float data edges: the cut tensors and variable reads reached (the
/// walk stops at both).
fn reached(gd: &[NodeDef], idx: &Index, start: Vec<usize>) -> Vec<String> {
    let mut stack = start;
    let mut seen = HashSet::new();
    let mut xs = Vec::new();
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        let n = &gd[p];
        if n.op == "ReadVariableOp" || (n.op == "StopGradient" && n.name.contains("/__cut/")) {
            xs.push(format!("{}:0", n.name));
            continue;
        }
        stack.extend(idx.float_inputs(n).into_iter().map(|(q, _)| q));
    }
    xs.sort();
    xs
}

/// Node positions, consumers before producers.
fn reverse_topo(gd: &[NodeDef], idx: &Index) -> Vec<usize> {
    let deps = |p: usize| -> Vec<usize> {
        gd[p]
            .input
            .iter()
            .filter_map(|i| idx.pos.get(TensorRef::parse(i).node).copied())
            .collect()
    };
    let mut order = Vec::with_capacity(gd.len());
    let mut seen = vec![false; gd.len()];
    for r in 0..gd.len() {
        if seen[r] {
            continue;
        }
        seen[r] = true;
        let mut stack = vec![(r, deps(r), 0usize)];
        while let Some((n, ds, i)) = stack.last_mut() {
            if *i < ds.len() {
                let d = ds[*i];
                *i += 1;
                if !seen[d] {
                    seen[d] = true;
                    let dd = deps(d);
                    stack.push((d, dd, 0));
                }
            } else {
                order.push(*n);
                stack.pop();
            }
        }
    }
    order.reverse();
    order
}
