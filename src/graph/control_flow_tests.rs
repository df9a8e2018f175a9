use super::*;
use crate::graph::{attr_type, const_node, node_def};
use crate::proto::{AttrValue, ListValue, NameAttrList, TensorProto};

fn func(name: &str) -> NameAttrList {
    NameAttrList {
        name: name.into(),
        ..Default::default()
    }
}

fn int(name: &str, v: i32) -> NodeDef {
    let t = TensorProto {
        dtype: 3,
        int_val: vec![v],
        ..Default::default()
    };
    const_node(name.into(), t)
}

fn if_node(op: &str) -> NodeDef {
    let mut n = node_def("cond".into(), op, vec![], vec![]);
    for (k, f) in [("then_branch", "yes"), ("else_branch", "no")] {
        let v = Some(Value::Func(func(f)));
        n.attr.insert(k.into(), AttrValue { value: v });
    }
    n
}

fn case_node(branches: &[&str]) -> NodeDef {
    let mut n = node_def("case".into(), "StatelessCase", vec![], vec![]);
    let l = ListValue {
        func: branches.iter().map(|b| func(b)).collect(),
        ..Default::default()
    };
    let v = Some(Value::List(l));
    n.attr.insert("branches".into(), AttrValue { value: v });
    n
}

/// (taken function, its arguments, the record) for `nd` over the flat nodes `out`.
fn take(nd: &NodeDef, out: &[NodeDef], pred: &str) -> (Option<(String, Vec<String>)>, ControlFlow) {
    let mut rec = Record::default();
    let data = vec![pred.to_string(), "x:0".to_string()];
    let t = taken_branch(nd, &data, "scope/cond", out, &mut rec);
    assert_eq!(rec.nodes.len(), 1);
    (t, rec.nodes.pop().unwrap())
}

#[test]
fn a_predicate_folded_from_constants_selects_its_branch() {
    // LogicalNot(Equal(2, 3)) = true, under a control input that is not a constant.
    let t = |op: &str, ins: Vec<&str>, attrs| {
        node_def(
            op.to_lowercase(),
            op,
            ins.into_iter().map(String::from).collect(),
            attrs,
        )
    };
    let out = vec![
        node_def(
            "x".into(),
            "Placeholder",
            vec![],
            vec![("dtype", attr_type(1))],
        ),
        int("two", 2),
        int("three", 3),
        t(
            "Equal",
            vec!["two:0", "three:0", "^x"],
            vec![("T", attr_type(3))],
        ),
        t("LogicalNot", vec!["equal:0"], vec![]),
    ];
    let (taken, rec) = take(&if_node("StatelessIf"), &out, "logicalnot:0");
    assert_eq!(taken, Some(("yes".into(), vec!["x:0".into()])));
    let inlined = Handling::Inlined {
        index: 0,
        function: "yes".into(),
    };
    assert_eq!(rec.handling, inlined);
    assert!(
        rec.describe().contains("then branch (yes) inlined"),
        "{}",
        rec.describe()
    );
    // An integer predicate is true when not zero: 0 takes the else branch.
    let (taken, _) = take(&if_node("If"), &[int("zero", 0)], "zero:0");
    assert_eq!(taken.unwrap().0, "no");
}

#[test]
fn a_case_index_selects_its_branch_and_one_out_of_range_the_last() {
    let case = case_node(&["b0", "b1", "b2"]);
    assert_eq!(take(&case, &[int("i", 1)], "i:0").0.unwrap().0, "b1");
    assert_eq!(take(&case, &[int("i", 7)], "i:0").0.unwrap().0, "b2");
    let (_, rec) = take(&case, &[int("i", -1)], "i:0");
    assert!(
        rec.describe().contains("branch 2 (b2)"),
        "{}",
        rec.describe()
    );
}

#[test]
fn predicates_from_inputs_other_ops_big_constants_or_unknown_nodes_are_kept() {
    let x = node_def(
        "x".into(),
        "Placeholder",
        vec![],
        vec![("dtype", attr_type(10))],
    );
    let (taken, rec) = take(&if_node("If"), &[x], "x:0");
    assert_eq!((taken, rec.handling), (None, Handling::Kept));
    let shape = int("shape", 1);
    let random = node_def(
        "r".into(),
        "RandomUniform",
        vec!["shape:0".into()],
        vec![("T", attr_type(3)), ("dtype", attr_type(1))],
    );
    assert!(take(&if_node("If"), &[shape, random], "r:0").0.is_none());
    assert!(take(&if_node("If"), &[], "elsewhere:0").0.is_none());
    // A constant of 17 elements (reduced by Any) is not folded: folding stays cheap.
    let big = |n: i64| {
        let shape = crate::proto::TensorShapeProto {
            dim: vec![crate::proto::Dim {
                size: n,
                name: String::new(),
            }],
            unknown_rank: false,
        };
        let t = TensorProto {
            dtype: 10,
            tensor_shape: Some(shape),
            bool_val: vec![true],
            ..Default::default()
        };
        const_node("v".into(), t)
    };
    let any = |v| {
        let axis = int("axis", 0);
        let a = node_def(
            "any".into(),
            "Any",
            vec!["v:0".into(), "axis:0".into()],
            vec![("Tidx", attr_type(3))],
        );
        take(&if_node("If"), &[v, axis, a], "any:0").0
    };
    assert_eq!(any(big(16)).unwrap().0, "yes");
    assert!(any(big(17)).is_none());
    // A loop is recorded and kept, whatever its inputs.
    let w = node_def("w".into(), "While", vec![], vec![]);
    assert_eq!(take(&w, &[int("i", 1)], "i:0").1.handling, Handling::Kept);
}

#[test]
fn other_ops_are_not_control_flow_and_are_not_recorded() {
    let mut rec = Record::default();
    let n = node_def("m".into(), "Mul", vec![], vec![]);
    assert!(taken_branch(&n, &[], "m", &[], &mut rec).is_none());
    assert!(rec.nodes.is_empty());
    assert!(is_control_flow("StatelessWhile") && !is_control_flow("PartitionedCall"));
}
