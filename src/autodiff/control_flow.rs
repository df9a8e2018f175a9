//! Kept functional control flow and the gradient. TF's C API (`TF_AddGradients`, the C++
//! gradient registry) has no gradient for `If`, `Case` or `While` ("No gradient defined for op:
//! If"), and pretext has no Rust rule for them; worse, a branch or loop body that reads a
//! variable takes its resource handle, so a gradient call would not even see that variable.
//!
//! So each control-flow node inlining kept (`graph::control_flow`) is checked before training:
//! it is on a gradient path when a trainable variable reaches one of its float or resource
//! inputs and one of its float outputs reaches a signature output, both through ops that pass
//! gradients (not `StopGradient`, `Shape`, … nor integer or boolean tensors). On a path,
//! training is refused naming the node; off every path, its float outputs are read through a
//! `StopGradient`, so TF's gradient builder never visits it and its forward is unchanged.
use std::collections::{HashMap, HashSet};

use tensorflow::Graph;

use crate::error::{Error, Result};
use crate::graph::control_flow::{Handling, WHILE_OPS};
use crate::graph::{attr_type, node_def, FlatGraph, GraphPass, PassContext};
use crate::proto::opdefs::{output_types, OpDefs};
use crate::proto::{NodeDef, TensorRef};

/// Ops whose outputs carry no gradient back to their inputs.
const STOPS: &[&str] = &[
    "StopGradient",
    "PreventGradient",
    "Shape",
    "ShapeN",
    "Size",
    "Rank",
    "ZerosLike",
    "OnesLike",
];

/// Whether a tensor of dtype `dt` can carry a gradient (0: not known, so it may).
fn carries(dt: i32, resource: bool) -> bool {
    // float, double, complex64, bfloat16, complex128, half; resource (20) going backward.
    matches!(dt, 0 | 1 | 2 | 8 | 14 | 18 | 19) || (resource && dt == 20)
}

/// What the check found for one kept control-flow node.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub node: String,
    pub op: String,
    /// Handles of the trainable variables whose gradient would pass through it.
    pub vars: Vec<String>,
    /// A signature output its float outputs reach, if any.
    pub output: Option<String>,
}

impl Verdict {
    /// Whether training would need its gradient.
    pub fn on_path(&self) -> bool {
        !self.vars.is_empty() && self.output.is_some()
    }
}

/// The flat graph's nodes and the dtype of each output, for walks along gradient edges.
struct Typed<'a> {
    nodes: HashMap<&'a str, &'a NodeDef>,
    types: HashMap<&'a str, Vec<i32>>,
    consumers: HashMap<(&'a str, i32), Vec<&'a str>>,
}

impl<'a> Typed<'a> {
    fn new(flat: &'a FlatGraph) -> Result<Typed<'a>> {
        let g = Graph::new();
        let mut opdefs = OpDefs::default();
        let mut types = HashMap::new();
        let mut consumers: HashMap<(&str, i32), Vec<&str>> = HashMap::new();
        for n in &flat.graph_def.node {
            let def = opdefs.get(&g, &n.op, &n.name)?;
            types.insert(n.name.as_str(), output_types(def, n)?);
            for i in n.input.iter().filter(|i| !i.starts_with('^')) {
                let r = TensorRef::parse(i);
                consumers
                    .entry((r.node, r.index))
                    .or_default()
                    .push(&n.name);
            }
        }
        let nodes = flat.graph_def.node.iter().map(|n| (n.name.as_str(), n));
        Ok(Typed {
            nodes: nodes.collect(),
            types,
            consumers,
        })
    }

    fn dtype(&self, node: &str, k: i32) -> i32 {
        let t = self.types.get(node);
        t.and_then(|t| t.get(k.max(0) as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Trainable variable handles (`external`: placeholder → outer op) whose gradient reaches
    /// `start` through its data inputs.
    fn sources(
        &self,
        start: &str,
        ext: &HashMap<&str, &str>,
        trainable: &HashSet<String>,
    ) -> Vec<String> {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if let Some(outer) = ext.get(n).filter(|o| trainable.contains(**o)) {
                found.push(outer.to_string());
            }
            let Some(nd) = self.nodes.get(n) else {
                continue;
            };
            if n != start && STOPS.contains(&nd.op.as_str()) {
                continue;
            }
            for i in nd.input.iter().filter(|i| !i.starts_with('^')) {
                let r = TensorRef::parse(i);
                if carries(self.dtype(r.node, r.index), true) {
                    stack.push(r.node);
                }
            }
        }
        found.sort();
        found
    }

    /// A tensor of `outputs` that a float output of `start` reaches through gradient edges.
    fn reaches(&self, start: &str, outputs: &HashSet<(&str, i32)>) -> Option<String> {
        let mut seen = HashSet::new();
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if n != start
                && self
                    .nodes
                    .get(n)
                    .is_some_and(|d| STOPS.contains(&d.op.as_str()))
            {
                continue;
            }
            let count = self.types.get(n).map(Vec::len).unwrap_or(0) as i32;
            for k in (0..count).filter(|&k| carries(self.dtype(n, k), false)) {
                if outputs.contains(&(n, k)) {
                    return Some(format!("{n}:{k}"));
                }
                stack.extend(self.consumers.get(&(n, k)).into_iter().flatten().copied());
            }
        }
        None
    }
}

/// Each kept control-flow node of `flat` and whether it is on a gradient path from the
/// `trainable` variables (handles) to the signature outputs.
pub fn check(flat: &FlatGraph, trainable: &HashSet<String>) -> Result<Vec<Verdict>> {
    if flat
        .control_flow
        .iter()
        .all(|c| c.handling != Handling::Kept)
    {
        return Ok(Vec::new());
    }
    let typed = Typed::new(flat)?;
    let ext = flat.external_ops();
    let outputs: HashSet<(&str, i32)> = flat
        .outputs
        .iter()
        .map(|o| TensorRef::parse(o))
        .map(|r| (r.node, r.index.max(0)))
        .collect();
    Ok(flat
        .control_flow
        .iter()
        .filter(|c| c.handling == Handling::Kept)
        .map(|c| Verdict {
            node: c.node.clone(),
            op: c.op.clone(),
            vars: typed.sources(&c.node, &ext, trainable),
            output: typed.reaches(&c.node, &outputs),
        })
        .collect())
}

/// Why `op` could not be inlined away.
fn why(op: &str) -> &'static str {
    match WHILE_OPS.contains(&op) {
        true => "a loop is kept as a loop",
        false => concat!(
            "its predicate is not a constant of the model (it depends on the inputs or on ",
            "variables), so it is kept as a conditional"
        ),
    }
}

/// Refuses control flow on a gradient path; reads the rest through `StopGradient`s.
pub struct ControlFlowGradients;

impl GraphPass for ControlFlowGradients {
    fn name(&self) -> &'static str {
        "kept control flow off the gradient path"
    }
    fn run(&self, flat: &mut FlatGraph, cx: &PassContext) -> Result<Vec<String>> {
        let verdicts = check(flat, cx.trainable)?;
        if verdicts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(v) = verdicts.iter().find(|v| v.on_path()) {
            let names: HashMap<String, String> = cx
                .info
                .variables()
                .into_iter()
                .map(|v| (v.handle, v.name))
                .collect();
            return Err(Error::ControlFlow {
                node: v.node.clone(),
                op: v.op.clone(),
                why: why(&v.op).into(),
                vars: v
                    .vars
                    .iter()
                    .map(|h| names.get(h).unwrap_or(h).clone())
                    .collect(),
                output: v.output.clone().unwrap_or_default(),
            });
        }
        stop_gradients(flat, &verdicts)
    }
}

/// Reads the float outputs of the nodes of `verdicts` off every gradient path through
/// `StopGradient`s (consumers and signature outputs re-pointed); their names.
pub fn stop_gradients(flat: &mut FlatGraph, verdicts: &[Verdict]) -> Result<Vec<String>> {
    if verdicts.is_empty() {
        return Ok(Vec::new());
    }
    let typed = Typed::new(flat)?;
    let mut stops = Vec::new();
    for v in verdicts.iter().filter(|v| !v.on_path()) {
        let count = typed.types.get(v.node.as_str()).map(Vec::len).unwrap_or(0) as i32;
        for k in 0..count {
            let dt = typed.dtype(&v.node, k);
            let used = typed.consumers.contains_key(&(v.node.as_str(), k));
            if dt != 0 && carries(dt, false) && used {
                stops.push((v.node.clone(), k, dt));
            }
        }
    }
    drop(typed);
    let mut remap = HashMap::new();
    for (n, k, dt) in &stops {
        let stop = format!("{n}/__stop{k}");
        remap.insert(format!("{n}:{k}"), format!("{stop}:0"));
        if *k == 0 {
            remap.insert(n.clone(), format!("{stop}:0"));
        }
        let input = vec![format!("{n}:{k}")];
        flat.graph_def.node.push(node_def(
            stop,
            "StopGradient",
            input,
            vec![("T", attr_type(*dt))],
        ));
    }
    for nd in flat.graph_def.node.iter_mut() {
        for i in nd.input.iter_mut() {
            // The StopGradient itself keeps reading the node.
            if let Some(t) = remap
                .get(i.as_str())
                .filter(|t| TensorRef::node_of(t) != nd.name)
            {
                *i = t.clone();
            }
        }
    }
    for o in flat.outputs.iter_mut() {
        if let Some(t) = remap.get(o.as_str()) {
            *o = t.clone();
        }
    }
    let mut changed: Vec<String> = stops.into_iter().map(|(n, _, _)| n).collect();
    changed.dedup();
    Ok(changed)
}

#[cfg(test)]
#[path = "control_flow_tests.rs"]
mod tests;
