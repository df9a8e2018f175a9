//! Every tensor a graph or function body names exists, checked before TensorFlow imports the
//! model: TF's importer aborts the whole process (`std::bad_alloc`) on an output index out of
//! range, and deadlocks on some such graphs. Found by tests/fuzz.rs.
use std::collections::HashMap;

use tensorflow::Graph;

use crate::proto::opdefs::{arg_len, OpDefs};
use crate::proto::{attr_value::Value, FunctionDef, GraphDef, NodeDef, OpDef};
use crate::proto::{BodyRef, TensorRef};

/// Output args of `nd` as (name, tensor count), from the callee's signature or TF's registry;
/// `None` for an op this TF does not know (TF's importer refuses those itself).
fn outputs(
    lib: &HashMap<&str, &FunctionDef>,
    opdefs: &mut OpDefs,
    graph: &Graph,
    nd: &NodeDef,
) -> Result<Option<Vec<(String, usize)>>, String> {
    let args = match lib.get(nd.op.as_str()) {
        Some(f) => match &f.signature {
            Some(s) => s.output_arg.clone(),
            None => return Ok(None),
        },
        None => match opdefs.get(graph, &nd.op, &nd.name) {
            Ok(def) => def.output_arg.clone(),
            Err(_) => return Ok(None),
        },
    };
    args.iter()
        .map(|a| {
            arg_len(a, nd)
                .map(|n| (a.name.clone(), n))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Whether `t` is a `DataType` TF knows (types.proto: 1–33 and their `_REF` forms 101–133).
fn known_dtype(t: i32) -> bool {
    (1..=33).contains(&t) || (101..=133).contains(&t)
}

/// The attributes of `nd` that its OpDef types: types must be known dtypes, ints at least their
/// minimum (counts like `N`), lists of types likewise.
fn check_attrs(nd: &NodeDef, def: &OpDef) -> Result<(), String> {
    for a in &def.attr {
        let Some(v) = nd.attr.get(&a.name).and_then(|v| v.value.as_ref()) else {
            continue;
        };
        let bad = |what: String| {
            Err(format!(
                "node '{}' ({}), attr '{}': {what}",
                nd.name, nd.op, a.name
            ))
        };
        match (a.r#type.as_str(), v) {
            ("type", Value::Type(t)) if !known_dtype(*t) => {
                return bad(format!("unknown type {t}"))
            }
            ("list(type)", Value::List(l)) => {
                if let Some(t) = l.r#type.iter().find(|t| !known_dtype(**t)) {
                    return bad(format!("unknown type {t}"));
                }
                if a.has_minimum && (l.r#type.len() as i64) < a.minimum {
                    return bad(format!(
                        "{} types, at least {} needed",
                        l.r#type.len(),
                        a.minimum
                    ));
                }
            }
            ("int", Value::I(i)) if a.has_minimum && *i < a.minimum => {
                return bad(format!("{i} is below its minimum {}", a.minimum))
            }
            ("type" | "int", Value::List(_)) | ("list(type)", Value::Type(_)) => {
                return bad("a value of the wrong kind".into())
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks the attributes of every node of a registered op.
fn check_node_attrs(nodes: &[NodeDef], opdefs: &mut OpDefs, graph: &Graph) -> Result<(), String> {
    for n in nodes {
        if let Ok(def) = opdefs.get(graph, &n.op, &n.name) {
            check_attrs(n, def)?;
        }
    }
    Ok(())
}

/// Checks the top-level graph (`node:index` inputs) and every function body
/// (`node:output_arg:index`, argument names, `^control` inputs, return values).
pub fn check_refs(gd: &GraphDef) -> Result<(), String> {
    let graph = Graph::new();
    let mut opdefs = OpDefs::default();
    let lib = crate::proto::function_library(gd);
    check_node_attrs(&gd.node, &mut opdefs, &graph)?;
    for f in lib.values() {
        check_node_attrs(&f.node_def, &mut opdefs, &graph).map_err(|e| {
            format!(
                "function '{}': {e}",
                f.signature.as_ref().map(|s| s.name.as_str()).unwrap_or("")
            )
        })?;
    }
    let top: HashMap<&str, &NodeDef> = gd.node.iter().map(|n| (n.name.as_str(), n)).collect();
    for n in &gd.node {
        for i in &n.input {
            let TensorRef {
                node: src,
                index: idx,
            } = TensorRef::parse(i);
            let at = |msg: String| format!("node '{}', input '{i}': {msg}", n.name);
            let Some(s) = top.get(src) else {
                return Err(at("no such node".into()));
            };
            if idx < 0 {
                continue;
            }
            if let Some(outs) = outputs(&lib, &mut opdefs, &graph, s).map_err(at)? {
                let total: usize = outs.iter().map(|(_, k)| k).sum();
                if idx as usize >= total {
                    return Err(at(format!("'{src}' has {total} output(s)")));
                }
            }
        }
    }
    for (name, f) in &lib {
        check_function(name, f, &lib, &mut opdefs, &graph)?;
    }
    Ok(())
}

fn check_function(
    fname: &str,
    f: &FunctionDef,
    lib: &HashMap<&str, &FunctionDef>,
    opdefs: &mut OpDefs,
    graph: &Graph,
) -> Result<(), String> {
    let sig = f.signature.as_ref().expect("listed by signature");
    let body: HashMap<&str, &NodeDef> = f.node_def.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut check = |node: &str, t: &str| -> Result<(), String> {
        let at = |msg: String| format!("function '{fname}', node '{node}', input '{t}': {msg}");
        match BodyRef::parse(t) {
            // A control input may name a body node or an argument (TF runs after its producer).
            Some(BodyRef::Control(c)) => {
                match body.contains_key(c) || sig.input_arg.iter().any(|a| a.name == c) {
                    true => Ok(()),
                    false => Err(at("no such node or argument in the body".into())),
                }
            }
            Some(BodyRef::Arg(arg)) if sig.input_arg.iter().any(|a| a.name == arg) => Ok(()),
            Some(BodyRef::Arg(_)) => Err(at("no such function argument".into())),
            Some(BodyRef::Output {
                node: src,
                arg,
                index: idx,
            }) => {
                let s = body
                    .get(src)
                    .ok_or_else(|| at("no such node in the body".into()))?;
                match outputs(lib, opdefs, graph, s).map_err(at)? {
                    None => Ok(()),
                    Some(outs) => match outs.iter().find(|(n, _)| n == arg) {
                        Some((_, k)) if idx < *k => Ok(()),
                        Some((_, k)) => {
                            Err(at(format!("'{src}' output '{arg}' has {k} tensor(s)")))
                        }
                        None => Err(at(format!("'{src}' ({}) has no output '{arg}'", s.op))),
                    },
                }
            }
            _ => Err(at("unparseable tensor name".into())),
        }
    };
    for n in &f.node_def {
        for i in &n.input {
            check(&n.name, i)?;
        }
    }
    for r in f.ret.values() {
        check("(return)", r)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ArgDef, FunctionDefLibrary, OpDef};

    fn node(name: &str, op: &str, input: &[&str]) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: op.into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn lib_with(body: Vec<NodeDef>, ret: &str) -> GraphDef {
        let f = FunctionDef {
            signature: Some(OpDef {
                name: "f".into(),
                input_arg: vec![ArgDef {
                    name: "x".into(),
                    ..Default::default()
                }],
                output_arg: vec![ArgDef {
                    name: "y".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            node_def: body,
            ret: [("y".to_string(), ret.to_string())].into(),
            ..Default::default()
        };
        GraphDef {
            library: Some(FunctionDefLibrary {
                function: vec![f],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn out_of_range_and_dangling_references_are_named() {
        let ok = lib_with(vec![node("r", "Relu", &["x"])], "r:activations:0");
        assert_eq!(check_refs(&ok), Ok(()));
        let past = lib_with(vec![node("r", "Relu", &["x"])], "r:activations:1");
        assert!(check_refs(&past).unwrap_err().contains("has 1 tensor(s)"));
        let wrong = lib_with(vec![node("r", "Relu", &["x"])], "r:output:0");
        assert!(check_refs(&wrong)
            .unwrap_err()
            .contains("has no output 'output'"));
        let dangling = lib_with(vec![node("r", "Relu", &["nope:y:0"])], "r:activations:0");
        assert!(check_refs(&dangling).unwrap_err().contains("no such node"));
        let top = GraphDef {
            node: vec![node("a", "Relu", &[]), node("b", "Relu", &["a:3"])],
            ..Default::default()
        };
        assert!(check_refs(&top)
            .unwrap_err()
            .contains("'a' has 1 output(s)"));
    }

    #[test]
    fn unknown_types_and_counts_below_their_minimum_are_named() {
        let attr = |v: Value| crate::proto::AttrValue { value: Some(v) };
        let g = |n: NodeDef| GraphDef {
            node: vec![n],
            ..Default::default()
        };
        let mut n = node("n", "IdentityN", &[]);
        n.attr
            .insert("T".into(), attr(Value::List(Default::default())));
        let e = check_refs(&g(n)).unwrap_err();
        assert!(e.contains("0 types, at least 1"), "{e}");
        let mut c = node("c", "Cast", &[]);
        c.attr.insert("DstT".into(), attr(Value::Type(38)));
        assert!(check_refs(&g(c.clone()))
            .unwrap_err()
            .contains("unknown type 38"));
        c.attr.insert("DstT".into(), attr(Value::Type(1)));
        assert_eq!(check_refs(&g(c)), Ok(()));
        let mut p = node("p", "Pack", &[]);
        p.attr.insert("N".into(), attr(Value::I(-1)));
        let e = check_refs(&g(p)).unwrap_err();
        assert!(e.contains("-1 is below its minimum 1"), "{e}");
    }
}
