//! Function inlining: a signature's (nested) call nodes become plain nodes of one flat GraphDef.
//! Like a model patch with an old→new outlet map: every tensor of the original program is
//! translated to a tensor of the flat graph (`Translate`), and nothing of the original is touched.
//! `signature` does the top level; `Inliner` here translates function bodies.
mod signature;

use std::collections::HashMap;

use tensorflow::Graph;

use super::control_flow::{taken_branch, Record};
use super::custom::Recorder;
use super::topo::topo_order;
use super::{attr_type, func_attr};
use crate::error::{Error, Result};
use crate::proto::dtype_code;
use crate::proto::opdefs::{flat_output_index, OpDefs};
use crate::proto::{AttrValue, FunctionDef, NodeDef};
use crate::proto::{BodyRef, TensorRef};
pub use signature::{inline_signature, External, FlatGraph};

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
    external: Vec<External>,
    ext_of: HashMap<String, String>,
    /// Records custom-gradient nodes (not inside gradient functions themselves).
    rec: Option<Recorder>,
    /// Control-flow nodes met, and how each was handled.
    control_flow: Record,
}

/// One call being inlined: its arguments (flat tensors), its body's nodes, and what each body
/// node became so far.
struct Call<'a> {
    args: HashMap<&'a str, String>,
    body: HashMap<&'a str, &'a NodeDef>,
    tr: HashMap<String, Translated>,
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
    fn new(
        lib: HashMap<&'a str, &'a FunctionDef>,
        graph: &'a Graph,
        rec: Option<Recorder>,
    ) -> Self {
        Inliner {
            lib,
            graph,
            opdefs: OpDefs::default(),
            out: Vec::new(),
            external: Vec::new(),
            ext_of: HashMap::new(),
            rec,
            control_flow: Record::default(),
        }
    }

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
        match BodyRef::parse(s) {
            Some(BodyRef::Arg(arg)) => args
                .get(arg)
                .cloned()
                .ok_or_else(|| Error::graph(arg, "unknown function argument")),
            Some(BodyRef::Output {
                node,
                arg,
                index: idx,
            }) => match tr.get(node) {
                Some(Translated::Call { rets, .. }) => {
                    let nd = body[node];
                    let k = if arg == "output" {
                        idx
                    } else {
                        let f = self.lib[self.callee(nd).unwrap_or_default()];
                        let sig = f
                            .signature
                            .as_ref()
                            .ok_or_else(|| Error::graph(node, "callee has no signature"))?;
                        sig.output_arg
                            .iter()
                            .position(|a| a.name == arg)
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
            },
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
        let mut call = Call {
            args: sig
                .input_arg
                .iter()
                .map(|a| a.name.as_str())
                .zip(args)
                .collect(),
            body: f.node_def.iter().map(|n| (n.name.as_str(), n)).collect(),
            tr: HashMap::new(),
        };
        let deps = |n: &'a str| -> Vec<&'a str> {
            call.body
                .get(n)
                .map(|nd| {
                    nd.input
                        .iter()
                        .map(|i| BodyRef::node_of(i))
                        .filter(|d| call.body.contains_key(d))
                        .collect()
                })
                .unwrap_or_default()
        };
        let roots: Vec<&str> = f.node_def.iter().map(|n| n.name.as_str()).collect();
        for name in topo_order(&roots, deps) {
            let t = self.body_node(&call, call.body[name], &ctrl, scope)?;
            call.tr.insert(name.to_string(), t);
        }
        self.finish_call(f, fname, scope, &call)
    }

    /// Body node `nd` of a call under `scope`, after the call's own control inputs `ctrl`: a
    /// nested call inlined, any other op copied (custom gradients recorded).
    fn body_node(
        &mut self,
        call: &Call<'a>,
        nd: &'a NodeDef,
        ctrl: &[String],
        scope: &str,
    ) -> Result<Translated> {
        let mut data = Vec::new();
        let mut controls = Vec::new();
        for i in &nd.input {
            let Some(c) = i.strip_prefix('^') else {
                data.push(self.body_tensor(i, &call.body, &call.tr, &call.args)?);
                continue;
            };
            match (call.tr.get(c), call.args.get(c)) {
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
        }
        let flat_name = format!("{scope}/{}", nd.name);
        if self.out.len() > MAX_INLINED_NODES {
            return Err(Error::graph(
                &flat_name,
                format!("the inlined signature passes {MAX_INLINED_NODES} nodes"),
            ));
        }
        let after = |controls: Vec<String>| [ctrl, &controls[..]].concat();
        if let Some(callee) = self.callee(nd) {
            return self.inline_fn(callee, data, after(controls), &flat_name);
        }
        if let Some((f, args)) = self.taken_branch(nd, &data, &flat_name) {
            return self.inline_fn(&f, args, after(controls), &flat_name);
        }
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
        Ok(Translated::Node(flat_name))
    }

    /// A call's results and the NoOp standing for its completion (after its control returns
    /// and its results); its custom gradients' captures resolved.
    fn finish_call(
        &mut self,
        f: &'a FunctionDef,
        fname: &str,
        scope: &str,
        call: &Call<'a>,
    ) -> Result<Translated> {
        let mut rets = Vec::new();
        for a in f.signature.iter().flat_map(|s| &s.output_arg) {
            let r = f
                .ret
                .get(&a.name)
                .ok_or_else(|| Error::graph(fname, format!("no return value for '{}'", a.name)))?;
            rets.push(self.body_tensor(r, &call.body, &call.tr, &call.args)?);
        }
        let mut done_inputs: Vec<String> = f
            .control_ret
            .values()
            .filter_map(|n| call.tr.get(n.as_str()))
            .map(Self::control_of)
            .collect();
        done_inputs.extend(rets.iter().map(|r| format!("^{}", TensorRef::node_of(r))));
        done_inputs.sort();
        done_inputs.dedup();
        if let Some(rec) = self.rec.as_mut() {
            rec.resolve(fname, |t| {
                match (call.args.get(t.node), call.tr.get(t.node)) {
                    (Some(a), _) if t.index == 0 => Ok(a.clone()),
                    (_, Some(Translated::Node(n))) => Ok(format!("{n}:{}", t.index)),
                    (_, Some(Translated::Call { rets, .. })) => rets
                        .get(t.index as usize)
                        .cloned()
                        .ok_or_else(|| Error::graph(t.node, "call output out of range")),
                    _ => Err(Error::graph(t.node, "not in the function body")),
                }
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
        self.external.push(External {
            placeholder: name.clone(),
            outer: TensorRef {
                node: n,
                index: i.max(0),
            }
            .to_id(),
        });
        self.ext_of.insert(tensor.to_string(), name.clone());
        Ok(format!("{name}:0"))
    }
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
) -> Result<(Vec<NodeDef>, Vec<String>, Vec<External>)> {
    let mut inl = Inliner::new(lib.clone(), graph, None);
    inl.out = pre;
    match inl.inline_fn(fname, args, Vec::new(), "fn")? {
        Translated::Call { rets, .. } => Ok((inl.out, rets, inl.external)),
        Translated::Node(n) => Err(Error::internal("inlining a function", n)),
    }
}
