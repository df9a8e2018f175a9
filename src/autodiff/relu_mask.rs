//! Activation memory as a gradient-graph patch: TF's C++ gradients of `Relu6` and `Relu` read
//! the op's *input* (`Relu6Grad(dy, x)`, cc/gradients/nn_grad.cc) where Python's read its
//! *output*. Both give the same mask (`0 < clip(x, 0, 6) < 6` exactly when `0 < x < 6`), but
//! reading the input keeps one more full activation per `BN → Relu6` pair alive until the
//! backward pass. This copies the gradient subgraph with every such read moved to the
//! activation's output and appends the copy to the graph (the original copy is never run:
//! sessions prune to what is fetched).
use std::collections::{HashMap, HashSet};

use prost::Message;
use tensorflow::{Graph, ImportGraphDefOptions, Output};

use crate::error::{Error, Result, TfContext};
use crate::proto::TensorRef;
use crate::proto::{GraphDef, NodeDef};

/// Gradient op → the forward op whose output gives the same mask.
const MASKS: &[(&str, &str)] = &[("Relu6Grad", "Relu6"), ("ReluGrad", "Relu")];

/// Name scope the patched copy is imported under.
pub const SCOPE: &str = "pretext/mask_from_output";

/// `name` with a `:0` suffix dropped (how GraphDef inputs spell output 0 either way).
fn canonical(input: &str) -> String {
    let TensorRef { node: n, index: i } = TensorRef::parse(input);
    if i <= 0 {
        n.to_string()
    } else {
        format!("{n}:{i}")
    }
}

/// Rewrites, in `nodes` (the gradient subgraph), input 1 of each mask-gradient op whose forward
/// op is found in `forward` to that op's output. Returns how many were moved.
pub fn move_mask_reads(nodes: &mut [NodeDef], forward: &[NodeDef]) -> usize {
    // (forward op type, canonical input) → forward op name
    let mut by_input: HashMap<(&str, String), &str> = HashMap::new();
    for n in forward {
        if let Some((_, fwd)) = MASKS.iter().find(|(_, f)| *f == n.op) {
            if let Some(x) = n.input.first() {
                by_input.entry((fwd, canonical(x))).or_insert(&n.name);
            }
        }
    }
    let mut moved = 0;
    for n in nodes.iter_mut() {
        let Some((_, fwd)) = MASKS.iter().find(|(g, _)| *g == n.op) else {
            continue;
        };
        let Some(x) = n.input.get(1) else { continue };
        if let Some(y) = by_input.get(&(*fwd, canonical(x))) {
            n.input[1] = y.to_string();
            moved += 1;
        }
    }
    moved
}

/// Replaces the gradient subgraph under `prefix` (as `TF_AddGradients` named it) by a copy whose
/// ReLU masks read activation outputs; `grads` are mapped onto the copy. Returns the new
/// gradients and how many mask reads moved (0: nothing to do, `grads` returned as they were).
/// With a `device` (the loss's), the copy is made even when no mask moves, each node of it on
/// the device of the forward ops it reads, else on `device` (`colocate::assign`):
/// `TF_AddGradients` builds its ops with no device; the copy is how they get one.
pub fn patch(
    graph: &mut Graph,
    prefix: &str,
    grads: Vec<Option<Output>>,
    device: Option<&str>,
) -> Result<(Vec<Option<Output>>, usize)> {
    // Exporting the whole graph costs start-up time: only when there is something to move.
    let scope = format!("{prefix}/");
    let has_masks = graph.operation_iter().any(|o| {
        MASKS
            .iter()
            .any(|(g, _)| o.op_type().map(|t| t == *g).unwrap_or(false))
            && o.name().map(|n| n.starts_with(&scope)).unwrap_or(false)
    });
    if !has_masks && device.is_none() {
        return Ok((grads, 0));
    }
    let bytes = graph
        .graph_def()
        .tf_ctx(|| "exporting the graph to patch ReLU gradients".into())?;
    let gd = GraphDef::decode(bytes.as_slice())
        .map_err(|e| Error::graph(prefix, format!("decoding the exported graph: {e}")))?;
    let (mut ours, forward): (Vec<NodeDef>, Vec<NodeDef>) = gd
        .node
        .into_iter()
        .partition(|n| n.name.starts_with(&scope));
    let moved = move_mask_reads(&mut ours, &forward);
    if moved == 0 && device.is_none() {
        return Ok((grads, 0));
    }
    if let Some(d) = device {
        super::colocate::assign(&mut ours, &forward, d);
    }
    let inside: HashSet<String> = ours.iter().map(|n| n.name.clone()).collect();
    let mut opts = ImportGraphDefOptions::new();
    opts.set_prefix(SCOPE)
        .map_err(|e| Error::graph(SCOPE, e.to_string()))?;
    let mut mapped: HashSet<String> = HashSet::new();
    for n in ours.iter_mut() {
        // Colocation with nodes outside the copy cannot be resolved by the importer; these
        // ops have no placement needs beyond their device field, which is kept.
        n.attr.remove("_class");
        for input in &n.input {
            let control = input.starts_with('^');
            let TensorRef { node: name, index } = TensorRef::parse(input.trim_start_matches('^'));
            // One mapping per tensor ("x" and "x:0" are the same one).
            let key = if control {
                format!("^{name}")
            } else {
                canonical(input)
            };
            if inside.contains(name) || !mapped.insert(key) {
                continue;
            }
            let op = graph
                .operation_by_name_required(name)
                .map_err(|e| Error::graph(name, format!("gradient input not in the graph: {e}")))?;
            if control {
                opts.remap_control_dependency(name, &op)
                    .map_err(|e| Error::graph(name, e.to_string()))?;
            } else {
                let out = Output {
                    operation: op,
                    index: index.max(0),
                };
                opts.add_input_mapping(name, index.max(0) as usize, &out)
                    .map_err(|e| Error::graph(name, e.to_string()))?;
            }
        }
    }
    let sub = GraphDef {
        node: ours,
        library: None,
        versions: gd.versions,
    };
    graph
        .import_graph_def(&sub.encode_to_vec(), &opts)
        .tf_ctx(|| format!("importing the gradient copy as '{SCOPE}'"))?;
    let remapped = grads
        .into_iter()
        .map(|g| match g {
            Some(o) => {
                let name = o.operation.name().unwrap_or_default();
                if !inside.contains(&name) {
                    return Ok(Some(o));
                }
                let op = graph
                    .operation_by_name_required(&format!("{SCOPE}/{name}"))
                    .map_err(|e| Error::graph(&name, format!("patched gradient: {e}")))?;
                Ok(Some(Output {
                    operation: op,
                    index: o.index,
                }))
            }
            None => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((remapped, moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, op: &str, inputs: &[&str]) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn mask_reads_move_to_the_matching_activation_only() {
        let forward = vec![
            node("bn", "FusedBatchNormV3", &["c", "s", "o", "m", "v"]),
            node("r6", "Relu6", &["bn:0"]),
            node("r", "Relu", &["bn"]),
            node("other", "Relu6", &["z:1"]),
        ];
        let mut grads = vec![
            node("g/a", "Relu6Grad", &["dy", "bn"]),
            node("g/b", "ReluGrad", &["dy", "bn:0"]),
            node("g/c", "Relu6Grad", &["dy", "z:1"]),
            node("g/d", "Relu6Grad", &["dy", "unknown"]),
            node("g/e", "Mul", &["dy", "bn"]),
        ];
        assert_eq!(move_mask_reads(&mut grads, &forward), 3);
        assert_eq!(grads[0].input[1], "r6");
        assert_eq!(grads[1].input[1], "r");
        assert_eq!(grads[2].input[1], "other");
        assert_eq!(grads[3].input[1], "unknown");
        assert_eq!(grads[4].input[1], "bn");
    }

    /// On a real graph: the patched gradient equals TF's own, and its `Relu6Grad` reads the
    /// `Relu6` output instead of the input.
    #[test]
    fn patched_gradient_equals_tfs_and_reads_the_output() {
        use tensorflow::{ops, Scope, Session, SessionOptions, SessionRunArgs, Tensor};
        let mut s = Scope::new_root_scope();
        let x: Output = ops::Placeholder::new()
            .dtype(tensorflow::DataType::Float)
            .build(&mut s.with_op_name("x"))
            .unwrap()
            .into();
        let w = ops::constant(&[2.0f32, -1.0, 0.5, 3.0, 1.0, -2.0][..], &mut s).unwrap();
        let pre: Output = ops::mul(x.clone(), w, &mut s.with_op_name("pre"))
            .unwrap()
            .into();
        let y: Output = ops::relu6(pre, &mut s.with_op_name("act")).unwrap().into();
        let ax = ops::constant(&[0i32][..], &mut s).unwrap();
        let sq = ops::mul(y.clone(), y, &mut s).unwrap();
        let loss: Output = ops::sum(sq, ax, &mut s).unwrap().into();
        let tf_grads = {
            let mut g = s.graph_mut();
            g.add_gradients(Some("grads"), &[loss], std::slice::from_ref(&x), None)
                .unwrap()
        };
        let (patched, moved) = {
            let mut g = s.graph_mut();
            patch(&mut g, "grads", tf_grads.clone(), None).unwrap()
        };
        assert_eq!(moved, 1);
        let (old, new) = (tf_grads[0].clone().unwrap(), patched[0].clone().unwrap());
        assert!(new.operation.name().unwrap().starts_with(SCOPE));
        let g = s.graph();
        let r6g = g
            .operation_iter()
            .find(|o| o.op_type().unwrap() == "Relu6Grad" && o.name().unwrap().starts_with(SCOPE))
            .expect("patched Relu6Grad");
        assert_eq!(r6g.input(1).0.name().unwrap(), "act");
        let session = Session::new(&SessionOptions::new(), &g).unwrap();
        let xv = Tensor::new(&[6])
            .with_values(&[1.0f32, 1.0, 20.0, -1.0, 5.9, 0.3])
            .unwrap();
        let mut run = SessionRunArgs::new();
        run.add_feed(&x.operation, 0, &xv);
        let (a, b) = (
            run.request_fetch(&old.operation, old.index),
            run.request_fetch(&new.operation, new.index),
        );
        session.run(&mut run).unwrap();
        let (a, b): (Tensor<f32>, Tensor<f32>) = (run.fetch(a).unwrap(), run.fetch(b).unwrap());
        assert_eq!(&a[..], &b[..]);
        // pre = [2, -1, 10, -3, 5.9, -0.6]: the mask is open at 2 and 5.9 only.
        assert_eq!(a.iter().filter(|v| **v != 0.0).count(), 2);
    }
}
