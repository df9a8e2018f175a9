//! Function inlining: a signature's (nested) call nodes become plain nodes of one flat GraphDef.
//! Like a model patch with an old→new outlet map: every tensor of the original program is
//! translated to a tensor of the flat graph (`Translate`), and nothing of the original is touched.
use std::collections::{BTreeMap, HashMap, HashSet};

use tensorflow::Graph;

use super::control_flow::{taken_branch, ControlFlow, Record};
use super::custom::{functions_used, inline_function, Backward, Recorder};
use super::topo::topo_order;
use super::{attr_type, func_attr};
use crate::error::{Error, Result};
use crate::proto::dtype_code;
use crate::proto::opdefs::{arg_len, flat_output_index, OpDefs};
use crate::proto::TensorRef;
use crate::proto::{AttrValue, FunctionDef, GraphDef, NodeDef};
use crate::savedmodel::{SavedModelInfo, Signature};

/// The inlined signature, ready to import under a prefix.
#[derive(Debug, Clone)]
pub struct FlatGraph {
    /// Nodes with un-prefixed names; no function calls on the serving path.
    pub graph_def: GraphDef,
    /// New input tensors, in signature input (key) order.
    pub inputs: Vec<String>,
    /// Output tensors, in signature output (key) order.
    pub outputs: Vec<String>,
    /// (placeholder node in `graph_def`, existing tensor it stands for): mapped on import.
    pub external: Vec<(String, String)>,
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
    pub moving: std::collections::BTreeMap<String, super::replicate::Moving>,
}

/// What an original node became.
#[derive(Clone)]
enum Translated {
    /// A plain node, now named so in the flat graph.
    Node(String),
    /// A call: the flat tensors of its results and a NoOp standing for its completion.
    Call { rets: Vec<String>, done: String },
}

struct Inliner<'a> {
    lib: HashMap<&'a str, &'a FunctionDef>,
    graph: &'a Graph,
    opdefs: OpDefs,
    out: Vec<NodeDef>,
    external: Vec<(String, String)>,
    ext_of: HashMap<String, String>,
    /// Records custom-gradient nodes (not inside gradient functions themselves).
    rec: Option<Recorder>,
    /// Control-flow nodes met, and how each was handled.
    control_flow: Record,
}

/// The most nodes one inlined signature may have: far beyond any model, and a bound on hostile
/// call trees that double at every level (recursion and depth are refused earlier, by
/// `savedmodel::audit::check_call_graph` in `SavedModelInfo::read`).
const MAX_INLINED_NODES: usize = 2_000_000;

fn clean_attrs(n: &NodeDef) -> HashMap<String, AttrValue> {
    n.attr
        .iter()
        .filter(|(k, _)| k.as_str() != "_class")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl<'a> Inliner<'a> {
    fn callee(&self, n: &'a NodeDef) -> Option<&'a str> {
        func_attr(n).or_else(|| {
            self.lib
                .get(n.op.as_str())
                .map(|f| f.signature.as_ref().map(|s| s.name.as_str()).unwrap_or(""))
        })
    }

    /// Translates `node:out_arg:idx` (or a bare argument name) inside a function body.
    fn body_tensor(
        &mut self,
        s: &str,
        body: &HashMap<&str, &NodeDef>,
        tr: &HashMap<String, Translated>,
        args: &HashMap<&str, String>,
    ) -> Result<String> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [arg] => args
                .get(arg)
                .cloned()
                .ok_or_else(|| Error::graph(*arg, "unknown function argument")),
            [node, arg, idx] => {
                let idx: usize = idx
                    .parse()
                    .map_err(|_| Error::graph(s, "bad tensor index"))?;
                match tr.get(*node) {
                    Some(Translated::Call { rets, .. }) => {
                        let nd = body[node];
                        let k = if arg == &"output" {
                            idx
                        } else {
                            let f = self.lib[self.callee(nd).unwrap_or_default()];
                            let sig = f
                                .signature
                                .as_ref()
                                .ok_or_else(|| Error::graph(*node, "callee has no signature"))?;
                            sig.output_arg
                                .iter()
                                .position(|a| a.name == *arg)
                                .ok_or_else(|| Error::graph(s, "no such callee output"))?
                                + idx
                        };
                        rets.get(k)
                            .cloned()
                            .ok_or_else(|| Error::graph(s, "call output index out of range"))
                    }
                    Some(Translated::Node(flat)) => {
                        let nd = body[node];
                        let def = self.opdefs.get(self.graph, &nd.op, &nd.name)?.clone();
                        Ok(format!("{flat}:{}", flat_output_index(&def, nd, arg, idx)?))
                    }
                    None => Err(Error::graph(
                        s,
                        "input names a node that is not in the function body",
                    )),
                }
            }
            _ => Err(Error::graph(s, "unparseable input name")),
        }
    }

    fn control_of(tr: &Translated) -> String {
        match tr {
            Translated::Node(n) => format!("^{n}"),
            Translated::Call { done, .. } => format!("^{done}"),
        }
    }

    /// Inlines function `fname` applied to `args`, emitting nodes under `scope`.
    fn inline_fn(
        &mut self,
        fname: &str,
        args: Vec<String>,
        ctrl: Vec<String>,
        scope: &str,
    ) -> Result<Translated> {
        let f: &'a FunctionDef = self.lib.get(fname).copied().ok_or_else(|| {
            Error::graph(scope, format!("function '{fname}' is not in the library"))
        })?;
        let sig = f
            .signature
            .as_ref()
            .ok_or_else(|| Error::graph(fname, "function without signature"))?;
        if sig.input_arg.len() != args.len() {
            return Err(Error::graph(
                scope,
                format!(
                    "call of '{fname}' passes {} inputs, the function takes {}",
                    args.len(),
                    sig.input_arg.len()
                ),
            ));
        }
        let argmap: HashMap<&str, String> = sig
            .input_arg
            .iter()
            .map(|a| a.name.as_str())
            .zip(args)
            .collect();
        let body: HashMap<&str, &NodeDef> =
            f.node_def.iter().map(|n| (n.name.as_str(), n)).collect();
        let deps = |n: &'a str| -> Vec<&'a str> {
            body.get(n)
                .map(|nd| {
                    nd.input
                        .iter()
                        .map(|i| TensorRef::body_node_of(i))
                        .filter(|d| body.contains_key(d))
                        .collect()
                })
                .unwrap_or_default()
        };
        let roots: Vec<&str> = f.node_def.iter().map(|n| n.name.as_str()).collect();
        let order = topo_order(&roots, deps);
        let mut tr: HashMap<String, Translated> = HashMap::new();
        for name in order {
            let nd = body[name];
            let mut data = Vec::new();
            let mut controls = Vec::new();
            for i in &nd.input {
                if let Some(c) = i.strip_prefix('^') {
                    match (tr.get(c), argmap.get(c)) {
                        (Some(t), _) => controls.push(Self::control_of(t)),
                        // On an argument: after the node that produces it.
                        (None, Some(a)) => controls.push(format!("^{}", TensorRef::node_of(a))),
                        (None, None) => {
                            return Err(Error::graph(
                                &nd.name,
                                format!("control input '{c}' not found"),
                            ))
                        }
                    }
                } else {
                    data.push(self.body_tensor(i, &body, &tr, &argmap)?);
                }
            }
            let flat_name = format!("{scope}/{name}");
            if self.out.len() > MAX_INLINED_NODES {
                return Err(Error::graph(
                    &flat_name,
                    format!("the inlined signature passes {MAX_INLINED_NODES} nodes"),
                ));
            }
            let t = if let Some(callee) = self.callee(nd) {
                let mut c = ctrl.clone();
                c.extend(controls);
                self.inline_fn(callee, data, c, &flat_name)?
            } else if let Some((f, args)) = self.taken_branch(nd, &data, &flat_name) {
                let mut c = ctrl.clone();
                c.extend(controls);
                self.inline_fn(&f, args, c, &flat_name)?
            } else {
                let mut input = data;
                let n_data = input.len();
                input.extend(controls);
                input.extend(ctrl.iter().cloned());
                if let Some(mut rec) = self.rec.take() {
                    let r = rec.record(nd, &flat_name, n_data, |t| self.external(t));
                    self.rec = Some(rec);
                    r?;
                }
                self.out.push(NodeDef {
                    name: flat_name.clone(),
                    op: nd.op.clone(),
                    input,
                    device: String::new(),
                    attr: clean_attrs(nd),
                });
                Translated::Node(flat_name)
            };
            tr.insert(name.to_string(), t);
        }
        let mut rets = Vec::new();
        for a in &sig.output_arg {
            let r = f
                .ret
                .get(&a.name)
                .ok_or_else(|| Error::graph(fname, format!("no return value for '{}'", a.name)))?;
            rets.push(self.body_tensor(r, &body, &tr, &argmap)?);
        }
        let mut done_inputs: Vec<String> = f
            .control_ret
            .values()
            .filter_map(|n| tr.get(n.as_str()))
            .map(Self::control_of)
            .collect();
        done_inputs.extend(rets.iter().map(|r| format!("^{}", TensorRef::node_of(r))));
        done_inputs.sort();
        done_inputs.dedup();
        if let Some(rec) = self.rec.as_mut() {
            rec.resolve(fname, |t| match (argmap.get(t.node), tr.get(t.node)) {
                (Some(a), _) if t.index == 0 => Ok(a.clone()),
                (_, Some(Translated::Node(n))) => Ok(format!("{n}:{}", t.index)),
                (_, Some(Translated::Call { rets, .. })) => rets
                    .get(t.index as usize)
                    .cloned()
                    .ok_or_else(|| Error::graph(t.node, "call output out of range")),
                _ => Err(Error::graph(t.node, "not in the function body")),
            })?;
        }
        let done = format!("{scope}/__done");
        self.out.push(NodeDef {
            name: done.clone(),
            op: "NoOp".into(),
            input: done_inputs,
            ..Default::default()
        });
        Ok(Translated::Call { rets, done })
    }

    /// `control_flow::taken_branch` on this inliner's nodes.
    fn taken_branch(
        &mut self,
        nd: &NodeDef,
        data: &[String],
        flat: &str,
    ) -> Option<(String, Vec<String>)> {
        taken_branch(nd, data, flat, &self.out, &mut self.control_flow)
    }

    /// A placeholder standing for an existing tensor of the loaded graph.
    fn external(&mut self, tensor: &str) -> Result<String> {
        if let Some(p) = self.ext_of.get(tensor) {
            return Ok(format!("{p}:0"));
        }
        let TensorRef { node: n, index: i } = TensorRef::parse(tensor);
        let op = self
            .graph
            .operation_by_name(n)
            .ok()
            .flatten()
            .ok_or_else(|| Error::graph(n, "not in the loaded graph"))?;
        let dt = dtype_code(op.output_type(i.max(0) as usize));
        let name = format!("pretext_external/{}", self.external.len());
        let mut attr = HashMap::new();
        attr.insert("dtype".to_string(), attr_type(dt));
        self.out.push(NodeDef {
            name: name.clone(),
            op: "Placeholder".into(),
            attr,
            ..Default::default()
        });
        self.external
            .push((name.clone(), format!("{n}:{}", i.max(0))));
        self.ext_of.insert(tensor.to_string(), name.clone());
        Ok(format!("{name}:0"))
    }
}

/// Inlines signature `sig` of the SavedModel into a flat GraphDef. Top-level nodes that depend on
/// the signature inputs are copied (calls inlined); everything else, variables included, stays in
/// the loaded graph and is referenced through `external` placeholders mapped at import.
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
    let mut inl = Inliner {
        lib: gd
            .library
            .iter()
            .flat_map(|l| &l.function)
            .filter_map(|f| f.signature.as_ref().map(|s| (s.name.as_str(), f)))
            .collect(),
        graph,
        opdefs: OpDefs::default(),
        out: Vec::new(),
        external: Vec::new(),
        ext_of: HashMap::new(),
        rec: Some(Recorder::new(info.saved_gradients()?)),
        control_flow: Record::default(),
    };
    let top: HashMap<&str, &NodeDef> = gd.node.iter().map(|n| (n.name.as_str(), n)).collect();
    // New inputs, one per signature input.
    let (input_nodes, inputs) = super::inputs::placeholders(&mut inl.out, sig);
    // Which top-level nodes depend on the inputs (those must be copied).
    let mut out_nodes: Vec<&str> = sig
        .outputs
        .iter()
        .map(|o| TensorRef::node_of(&o.tensor))
        .collect();
    let update_ops = info.update_ops();
    for o in &out_nodes {
        if !top.contains_key(o) {
            return Err(Error::graph(
                *o,
                format!(
                    "signature '{}' names an output node that is not in the graph",
                    sig.name
                ),
            ));
        }
    }
    for u in &update_ops {
        if !top.contains_key(u.as_str()) {
            return Err(Error::graph(u, "listed in UPDATE_OPS but not in the graph"));
        }
    }
    out_nodes.extend(update_ops.iter().map(|u| u.as_str()));
    let inputs_at: HashSet<&str> = input_nodes.keys().copied().collect();
    let (order, depends) = super::topo::nodes_to_copy(&top, &inputs_at, &out_nodes);
    let mut tr: HashMap<&str, Translated> = HashMap::new();
    let top_tensor =
        |inl: &mut Inliner, tr: &HashMap<&str, Translated>, t: &str| -> Result<String> {
            let TensorRef { node: n, index: i } = TensorRef::parse(t);
            if let Some(inp) = input_nodes.get(n) {
                return Ok(format!("{inp}:0"));
            }
            match tr.get(n) {
                Some(Translated::Node(f)) => Ok(format!("{f}:{}", i.max(0))),
                Some(Translated::Call { rets, .. }) => rets
                    .get(i.max(0) as usize)
                    .cloned()
                    .ok_or_else(|| Error::graph(t, "call output out of range")),
                None => inl.external(t),
            }
        };
    for &n in &order {
        if !depends.contains(n) || input_nodes.contains_key(n) {
            continue;
        }
        let nd = top[n];
        let mut data = Vec::new();
        let mut controls = Vec::new();
        for i in &nd.input {
            match i.strip_prefix('^') {
                // After a copied node as in the model; a node left in the loaded graph does
                // not depend on the inputs, so it has run (or never needs to) already.
                Some(c) => controls.extend(tr.get(c).map(Inliner::control_of)),
                None => data.push(top_tensor(&mut inl, &tr, i)?),
            }
        }
        let t = if let Some(callee) = inl.callee(nd) {
            inl.inline_fn(callee, data, controls, n)?
        } else if let Some((f, args)) = inl.taken_branch(nd, &data, n) {
            inl.inline_fn(&f, args, controls, n)?
        } else {
            // Check the op exists (clear error for unknown ops) and copy the node.
            let def = inl.opdefs.get(graph, &nd.op, &nd.name)?.clone();
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
            Translated::Node(n.to_string())
        };
        tr.insert(n, t);
    }
    let mut outputs = Vec::new();
    for o in &sig.outputs {
        outputs.push(top_tensor(&mut inl, &tr, &o.tensor)?);
    }
    let mut updates = Vec::new();
    let mut idle = Vec::new();
    for u in &update_ops {
        match tr.get(u.as_str()) {
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
    let mut custom = inl
        .rec
        .take()
        .map(Recorder::finish)
        .transpose()?
        .unwrap_or_default();
    let mut grad_fns = BTreeMap::new();
    for f in functions_used(&custom).into_keys() {
        match inline_function(&inl.lib, graph, &f) {
            Ok(flat) => {
                grad_fns.insert(f, flat);
            }
            // Only training with saved custom gradients needs it: said then, for each node.
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
    Ok(FlatGraph {
        graph_def: GraphDef {
            node: inl.out,
            library: None,
            versions: gd.versions.clone(),
        },
        inputs,
        outputs,
        external: inl.external,
        backward: Backward {
            custom,
            grad_fns,
            stages: Vec::new(),
        },
        updates,
        control_flow: inl.control_flow.nodes,
        replicas: 1,
        moving: Default::default(),
    })
}

/// Inlines function `fname` applied to `args` after the nodes `pre`: (nodes, its results,
/// external references). No custom gradients are recorded (a gradient function's own are not
/// differentiated).
pub(super) fn inline_body(
    lib: &HashMap<&str, &FunctionDef>,
    graph: &Graph,
    fname: &str,
    args: Vec<String>,
    pre: Vec<NodeDef>,
) -> Result<(Vec<NodeDef>, Vec<String>, Vec<(String, String)>)> {
    let mut inl = Inliner {
        lib: lib.clone(),
        graph,
        opdefs: OpDefs::default(),
        out: pre,
        external: Vec::new(),
        ext_of: HashMap::new(),
        rec: None,
        control_flow: Record::default(),
    };
    match inl.inline_fn(fname, args, Vec::new(), "fn")? {
        Translated::Call { rets, .. } => Ok((inl.out, rets, inl.external)),
        Translated::Node(n) => Err(Error::internal("inlining a function", n)),
    }
}
