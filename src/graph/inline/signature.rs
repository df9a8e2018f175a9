//! `inline_signature`: one signature of the SavedModel as a flat GraphDef (`FlatGraph`). The
//! top-level nodes that depend on its inputs are copied (their calls inlined by `Inliner`);
//! everything else, variables included, stays in the loaded graph behind `External`
//! placeholders mapped at import.
use std::collections::{BTreeMap, HashMap, HashSet};

use tensorflow::Graph;

use super::{clean_attrs, Inliner, Translated};
use crate::error::{Error, Result};
use crate::graph::control_flow::ControlFlow;
use crate::graph::custom::{functions_used, inline_function, Backward, Recorder};
use crate::graph::{inputs, replicate, topo};
use crate::proto::opdefs::arg_len;
use crate::proto::{GraphDef, NodeDef, TensorId, TensorRef};
use crate::savedmodel::{SavedModelInfo, Signature};

/// The inlined signature, ready to import under a prefix.
#[derive(Debug, Clone)]
pub struct FlatGraph {
    /// Nodes with un-prefixed names; no function calls on the serving path.
    pub graph_def: GraphDef,
    /// New input tensors, in signature input (key) order, as `graph_def`'s nodes name them.
    pub inputs: Vec<String>,
    /// Output tensors, in signature output (key) order, as `graph_def`'s nodes name them.
    pub outputs: Vec<String>,
    /// Placeholders standing for tensors of the loaded graph: mapped on import.
    pub external: Vec<External>,
    /// Its custom gradients and the backward stages planned around them.
    pub backward: Backward,
    /// The model's own update ops that depend on the inputs (a TF1 graph's UPDATE_OPS: batch
    /// norm moving averages), copied with the forward: run after each step (first tower).
    pub updates: Vec<String>,
    /// Its functional control-flow nodes (`If`, `Case`, `While`), in inlining order, and how
    /// each was handled (`graph::control_flow`).
    pub control_flow: Vec<ControlFlow>,
    /// Replicas the graph holds (`graph::replicate`): inputs and outputs are per replica, in
    /// device order; 1 for a plain tower.
    pub replicas: usize,
    /// Batch norms whose moving statistics a replicated graph computes across its replicas.
    pub moving: BTreeMap<String, replicate::Moving>,
}

impl FlatGraph {
    /// Placeholder node name → the outer op it stands for (for a model variable, its
    /// `VarHandleOp`), from `external`.
    pub fn external_ops(&self) -> HashMap<&str, &str> {
        self.external
            .iter()
            .map(|e| (e.placeholder.as_str(), e.outer.node.as_str()))
            .collect()
    }
}

/// A placeholder of a flat graph and the tensor of the loaded graph it stands for (a model
/// variable's handle, a constant the signature does not depend on).
#[derive(Debug, Clone, PartialEq)]
pub struct External {
    /// Its node in `FlatGraph::graph_def` (output 0 is the tensor).
    pub placeholder: String,
    /// What it stands for, in the loaded graph.
    pub outer: TensorId,
}

/// Inlines signature `sig` of the SavedModel into a flat GraphDef.
pub fn inline_signature(
    info: &SavedModelInfo,
    sig: &Signature,
    graph: &Graph,
) -> Result<FlatGraph> {
    let gd = info
        .meta
        .graph_def
        .as_ref()
        .ok_or_else(|| Error::graph("saved_model.pb", "meta graph has no graph_def"))?;
    let lib = crate::proto::function_library(gd);
    let mut inl = Inliner::new(lib, graph, Some(Recorder::new(info.saved_gradients()?)));
    let nodes: HashMap<&str, &NodeDef> = gd.node.iter().map(|n| (n.name.as_str(), n)).collect();
    // New inputs, one per signature input.
    let (input_nodes, inputs) = inputs::placeholders(&mut inl.out, sig);
    let update_ops = info.update_ops();
    let roots = roots(&nodes, sig, &update_ops)?;
    // Which top-level nodes depend on the inputs (those must be copied).
    let inputs_at: HashSet<&str> = input_nodes.keys().copied().collect();
    let (order, depends) = topo::nodes_to_copy(&nodes, &inputs_at, &roots);
    let mut top = TopLevel {
        input_nodes,
        tr: HashMap::new(),
    };
    for &n in &order {
        if depends.contains(n) && !top.input_nodes.contains_key(n) {
            let t = top.copy(&mut inl, nodes[n])?;
            top.tr.insert(n, t);
        }
    }
    let outputs = sig
        .outputs
        .iter()
        .map(|o| top.tensor(&mut inl, &o.tensor))
        .collect::<Result<Vec<_>>>()?;
    let updates = top.updates(&update_ops, sig);
    let backward = backward(&mut inl)?;
    Ok(FlatGraph {
        graph_def: GraphDef {
            node: inl.out,
            library: None,
            versions: gd.versions.clone(),
        },
        inputs,
        outputs,
        external: inl.external,
        backward,
        updates,
        control_flow: inl.control_flow.nodes,
        replicas: 1,
        moving: Default::default(),
    })
}

/// The nodes the flat graph must compute: the signature's outputs and the graph's update ops,
/// each checked to exist.
fn roots<'g>(
    nodes: &HashMap<&'g str, &'g NodeDef>,
    sig: &'g Signature,
    update_ops: &'g [String],
) -> Result<Vec<&'g str>> {
    let mut roots = Vec::new();
    for o in &sig.outputs {
        let n = TensorRef::node_of(&o.tensor);
        if !nodes.contains_key(n) {
            return Err(Error::graph(
                n,
                format!(
                    "signature '{}' names an output node that is not in the graph",
                    sig.name
                ),
            ));
        }
        roots.push(n);
    }
    for u in update_ops {
        if !nodes.contains_key(u.as_str()) {
            return Err(Error::graph(u, "listed in UPDATE_OPS but not in the graph"));
        }
        roots.push(u.as_str());
    }
    Ok(roots)
}

/// The top level's translation so far: the signature inputs' placeholders and what each
/// copied node became.
struct TopLevel<'g> {
    input_nodes: HashMap<&'g str, String>,
    tr: HashMap<&'g str, Translated>,
}

impl<'g> TopLevel<'g> {
    /// Top-level tensor `t` in the flat graph: an input placeholder, a copied node's output,
    /// or an external placeholder for a tensor left in the loaded graph.
    fn tensor(&self, inl: &mut Inliner<'g>, t: &str) -> Result<String> {
        let TensorRef { node: n, index: i } = TensorRef::parse(t);
        if let Some(inp) = self.input_nodes.get(n) {
            return Ok(format!("{inp}:0"));
        }
        match self.tr.get(n) {
            Some(Translated::Node(f)) => Ok(format!("{f}:{}", i.max(0))),
            Some(Translated::Call { rets, .. }) => rets
                .get(i.max(0) as usize)
                .cloned()
                .ok_or_else(|| Error::graph(t, "call output out of range")),
            None => inl.external(t),
        }
    }

    /// Copies top-level node `nd`: a call (or a functional If/Case on a constant) is inlined,
    /// any other op is copied as it is, after checking that TF knows it.
    fn copy(&self, inl: &mut Inliner<'g>, nd: &'g NodeDef) -> Result<Translated> {
        let n = nd.name.as_str();
        let mut data = Vec::new();
        let mut controls = Vec::new();
        for i in &nd.input {
            match i.strip_prefix('^') {
                // After a copied node as in the model; a node left in the loaded graph does
                // not depend on the inputs, so it has run (or never needs to) already.
                Some(c) => controls.extend(self.tr.get(c).map(Inliner::control_of)),
                None => data.push(self.tensor(inl, i)?),
            }
        }
        if let Some(callee) = inl.callee(nd) {
            return inl.inline_fn(callee, data, controls, n);
        }
        if let Some((f, args)) = inl.taken_branch(nd, &data, n) {
            return inl.inline_fn(&f, args, controls, n);
        }
        let def = inl.opdefs.get(inl.graph, &nd.op, n)?.clone();
        for a in &def.output_arg {
            arg_len(a, nd)?;
        }
        let mut input = data;
        input.extend(controls);
        inl.out.push(NodeDef {
            name: n.to_string(),
            op: nd.op.clone(),
            input,
            device: String::new(),
            attr: clean_attrs(nd),
        });
        Ok(Translated::Node(n.to_string()))
    }

    /// The update ops that were copied (they depend on the inputs); the others are said once.
    fn updates(&self, update_ops: &[String], sig: &Signature) -> Vec<String> {
        let mut updates = Vec::new();
        let mut idle = Vec::new();
        for u in update_ops {
            match self.tr.get(u.as_str()) {
                Some(Translated::Node(f)) => updates.push(f.clone()),
                _ => idle.push(u.as_str()),
            }
        }
        if let Some(first) = idle.first() {
            log::warn!(
                "{} update op(s) of the graph do not depend on the inputs of signature '{}' and are not run (e.g. '{first}')",
                idle.len(),
                sig.name
            );
        }
        updates
    }
}

/// The custom gradients recorded while inlining, and their gradient functions inlined. A
/// gradient function that does not inline makes its nodes unusable (said when training needs
/// them), not the signature.
fn backward(inl: &mut Inliner) -> Result<Backward> {
    let mut custom = inl
        .rec
        .take()
        .map(Recorder::finish)
        .transpose()?
        .unwrap_or_default();
    let mut grad_fns = BTreeMap::new();
    for f in functions_used(&custom).into_keys() {
        match inline_function(&inl.lib, inl.graph, &f) {
            Ok(flat) => {
                grad_fns.insert(f, flat);
            }
            Err(e) => {
                for c in custom
                    .iter_mut()
                    .filter(|c| c.saved.as_ref().map(|s| &s.function) == Some(&f))
                {
                    c.saved = None;
                    c.unusable = Some(format!("its gradient function {f} does not inline: {e}"));
                }
            }
        }
    }
    Ok(Backward {
        custom,
        grad_fns,
        stages: Vec::new(),
    })
}
