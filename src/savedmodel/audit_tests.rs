//! `savedmodel::audit`: what the audit flags, and the call-graph limits.
use super::*;
use crate::proto::nodes::node_def;
use crate::proto::AttrValue;

fn s_attr(v: &str) -> AttrValue {
    AttrValue {
        value: Some(Value::S(v.as_bytes().to_vec())),
    }
}

#[test]
fn file_process_and_network_ops_are_findings() {
    for op in [
        "WriteFile",
        "ReadFile",
        "MatchingFiles",
        "PyFunc",
        "EagerPyFunc",
        "Rpc",
    ] {
        let n = node_def("n".into(), op, vec![], vec![]);
        assert!(danger(&n).is_some(), "{op}");
    }
    for op in [
        "Conv2D",
        "ReadVariableOp",
        "Print",
        "InitializeTableFromTextFileV2",
    ] {
        let n = node_def("n".into(), op, vec![], vec![]);
        assert!(danger(&n).is_none(), "{op}");
    }
    let to_file = node_def(
        "p".into(),
        "PrintV2",
        vec![],
        vec![("output_stream", s_attr("file:///tmp/x"))],
    );
    assert!(danger(&to_file).is_some());
    let to_log = node_def(
        "p".into(),
        "PrintV2",
        vec![],
        vec![("output_stream", s_attr("stderr"))],
    );
    assert!(danger(&to_log).is_none());
}

mod call_graph_tests {
    use super::*;
    use crate::proto::{FunctionDefLibrary, OpDef};

    fn fun(name: &str, calls: &[&str]) -> FunctionDef {
        FunctionDef {
            signature: Some(OpDef {
                name: name.into(),
                ..Default::default()
            }),
            node_def: calls
                .iter()
                .enumerate()
                .map(|(i, c)| NodeDef {
                    name: format!("n{i}"),
                    op: c.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn graph(funs: Vec<FunctionDef>) -> GraphDef {
        GraphDef {
            library: Some(FunctionDefLibrary {
                function: funs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn recursion_and_deep_nesting_are_refused_and_shared_callees_are_fine() {
        let ok = graph(vec![
            fun("a", &["b", "c"]),
            fun("b", &["c"]),
            fun("c", &["Relu"]),
        ]);
        assert_eq!(check_call_graph(&ok), Ok(()));
        let rec = graph(vec![fun("a", &["b"]), fun("b", &["c"]), fun("c", &["a"])]);
        let e = check_call_graph(&rec).unwrap_err();
        assert!(e.contains("calls itself") && e.contains("-> a"), "{e}");
        let own = graph(vec![fun("f", &["f"])]);
        assert!(check_call_graph(&own)
            .unwrap_err()
            .contains("'f' calls itself"));
        let chain: Vec<FunctionDef> = (0..100)
            .map(|i| fun(&format!("f{i}"), &[&format!("f{}", i + 1)]))
            .collect();
        assert!(check_call_graph(&graph(chain))
            .unwrap_err()
            .contains("deeper than 64"));
        let fine: Vec<FunctionDef> = (0..30)
            .map(|i| fun(&format!("f{i}"), &[&format!("f{}", i + 1)]))
            .collect();
        assert_eq!(check_call_graph(&graph(fine)), Ok(()));
    }
}
