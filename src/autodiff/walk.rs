//! The flat graph as the custom-gradient plan walks it: each node's float outputs and who
//! consumes them, the joins (nodes upstream of a custom node with several consumers that carry
//! a gradient), what a stage's gradients reach, and the order stages run in.
use std::collections::{HashMap, HashSet};

use tensorflow::Graph;

use super::custom::is_float;
use crate::proto::opdefs::output_types;
use crate::proto::{NodeDef, OpDefs, TensorRef};

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

/// The flat graph's nodes, their output dtypes, and who consumes what.
pub(super) struct Index {
    pub(super) pos: HashMap<String, usize>,
    pub(super) types: Vec<Vec<i32>>,
}

impl Index {
    pub(super) fn new(gd: &[NodeDef]) -> Self {
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

/// The producers of `n`'s inputs that a gradient reaches: for a custom node its live inputs.
pub(super) fn live_producers(
    n: &NodeDef,
    idx: &Index,
    live: &HashMap<String, HashSet<usize>>,
) -> Vec<usize> {
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
pub(super) fn joins(
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
pub(super) fn reached(gd: &[NodeDef], idx: &Index, start: Vec<usize>) -> Vec<String> {
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
pub(super) fn reverse_topo(gd: &[NodeDef], idx: &Index) -> Vec<usize> {
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
