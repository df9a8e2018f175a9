//! OpDef look-ups (from TF's op registry through the C API) and output-argument arithmetic:
//! turns a function body's `node:output_arg:index` into a flat output index.
use std::collections::HashMap;

use prost::Message;
use tensorflow::Graph;

use super::{attr_value::Value, ArgDef, NodeDef, OpDef};
use crate::error::{Error, Result};

/// A cache of OpDefs, filled on demand from a graph's op registry.
#[derive(Default)]
pub struct OpDefs {
    cache: HashMap<String, OpDef>,
}

impl OpDefs {
    /// The OpDef of `op`, or an error naming the op and the node that uses it.
    pub fn get(&mut self, graph: &Graph, op: &str, node: &str) -> Result<&OpDef> {
        if !self.cache.contains_key(op) {
            let bytes = graph.get_op_def(op).map_err(|s| {
                Error::graph(
                    node,
                    format!("op '{op}' is not registered in this TensorFlow: {s}"),
                )
            })?;
            let def = OpDef::decode(bytes.as_slice())
                .map_err(|e| Error::graph(node, format!("bad OpDef for '{op}': {e}")))?;
            self.cache.insert(op.to_string(), def);
        }
        Ok(&self.cache[op])
    }
}

/// How many tensors one output arg of `node` stands for.
pub fn arg_len(arg: &ArgDef, node: &NodeDef) -> Result<usize> {
    if !arg.number_attr.is_empty() {
        return match node
            .attr
            .get(&arg.number_attr)
            .and_then(|a| a.value.as_ref())
        {
            Some(Value::I(n)) if *n >= 0 => Ok(*n as usize),
            _ => Err(Error::graph(
                &node.name,
                format!("missing int attr '{}'", arg.number_attr),
            )),
        };
    }
    if !arg.type_list_attr.is_empty() {
        return match node
            .attr
            .get(&arg.type_list_attr)
            .and_then(|a| a.value.as_ref())
        {
            Some(Value::List(l)) => Ok(l.r#type.len()),
            _ => Err(Error::graph(
                &node.name,
                format!("missing type-list attr '{}'", arg.type_list_attr),
            )),
        };
    }
    Ok(1)
}

/// Flat output index of `node`'s output arg `arg` at position `idx` within that arg.
pub fn flat_output_index(def: &OpDef, node: &NodeDef, arg: &str, idx: usize) -> Result<usize> {
    let mut base = 0;
    for a in &def.output_arg {
        if a.name == arg {
            if idx >= arg_len(a, node)? {
                return Err(Error::graph(
                    &node.name,
                    format!("output '{arg}' has no tensor {idx}"),
                ));
            }
            return Ok(base + idx);
        }
        base += arg_len(a, node)?;
    }
    Err(Error::graph(
        &node.name,
        format!("op '{}' has no output arg '{arg}'", node.op),
    ))
}

/// The dtype of each output of `node` (0 where an attribute does not say).
pub fn output_types(def: &OpDef, node: &NodeDef) -> Result<Vec<i32>> {
    let attr = |k: &str| node.attr.get(k).and_then(|a| a.value.as_ref());
    let mut out = Vec::new();
    for a in &def.output_arg {
        if !a.type_list_attr.is_empty() {
            match attr(&a.type_list_attr) {
                Some(Value::List(l)) => out.extend(l.r#type.iter().copied()),
                _ => out.extend(std::iter::repeat_n(0, arg_len(a, node)?)),
            }
            continue;
        }
        let t = match attr(&a.type_attr) {
            Some(Value::Type(t)) => *t,
            _ => a.r#type,
        };
        out.extend(std::iter::repeat_n(t, arg_len(a, node)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AttrValue, ListValue};

    fn argdef(name: &str, number: &str, list: &str) -> ArgDef {
        ArgDef {
            name: name.into(),
            number_attr: number.into(),
            type_list_attr: list.into(),
            ..Default::default()
        }
    }

    #[test]
    fn output_index_counts_earlier_list_args() {
        let def = OpDef {
            name: "X".into(),
            output_arg: vec![
                argdef("a", "N", ""),
                argdef("b", "", "T"),
                argdef("c", "", ""),
            ],
            ..Default::default()
        };
        let mut node = NodeDef {
            name: "n".into(),
            op: "X".into(),
            ..Default::default()
        };
        node.attr.insert(
            "N".into(),
            AttrValue {
                value: Some(Value::I(3)),
            },
        );
        node.attr.insert(
            "T".into(),
            AttrValue {
                value: Some(Value::List(ListValue {
                    r#type: vec![1, 1],
                    ..Default::default()
                })),
            },
        );
        assert_eq!(flat_output_index(&def, &node, "a", 2).unwrap(), 2);
        assert_eq!(flat_output_index(&def, &node, "b", 1).unwrap(), 4);
        assert_eq!(flat_output_index(&def, &node, "c", 0).unwrap(), 5);
        assert!(flat_output_index(&def, &node, "zz", 0).is_err());
    }
}
