//! Towers on several devices as one graph (`train.devices`): every node of the flat graph is
//! copied once per device (`replica{k}/…`, placed there), the variables' placeholders shared, so
//! one import builds every replica and TF differentiates them together. Batch norms in train
//! mode keep per-replica statistics (their moving averages are averaged), or, with
//! `model.bn_sync`, normalise with the statistics of the whole batch: sums over every replica,
//! in two passes like TF's fused kernel (the mean, then the squared deviations from it).
//! The cross-replica sums are `AddN`s over device edges, ops TF's own gradients cover.
use std::collections::{BTreeMap, HashMap, HashSet};

use super::{bn_sync, FlatGraph};
use crate::error::{Error, Result};
use crate::proto::{attr_value::Value, AttrValue, NodeDef, TensorRef};

/// A batch norm's moving statistics in a replicated graph: the flat tensors reading the moving
/// mean and variance, and the new values computed once for every replica.
#[derive(Debug, Clone)]
pub struct Moving {
    pub reads: [String; 2],
    pub values: [String; 2],
}

/// The tower placed on `PassContext::devices`: copied once per device, or, with one, placed
/// there (nothing without).
pub struct Replicate;

impl super::GraphPass for Replicate {
    fn name(&self) -> &'static str {
        "tower placed on train.devices (one copy per device)"
    }
    fn run(&self, flat: &mut FlatGraph, cx: &super::PassContext) -> Result<Vec<String>> {
        match cx.devices {
            [] => Ok(Vec::new()),
            [one] => Ok(place(flat, one)),
            _ => replicate(flat, cx.devices, cx.bn_sync),
        }
    }
}

/// One device: every node but the shared placeholders placed there (nothing to replicate).
fn place(flat: &mut FlatGraph, device: &str) -> Vec<String> {
    let shared: HashSet<&str> = flat
        .external
        .iter()
        .map(|e| e.placeholder.as_str())
        .collect();
    let mut placed = Vec::new();
    for n in flat.graph_def.node.iter_mut() {
        if !shared.contains(n.name.as_str()) {
            n.device = device.to_string();
            placed.push(n.name.clone());
        }
    }
    placed
}

/// Replica `k`'s name of a flat node.
pub fn replica_name(k: usize, node: &str) -> String {
    format!("replica{k}/{node}")
}

/// A training-mode fused batch norm (what computes batch statistics; `is_training` defaults
/// to true).
fn is_training_bn(n: &NodeDef) -> bool {
    super::bn::FUSED.contains(&n.op.as_str())
        && !matches!(
            n.attr.get("is_training").and_then(|a| a.value.as_ref()),
            Some(Value::B(false))
        )
}

/// Rewrites `flat` into one copy per device; returns the batch norms given moving statistics
/// computed across replicas (synchronised ones first normalise with the whole batch's).
pub fn replicate(flat: &mut FlatGraph, devices: &[String], sync: bool) -> Result<Vec<String>> {
    let shared: HashSet<String> = flat
        .external
        .iter()
        .map(|e| e.placeholder.clone())
        .collect();
    let bns: Vec<NodeDef> = flat
        .graph_def
        .node
        .iter()
        .filter(|n| is_training_bn(n))
        .cloned()
        .collect();
    let synced: HashSet<&str> = match sync {
        true => bns.iter().map(|b| b.name.as_str()).collect(),
        false => HashSet::new(),
    };
    let r = Renamer {
        shared: &shared,
        synced: &synced,
    };
    let mut out: Vec<NodeDef> = Vec::new();
    for n in flat
        .graph_def
        .node
        .iter()
        .filter(|n| shared.contains(&n.name))
    {
        out.push(n.clone());
    }
    for (k, device) in devices.iter().enumerate() {
        for n in &flat.graph_def.node {
            if shared.contains(&n.name) || synced.contains(n.name.as_str()) {
                continue;
            }
            out.push(r.copy(k, n, device)?);
        }
    }
    let mut moving = BTreeMap::new();
    for b in &bns {
        let m = match sync {
            true => bn_sync::synchronised(&mut out, &r, b, devices)?,
            false => bn_sync::averaged(&mut out, b, devices.len(), &devices[0]),
        };
        moving.insert(b.name.clone(), m);
    }
    let r = &r;
    let copies = |ts: &[String]| -> Vec<String> {
        (0..devices.len())
            .flat_map(|k| ts.iter().map(move |t| r.tensor(k, t)))
            .collect()
    };
    flat.inputs = copies(&flat.inputs);
    flat.outputs = copies(&flat.outputs);
    flat.updates = flat.updates.iter().map(|t| r.tensor(0, t)).collect();
    flat.backward.custom = (0..devices.len())
        .flat_map(|k| {
            flat.backward.custom.iter().map(move |c| {
                let mut c = c.clone();
                c.node = replica_name(k, &c.node);
                if let Some(s) = c.saved.as_mut() {
                    s.captures = s.captures.iter().map(|t| r.tensor(k, t)).collect();
                }
                c
            })
        })
        .collect();
    check_unique(&out)?;
    flat.graph_def.node = out;
    flat.replicas = devices.len();
    flat.moving = moving;
    Ok(bns.iter().map(|b| b.name.clone()).collect())
}

/// Names in replica `k`: shared placeholders keep theirs; a synchronised batch norm's outputs
/// become its replacement's.
pub(super) struct Renamer<'a> {
    shared: &'a HashSet<String>,
    synced: &'a HashSet<&'a str>,
}

impl Renamer<'_> {
    /// A flat tensor (`node`, `node:i` or `^node`) as replica `k` reads it.
    pub(super) fn tensor(&self, k: usize, t: &str) -> String {
        let (control, t) = match t.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let TensorRef { node, index } = TensorRef::parse(t);
        if self.shared.contains(node) {
            return format!("{}{t}", if control { "^" } else { "" });
        }
        if self.synced.contains(node) {
            let y = replica_name(k, &format!("{node}/sync/y"));
            return match (control, index.max(0)) {
                (true, _) => format!("^{y}"),
                (false, 0) => format!("{y}:0"),
                (false, 1) => format!("replicas/{node}/sync/mean_out:0"),
                // Outputs 3–5 (reserve spaces) have no replacement: `copy` refuses readers.
                (false, _) => format!("replicas/{node}/sync/var_out:0"),
            };
        }
        let name = replica_name(k, node);
        match (control, t.contains(':')) {
            (true, _) => format!("^{name}"),
            (false, true) => format!("{name}:{index}"),
            (false, false) => name,
        }
    }

    /// Node `n` as replica `k` has it, on `device`.
    fn copy(&self, k: usize, n: &NodeDef, device: &str) -> Result<NodeDef> {
        let mut c = n.clone();
        c.name = replica_name(k, &n.name);
        c.input = n.input.iter().map(|t| self.tensor(k, t)).collect();
        if let Some(t) = data_inputs_of_synced(n, self.synced).first() {
            return Err(Error::graph(
                &n.name,
                format!("reads {t}, a batch norm's reserved output, which bn_sync replaces"),
            ));
        }
        if let Some(AttrValue {
            value: Some(Value::List(l)),
        }) = c.attr.get_mut("_class")
        {
            for s in l.s.iter_mut() {
                let text = String::from_utf8_lossy(s).into_owned();
                if let Some(node) = text.strip_prefix("loc:@") {
                    // A synchronised batch norm's place is taken by its output's op.
                    let node = match self.synced.contains(node) {
                        true => format!("{node}/sync/y"),
                        false => node.to_string(),
                    };
                    if !self.shared.contains(&node) {
                        *s = format!("loc:@{}", replica_name(k, &node)).into_bytes();
                    }
                }
            }
        }
        c.device = device.to_string();
        Ok(c)
    }
}

/// `n`'s inputs reading outputs 3–5 (reserve spaces) of a synchronised batch norm.
fn data_inputs_of_synced<'a>(n: &'a NodeDef, synced: &HashSet<&str>) -> Vec<&'a String> {
    n.input
        .iter()
        .filter(|t| !t.starts_with('^'))
        .filter(|t| {
            let r = TensorRef::parse(t);
            synced.contains(r.node) && r.index > 2
        })
        .collect()
}

/// Every node name appears once (a model whose own names start with `replica0/` is refused).
fn check_unique(nodes: &[NodeDef]) -> Result<()> {
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for n in nodes {
        if seen.insert(n.name.as_str(), ()).is_some() {
            return Err(Error::graph(
                &n.name,
                "two nodes of the replicated tower share this name",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "replicate_tests.rs"]
mod tests;
