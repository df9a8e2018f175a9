//! The model's variables as the serving graph holds them: each `VarHandleOp` the signatures
//! (or a TF1 graph's update ops) use, named and flagged trainable from the object graph (or a
//! TF1 graph's `trainable_variables` collection).
use std::collections::HashMap;

use super::{tf1hub, SavedModelInfo, Variable};
use crate::proto::{self, shape_of, NodeDef, TensorRef};

impl SavedModelInfo {
    /// (VarHandleOp node, object-graph node id) for every variable handle a call node passes as
    /// one of its function's bound inputs.
    pub fn bound_handles(&self) -> Vec<(String, i32)> {
        let Some(og) = &self.meta.object_graph_def else {
            return Vec::new();
        };
        let nodes = self.nodes();
        let by_name: HashMap<&str, &NodeDef> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut out = Vec::new();
        for n in nodes {
            let Some(cf) =
                crate::proto::nodes::func_attr(n).and_then(|f| og.concrete_functions.get(f))
            else {
                continue;
            };
            let data: Vec<&str> = n
                .input
                .iter()
                .filter(|i| !i.starts_with('^'))
                .map(|s| s.as_str())
                .collect();
            let k = cf.bound_inputs.len();
            if k == 0 || data.len() < k {
                continue;
            }
            for (inp, id) in data[data.len() - k..].iter().zip(&cf.bound_inputs) {
                let h = TensorRef::node_of(inp);
                if by_name
                    .get(h)
                    .map(|n| n.op == "VarHandleOp")
                    .unwrap_or(false)
                {
                    out.push((h.to_string(), *id));
                }
            }
        }
        out
    }

    /// Variables the signatures use (every VarHandleOp their outputs or update ops depend on),
    /// named and flagged trainable from the object graph where a call's bound inputs say which
    /// object each is (a TF1 graph: from its `trainable_variables` collection).
    pub fn variables(&self) -> Vec<Variable> {
        let serving = self.serving_nodes();
        let tf1_trainable = match self.tf1_hub {
            true => Some(tf1hub::trainable_names(&self.meta).unwrap_or_else(|e| {
                log::warn!(
                    "{}: {e}; no variable counts as trainable",
                    self.dir.display()
                );
                Default::default()
            })),
            false => None,
        };
        let nodes = self.nodes();
        // handle node name -> object-graph variable, via call nodes' captured inputs.
        let mut known: HashMap<String, proto::SavedVariable> = HashMap::new();
        if let Some(og) = &self.meta.object_graph_def {
            for (h, id) in self.bound_handles() {
                if let Some(v) = og.nodes.get(id as usize).and_then(|o| o.variable.clone()) {
                    known.entry(h).or_insert(v);
                }
            }
        }
        nodes
            .iter()
            .filter(|n| n.op == "VarHandleOp" && (serving.is_empty() || serving.contains(&n.name)))
            .map(|n| {
                let attr_shape = n.attr.get("shape").and_then(|a| match &a.value {
                    Some(proto::attr_value::Value::Shape(s)) => shape_of(&Some(s.clone())),
                    _ => None,
                });
                let shape = attr_shape
                    .unwrap_or_default()
                    .into_iter()
                    .map(|d| d.unwrap_or(-1))
                    .collect();
                let dtype = match n.attr.get("dtype").and_then(|a| a.value.clone()) {
                    Some(proto::attr_value::Value::Type(t)) => t,
                    _ => 0,
                };
                match known.get(&n.name) {
                    Some(v) => Variable {
                        handle: n.name.clone(),
                        name: if v.name.is_empty() {
                            n.name.clone()
                        } else {
                            v.name.clone()
                        },
                        trainable: v.trainable,
                        dtype,
                        shape,
                    },
                    None => Variable {
                        handle: n.name.clone(),
                        name: n.name.clone(),
                        trainable: tf1_trainable
                            .as_ref()
                            .map(|t| t.contains(&n.name))
                            .unwrap_or(true),
                        dtype,
                        shape,
                    },
                }
            })
            .collect()
    }
}
