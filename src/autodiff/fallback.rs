//! The Rust fallback gradient registry: for op types TF's C++ registry cannot differentiate, a
//! rule rewrites each such node of the flat graph into forward-equivalent, differentiable ops
//! (applied as a patch before import; consumers are re-pointed, the original node stays unused).
//!
//! `IdentityN` is differentiated as identities. With `model.custom_gradients: saved` (the
//! default) the IdentityN nodes `tf.custom_gradient` leaves are not rewritten here: they are cut
//! and differentiated by their stored gradient functions (`autodiff::custom`).
use std::collections::HashMap;

use crate::graph::custom::{gradient_op_type, CustomGradients};
use crate::graph::{attr_type, const_node, data_inputs, node_def as node};
use crate::proto::{attr_value::Value, GraphDef, NodeDef, TensorProto};

/// A rewrite: new nodes, and for each output index of the old node the tensor replacing it.
pub struct Rewrite {
    pub nodes: Vec<NodeDef>,
    pub outputs: Vec<String>,
}

type Rule = fn(&NodeDef) -> Option<Rewrite>;

/// Op type → rewrite rule.
pub fn registry() -> HashMap<&'static str, Rule> {
    let mut r: HashMap<&'static str, Rule> = HashMap::new();
    r.insert("Erfc", erfc);
    r.insert("IdentityN", identity_n);
    r.insert("Round", round);
    r
}

fn type_attr(n: &NodeDef, k: &str) -> Option<i32> {
    match n.attr.get(k)?.value.as_ref()? {
        Value::Type(t) => Some(*t),
        _ => None,
    }
}

/// erfc(x) = 1 − erf(x).
fn erfc(n: &NodeDef) -> Option<Rewrite> {
    let x = data_inputs(n).first()?.to_string();
    let t = type_attr(n, "T")?;
    let one = TensorProto {
        dtype: t,
        float_val: if t == 1 { vec![1.0] } else { vec![] },
        double_val: if t == 2 { vec![1.0] } else { vec![] },
        ..Default::default()
    };
    if t != 1 && t != 2 {
        return None;
    }
    let p = format!("{}/__fallback", n.name);
    let nodes = vec![
        node(
            format!("{p}/erf"),
            "Erf",
            vec![x],
            vec![("T", attr_type(t))],
        ),
        const_node(format!("{p}/one"), one),
        node(
            format!("{p}/sub"),
            "Sub",
            vec![format!("{p}/one:0"), format!("{p}/erf:0")],
            vec![("T", attr_type(t))],
        ),
    ];
    Some(Rewrite {
        nodes,
        outputs: vec![format!("{p}/sub:0")],
    })
}

/// Round(x), with no gradient (TF Python registers none; its C++ registry lacks the op).
fn round(n: &NodeDef) -> Option<Rewrite> {
    let x = data_inputs(n).first()?.to_string();
    let t = type_attr(n, "T")?;
    let p = format!("{}/__fallback", n.name);
    let nodes = vec![
        node(
            format!("{p}/round"),
            "Round",
            vec![x],
            vec![("T", attr_type(t))],
        ),
        node(
            format!("{p}/stop"),
            "StopGradient",
            vec![format!("{p}/round:0")],
            vec![("T", attr_type(t))],
        ),
    ];
    Some(Rewrite {
        nodes,
        outputs: vec![format!("{p}/stop:0")],
    })
}

/// IdentityN(x1..xn) = (Identity(x1), …, Identity(xn)).
fn identity_n(n: &NodeDef) -> Option<Rewrite> {
    let types = match n.attr.get("T")?.value.as_ref()? {
        Value::List(l) => l.r#type.clone(),
        _ => return None,
    };
    let ins = data_inputs(n);
    if ins.len() != types.len() {
        return None;
    }
    let p = format!("{}/__fallback", n.name);
    let mut nodes = Vec::new();
    let mut outputs = Vec::new();
    for (k, (x, t)) in ins.into_iter().zip(types).enumerate() {
        nodes.push(node(
            format!("{p}/{k}"),
            "Identity",
            vec![x.clone()],
            vec![("T", attr_type(t))],
        ));
        outputs.push(format!("{p}/{k}:0"));
    }
    Some(Rewrite { nodes, outputs })
}

/// The fallback gradient rules as a graph pass (`apply`).
pub struct FallbackGradients;

impl crate::graph::GraphPass for FallbackGradients {
    fn name(&self) -> &'static str {
        "fallback gradient rules"
    }
    fn run(
        &self,
        flat: &mut crate::graph::FlatGraph,
        cx: &crate::graph::PassContext,
    ) -> crate::error::Result<Vec<String>> {
        // With saved custom gradients, custom nodes are cut instead (`autodiff::custom`).
        let keep = cx.custom_gradients == CustomGradients::Saved;
        Ok(apply_but(&mut flat.graph_def, |n| {
            keep && gradient_op_type(n).is_some()
        }))
    }
}

/// Applies every registered rule to `gd`; returns the names of the rewritten nodes.
pub fn apply(gd: &mut GraphDef) -> Vec<String> {
    apply_but(gd, |_| false)
}

/// As `apply`, leaving the nodes `skip` picks as they are.
pub fn apply_but(gd: &mut GraphDef, skip: impl Fn(&NodeDef) -> bool) -> Vec<String> {
    let rules = registry();
    let mut remap: HashMap<String, String> = HashMap::new();
    let mut added = Vec::new();
    let mut rewritten = Vec::new();
    for n in &gd.node {
        let Some(rule) = rules.get(n.op.as_str()) else {
            continue;
        };
        if skip(n) {
            continue;
        }
        let Some(rw) = rule(n) else { continue };
        for (k, t) in rw.outputs.iter().enumerate() {
            remap.insert(format!("{}:{k}", n.name), t.clone());
            if k == 0 {
                remap.insert(n.name.clone(), t.clone());
            }
        }
        added.extend(rw.nodes);
        rewritten.push(n.name.clone());
    }
    if rewritten.is_empty() {
        return rewritten;
    }
    gd.node.extend(added);
    // Every reader re-pointed, the new nodes too (a rewritten node may read another's output).
    for n in gd.node.iter_mut() {
        for i in n.input.iter_mut() {
            if !i.starts_with('^') {
                if let Some(t) = remap.get(i.as_str()) {
                    *i = t.clone();
                }
            }
        }
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::AttrValue;
    use prost::Message;
    use tensorflow::{
        Graph, ImportGraphDefOptions, Output, Session, SessionOptions, SessionRunArgs, Tensor,
    };

    /// x → Erfc(x) as a GraphDef.
    fn erfc_graph() -> GraphDef {
        let mut gd = GraphDef::default();
        gd.node.push(node(
            "x".into(),
            "Placeholder",
            vec![],
            vec![("dtype", attr_type(1))],
        ));
        gd.node.push(node(
            "y".into(),
            "Erfc",
            vec!["x".into()],
            vec![("T", attr_type(1))],
        ));
        gd.node.push(node(
            "out".into(),
            "Identity",
            vec!["y".into()],
            vec![("T", attr_type(1))],
        ));
        gd
    }

    fn import(gd: &GraphDef) -> Graph {
        let mut g = Graph::new();
        g.import_graph_def(&gd.encode_to_vec(), &ImportGraphDefOptions::new())
            .unwrap();
        g
    }

    fn output(g: &Graph, name: &str) -> Output {
        Output {
            operation: g.operation_by_name_required(name).unwrap(),
            index: 0,
        }
    }

    #[test]
    fn tf_has_no_erfc_gradient_but_the_fallback_gives_the_exact_one() {
        let mut g = import(&erfc_graph());
        let (out, x) = (output(&g, "out"), output(&g, "x"));
        let err = g
            .add_gradients(None, &[out], &[x], None)
            .unwrap_err()
            .to_string();
        assert!(
            crate::autodiff::missing_gradient_op(&err).as_deref() == Some("Erfc"),
            "{err}"
        );

        let mut gd = erfc_graph();
        assert_eq!(apply(&mut gd), vec!["y".to_string()]);
        let mut g = import(&gd);
        let (out, x) = (output(&g, "out"), output(&g, "x"));
        let dx = g
            .add_gradients(
                None,
                std::slice::from_ref(&out),
                std::slice::from_ref(&x),
                None,
            )
            .unwrap()[0]
            .clone()
            .unwrap();
        let s = Session::new(&SessionOptions::new(), &g).unwrap();
        let xs = [-1.5f32, -0.3, 0.0, 0.7, 2.0];
        let t = Tensor::new(&[5]).with_values(&xs).unwrap();
        let mut run = SessionRunArgs::new();
        run.add_feed(&x.operation, 0, &t);
        let ty = run.request_fetch(&out.operation, 0);
        let tg = run.request_fetch(&dx.operation, dx.index);
        s.run(&mut run).unwrap();
        let y: Tensor<f32> = run.fetch(ty).unwrap();
        let gr: Tensor<f32> = run.fetch(tg).unwrap();
        for (i, &v) in xs.iter().enumerate() {
            let v = v as f64;
            let want = -2.0 / std::f64::consts::PI.sqrt() * (-v * v).exp();
            assert!(
                (gr[i] as f64 - want).abs() < 1e-5,
                "d erfc({v}) = {} want {want}",
                gr[i]
            );
            // forward unchanged: erfc(0) = 1, erfc(x) + erfc(-x) = 2
            assert!(y[i].is_finite());
        }
        assert!((y[2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn identity_n_consumers_are_repointed() {
        let mut gd = GraphDef::default();
        let mut idn = node(
            "idn".into(),
            "IdentityN",
            vec!["a:0".into(), "b:0".into(), "^c".into()],
            vec![],
        );
        idn.attr.insert(
            "T".into(),
            AttrValue {
                value: Some(Value::List(crate::proto::ListValue {
                    r#type: vec![1, 1],
                    ..Default::default()
                })),
            },
        );
        gd.node.push(idn);
        gd.node.push(node(
            "use".into(),
            "Mul",
            vec!["idn".into(), "idn:1".into(), "^idn".into()],
            vec![],
        ));
        let rw = apply(&mut gd);
        assert_eq!(rw, vec!["idn".to_string()]);
        let u = gd.node.iter().find(|n| n.name == "use").unwrap();
        assert_eq!(
            u.input,
            vec!["idn/__fallback/0:0", "idn/__fallback/1:0", "^idn"]
        );
    }
}
