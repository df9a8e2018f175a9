//! TF1 Hub format modules (`tfhub_module.pb`): graph variants chosen by tag set, and their ref
//! variables (`VariableV2`) rewritten as resource variables on the proto before import, so the
//! rest of pretext reads, differentiates, updates, checkpoints and exports them as any other.
//!
//! The rewrite keeps every node name: a variable `v` becomes `VarHandleOp v` (shared name `v`:
//! all variants imported into one session share it), its snapshot `v/read` a `ReadVariableOp`,
//! `Assign`/`AssignAdd`/`AssignSub` on it their `*VariableOp` forms (a consumer of their output
//! reads the variable after them), `IsVariableInitialized` a `VarIsInitializedOp`, and any other
//! consumer of the ref (auto-dereferencing) a fresh `ReadVariableOp`. Ops that need a ref input
//! for anything else (`Apply*`, `Scatter*`, `CountUpTo`) are refused, naming the node. The
//! checkpoint key of each variable is its node name, as hub.Module writes and reads it.
use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::nodes::{attr_type, node_def};
use crate::proto::{
    attr_value::Value, AttrValue, GraphDef, MetaGraphDef, NodeDef, TensorRef, VariableDef,
};

/// The file that marks a TF1 Hub format module.
pub const MODULE_FILE: &str = "tfhub_module.pb";
/// The signature `hub.Module` calls when none is named.
pub const DEFAULT_SIGNATURE: &str = "default";

/// Whether `dir` holds a module in the TF1 Hub format.
pub fn is_tf1_hub(dir: &Path) -> bool {
    dir.join(MODULE_FILE).is_file()
}

/// A meta graph's tag set, sorted.
pub fn tags_of(m: &MetaGraphDef) -> Vec<String> {
    let mut t = m
        .meta_info_def
        .as_ref()
        .map(|i| i.tags.clone())
        .unwrap_or_default();
    t.sort();
    t
}

/// `{a, b}` as users write a tag set (`{}` for the empty one).
pub fn show_tags(tags: &[String]) -> String {
    format!("{{{}}}", tags.join(", "))
}

/// The meta graph to load: the one whose tag set is `wanted` (any order), else the default —
/// for a TF1 Hub module the `train` variant when there is one, else the untagged (inference)
/// one; for other SavedModels the one tagged `serve` (or the only one).
pub fn pick<'a>(
    metas: &'a [MetaGraphDef],
    wanted: Option<&[String]>,
    tf1_hub: bool,
    dir: &Path,
) -> Result<&'a MetaGraphDef> {
    let available = || {
        metas
            .iter()
            .map(|m| show_tags(&tags_of(m)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(w) = wanted {
        let mut w: Vec<String> = w.to_vec();
        w.sort();
        w.dedup();
        return metas.iter().find(|m| tags_of(m) == w).ok_or_else(|| {
            Error::config(
                "model.tags",
                format!(
                    "{}: no graph variant tagged {} (available: {})",
                    dir.display(),
                    show_tags(&w),
                    available()
                ),
            )
        });
    }
    let has = |m: &&MetaGraphDef, t: &str| tags_of(m).iter().any(|x| x == t);
    let found = match tf1_hub {
        true => metas
            .iter()
            .find(|m| tags_of(m) == ["train"])
            .or_else(|| metas.iter().find(|m| has(m, "train")))
            .or_else(|| metas.iter().find(|m| tags_of(m).is_empty())),
        false => metas.iter().find(|m| has(m, "serve")),
    };
    found
        .or_else(|| metas.first())
        .ok_or_else(|| Error::NotSavedModel {
            path: dir.into(),
            reason: "saved_model.pb holds no meta graph".into(),
        })
}

/// The inference variant of a TF1 Hub module (untagged, else tagged `serve`), if it is not the
/// one at `chosen`.
pub fn inference_variant<'a>(
    metas: &'a [MetaGraphDef],
    chosen: &[String],
) -> Option<&'a MetaGraphDef> {
    let serve: Vec<String> = vec!["serve".into()];
    metas
        .iter()
        .find(|m| tags_of(m).is_empty())
        .or_else(|| metas.iter().find(|m| tags_of(m) == serve))
        .filter(|m| tags_of(m) != chosen)
}

/// Names listed in collection `key` (node or tensor names, as node names).
pub fn node_collection(m: &MetaGraphDef, key: &str) -> Vec<String> {
    m.collection_def
        .get(key)
        .and_then(|c| c.node_list.as_ref())
        .map(|l| {
            l.value
                .iter()
                .map(|v| TensorRef::node_of(v).to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The `VariableDef`s of collection `key` (`variables`, `trainable_variables`).
pub fn variable_defs(m: &MetaGraphDef, key: &str) -> Result<Vec<VariableDef>> {
    let Some(list) = m
        .collection_def
        .get(key)
        .and_then(|c| c.bytes_list.as_ref())
    else {
        return Ok(Vec::new());
    };
    list.value
        .iter()
        .map(|b| {
            VariableDef::decode(b.as_slice())
                .map_err(|e| Error::graph(key, format!("bad VariableDef in collection: {e}")))
        })
        .collect()
}

/// Ops that take a ref input to update it in place and have no resource form pretext maps.
fn updates_in_place(op: &str) -> bool {
    op.starts_with("Apply")
        || op.starts_with("SparseApply")
        || op.starts_with("Scatter")
        || op.starts_with("Ref")
        || matches!(
            op,
            "CountUpTo" | "StridedSliceAssign" | "DestroyTemporaryVariable"
        )
}

fn attr(n: &NodeDef, k: &str) -> Option<AttrValue> {
    n.attr.get(k).cloned()
}

fn dtype_of(n: &NodeDef, k: &str) -> Result<i32> {
    match n.attr.get(k).and_then(|a| a.value.as_ref()) {
        Some(Value::Type(t)) => Ok(*t),
        _ => Err(Error::graph(
            &n.name,
            format!("{} without a '{k}' attr", n.op),
        )),
    }
}

/// Rewrites the ref variables of `gd` as resource variables (see the module doc); returns the
/// rewritten variables' names. Partitioned variables (`SaveSliceInfoDef`) are refused.
pub fn to_resource(gd: &mut GraphDef, vars: &[VariableDef]) -> Result<Vec<String>> {
    if let Some(v) = vars.iter().find(|v| !v.save_slice_info_def.is_empty()) {
        return Err(Error::graph(
            TensorRef::node_of(&v.variable_name),
            "a partitioned variable (one slice of several); pretext trains whole variables only",
        ));
    }
    let dtype = var_handles(gd)?;
    if dtype.is_empty() {
        return Ok(Vec::new());
    }
    let after_assign = resource_ops(gd, &dtype);
    let extra = fresh_reads(gd, &dtype, &after_assign)?;
    gd.node.extend(extra);
    let mut names: Vec<String> = dtype.into_keys().collect();
    names.sort();
    Ok(names)
}

/// Every `VariableV2` / `Variable` node becomes a `VarHandleOp` of the same name, shared name,
/// shape and device: their dtypes by name.
fn var_handles(gd: &mut GraphDef) -> Result<HashMap<String, i32>> {
    let mut dtype: HashMap<String, i32> = HashMap::new();
    for n in gd
        .node
        .iter_mut()
        .filter(|n| n.op == "VariableV2" || n.op == "Variable")
    {
        let dt = dtype_of(n, "dtype")?;
        let shared = match n.attr.get("shared_name").and_then(|a| a.value.as_ref()) {
            Some(Value::S(s)) if !s.is_empty() => s.clone(),
            _ => n.name.as_bytes().to_vec(),
        };
        let mut attrs = vec![
            ("dtype", attr_type(dt)),
            (
                "shared_name",
                AttrValue {
                    value: Some(Value::S(shared)),
                },
            ),
        ];
        for k in ["shape", "container"] {
            if let Some(a) = attr(n, k) {
                attrs.push((k, a));
            }
        }
        let mut new = node_def(n.name.clone(), "VarHandleOp", vec![], attrs);
        new.device = n.device.clone();
        *n = new;
        dtype.insert(n.name.clone(), dt);
    }
    Ok(dtype)
}

/// The ops on a variable's ref (its read, assignments, initialisation check) become their
/// resource forms. Returns the assignments rewritten: (node → variable, dtype); they had a ref
/// output, the resource forms have none.
fn resource_ops(gd: &mut GraphDef, dtype: &HashMap<String, i32>) -> HashMap<String, (String, i32)> {
    let mut after_assign: HashMap<String, (String, i32)> = HashMap::new();
    for n in gd.node.iter_mut() {
        let first = n
            .input
            .first()
            .filter(|i| !i.starts_with('^'))
            .map(|i| TensorRef::node_of(i).to_string());
        let Some(&dt) = first.as_ref().and_then(|v| dtype.get(v)) else {
            continue;
        };
        let var = first.unwrap_or_default();
        let resource_op = match n.op.as_str() {
            "Identity" => Some("ReadVariableOp"),
            "Assign" => Some("AssignVariableOp"),
            "AssignAdd" => Some("AssignAddVariableOp"),
            "AssignSub" => Some("AssignSubVariableOp"),
            "IsVariableInitialized" => Some("VarIsInitializedOp"),
            _ => None,
        };
        if let Some(op) = resource_op {
            n.op = op.into();
            let keep: &[&str] = match op {
                "VarIsInitializedOp" => &[],
                _ => &["_class"],
            };
            n.attr.retain(|k, _| keep.contains(&k.as_str()));
            if op != "VarIsInitializedOp" {
                n.attr.insert("dtype".into(), attr_type(dt));
            }
            if op.starts_with("Assign") {
                after_assign.insert(n.name.clone(), (var, dt));
            }
        }
    }
    after_assign
}

/// The reads that stand for a dereferenced ref: every other consumer of a variable (or of an
/// assignment's output) reads through a fresh `ReadVariableOp`. Returns the new reads; an op
/// that updates a ref in place, with no resource form, is refused.
fn fresh_reads(
    gd: &mut GraphDef,
    dtype: &HashMap<String, i32>,
    after_assign: &HashMap<String, (String, i32)>,
) -> Result<Vec<NodeDef>> {
    let mut extra: Vec<NodeDef> = Vec::new();
    for n in gd.node.iter_mut() {
        let name = n.name.clone();
        // A fresh read runs when its consumer would have dereferenced the ref: after the
        // consumer's own control inputs.
        let controls: Vec<String> = n
            .input
            .iter()
            .filter(|i| i.starts_with('^'))
            .cloned()
            .collect();
        for (k, inp) in n.input.iter_mut().enumerate() {
            if inp.starts_with('^') {
                continue;
            }
            let src = TensorRef::node_of(inp).to_string();
            if let Some((var, dt)) = after_assign.get(&src) {
                // The value after the assignment: a read ordered after it.
                let read = format!("{name}/pretext_read_{k}");
                extra.push(node_def(
                    read.clone(),
                    "ReadVariableOp",
                    vec![var.clone(), format!("^{src}")],
                    vec![("dtype", attr_type(*dt))],
                ));
                *inp = format!("{read}:0");
                continue;
            }
            let Some(&dt) = dtype.get(&src) else { continue };
            let is_resource_user = k == 0
                && matches!(
                    n.op.as_str(),
                    "ReadVariableOp"
                        | "AssignVariableOp"
                        | "AssignAddVariableOp"
                        | "AssignSubVariableOp"
                        | "VarIsInitializedOp"
                );
            if is_resource_user {
                continue;
            }
            if updates_in_place(&n.op) {
                return Err(Error::graph(
                    &name,
                    format!(
                        "{} updates ref variable '{src}' in place; pretext rewrites ref variables as resource variables and has no resource form of {}",
                        n.op, n.op
                    ),
                ));
            }
            let read = format!("{name}/pretext_read_{k}");
            let mut read_inputs = vec![src.clone()];
            read_inputs.extend(controls.iter().cloned());
            extra.push(node_def(
                read.clone(),
                "ReadVariableOp",
                read_inputs,
                vec![("dtype", attr_type(dt))],
            ));
            *inp = format!("{read}:0");
        }
    }
    Ok(extra)
}

/// Trainable variable names of a TF1 meta graph (its `trainable_variables` collection).
pub fn trainable_names(m: &MetaGraphDef) -> Result<HashSet<String>> {
    Ok(variable_defs(m, "trainable_variables")?
        .into_iter()
        .map(|v| TensorRef::node_of(&v.variable_name).to_string())
        .collect())
}

#[cfg(test)]
#[path = "tf1hub_tests.rs"]
mod tests;
