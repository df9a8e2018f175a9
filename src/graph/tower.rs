//! `Tower`: a flat graph imported into the loaded model's graph under a prefix, its
//! placeholders bound to the model's own tensors (so it reads the same variables), and the
//! handles through which training reaches them.
use std::collections::HashMap;

use prost::Message;
use tensorflow::{ImportGraphDefOptions, Operation, Output};

use super::{custom, replicate, FlatGraph};
use crate::error::{Error, Result, TfContext};
use crate::proto::TensorRef;
use crate::savedmodel::Loaded;

/// A tower imported into a loaded model's graph: its new inputs, its outputs and, per model
/// variable (by handle name), the ReadVariableOp outputs through which the tower reads it.
pub struct Tower {
    pub prefix: String,
    pub inputs: Vec<Output>,
    pub outputs: Vec<Output>,
    /// (the variable's `VarHandleOp` node name, a ReadVariableOp output of this tower): one per
    /// read, so a variable read twice appears twice.
    pub reads: Vec<(String, Output)>,
    /// Its custom gradients and backward stages (names un-prefixed; empty without stages).
    pub backward: std::sync::Arc<custom::Backward>,
    /// Flat placeholders mapped at import (externals, given inputs) → what they stand for: the
    /// imported placeholder itself is left unconnected.
    pub mapped: HashMap<String, Output>,
    /// The model's own update ops as imported in this tower (`FlatGraph::updates`).
    pub updates: Vec<Operation>,
    /// Replicas imported at once (`FlatGraph::replicas`): `inputs` and `outputs` hold each
    /// replica's in turn.
    pub replicas: usize,
    /// Moving statistics computed across the replicas (`FlatGraph::moving`; names un-prefixed).
    pub moving: std::collections::BTreeMap<String, replicate::Moving>,
}

impl Tower {
    /// Imports `flat` under `prefix` (optionally with every node on `device`), mapping its external references
    /// onto the existing graph's tensors (the model's `VarHandleOp`s, so the variables are shared).
    /// `inputs`, if given, replace the tower's own input placeholders (one per signature input).
    pub fn import(
        model: &mut Loaded,
        flat: &FlatGraph,
        prefix: &str,
        device: Option<&str>,
        inputs: Option<&[Output]>,
    ) -> Result<Tower> {
        let externals = flat
            .external
            .iter()
            .map(|e| model.output(e.outer.as_tensor_ref()))
            .collect::<Result<Vec<_>>>()?;
        Self::import_mapped(model, flat, prefix, device, inputs, &externals)
    }

    /// As `import`, with the flat graph's external references bound to `externals` (one per
    /// `flat.external` entry) — e.g. a momentum encoder's own copies of the variables.
    pub fn import_mapped(
        model: &mut Loaded,
        flat: &FlatGraph,
        prefix: &str,
        device: Option<&str>,
        inputs: Option<&[Output]>,
        externals: &[Output],
    ) -> Result<Tower> {
        let opts = import_options(flat, prefix, inputs, externals)?;
        // On a device, every node goes there (a device the model's graph names included).
        let bytes = match device {
            Some(d) => {
                let mut gd = flat.graph_def.clone();
                gd.node.iter_mut().for_each(|n| n.device = d.to_string());
                gd.encode_to_vec()
            }
            None => flat.graph_def.encode_to_vec(),
        };
        model
            .scope
            .graph_mut()
            .import_graph_def(&bytes, &opts)
            .tf_ctx(|| format!("importing the inlined signature as '{prefix}'"))?;
        let find = |t: &str| model.prefixed(prefix, TensorRef::parse(t));
        let inputs = match inputs {
            Some(given) => given.to_vec(),
            None => flat
                .inputs
                .iter()
                .map(|t| find(t))
                .collect::<Result<Vec<_>>>()?,
        };
        let outputs = flat
            .outputs
            .iter()
            .map(|t| find(t))
            .collect::<Result<Vec<_>>>()?;
        let reads = reads_of(model, flat, prefix)?;
        let mut mapped: HashMap<String, Output> = flat
            .external
            .iter()
            .zip(externals)
            .map(|(e, o)| (e.placeholder.clone(), o.clone()))
            .collect();
        for (t, o) in flat.inputs.iter().zip(&inputs) {
            mapped.insert(TensorRef::node_of(t).to_string(), o.clone());
        }
        let backward = match flat.backward.stages.is_empty() {
            true => Default::default(),
            false => std::sync::Arc::new(flat.backward.clone()),
        };
        let updates = flat
            .updates
            .iter()
            .map(|u| model.op(&format!("{prefix}/{u}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tower {
            prefix: prefix.into(),
            inputs,
            outputs,
            reads,
            backward,
            mapped,
            updates,
            replicas: flat.replicas,
            moving: flat.moving.clone(),
        })
    }

    /// Output `i` of the signature, one per replica (device order).
    pub fn replica_outputs(&self, i: usize) -> Vec<Output> {
        let per = self.outputs.len() / self.replicas.max(1);
        (0..self.replicas)
            .map(|k| self.outputs[k * per + i].clone())
            .collect()
    }
}

/// The import's options: the prefix, externals bound to `externals`, and the tower's input
/// placeholders replaced by `inputs` when given.
fn import_options(
    flat: &FlatGraph,
    prefix: &str,
    inputs: Option<&[Output]>,
    externals: &[Output],
) -> Result<ImportGraphDefOptions> {
    let mut opts = ImportGraphDefOptions::new();
    opts.set_prefix(prefix)
        .map_err(|e| Error::graph(prefix, e.to_string()))?;
    for (e, out) in flat.external.iter().zip(externals) {
        opts.add_input_mapping(&e.placeholder, 0, out)
            .map_err(|err| Error::graph(&e.placeholder, err.to_string()))?;
    }
    let Some(given) = inputs else {
        return Ok(opts);
    };
    if given.len() != flat.inputs.len() {
        return Err(Error::graph(
            prefix,
            format!(
                "tower takes {} inputs, {} given",
                flat.inputs.len(),
                given.len()
            ),
        ));
    }
    for (t, o) in flat.inputs.iter().zip(given) {
        let TensorRef { node: n, index: i } = TensorRef::parse(t);
        opts.add_input_mapping(n, i.max(0) as usize, o)
            .map_err(|e| Error::graph(t, e.to_string()))?;
    }
    Ok(opts)
}

/// Each variable read of the tower imported under `prefix`: (handle node, read output).
fn reads_of(model: &Loaded, flat: &FlatGraph, prefix: &str) -> Result<Vec<(String, Output)>> {
    let mut reads = Vec::new();
    for n in flat
        .graph_def
        .node
        .iter()
        .filter(|n| n.op == "ReadVariableOp")
    {
        let op = model.op(&format!("{prefix}/{}", n.name))?;
        if let Some(h) = resolve_handle(&op.input(0).0) {
            reads.push((
                h,
                Output {
                    operation: op,
                    index: 0,
                },
            ));
        }
    }
    Ok(reads)
}

impl Tower {
    /// Flat tensor `t` of this tower as imported (a mapped placeholder: what it stands for).
    pub fn tensor(&self, scope: &tensorflow::Scope, t: &str) -> Result<Output> {
        let r = TensorRef::parse(t);
        if let (Some(o), 0) = (self.mapped.get(r.node), r.index) {
            return Ok(o.clone());
        }
        let name = format!("{}/{}", self.prefix, r.node);
        let op = scope
            .graph()
            .operation_by_name_required(&name)
            .map_err(|e| Error::graph(&name, e.to_string()))?;
        Ok(Output {
            operation: op,
            index: r.index.max(0),
        })
    }

    /// For each switched batch norm (see `bn::set_training`): (moving-mean handle, new value),
    /// (moving-variance handle, new value) — the op's running-average outputs 1 and 2.
    pub fn bn_updates(&self, model: &Loaded, switched: &[String]) -> Result<Vec<(Output, Output)>> {
        let mut out = Vec::new();
        for name in switched {
            if let Some(m) = self.moving.get(name) {
                for (read, value) in m.reads.iter().zip(&m.values) {
                    let read = model
                        .prefixed(&self.prefix, TensorRef::parse(read))?
                        .operation;
                    let handle = resolve_handle(&read.input(0).0).ok_or_else(|| {
                        Error::graph(name, "moving statistic is not read from a variable")
                    })?;
                    out.push((
                        model.handle(&handle)?,
                        model.prefixed(&self.prefix, TensorRef::parse(value))?,
                    ));
                }
                continue;
            }
            let op = model.op(&format!("{}/{name}", self.prefix))?;
            for (input, output) in [(3, 1), (4, 2)] {
                let read = op.input(input).0;
                let handle = resolve_handle(&read.input(0).0).ok_or_else(|| {
                    Error::graph(name, "moving statistic is not read from a variable")
                })?;
                out.push((
                    model.handle(&handle)?,
                    Output {
                        operation: op.clone(),
                        index: output,
                    },
                ));
            }
        }
        Ok(out)
    }
}

/// Follows a resource tensor back through Identity ops to the VarHandleOp it came from.
pub fn resolve_handle(op: &Operation) -> Option<String> {
    let mut op = op.clone();
    for _ in 0..64 {
        match op.op_type().ok()?.as_str() {
            "VarHandleOp" => return op.name().ok(),
            "Identity" => op = op.input(0).0,
            _ => return None,
        }
    }
    None
}
