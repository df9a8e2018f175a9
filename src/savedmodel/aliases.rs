//! Model variables a SavedModel holds under several handles. A Keras 3 `model.export()` writes
//! each variable twice: the serving function of the graph reads one handle (restored from the
//! checkpoint key `_all_variables/j`), while the object graph binds TF2 loaders (`tf.saved_model
//! .load`, `hub.load`) to another (`variables/i`). Training moves the first only; an export must
//! write the trained value under every key (`export`).
use std::collections::HashMap;

use super::SavedModelInfo;
use crate::proto::{attr_value::Value, BodyRef, FunctionDef, NodeDef, TensorRef};

/// Checkpoint key → object path: `a/b/.ATTRIBUTES/VARIABLE_VALUE` → ["a", "b"] (`.S` stands for
/// `/` and `..` for `.` in a local name).
fn object_path(key: &str) -> Option<Vec<String>> {
    let path = key.strip_suffix("/.ATTRIBUTES/VARIABLE_VALUE")?;
    Some(path.split('/').map(unescape).collect())
}

/// A local name as TF escapes it in checkpoint keys (`.` → `..`, `/` → `.S`), unescaped.
fn unescape(p: &str) -> String {
    let mut out = String::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        match (c, c == '.') {
            (_, true) => match chars.next() {
                Some('S') => out.push('/'),
                Some(d) => out.push(d),
                None => out.push('.'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// The strings of a body's `Const` node.
fn strings(n: &NodeDef) -> Vec<String> {
    match n.attr.get("value").and_then(|a| a.value.as_ref()) {
        Some(Value::Tensor(t)) => t
            .string_val
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
        _ => Vec::new(),
    }
}

/// In the restore function: argument name → the checkpoint key assigned to it.
fn assigned_keys(f: &FunctionDef) -> HashMap<String, String> {
    let body: HashMap<&str, &NodeDef> = f.node_def.iter().map(|n| (n.name.as_str(), n)).collect();
    // Per RestoreV2 node, the checkpoint keys it reads.
    let mut keys: HashMap<&str, Vec<String>> = HashMap::new();
    for n in f.node_def.iter().filter(|n| n.op == "RestoreV2") {
        let names = n.input.get(1).and_then(|i| body.get(BodyRef::node_of(i)));
        if let Some(c) = names {
            keys.insert(n.name.as_str(), strings(c));
        }
    }
    let mut out = HashMap::new();
    for n in f.node_def.iter().filter(|n| n.op == "AssignVariableOp") {
        let (Some(arg), Some(mut v)) = (n.input.first(), n.input.get(1).cloned()) else {
            continue;
        };
        // Follow Identity nodes back to `NODE:tensors:k` of a RestoreV2 node.
        for _ in 0..8 {
            match body.get(BodyRef::node_of(&v)) {
                Some(i) if i.op == "Identity" && !i.input.is_empty() => v = i.input[0].clone(),
                _ => break,
            }
        }
        let mut parts = v.rsplitn(3, ':');
        let (k, out_arg, node) = (parts.next(), parts.next(), parts.next());
        let key = match (node, out_arg, k.and_then(|k| k.parse::<usize>().ok())) {
            (Some(node), Some("tensors"), Some(k)) => keys.get(node).and_then(|ks| ks.get(k)),
            _ => None,
        };
        if let Some(key) = key {
            out.insert(arg.clone(), key.clone());
        }
    }
    out
}

impl SavedModelInfo {
    /// Groups of `VarHandleOp` nodes that hold one model variable (same object-graph variable
    /// name, dtype and shape, restored from different checkpoint keys); groups of two or more.
    pub fn variable_aliases(&self) -> Vec<Vec<String>> {
        let (Some(saver), Some(og)) = (&self.meta.saver_def, &self.meta.object_graph_def) else {
            return Vec::new();
        };
        let nodes = self.nodes();
        let call = nodes
            .iter()
            .find(|n| n.name == TensorRef::node_of(&saver.restore_op_name));
        let lib = self
            .meta
            .graph_def
            .as_ref()
            .map(crate::proto::function_library);
        let (Some(call), Some(lib)) = (call, lib) else {
            return Vec::new();
        };
        let Some(f) = crate::proto::nodes::func_attr(call).and_then(|f| lib.get(f)) else {
            return Vec::new();
        };
        let keys = assigned_keys(f);
        let args = f.signature.iter().flat_map(|s| &s.input_arg);
        let mut by_name: HashMap<(String, i32, String), Vec<String>> = HashMap::new();
        for (a, input) in args.zip(call.input.iter().filter(|i| !i.starts_with('^'))) {
            let Some(path) = keys.get(&a.name).and_then(|k| object_path(k)) else {
                continue;
            };
            let mut id = 0usize;
            for p in &path {
                let child = og
                    .nodes
                    .get(id)
                    .and_then(|o| o.children.iter().find(|c| &c.local_name == p));
                match child {
                    Some(c) => id = c.node_id as usize,
                    None => break,
                }
            }
            if let Some(v) = og.nodes.get(id).and_then(|o| o.variable.as_ref()) {
                let handle = TensorRef::node_of(input).to_string();
                let shape = format!("{:?}", crate::proto::shape_of(&v.shape));
                let key = (v.name.clone(), v.dtype, shape);
                by_name.entry(key).or_default().push(handle);
            }
        }
        let mut groups: Vec<Vec<String>> = by_name
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort();
                g.dedup();
                g
            })
            .filter(|g| g.len() > 1)
            .collect();
        groups.sort();
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::object_path;

    #[test]
    fn checkpoint_keys_name_object_paths() {
        assert_eq!(
            object_path("_all_variables/3/.ATTRIBUTES/VARIABLE_VALUE").unwrap(),
            vec!["_all_variables", "3"]
        );
        assert_eq!(
            object_path("model/a.Sb/..x/.ATTRIBUTES/VARIABLE_VALUE").unwrap(),
            vec!["model", "a/b", ".x"]
        );
        assert!(object_path("_CHECKPOINTABLE_OBJECT_GRAPH").is_none());
    }
}
