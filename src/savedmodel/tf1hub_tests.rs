//! `savedmodel::tf1hub`: variant choice and the ref → resource rewrite.
use super::*;

fn n(name: &str, op: &str, input: &[&str]) -> NodeDef {
    let mut d = node_def(
        name.into(),
        op,
        input.iter().map(|s| s.to_string()).collect(),
        vec![],
    );
    d.attr.insert("dtype".into(), attr_type(1));
    d.attr.insert("T".into(), attr_type(1));
    d
}

#[test]
fn ref_variables_become_resource_variables_with_the_same_names() {
    let mut gd = GraphDef {
        node: vec![
            n("v", "VariableV2", &[]),
            n("v/read", "Identity", &["v"]),
            n("v/Assign", "Assign", &["v", "init"]),
            n("sub", "Sub", &["v", "x", "^c"]),
            n("upd", "AssignSub", &["v", "sub"]),
            n("after", "Identity", &["upd:0"]),
        ],
        ..Default::default()
    };
    assert_eq!(to_resource(&mut gd, &[]).unwrap(), vec!["v".to_string()]);
    let by: HashMap<&str, &NodeDef> = gd.node.iter().map(|n| (n.name.as_str(), n)).collect();
    assert_eq!(by["v"].op, "VarHandleOp");
    assert_eq!(by["v/read"].op, "ReadVariableOp");
    assert_eq!(by["v/Assign"].op, "AssignVariableOp");
    assert_eq!(by["upd"].op, "AssignSubVariableOp");
    assert_eq!(by["sub"].input[0], "sub/pretext_read_0:0");
    assert_eq!(by["sub/pretext_read_0"].input, vec!["v", "^c"]);
    assert_eq!(by["after"].input[0], "after/pretext_read_0:0");
    assert_eq!(by["after/pretext_read_0"].input, vec!["v", "^upd"]);
    assert!(!by["upd"].attr.contains_key("T"));
}

#[test]
fn in_place_updates_and_partitioned_variables_are_refused_by_name() {
    let mut gd = GraphDef {
        node: vec![
            n("v", "VariableV2", &[]),
            n("opt", "ApplyGradientDescent", &["v", "lr", "g"]),
        ],
        ..Default::default()
    };
    let e = to_resource(&mut gd, &[]).unwrap_err().to_string();
    assert!(
        e.contains("'opt'") && e.contains("ApplyGradientDescent"),
        "{e}"
    );
    let part = VariableDef {
        variable_name: "w/part_0:0".into(),
        save_slice_info_def: vec![1],
        ..Default::default()
    };
    let e = to_resource(&mut GraphDef::default(), &[part])
        .unwrap_err()
        .to_string();
    assert!(e.contains("w/part_0") && e.contains("partitioned"), "{e}");
}
