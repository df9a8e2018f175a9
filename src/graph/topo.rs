//! Dependency order over named nodes, iterative (function bodies can be thousands of nodes deep),
//! and which top-level nodes a tower copies.
use std::collections::{HashMap, HashSet};

use crate::proto::{NodeDef, TensorRef};

/// The top-level nodes of `top` a tower copies, and an order of everything `roots` reach in
/// which every (data or control) input comes first. Copied: the nodes that depend on the
/// signature inputs (`inputs`, themselves left out) through data edges, and the nodes that
/// do not but read a variable on the way to one of those (a TF1 graph's `v/read`, a weight
/// standardisation): each tower reads its variables itself, so gradients reach them and a
/// momentum tower's copies replace them.
pub(super) fn nodes_to_copy<'a>(
    top: &HashMap<&'a str, &'a NodeDef>,
    inputs: &HashSet<&str>,
    roots: &[&'a str],
) -> (Vec<&'a str>, HashSet<&'a str>) {
    let deps = |n: &'a str, data_only: bool| -> Vec<&'a str> {
        if inputs.contains(n) {
            return vec![];
        }
        top.get(n)
            .map(|nd| {
                nd.input
                    .iter()
                    .filter(|i| !data_only || !i.starts_with('^'))
                    .map(|i| TensorRef::node_of(i))
                    .filter_map(|d| top.get_key_value(d).map(|(k, _)| *k))
                    .collect()
            })
            .unwrap_or_default()
    };
    let order = topo_order(roots, |n| deps(n, false));
    let mut depends: HashSet<&str> = HashSet::new();
    let mut reads: HashSet<&str> = HashSet::new();
    for &n in &order {
        let data = deps(n, true);
        if inputs.contains(n) || data.iter().any(|d| depends.contains(d)) {
            depends.insert(n);
        } else if top[n].op == "ReadVariableOp" || data.iter().any(|d| reads.contains(d)) {
            reads.insert(n);
        }
    }
    let mut copy = depends.clone();
    for &n in order.iter().rev() {
        if copy.contains(n) {
            copy.extend(deps(n, true).into_iter().filter(|d| reads.contains(d)));
        }
    }
    (order, copy)
}

/// Depth-first post-order over `roots` (iterative: bodies can be thousands of nodes deep).
pub(super) fn topo_order<'n>(
    roots: &[&'n str],
    deps: impl Fn(&'n str) -> Vec<&'n str>,
) -> Vec<&'n str> {
    let mut order = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for &r in roots {
        if !seen.insert(r) {
            continue;
        }
        let mut stack: Vec<(&str, Vec<&str>, usize)> = vec![(r, deps(r), 0)];
        while let Some((n, ds, i)) = stack.last_mut() {
            if *i < ds.len() {
                let d = ds[*i];
                *i += 1;
                if seen.insert(d) {
                    let dd = deps(d);
                    stack.push((d, dd, 0));
                }
            } else {
                order.push(*n);
                stack.pop();
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::{nodes_to_copy, topo_order};
    use crate::proto::nodes::node_def;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn towers_copy_what_depends_on_the_input_and_the_variable_reads_feeding_it() {
        let n = |name: &str, op: &str, input: &[&str]| {
            node_def(
                name.into(),
                op,
                input.iter().map(|s| s.to_string()).collect(),
                vec![],
            )
        };
        let nodes = [
            n("x", "Placeholder", &[]),
            n("v", "VarHandleOp", &[]),
            n("v/read", "ReadVariableOp", &["v"]),
            n("std", "Identity", &["v/read"]),
            n("k", "Const", &[]),
            n("upd", "AssignSubVariableOp", &["v", "mean"]),
            n("mean", "Mean", &["x", "k"]),
            n("conv", "Conv2D", &["x", "std", "^upd"]),
        ];
        let top: HashMap<&str, &crate::proto::NodeDef> =
            nodes.iter().map(|d| (d.name.as_str(), d)).collect();
        let inputs: HashSet<&str> = ["x"].into();
        let (order, copy) = nodes_to_copy(&top, &inputs, &["conv"]);
        let at = |s: &str| order.iter().position(|o| *o == s).unwrap();
        assert!(
            at("upd") < at("conv"),
            "control inputs come first: {order:?}"
        );
        let want: HashSet<&str> = ["x", "conv", "mean", "upd", "std", "v/read"].into();
        assert_eq!(copy, want, "not the handle, nor the constant");
    }

    #[test]
    fn topo_order_puts_dependencies_first_even_when_listed_last() {
        let g: HashMap<&str, Vec<&str>> = [("c", vec!["b", "a"]), ("b", vec!["a"]), ("a", vec![])]
            .into_iter()
            .collect();
        let order = topo_order(&["c", "b", "a"], |n| g[n].clone());
        assert_eq!(order, vec!["a", "b", "c"]);
    }

    #[test]
    fn topo_order_handles_deep_chains_without_recursion() {
        let names: Vec<String> = (0..200_000).map(|i| format!("n{i}")).collect();
        let idx: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let order = topo_order(&[names.last().unwrap().as_str()], |n| {
            let i = idx[n];
            if i == 0 {
                vec![]
            } else {
                vec![names[i - 1].as_str()]
            }
        });
        assert_eq!(order.len(), 200_000);
        assert_eq!(order[0], "n0");
    }
}
