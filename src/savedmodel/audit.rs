//! The audit of a SavedModel before any of its ops runs: a model is a program (TensorFlow's
//! security guidance), and loading one runs its restore op and its init op at once.
//!
//! Every node that can run is read from `saved_model.pb` alone: the top-level graph, and every
//! library function a node calls (`f`, `then_branch`, `body`, `branches`, … — any function-valued
//! attribute), transitively. Ops that touch files, processes or the network are findings; so are
//! checkpoint ops (Save/Restore) outside the saver, the subgraph `saver_def` names. Reading a
//! vocabulary asset in a table initializer is not a finding. pretext refuses a model with
//! findings unless the user trusts it (`model.trust: true`, `--trust-model`).
use std::collections::{HashMap, HashSet};

use super::SavedModelInfo;
use crate::proto::TensorRef;
use crate::proto::{attr_value::Value, FunctionDef, GraphDef, NodeDef};

/// Why an op is a finding.
fn danger(n: &NodeDef) -> Option<&'static str> {
    let op = n.op.as_str();
    let class = match op {
        "WriteFile"
        | "ReadFile"
        | "MatchingFiles"
        | "ImmutableConst"
        | "LoadAndRemapMatrix"
        | "GenerateVocabRemapping"
        | "RecordInput" => "reads or writes files",
        "WholeFileReader"
        | "WholeFileReaderV2"
        | "TextLineReader"
        | "TextLineReaderV2"
        | "TFRecordReader"
        | "TFRecordReaderV2"
        | "FixedLengthRecordReader"
        | "FixedLengthRecordReaderV2"
        | "IdentityReader"
        | "IdentityReaderV2"
        | "LMDBReader" => "reads files",
        "TFRecordDataset"
        | "TFRecordDatasetV2"
        | "FixedLengthRecordDataset"
        | "FixedLengthRecordDatasetV2"
        | "TextLineDataset"
        | "SqlDataset"
        | "ExperimentalSqlDataset"
        | "LoadDataset"
        | "SaveDataset"
        | "SaveDatasetV2"
        | "SnapshotDataset"
        | "SnapshotDatasetV2"
        | "ExperimentalSnapshotDataset"
        | "DatasetToTFRecord"
        | "ExperimentalDatasetToTFRecord" => "reads or writes files",
        "PyFunc" | "PyFuncStateless" | "EagerPyFunc" => "runs Python code",
        "Rpc" | "TryRpc" => "talks to the network",
        "DebugIdentity"
        | "DebugIdentityV2"
        | "DebugIdentityV3"
        | "DebugNanCount"
        | "DebugNumericSummary"
        | "DebugNumericSummaryV2" => "sends tensors to debug URLs",
        "CreateSummaryFileWriter"
        | "CreateSummaryDbWriter"
        | "SummaryWriter"
        | "WriteSummary"
        | "WriteRawProtoSummary"
        | "WriteScalarSummary"
        | "WriteHistogramSummary"
        | "WriteImageSummary"
        | "WriteAudioSummary"
        | "WriteGraphSummary"
        | "ImportEvent"
        | "FlushSummaryWriter"
        | "CloseSummaryWriter" => "writes summary files",
        "PrintV2" => match n.attr.get("output_stream").and_then(|a| a.value.as_ref()) {
            Some(Value::S(s)) if s.starts_with(b"file://") => "prints to a file",
            _ => return None,
        },
        "DecodeProtoV2" | "EncodeProto" => {
            match n
                .attr
                .get("descriptor_source")
                .and_then(|a| a.value.as_ref())
            {
                Some(Value::S(s)) if !s.is_empty() && s.as_slice() != b"local://" => {
                    "reads a descriptor file"
                }
                _ => return None,
            }
        }
        _ if CHECKPOINT_OPS.contains(&op) => "reads or writes checkpoints outside the saver",
        _ => return None,
    };
    Some(class)
}

/// Checkpoint ops: allowed only in the saver's own subgraph.
const CHECKPOINT_OPS: &[&str] = &[
    "Save",
    "SaveV2",
    "SaveSlices",
    "Restore",
    "RestoreV2",
    "RestoreSlice",
    "MergeV2Checkpoints",
];

/// One op the audit refuses: where it is and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The library function holding the node; None for the top-level graph.
    pub function: Option<String>,
    pub node: String,
    pub op: String,
    pub why: &'static str,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.function {
            Some(func) => write!(
                f,
                "function {func}, node {} ({}: {})",
                self.node, self.op, self.why
            ),
            None => write!(f, "graph node {} ({}: {})", self.node, self.op, self.why),
        }
    }
}

/// The functions a node calls through its attributes.
fn called(n: &NodeDef) -> Vec<&str> {
    let mut out = Vec::new();
    for a in n.attr.values() {
        match &a.value {
            Some(Value::Func(f)) => out.push(f.name.as_str()),
            Some(Value::List(l)) => out.extend(l.func.iter().map(|f| f.name.as_str())),
            _ => {}
        }
    }
    out
}

/// The deepest function-call nesting a model may have (Keras nests a handful).
pub const MAX_CALL_DEPTH: usize = 64;

/// Refuses a function library whose call graph has a cycle or nests deeper than
/// `MAX_CALL_DEPTH`: TF functions cannot recurse, and TF's own shape inference recurses
/// without end (a stack overflow that kills the process) when a model says they do.
pub fn check_call_graph<'a>(gd: &'a GraphDef) -> std::result::Result<(), String> {
    let lib = crate::proto::function_library(gd);
    fn callees_of<'g>(lib: &HashMap<&'g str, &'g FunctionDef>, f: &'g FunctionDef) -> Vec<&'g str> {
        let mut v: Vec<&str> = f
            .node_def
            .iter()
            .flat_map(|n| {
                let mut c = called(n);
                if lib.contains_key(n.op.as_str()) {
                    c.push(n.op.as_str());
                }
                c
            })
            .filter(|c| lib.contains_key(c))
            .collect();
        v.sort();
        v.dedup();
        v
    }
    let callees = |f: &'a FunctionDef| callees_of(&lib, f);
    // Iterative depth-first search: 1 = on the current path, 2 = done (with its depth).
    let mut state: HashMap<&str, (u8, usize)> = HashMap::new();
    for &root in lib.keys() {
        if state.contains_key(root) {
            continue;
        }
        let mut path: Vec<(&str, Vec<&str>)> = vec![(root, callees(lib[root]))];
        state.insert(root, (1, 0));
        while let Some((f, todo)) = path.last_mut() {
            let f = *f;
            match todo.pop() {
                Some(c) => {
                    match state.get(c) {
                        Some((1, _)) => {
                            let cycle: Vec<&str> = path
                                .iter()
                                .map(|(n, _)| *n)
                                .skip_while(|n| *n != c)
                                .collect();
                            return Err(format!("function '{c}' calls itself ({} -> {c}); TF functions cannot recurse", cycle.join(" -> ")));
                        }
                        Some((_, d)) if *d + 1 + path.len() > MAX_CALL_DEPTH => {
                            return Err(format!("function calls nest deeper than {MAX_CALL_DEPTH} levels (through '{f}')"));
                        }
                        Some(_) => {}
                        None => {
                            if path.len() >= MAX_CALL_DEPTH {
                                return Err(format!("function calls nest deeper than {MAX_CALL_DEPTH} levels (through '{f}')"));
                            }
                            state.insert(c, (1, 0));
                            path.push((c, callees(lib[c])));
                        }
                    }
                }
                None => {
                    let depth = callees(lib[f])
                        .iter()
                        .map(|c| state.get(c).map(|s| s.1 + 1).unwrap_or(0))
                        .max()
                        .unwrap_or(0);
                    state.insert(f, (2, depth));
                    path.pop();
                }
            }
        }
    }
    Ok(())
}

/// The top-level nodes the saver runs (the save and restore ops and what they read), by name.
fn saver_nodes(info: &SavedModelInfo) -> HashSet<String> {
    let by_name: HashMap<&str, &NodeDef> =
        info.nodes().iter().map(|n| (n.name.as_str(), n)).collect();
    let mut stack: Vec<String> = info
        .meta
        .saver_def
        .iter()
        .flat_map(|s| {
            [
                &s.save_tensor_name,
                &s.restore_op_name,
                &s.filename_tensor_name,
            ]
        })
        .filter(|t| !t.is_empty())
        .map(|t| TensorRef::node_of(t.trim_start_matches('^')).to_string())
        .collect();
    let mut seen = HashSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        if let Some(nd) = by_name.get(n.as_str()) {
            stack.extend(
                nd.input
                    .iter()
                    .map(|i| TensorRef::node_of(i.trim_start_matches('^')).to_string()),
            );
        }
    }
    seen
}

/// Every finding in the model (module doc), top-level graph first, then functions by name.
pub fn audit(info: &SavedModelInfo) -> Vec<Finding> {
    let lib: HashMap<&str, &FunctionDef> = info
        .meta
        .graph_def
        .iter()
        .flat_map(|g| g.library.iter())
        .flat_map(|l| l.function.iter())
        .filter_map(|f| Some((f.signature.as_ref()?.name.as_str(), f)))
        .collect();
    let saver = saver_nodes(info);
    let mut findings = Vec::new();
    // (function, whether it runs for the saver), breadth first from the top-level graph.
    let mut queue: Vec<(&str, bool)> = Vec::new();
    for n in info.nodes() {
        let in_saver = saver.contains(&n.name);
        if let Some(why) =
            danger(n).filter(|_| !(in_saver && CHECKPOINT_OPS.contains(&n.op.as_str())))
        {
            findings.push(Finding {
                function: None,
                node: n.name.clone(),
                op: n.op.clone(),
                why,
            });
        }
        queue.extend(called(n).into_iter().map(|f| (f, in_saver)));
    }
    let mut seen: HashSet<(&str, bool)> = HashSet::new();
    let mut found_in: HashSet<(String, String)> = HashSet::new();
    while let Some((fname, in_saver)) = queue.pop() {
        if !seen.insert((fname, in_saver)) {
            continue;
        }
        let Some(f) = lib.get(fname) else { continue };
        for n in &f.node_def {
            let allowed = in_saver && CHECKPOINT_OPS.contains(&n.op.as_str());
            if let Some(why) = danger(n).filter(|_| !allowed) {
                if found_in.insert((fname.to_string(), n.name.clone())) {
                    findings.push(Finding {
                        function: Some(fname.to_string()),
                        node: n.name.clone(),
                        op: n.op.clone(),
                        why,
                    });
                }
            }
            queue.extend(called(n).into_iter().map(|g| (g, in_saver)));
        }
    }
    findings.sort_by(|a, b| (&a.function, &a.node).cmp(&(&b.function, &b.node)));
    findings
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
