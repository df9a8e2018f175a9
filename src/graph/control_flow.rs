//! Functional control flow met while inlining (`If`, `Case`, `While` and their stateless forms).
//! An `If`/`Case` whose predicate (branch index) is a constant of the model — a small `Const`,
//! or a few element-wise ops (`FOLDABLE`) over such constants only, evaluated here in a throwaway
//! TF session — is replaced by the branch it takes, inlined like any call; every other
//! control-flow node is copied as it is and recorded, for `autodiff::control_flow` to check
//! against the gradient path.
use std::collections::{HashMap, HashSet};

use prost::Message;
use tensorflow::{
    DataType, Graph, ImportGraphDefOptions, Session, SessionOptions, SessionRunArgs, Tensor,
};

use crate::proto::{attr_value::Value, GraphDef, NodeDef, TensorRef};

pub const IF_OPS: &[&str] = &["If", "StatelessIf"];
pub const CASE_OPS: &[&str] = &["Case", "StatelessCase"];
pub const WHILE_OPS: &[&str] = &["While", "StatelessWhile"];

/// The most nodes a constant predicate may be computed by (beyond that it is kept, not folded).
const MAX_CONST_NODES: usize = 64;

/// The ops a constant predicate may be computed by: element-wise over constants of at most
/// `MAX_CONST_ELEMENTS` elements and rank ≤ 1, so folding costs nothing, whatever the model.
const FOLDABLE: &[&str] = &[
    "Const",
    "Identity",
    "Cast",
    "Equal",
    "NotEqual",
    "Less",
    "LessEqual",
    "Greater",
    "GreaterEqual",
    "LogicalNot",
    "LogicalAnd",
    "LogicalOr",
    "Add",
    "AddV2",
    "Sub",
    "Mul",
    "Neg",
    "Abs",
    "FloorMod",
    "FloorDiv",
    "Maximum",
    "Minimum",
    "SelectV2",
    "All",
    "Any",
];
const MAX_CONST_ELEMENTS: i64 = 16;

/// Whether op type `op` is functional control flow.
pub fn is_control_flow(op: &str) -> bool {
    IF_OPS.contains(&op) || CASE_OPS.contains(&op) || WHILE_OPS.contains(&op)
}

/// How inlining handled a control-flow node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handling {
    /// Replaced by the branch its constant predicate takes (`index`: 0 then / 1 else for an
    /// `If`, the branch index for a `Case`), inlined under the node's name.
    Inlined { index: usize, function: String },
    /// Copied as it is: a loop, or a predicate that is not a constant of the model.
    Kept,
}

/// A control-flow node of the signature and what inlining did with it.
#[derive(Debug, Clone)]
pub struct ControlFlow {
    /// Its name in the flat graph (for an inlined one, the scope of its branch's nodes).
    pub node: String,
    pub op: String,
    pub handling: Handling,
}

impl ControlFlow {
    /// One line for `inspect` and logs.
    pub fn describe(&self) -> String {
        match &self.handling {
            Handling::Inlined { index, function } => {
                let which = match (IF_OPS.contains(&self.op.as_str()), index) {
                    (true, 0) => "then branch".to_string(),
                    (true, _) => "else branch".to_string(),
                    (false, i) => format!("branch {i}"),
                };
                format!(
                    "{} [{}]: constant predicate, {which} ({function}) inlined",
                    self.node, self.op
                )
            }
            Handling::Kept => format!("{} [{}]: kept", self.node, self.op),
        }
    }
}

fn func_list(n: &NodeDef, key: &str) -> Vec<String> {
    match n.attr.get(key).and_then(|a| a.value.as_ref()) {
        Some(Value::Func(f)) => vec![f.name.clone()],
        Some(Value::List(l)) => l.func.iter().map(|f| f.name.clone()).collect(),
        _ => Vec::new(),
    }
}

/// The control-flow nodes inlining met, and an index of the flat nodes by name (brought up to
/// date only when one is met).
#[derive(Default)]
pub(super) struct Record {
    pub nodes: Vec<ControlFlow>,
    index: HashMap<String, usize>,
    indexed: usize,
}

/// For a control-flow node `nd` (flat name `flat`, data inputs `data`, the flat graph so far
/// `out`): the function and arguments of the branch its constant predicate takes, None to copy
/// it as it is; either way recorded in `record`. None for any other node.
pub(super) fn taken_branch(
    nd: &NodeDef,
    data: &[String],
    flat: &str,
    out: &[NodeDef],
    record: &mut Record,
) -> Option<(String, Vec<String>)> {
    if !is_control_flow(&nd.op) {
        return None;
    }
    for (k, n) in out.iter().enumerate().skip(record.indexed) {
        record.index.insert(n.name.clone(), k);
    }
    record.indexed = out.len();
    let find = |name: &str| record.index.get(name).map(|&k| &out[k]);
    let taken = data
        .first()
        .and_then(|pred| constant_branch(nd, pred, find));
    let handling = match &taken {
        Some((index, function)) => Handling::Inlined {
            index: *index,
            function: function.clone(),
        },
        None => Handling::Kept,
    };
    record.nodes.push(ControlFlow {
        node: flat.to_string(),
        op: nd.op.clone(),
        handling,
    });
    taken.map(|(_, f)| (f, data[1..].to_vec()))
}

/// The branch an `If`/`Case` node `nd` takes when its predicate, flat tensor `pred` (computed
/// by the flat nodes `find` looks up), is a constant: (branch index, function). None for any
/// other node, and when the predicate is not a constant of the model (nor a scalar).
fn constant_branch<'o>(
    nd: &NodeDef,
    pred: &str,
    find: impl Fn(&str) -> Option<&'o NodeDef>,
) -> Option<(usize, String)> {
    let is_if = IF_OPS.contains(&nd.op.as_str());
    if !is_if && !CASE_OPS.contains(&nd.op.as_str()) {
        return None;
    }
    let sub = constant_subgraph(pred, find)?;
    let v = match evaluate(&sub, pred, is_if) {
        Ok(v) => v?,
        Err(why) => {
            log::debug!("{}: predicate {pred} not folded: {why}", nd.name);
            return None;
        }
    };
    if is_if {
        let key = if v != 0 { "then_branch" } else { "else_branch" };
        let index = usize::from(v == 0);
        return func_list(nd, key).pop().map(|f| (index, f));
    }
    // A Case runs its last branch for an index out of range.
    let branches = func_list(nd, "branches");
    let index = match usize::try_from(v) {
        Ok(i) if i < branches.len() => i,
        _ => branches.len().saturating_sub(1),
    };
    branches.get(index).map(|f| (index, f.clone()))
}

/// The flat nodes that compute `pred`, if they are all `FOLDABLE` ops over small constants
/// (no placeholder, variable or call), control inputs left out.
fn constant_subgraph<'o>(
    pred: &str,
    find: impl Fn(&str) -> Option<&'o NodeDef>,
) -> Option<GraphDef> {
    let mut seen = HashSet::new();
    let mut stack = vec![TensorRef::node_of(pred).to_string()];
    let mut nodes = Vec::new();
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if seen.len() > MAX_CONST_NODES {
            return None;
        }
        let n = find(&name)?;
        if !FOLDABLE.contains(&n.op.as_str()) || (n.op == "Const" && !small(n)) {
            return None;
        }
        let mut m = n.clone();
        m.input.retain(|i| !i.starts_with('^'));
        m.device.clear();
        stack.extend(m.input.iter().map(|i| TensorRef::node_of(i).to_string()));
        nodes.push(m);
    }
    Some(GraphDef {
        node: nodes,
        ..Default::default()
    })
}

/// A `Const` of rank ≤ 1 and at most `MAX_CONST_ELEMENTS` elements.
fn small(n: &NodeDef) -> bool {
    match n.attr.get("value").and_then(|a| a.value.as_ref()) {
        Some(Value::Tensor(t)) => {
            let dims = t
                .tensor_shape
                .as_ref()
                .map(|s| s.dim.as_slice())
                .unwrap_or(&[]);
            dims.len() <= 1
                && dims
                    .iter()
                    .all(|d| (0..=MAX_CONST_ELEMENTS).contains(&d.size))
        }
        _ => false,
    }
}

/// Runs `sub` and reads scalar `pred`: for an `If`, 1 if it is true (a number: non-zero), else
/// 0; for a `Case`, the index. None for a predicate that is not a scalar of a type read here.
fn evaluate(sub: &GraphDef, pred: &str, is_if: bool) -> std::result::Result<Option<i64>, String> {
    let mut g = Graph::new();
    g.import_graph_def(&sub.encode_to_vec(), &ImportGraphDefOptions::new())
        .map_err(|e| e.to_string())?;
    let r = TensorRef::parse(pred);
    let op = g
        .operation_by_name_required(r.node)
        .map_err(|e| e.to_string())?;
    let index = r.index.max(0);
    let dtype = op.output_type(index as usize);
    let session = Session::new(&SessionOptions::new(), &g).map_err(|e| e.to_string())?;
    let mut run = SessionRunArgs::new();
    let token = run.request_fetch(&op, index);
    session.run(&mut run).map_err(|e| e.to_string())?;
    fn scalar<T: tensorflow::TensorType + Copy>(t: Tensor<T>) -> Option<T> {
        (t.dims().is_empty()).then(|| t[0])
    }
    let f = |e: tensorflow::Status| e.to_string();
    let v = match dtype {
        DataType::Bool if is_if => scalar(run.fetch::<bool>(token).map_err(f)?).map(i64::from),
        DataType::Int32 => scalar(run.fetch::<i32>(token).map_err(f)?).map(i64::from),
        DataType::Int64 => scalar(run.fetch::<i64>(token).map_err(f)?),
        DataType::Float if is_if => {
            scalar(run.fetch::<f32>(token).map_err(f)?).map(|x| i64::from(x != 0.0))
        }
        _ => None,
    };
    Ok(match is_if {
        true => v.map(|x| i64::from(x != 0)),
        false => v,
    })
}

#[cfg(test)]
#[path = "control_flow_tests.rs"]
mod tests;
