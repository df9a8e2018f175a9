use super::*;
use crate::graph::control_flow::ControlFlow;
use crate::proto::{attr_value::Value, AttrValue, GraphDef, ListValue};

fn n(name: &str, op: &str, ins: &[&str], attrs: Vec<(&str, AttrValue)>) -> NodeDef {
    node_def(
        name.into(),
        op,
        ins.iter().map(|s| s.to_string()).collect(),
        attrs,
    )
}

/// x, a read of variable `w` (through an external placeholder), h = read · x, a While over
/// (i, h), then `tail` reading `loop:1`, whose last node is the signature output.
fn flat(tail: Vec<NodeDef>) -> FlatGraph {
    let f = || attr_type(1);
    let types = AttrValue {
        value: Some(Value::List(ListValue {
            r#type: vec![3, 1],
            ..Default::default()
        })),
    };
    let mut nodes = vec![
        n("x", "Placeholder", &[], vec![("dtype", f())]),
        n("ext", "Placeholder", &[], vec![("dtype", attr_type(20))]),
        n("read", "ReadVariableOp", &["ext:0"], vec![("dtype", f())]),
        n("h", "Mul", &["read:0", "x:0"], vec![("T", f())]),
        n("i", "Placeholder", &[], vec![("dtype", attr_type(3))]),
        n(
            "loop",
            "StatelessWhile",
            &["i:0", "h:0"],
            vec![("T", types)],
        ),
    ];
    let out = format!("{}:0", tail.last().unwrap().name);
    nodes.extend(tail);
    FlatGraph {
        graph_def: GraphDef {
            node: nodes,
            ..Default::default()
        },
        inputs: vec!["x:0".into()],
        outputs: vec![out],
        external: vec![crate::graph::External {
            placeholder: "ext".into(),
            outer: crate::proto::TensorId::parse("w"),
        }],
        backward: Default::default(),
        updates: Vec::new(),
        control_flow: vec![ControlFlow {
            node: "loop".into(),
            op: "StatelessWhile".into(),
            handling: Handling::Kept,
        }],
        replicas: 1,
        moving: Default::default(),
    }
}

fn trainable(h: &[&str]) -> HashSet<String> {
    h.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_loop_between_a_trainable_variable_and_the_output_is_on_the_gradient_path() {
    let g = flat(vec![n(
        "y",
        "Mul",
        &["loop:1", "x:0"],
        vec![("T", attr_type(1))],
    )]);
    let v = check(&g, &trainable(&["w"])).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].vars, vec!["w".to_string()]);
    assert_eq!(v[0].output.as_deref(), Some("y:0"));
    assert!(v[0].on_path());
    // The variable frozen: off the path.
    assert!(!check(&g, &trainable(&[])).unwrap()[0].on_path());
}

#[test]
fn a_loop_whose_output_only_feeds_a_comparison_is_off_the_path_and_read_through_a_stop() {
    let f = || attr_type(1);
    let mut g = flat(vec![
        n("zero", "ZerosLike", &["x:0"], vec![("T", f())]),
        n("gt", "Greater", &["loop:1", "zero:0"], vec![("T", f())]),
        n(
            "gate",
            "Cast",
            &["gt:0"],
            vec![("SrcT", attr_type(10)), ("DstT", f())],
        ),
        n("y", "Mul", &["gate:0", "x:0"], vec![("T", f())]),
    ]);
    let v = check(&g, &trainable(&["w"])).unwrap();
    assert_eq!(v[0].vars, vec!["w".to_string()]);
    assert_eq!(v[0].output, None);
    assert_eq!(
        stop_gradients(&mut g, &v).unwrap(),
        vec!["loop".to_string()]
    );
    let node = |name: &str| g.graph_def.node.iter().find(|n| n.name == name).unwrap();
    assert_eq!(node("gt").input[0], "loop/__stop1:0");
    assert_eq!(node("loop/__stop1").input, vec!["loop:1".to_string()]);
    // Output 0 (the int32 counter) has no consumer and carries no gradient: no stop.
    assert!(g.graph_def.node.iter().all(|n| n.name != "loop/__stop0"));
}

#[test]
fn a_stop_gradient_after_the_loop_takes_it_off_the_path() {
    let f = || attr_type(1);
    let g = flat(vec![
        n("s", "StopGradient", &["loop:1"], vec![("T", f())]),
        n("y", "Mul", &["s:0", "x:0"], vec![("T", f())]),
    ]);
    let v = check(&g, &trainable(&["w"])).unwrap();
    assert!(!v[0].on_path(), "{v:?}");
}

#[test]
fn without_kept_control_flow_nothing_is_checked_or_changed() {
    let mut g = flat(vec![n(
        "y",
        "Mul",
        &["loop:1", "x:0"],
        vec![("T", attr_type(1))],
    )]);
    g.control_flow.clear();
    assert!(check(&g, &trainable(&["w"])).unwrap().is_empty());
    let before = g.graph_def.node.len();
    assert!(stop_gradients(&mut g, &[]).unwrap().is_empty());
    assert_eq!(g.graph_def.node.len(), before);
}
