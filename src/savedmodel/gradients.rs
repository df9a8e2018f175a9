//! The custom gradients a TF2 SavedModel stores (`SaveOptions(experimental_custom_gradients)`,
//! on by default): for each `_gradient_op_type`, the gradient function of the library, what its
//! inputs after the output gradients are bound to, and which of its results are `None`.
use std::collections::HashMap;

use super::SavedModelInfo;
use crate::error::Result;
use crate::proto::{StructuredValue, TensorRef};

/// What one input of a gradient function beyond the output gradients is bound to.
#[derive(Debug, Clone, PartialEq)]
pub enum Capture {
    /// Tensor `node:k` (output `k` of body node or argument `node`) of function `function`: a
    /// forward value the gradient reads.
    Tensor { function: String, name: String },
    /// An operation's output 0 in the graph (a saved constant).
    Graph(String),
    /// A variable: its `VarHandleOp` in the graph.
    Variable(String),
    /// What pretext cannot bind (said when a node needs this gradient).
    Unbound(String),
}

/// A stored gradient function and how to call it.
#[derive(Debug, Clone)]
pub struct SavedGradient {
    /// Its name in the function library.
    pub function: String,
    /// The inputs after the output gradients, in order.
    pub captures: Vec<Capture>,
    /// Per input of the forward op: the index of the function output that is its gradient, or
    /// None (no gradient). Empty when the object graph does not say (see `result_map`).
    pub results: Vec<Option<usize>>,
}

/// `None` entries of an output signature: per entry, the flat output index it takes, if any.
fn output_slots(sig: &StructuredValue) -> Vec<Option<usize>> {
    let list = sig.list_value.as_ref().or(sig.tuple_value.as_ref());
    let Some(list) = list else {
        return Vec::new();
    };
    let mut k = 0;
    list.values
        .iter()
        .map(|v| {
            if v.none_value.is_some() {
                None
            } else {
                k += 1;
                Some(k - 1)
            }
        })
        .collect()
}

impl SavedModelInfo {
    /// Gradient op type (`_gradient_op_type`) → the gradient the SavedModel stores for it.
    pub fn saved_gradients(&self) -> Result<HashMap<String, SavedGradient>> {
        let Some(lib) = self
            .meta
            .graph_def
            .as_ref()
            .and_then(|g| g.library.as_ref())
        else {
            return Ok(HashMap::new());
        };
        let og = self.meta.object_graph_def.as_ref();
        // Object id → handle; the handle the serving path reads wins (a Keras 3 export binds
        // one variable to two handles).
        let serving = self.serving_nodes();
        let mut handles: HashMap<i32, String> = HashMap::new();
        for (h, id) in self.bound_handles() {
            if serving.contains(&h) || !handles.contains_key(&id) {
                handles.insert(id, h);
            }
        }
        let mut out = HashMap::new();
        for rg in &lib.registered_gradients {
            let cf = og.and_then(|o| o.concrete_functions.get(&rg.gradient_func));
            let mut captures = Vec::new();
            for &id in cf.map(|c| c.bound_inputs.as_slice()).unwrap_or(&[]) {
                let obj = og.and_then(|o| o.nodes.get(id as usize));
                let cap = match obj {
                    Some(o) if o.captured_tensor.is_some() => {
                        let c = o.captured_tensor.as_ref().expect("checked");
                        Capture::Tensor {
                            function: c.concrete_function.clone(),
                            name: c.name.clone(),
                        }
                    }
                    Some(o) if o.constant.is_some() => {
                        let op = &o.constant.as_ref().expect("checked").operation;
                        Capture::Graph(TensorRef::node_of(op).to_string())
                    }
                    Some(o) if o.variable.is_some() && handles.contains_key(&id) => {
                        Capture::Variable(handles[&id].clone())
                    }
                    _ => Capture::Unbound(format!(
                        "its gradient function {} reads object {id} of the object graph, which \
                         is not a tensor, constant or variable pretext can bind",
                        rg.gradient_func
                    )),
                };
                captures.push(cap);
            }
            let results = cf
                .and_then(|c| c.output_signature.as_ref())
                .map(output_slots)
                .unwrap_or_default();
            out.insert(
                rg.registered_op_type.clone(),
                SavedGradient {
                    function: rg.gradient_func.clone(),
                    captures,
                    results,
                },
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{NoneValue, StructuredList};

    #[test]
    fn none_results_take_no_output() {
        let none = StructuredValue {
            none_value: Some(NoneValue {}),
            ..Default::default()
        };
        let spec = StructuredValue::default();
        let sig = StructuredValue {
            list_value: Some(StructuredList {
                values: vec![none.clone(), spec.clone(), none, spec],
            }),
            ..Default::default()
        };
        assert_eq!(output_slots(&sig), vec![None, Some(0), None, Some(1)]);
    }
}
