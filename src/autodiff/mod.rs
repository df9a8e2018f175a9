//! Gradients of a scalar loss w.r.t. model variables, taken on the flat tower with TF's C++
//! gradient registry (`TF_AddGradients`); op types TF lacks are first rewritten into
//! differentiable equivalents by the Rust fallback registry (`fallback`).
pub mod colocate;
pub mod control_flow;
pub mod custom;
pub mod fallback;
pub mod reduce;
pub mod relu_mask;
mod staged;
mod walk;

use std::collections::BTreeMap;

use tensorflow::{Output, Scope};

use crate::error::{Error, Result};
use crate::graph::Tower;

/// The gradient of the loss for one variable (summed over every read of it).
#[derive(Debug, Clone)]
pub struct VarGrad {
    /// VarHandleOp node of the variable.
    pub handle: String,
    /// One of the tower's reads of it (its value as used in the forward pass).
    pub value: Output,
    pub grad: Output,
}

/// Op type named by TF's "No gradient defined for op: X" message, if that is what `msg` says.
pub fn missing_gradient_op(msg: &str) -> Option<String> {
    let i = msg.find("No gradient defined for op")?;
    let rest = msg[i..].split_once(':')?.1.trim_start();
    let op: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!op.is_empty()).then_some(op)
}

/// Adds gradient ops for `loss` w.r.t. `reads` (variable name, a value read of it), on the
/// loss's device when it has one; reads of one variable are summed. Variables whose reads do not reach the loss get no entry. Towers
/// with custom gradients are differentiated in stages (`staged`), the rest in one call.
pub fn gradients(
    scope: &mut Scope,
    towers: &[Tower],
    loss: Output,
    reads: &[(String, Output)],
    prefix: &str,
) -> Result<Vec<VarGrad>> {
    gradients_reduced(scope, towers, loss, reads, prefix, Default::default())
}

/// `gradients`, a variable's gradients from several devices added up as `how` says.
pub fn gradients_reduced(
    scope: &mut Scope,
    towers: &[Tower],
    loss: Output,
    reads: &[(String, Output)],
    prefix: &str,
    how: reduce::GradientReduce,
) -> Result<Vec<VarGrad>> {
    // The gradient ops go where the loss is (`relu_mask::patch` places its copy of them).
    let device = loss.operation.device().unwrap_or_default();
    let device = (!device.is_empty()).then_some(device.as_str());
    // TF refuses x's the loss does not depend on; keep the reads the loss reaches.
    let needed = ancestors(scope, &loss);
    let reads: Vec<&(String, Output)> = reads
        .iter()
        .filter(|(_, o)| needed.contains(&o.operation.name().unwrap_or_default()))
        .collect();
    // Staged where a tower with custom gradients holds a read asked for.
    let asked: std::collections::HashSet<String> = reads
        .iter()
        .map(|(_, o)| o.operation.name().unwrap_or_default())
        .collect();
    let staged = towers.iter().any(|t| {
        !t.backward.stages.is_empty()
            && t.reads
                .iter()
                .any(|(_, o)| asked.contains(&o.operation.name().unwrap_or_default()))
    });
    let per_read: Vec<Vec<Output>> = if staged {
        staged::backward(scope, towers, loss, &reads, prefix)?
    } else {
        let xs: Vec<Output> = reads.iter().map(|(_, o)| o.clone()).collect();
        call(scope, towers, &[loss], None, &xs, prefix)?
            .into_iter()
            .map(|g| g.into_iter().collect())
            .collect()
    };
    // ReLU masks read from activation outputs, over every gradient op under `prefix`.
    let lens: Vec<usize> = per_read.iter().map(Vec::len).collect();
    let flat: Vec<Option<Output>> = per_read.into_iter().flatten().map(Some).collect();
    let (flat, moved) = {
        let mut graph = scope.graph_mut();
        relu_mask::patch(&mut graph, prefix, flat, device)?
    };
    log::debug!("{moved} ReLU gradient mask(s) read from activation outputs");
    let mut flat = flat.into_iter();
    let mut by_var: BTreeMap<String, (Output, Vec<Output>)> = BTreeMap::new();
    for ((h, v), n) in reads.iter().zip(lens) {
        for g in flat.by_ref().take(n).flatten() {
            by_var
                .entry(h.clone())
                .or_insert_with(|| (v.clone(), Vec::new()))
                .1
                .push(g);
        }
    }
    let mut sc = scope.new_sub_scope(&format!("{prefix}_sum"));
    let items: Vec<reduce::Parts> = by_var.into_iter().map(|(h, (v, gs))| (h, v, gs)).collect();
    let named: Vec<(String, Output)> = items
        .iter()
        .map(|(h, v, _)| (h.clone(), v.clone()))
        .collect();
    let grads = reduce::reduce_all(&mut sc, items, how)?;
    Ok(named
        .into_iter()
        .zip(grads)
        .map(|((handle, value), grad)| VarGrad {
            handle,
            value,
            grad,
        })
        .collect())
}

/// One `TF_AddGradients` call: d(ys · dxs)/d(xs) (dxs: ones when None), under `prefix`. An op
/// TF cannot differentiate is named (with the towers' nodes of that type).
fn call(
    scope: &mut Scope,
    towers: &[Tower],
    ys: &[Output],
    dxs: Option<&[Output]>,
    xs: &[Output],
    prefix: &str,
) -> Result<Vec<Option<Output>>> {
    let grads = {
        let mut g = scope.graph_mut();
        g.add_gradients(Some(prefix), ys, xs, dxs)
    };
    grads.map_err(|status| {
        let msg = status.to_string();
        match missing_gradient_op(&msg) {
            Some(op) => {
                let nodes = tower_nodes_of_type(scope, towers, &op);
                let ops = if nodes.is_empty() {
                    vec![(op, "?".to_string())]
                } else {
                    nodes.into_iter().map(|n| (op.clone(), n)).collect()
                };
                Error::NoGradient { ops }
            }
            None => Error::Tf {
                context: "adding gradient ops".into(),
                msg,
            },
        }
    })
}

/// Names of every op `t` depends on through data edges (TF's gradient builder refuses an x
/// reached only through control inputs), `t`'s own included.
fn ancestors(scope: &Scope, t: &Output) -> std::collections::HashSet<String> {
    let _g = scope.graph();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![t.operation.clone()];
    while let Some(op) = stack.pop() {
        let Ok(name) = op.name() else { continue };
        if !seen.insert(name) {
            continue;
        }
        for i in 0..op.num_inputs() {
            stack.push(op.input(i).0);
        }
    }
    seen
}

/// Names of the tower's nodes with op type `op` (for error messages).
fn tower_nodes_of_type(scope: &Scope, towers: &[Tower], op: &str) -> Vec<String> {
    let g = scope.graph();
    let prefixes: Vec<String> = towers.iter().map(|t| format!("{}/", t.prefix)).collect();
    let mut v: Vec<String> = g
        .operation_iter()
        .filter(|o| o.op_type().map(|t| t == op).unwrap_or(false))
        .filter_map(|o| o.name().ok())
        .filter(|n| n.starts_with("pretext/") || prefixes.iter().any(|p| n.starts_with(p.as_str())))
        .collect();
    v.sort();
    v.truncate(8);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_without_a_gradient_is_named_with_the_class_that_says_so() {
        use tensorflow::ops;
        let mut scope = Scope::new_root_scope();
        let x = ops::Placeholder::new()
            .dtype(tensorflow::DataType::Float)
            .build(&mut scope.with_op_name("x"))
            .unwrap();
        let axis = ops::constant(0i32, &mut scope).unwrap();
        let c = ops::Erfc::new()
            .build(x.clone(), &mut scope.with_op_name("erfc"))
            .unwrap();
        let loss = ops::Sum::new().build(c, axis, &mut scope).unwrap();
        let read = ("v".to_string(), x.output(0));
        let e = gradients(&mut scope, &[], loss.output(0), &[read], "grad").unwrap_err();
        assert!(
            matches!(&e, Error::NoGradient { ops } if ops[0].0 == "Erfc"),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
    }

    #[test]
    fn parses_tf_missing_gradient_message() {
        let m = "{{function_node x}} No gradient defined for op: Erfc. Please see https://www.tensorflow.org/code/tensorflow/cc/gradients/README.md";
        assert_eq!(missing_gradient_op(m).as_deref(), Some("Erfc"));
        assert_eq!(missing_gradient_op("something else"), None);
    }
}
