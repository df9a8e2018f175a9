//! Dependency order over named nodes, iterative (function bodies can be thousands of nodes deep).
use std::collections::HashSet;

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
    use super::topo_order;
    use std::collections::HashMap;

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
