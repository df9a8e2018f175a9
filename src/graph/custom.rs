//! Custom gradients in a flat graph: the nodes that carry `_gradient_op_type` (what
//! `tf.custom_gradient` leaves, an IdentityN), the gradient function the SavedModel stores for
//! each, bound to the flat tensors it reads, and the backward stages the autodiff pass plans
//! around them (`autodiff::custom`).
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use tensorflow::Graph;

use super::{attr_type, node_def, FlatGraph};
use crate::error::{Error, Result};
use crate::proto::{attr_value::Value, FunctionDef, GraphDef, NodeDef, TensorRef};
use crate::savedmodel::{Capture, SavedGradient};

/// How nodes with a custom gradient are differentiated (`model.custom_gradients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomGradients {
    /// With the gradient function the SavedModel stores, as TF does; a model saved without it
    /// is refused.
    #[default]
    Saved,
    /// Through the node's forward ops (the stored gradient is ignored).
    Forward,
}

/// A flat graph's custom gradients and the backward stages planned around them.
#[derive(Debug, Clone, Default)]
pub struct Backward {
    /// Nodes with a custom gradient (`_gradient_op_type`), in inlining order.
    pub custom: Vec<CustomGrad>,
    /// The stored gradient functions `custom` uses, each inlined (inputs: the output gradients,
    /// then the captures; outputs: the function's results).
    pub grad_fns: BTreeMap<String, FlatGraph>,
    /// Backward stages, consumers first (`autodiff::custom`); empty: one gradient call from the
    /// loss does it all.
    pub stages: Vec<Stage>,
}

/// A node of the flat graph with a custom gradient.
#[derive(Debug, Clone)]
pub struct CustomGrad {
    /// Its name in the flat graph.
    pub node: String,
    pub op: String,
    /// Its `_gradient_op_type`.
    pub op_type: String,
    /// Its data inputs (the gradient function returns one gradient, or None, per input).
    pub inputs: usize,
    /// The gradient the model stores, None if it was saved without (the object graph's
    /// `registered_gradients` do not name this op type).
    pub saved: Option<SavedGrad>,
    /// Why a stored gradient cannot be used (it reads what pretext cannot bind, or its
    /// function does not inline); `saved` is then None.
    pub unusable: Option<String>,
}

/// A stored gradient function, bound.
#[derive(Debug, Clone)]
pub struct SavedGrad {
    /// Its name in the library (its inlined body: `FlatGraph::grad_fns`).
    pub function: String,
    /// Flat tensors bound to its inputs after the output gradients.
    pub captures: Vec<String>,
    /// Per input of the node: which output of the function is its gradient.
    pub results: Vec<Option<usize>>,
}

impl SavedGrad {
    /// The gradient function's output for each of the forward op's `n` inputs. Without an output
    /// signature, `tf.custom_gradient`'s layout is assumed: `None` for the results it passes
    /// through its IdentityN first, then one gradient per argument.
    pub fn result_map(&self, n: usize, outputs: usize) -> Result<Vec<Option<usize>>> {
        if !self.results.is_empty() {
            let taken = self.results.iter().flatten().count();
            let in_range = self.results.iter().flatten().all(|&k| k < outputs);
            if taken != outputs || !in_range {
                return Err(Error::graph(
                    &self.function,
                    format!(
                        "its output signature names {taken} gradient(s); the function returns \
                         {outputs} (a composite gradient pretext cannot map)"
                    ),
                ));
            }
            if self.results.len() != n {
                return Err(Error::graph(
                    &self.function,
                    format!(
                        "gradient function returns {} values for an op of {n} inputs",
                        self.results.len()
                    ),
                ));
            }
            return Ok(self.results.clone());
        }
        if outputs > n {
            return Err(Error::graph(
                &self.function,
                format!("gradient function has {outputs} outputs for an op of {n} inputs"),
            ));
        }
        Ok((0..n)
            .map(|i| (i >= n - outputs).then(|| i - (n - outputs)))
            .collect())
    }
}

/// One backward stage: where gradients are seeded, in reverse topological order.
#[derive(Debug, Clone)]
pub struct Stage {
    pub kind: StageKind,
    /// The node's outputs as the rest of the graph reads them: (output index, cut tensor, a
    /// `StopGradient` of it). The gradients arriving at these are this stage's seed.
    pub cuts: Vec<(usize, String)>,
    /// Flat tensors this stage's gradients can reach: cut tensors of earlier stages and reads of
    /// variables (`ReadVariableOp` outputs).
    pub xs: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum StageKind {
    /// `FlatGraph::custom[i]`: seeds its inputs with its gradient function's outputs.
    Custom(usize),
    /// A node whose outputs feed several differentiable consumers upstream of a custom gradient:
    /// its gradient is summed first, then carried back once (no backward op built twice).
    Join(String),
}

/// The value of a node's `_gradient_op_type`, if it has one (call nodes' do not count: their
/// gradient is their body's).
pub fn gradient_op_type(n: &NodeDef) -> Option<String> {
    match n.attr.get("_gradient_op_type")?.value.as_ref()? {
        Value::S(s) if !s.is_empty() => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    }
}

/// Capture slots waiting for the function instance they name to be fully inlined.
#[derive(Default)]
pub(super) struct Pending {
    /// (custom index, capture slot, function, `node:k` in its body).
    slots: Vec<(usize, usize, String, String)>,
}

/// The custom gradients an inliner records, with the stored gradients to bind.
pub(super) struct Recorder {
    pub saved: HashMap<String, SavedGradient>,
    pub custom: Vec<CustomGrad>,
    pub pending: Pending,
}

impl Recorder {
    pub fn new(saved: HashMap<String, SavedGradient>) -> Self {
        Recorder {
            saved,
            custom: Vec::new(),
            pending: Pending::default(),
        }
    }

    /// Records flat node `flat` (copied from `nd`) if it has a custom gradient; captures that
    /// name a graph tensor are bound through `external`, the rest wait for their function.
    pub fn record(
        &mut self,
        nd: &NodeDef,
        flat: &str,
        inputs: usize,
        mut external: impl FnMut(&str) -> Result<String>,
    ) -> Result<()> {
        let Some(op_type) = gradient_op_type(nd) else {
            return Ok(());
        };
        let i = self.custom.len();
        let unbound = self.saved.get(&op_type).and_then(|sg| {
            sg.captures.iter().find_map(|c| match c {
                Capture::Unbound(why) => Some(why.clone()),
                _ => None,
            })
        });
        let saved = match self.saved.get(&op_type) {
            _ if unbound.is_some() => None,
            None => None,
            Some(sg) => {
                let mut captures = Vec::new();
                for (slot, c) in sg.captures.iter().enumerate() {
                    captures.push(match c {
                        Capture::Graph(op) => external(&format!("{op}:0"))?,
                        Capture::Variable(h) => external(&format!("{h}:0"))?,
                        Capture::Tensor { function, name } => {
                            self.pending
                                .slots
                                .push((i, slot, function.clone(), name.clone()));
                            String::new()
                        }
                        Capture::Unbound(_) => String::new(),
                    });
                }
                Some(SavedGrad {
                    function: sg.function.clone(),
                    captures,
                    results: sg.results.clone(),
                })
            }
        };
        self.custom.push(CustomGrad {
            node: flat.to_string(),
            op: nd.op.clone(),
            op_type,
            inputs,
            saved,
            unusable: unbound,
        });
        Ok(())
    }

    /// Binds the captures that name a tensor of function `fname`, now inlined: `resolve` turns
    /// `node:k` of its body into a flat tensor.
    pub fn resolve(
        &mut self,
        fname: &str,
        mut resolve: impl FnMut(TensorRef) -> Result<String>,
    ) -> Result<()> {
        let slots = std::mem::take(&mut self.pending.slots);
        for (i, slot, f, name) in slots {
            if f != fname {
                self.pending.slots.push((i, slot, f, name));
                continue;
            }
            let t = resolve(TensorRef::parse(&name)).map_err(|e| {
                Error::graph(
                    &self.custom[i].node,
                    format!("its saved gradient reads '{name}' of {fname}: {e}"),
                )
            })?;
            if let Some(s) = self.custom[i].saved.as_mut() {
                s.captures[slot] = t;
            }
        }
        Ok(())
    }

    /// The recorded nodes; a capture of a function the signature never called makes that
    /// node's stored gradient unusable (said if training needs it).
    pub fn finish(mut self) -> Result<Vec<CustomGrad>> {
        for (i, _, f, name) in std::mem::take(&mut self.pending.slots) {
            let c = &mut self.custom[i];
            c.saved = None;
            c.unusable = Some(format!(
                "its saved gradient reads '{name}' of function {f}, which this signature does \
                 not call"
            ));
        }
        Ok(self.custom)
    }
}

impl Backward {
    /// The stored gradient function `name`, inlined.
    pub fn grad_fn(&self, name: &str) -> Result<&FlatGraph> {
        self.grad_fns
            .get(name)
            .ok_or_else(|| Error::internal("custom gradients", format!("{name} was not inlined")))
    }
}

/// Gradient functions to inline next to a signature: every one a recorded node uses.
pub(super) fn functions_used(custom: &[CustomGrad]) -> BTreeMap<String, ()> {
    custom
        .iter()
        .filter_map(|c| c.saved.as_ref().map(|s| (s.function.clone(), ())))
        .collect()
}

/// Inlines library function `fname` on its own: one placeholder per argument (`arg/i`), its
/// results as outputs (a stored gradient function, imported where a gradient needs it).
pub(super) fn inline_function(
    lib: &HashMap<&str, &FunctionDef>,
    graph: &Graph,
    fname: &str,
) -> Result<FlatGraph> {
    let sig = lib
        .get(fname)
        .and_then(|f| f.signature.as_ref())
        .ok_or_else(|| Error::graph(fname, "gradient function is not in the library"))?;
    let mut nodes = Vec::new();
    let mut inputs = Vec::new();
    for (i, a) in sig.input_arg.iter().enumerate() {
        if a.r#type == 0 {
            return Err(Error::graph(
                fname,
                format!("argument '{}' has no fixed type", a.name),
            ));
        }
        let name = format!("arg/{i}");
        nodes.push(node_def(
            name.clone(),
            "Placeholder",
            vec![],
            vec![("dtype", attr_type(a.r#type))],
        ));
        inputs.push(format!("{name}:0"));
    }
    let (nodes, outputs, external) =
        super::inline::inline_body(lib, graph, fname, inputs.clone(), nodes)?;
    Ok(FlatGraph {
        graph_def: GraphDef {
            node: nodes,
            ..Default::default()
        },
        inputs,
        outputs,
        external,
        backward: Backward::default(),
        updates: Vec::new(),
        control_flow: Vec::new(),
        replicas: 1,
        moving: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(results: Vec<Option<usize>>) -> SavedGrad {
        SavedGrad {
            function: "f".into(),
            captures: vec![],
            results,
        }
    }

    #[test]
    fn without_a_signature_the_results_come_first_and_take_no_gradient() {
        assert_eq!(
            g(vec![]).result_map(3, 2).unwrap(),
            vec![None, Some(0), Some(1)]
        );
        assert!(g(vec![]).result_map(1, 2).is_err());
        assert_eq!(
            g(vec![None, Some(0)]).result_map(2, 1).unwrap(),
            vec![None, Some(0)]
        );
        assert!(g(vec![None]).result_map(2, 1).is_err());
    }
}
