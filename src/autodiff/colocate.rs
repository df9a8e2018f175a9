//! Devices for the gradient ops `TF_AddGradients` builds without one: each goes where the
//! forward ops it reads were asked to run, so a tower's backward pass runs on the tower's device
//! (as TF Python's `colocate_gradients_with_ops` does); one reading forward ops of several
//! devices, or none, goes where the gradients it reads went, else to the loss's device.
use std::collections::HashMap;

use crate::proto::{NodeDef, TensorRef};

/// Sets the device of every node of `ours` (gradient ops, inputs before their consumers) from
/// the `forward` nodes they read; `default`: the loss's device.
pub fn assign(ours: &mut [NodeDef], forward: &[NodeDef], default: &str) {
    let fwd: HashMap<&str, &str> = forward
        .iter()
        .filter(|n| !n.device.is_empty() && n.op != "Const")
        .map(|n| (n.name.as_str(), n.device.as_str()))
        .collect();
    let mut placed: HashMap<String, String> = HashMap::new();
    for n in ours.iter_mut() {
        let inputs: Vec<&str> = n
            .input
            .iter()
            .filter(|i| !i.starts_with('^'))
            .map(|i| TensorRef::node_of(i))
            .collect();
        let mut read = inputs.iter().filter_map(|i| fwd.get(i).copied());
        let first = read.next();
        let one = first.filter(|d| read.all(|e| e == *d));
        let device = match one {
            Some(d) => d.to_string(),
            None => inputs
                .iter()
                .find_map(|i| placed.get(*i).cloned())
                .unwrap_or_else(|| default.to_string()),
        };
        n.device = device.clone();
        placed.insert(n.name.clone(), device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::proto::nodes::test_node as node;

    #[test]
    fn gradients_follow_the_forward_ops_they_read() {
        let forward = vec![
            node("t0/act", "Relu", "/device:CPU:0", &[]),
            node("t1/act", "Relu", "/device:CPU:1", &[]),
            node("head/w", "ReadVariableOp", "/device:CPU:1", &[]),
            node("c", "Const", "/device:CPU:0", &[]),
        ];
        let mut ours = vec![
            node("g/mix", "ShapeN", "", &["t0/act", "t1/act"]),
            node("g/slice0", "Slice", "", &["g/mix", "c"]),
            node("g/t0", "ReluGrad", "", &["g/slice0", "t0/act:0"]),
            node("g/t1", "ReluGrad", "", &["g/slice0", "t1/act", "^t0/act"]),
            node("g/ones", "Fill", "", &["c"]),
        ];
        assign(&mut ours, &forward, "/device:CPU:1");
        let got: Vec<&str> = ours.iter().map(|n| n.device.as_str()).collect();
        assert_eq!(
            got,
            [
                "/device:CPU:1",
                "/device:CPU:1",
                "/device:CPU:0",
                "/device:CPU:1",
                "/device:CPU:1"
            ]
        );
    }
}
