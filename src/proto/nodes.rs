//! NodeDef and AttrValue helpers shared by the graph rewrites and the SavedModel checks.
use super::{attr_value::Value, AttrValue, NodeDef, TensorProto};

/// Op types that call a library function through their `f` attribute.
pub const CALL_OPS: &[&str] = &["StatefulPartitionedCall", "PartitionedCall"];

/// The function a call node invokes (`f` attr of (Stateful)PartitionedCall), if it is one.
pub fn func_attr(n: &NodeDef) -> Option<&str> {
    if !CALL_OPS.contains(&n.op.as_str()) {
        return None;
    }
    match n.attr.get("f").and_then(|a| a.value.as_ref()) {
        Some(Value::Func(f)) => Some(f.name.as_str()),
        _ => None,
    }
}

/// A NodeDef with no device (patches add these to flat graphs before import).
pub fn node_def(
    name: String,
    op: &str,
    input: Vec<String>,
    attrs: Vec<(&str, AttrValue)>,
) -> NodeDef {
    NodeDef {
        name,
        op: op.into(),
        input,
        device: String::new(),
        attr: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

/// A node's data inputs (its `^control` inputs left out), in order.
pub fn data_inputs(n: &NodeDef) -> Vec<&String> {
    n.input.iter().filter(|i| !i.starts_with('^')).collect()
}

/// A Const node holding `t`.
pub fn const_node(name: String, t: TensorProto) -> NodeDef {
    let dtype = t.dtype;
    node_def(
        name,
        "Const",
        vec![],
        vec![
            ("dtype", attr_type(dtype)),
            (
                "value",
                AttrValue {
                    value: Some(Value::Tensor(t)),
                },
            ),
        ],
    )
}

/// A float32 op (`T: DT_FLOAT`) on `inputs`.
pub fn float_op(name: String, op: &str, inputs: Vec<String>) -> NodeDef {
    node_def(name, op, inputs, vec![("T", attr_type(1))])
}

/// Builds an AttrValue holding a type.
pub fn attr_type(dt: i32) -> AttrValue {
    AttrValue {
        value: Some(Value::Type(dt)),
    }
}

/// A NodeDef named `name` running `op` on `device` with `inputs` (tests' graphs).
#[cfg(test)]
pub(crate) fn test_node(name: &str, op: &str, device: &str, inputs: &[&str]) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        device: device.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}
