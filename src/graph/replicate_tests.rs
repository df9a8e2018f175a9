//! `graph::replicate` on a hand-made flat graph: the copies, the shared variables, and the
//! synchronised batch norm's wiring.
use super::*;
use crate::graph::External;
use crate::proto::nodes::test_node;
use crate::proto::{GraphDef, TensorId};

fn n(name: &str, op: &str, inputs: &[&str]) -> NodeDef {
    test_node(name, op, "", inputs)
}

/// x → bn (training) → relu, the variables behind shared placeholders `ext/*`.
fn flat() -> FlatGraph {
    let mut gd = GraphDef::default();
    gd.node.push(n("x", "Placeholder", &[]));
    for v in ["g", "b", "m", "v"] {
        gd.node.push(n(&format!("ext/{v}"), "Placeholder", &[]));
        gd.node.push(n(
            &format!("read_{v}"),
            "ReadVariableOp",
            &[&format!("ext/{v}")],
        ));
    }
    let mut bn = n(
        "bn",
        "FusedBatchNormV3",
        &["x", "read_g", "read_b", "read_m", "read_v"],
    );
    bn.attr.insert(
        "is_training".into(),
        AttrValue {
            value: Some(Value::B(true)),
        },
    );
    gd.node.push(bn);
    gd.node.push(n("relu", "Relu", &["bn:0", "^bn"]));
    FlatGraph {
        graph_def: gd,
        inputs: vec!["x:0".into()],
        outputs: vec!["relu:0".into()],
        external: ["g", "b", "m", "v"]
            .map(|v| External {
                placeholder: format!("ext/{v}"),
                outer: TensorId::parse(v),
            })
            .into(),
        backward: Default::default(),
        updates: Vec::new(),
        control_flow: Vec::new(),
        replicas: 1,
        moving: Default::default(),
    }
}

fn node<'a>(f: &'a FlatGraph, name: &str) -> &'a NodeDef {
    f.graph_def
        .node
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("{name}"))
}

const DEVICES: [&str; 2] = ["/device:CPU:0", "/device:CPU:1"];

#[test]
fn each_replica_is_a_copy_on_its_device_sharing_the_variables() {
    let mut f = flat();
    let devices = DEVICES.map(String::from);
    assert_eq!(
        replicate(&mut f, &devices, false).unwrap(),
        vec!["bn".to_string()]
    );
    assert_eq!(f.inputs, vec!["replica0/x:0", "replica1/x:0"]);
    assert_eq!(f.outputs, vec!["replica0/relu:0", "replica1/relu:0"]);
    assert_eq!(f.replicas, 2);
    let shared = f
        .graph_def
        .node
        .iter()
        .filter(|n| n.name.starts_with("ext/"))
        .count();
    assert_eq!(shared, 4, "the variables' placeholders stay once");
    let read = node(&f, "replica1/read_g");
    assert_eq!(
        (read.input[0].as_str(), read.device.as_str()),
        ("ext/g", DEVICES[1])
    );
    let relu = node(&f, "replica1/relu");
    assert_eq!(relu.input, vec!["replica1/bn:0", "^replica1/bn"]);
    // Per-replica statistics: the moving averages of both replicas, averaged.
    let m = &f.moving["bn"];
    assert_eq!(
        m.reads,
        ["replica0/read_m:0".to_string(), "replica0/read_v:0".into()]
    );
    let sum = node(&f, "replicas/bn/average/mean_sum");
    assert_eq!(sum.input, vec!["replica0/bn:1", "replica1/bn:1"]);
}

#[test]
fn synchronised_batch_norms_read_sums_over_every_replica() {
    let mut f = flat();
    replicate(&mut f, &DEVICES.map(String::from), true).unwrap();
    assert!(f.graph_def.node.iter().all(|n| n.op != "FusedBatchNormV3"));
    let relu = node(&f, "replica1/relu");
    assert_eq!(
        relu.input,
        vec!["replica1/bn/sync/y:0", "^replica1/bn/sync/y"]
    );
    for total in ["sum", "sq_sum", "count"] {
        let t = node(&f, &format!("replicas/bn/sync/{total}"));
        assert_eq!((t.op.as_str(), t.input.len()), ("AddN", 2), "{total}");
        assert_eq!(t.device, DEVICES[0]);
    }
    assert_eq!(node(&f, "replica1/bn/sync/sum").device, DEVICES[1]);
    assert_eq!(f.moving["bn"].values[1], "replicas/bn/sync/var_out:0");
    // A reader of a reserve space (outputs 3–5) cannot be rewired.
    let mut g = flat();
    g.graph_def.node.push(n("bad", "Identity", &["bn:3"]));
    let e = replicate(&mut g, &DEVICES.map(String::from), true).unwrap_err();
    assert!(e.to_string().contains("bn:3"), "{e}");
}

#[test]
fn a_synchronised_batch_norm_keeps_its_control_inputs_and_colocations() {
    let mut f = flat();
    let bn = f
        .graph_def
        .node
        .iter_mut()
        .find(|n| n.name == "bn")
        .unwrap();
    bn.input.push("^read_v".into());
    let mut beside = n("beside", "Identity", &["x"]);
    let class = crate::proto::ListValue {
        s: vec![b"loc:@bn".to_vec()],
        ..Default::default()
    };
    beside.attr.insert(
        "_class".into(),
        AttrValue {
            value: Some(Value::List(class)),
        },
    );
    f.graph_def.node.push(beside);
    replicate(&mut f, &DEVICES.map(String::from), true).unwrap();
    let axes = node(&f, "replica1/bn/sync/axes");
    assert_eq!(axes.input, vec!["^replica1/read_v"]);
    let beside = node(&f, "replica1/beside");
    let Some(Value::List(l)) = beside.attr["_class"].value.as_ref() else {
        panic!("_class kept")
    };
    assert_eq!(l.s, vec![b"loc:@replica1/bn/sync/y".to_vec()]);
}
