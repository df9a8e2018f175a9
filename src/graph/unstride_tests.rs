//! Unit tests of the strided 1×1 rewrite: which nodes it takes, and that the rewritten graph
//! computes the same convolution (values; gradients against TF are in tests/unstride.rs).
use super::*;
use crate::proto::attr_value::Value;
use crate::proto::nodes::node_def;
use prost::Message;
use tensorflow::{Graph, ImportGraphDefOptions, Session, SessionOptions, SessionRunArgs, Tensor};

fn s_attr(v: &str) -> AttrValue {
    AttrValue {
        value: Some(Value::S(v.as_bytes().to_vec())),
    }
}

/// x (placeholder) and w (const, `kernel` shape) → Conv2D "conv" with `strides` and `padding`.
fn conv_graph(kernel: [i64; 4], strides: [i64; 4], padding: &str) -> GraphDef {
    let n: i64 = kernel.iter().product();
    let w = TensorProto {
        dtype: 1,
        tensor_shape: Some(TensorShapeProto {
            dim: kernel
                .iter()
                .map(|&size| Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        float_val: (0..n)
            .map(|i| 0.25 + 0.5 * (i as f32 * 0.37).sin())
            .collect(),
        ..Default::default()
    };
    GraphDef {
        node: vec![
            node_def(
                "x".into(),
                "Placeholder",
                vec![],
                vec![("dtype", attr_type(1))],
            ),
            const_node("w".into(), w),
            node_def(
                "w_read".into(),
                "Identity",
                vec!["w".into()],
                vec![("T", attr_type(1))],
            ),
            node_def(
                "conv".into(),
                "Conv2D",
                vec!["x".into(), "w_read".into()],
                vec![
                    ("T", attr_type(1)),
                    ("strides", int_list(&strides)),
                    ("padding", s_attr(padding)),
                ],
            ),
        ],
        ..Default::default()
    }
}

fn kernel_of(gd: &GraphDef) -> impl Fn(&str) -> Option<Vec<i64>> + '_ {
    move |t| {
        let name = TensorRef::node_of(t);
        let mut n = gd.node.iter().find(|n| n.name == name)?;
        while n.op == "Identity" {
            let src = TensorRef::node_of(&n.input[0]);
            n = gd.node.iter().find(|m| m.name == src)?;
        }
        known_shape(n)
    }
}

fn rewrite(gd: &mut GraphDef) -> Vec<String> {
    let copy = gd.clone();
    unstride_1x1(gd, kernel_of(&copy))
}

fn run(gd: &GraphDef, x: &Tensor<f32>) -> Vec<f32> {
    let mut g = Graph::new();
    g.import_graph_def(&gd.encode_to_vec(), &ImportGraphDefOptions::new())
        .unwrap();
    let s = Session::new(&SessionOptions::new(), &g).unwrap();
    let mut args = SessionRunArgs::new();
    args.add_feed(&g.operation_by_name_required("x").unwrap(), 0, x);
    let t = args.request_fetch(&g.operation_by_name_required("conv").unwrap(), 0);
    s.run(&mut args).unwrap();
    args.fetch::<f32>(t).unwrap().to_vec()
}

#[test]
fn strided_1x1_convolutions_are_rewritten_and_compute_the_same() {
    // Odd and even sides, square and one-axis strides, SAME and VALID.
    let cases = [
        ([1, 2, 2, 1], "SAME", 8u64),
        ([1, 2, 2, 1], "VALID", 9),
        ([1, 2, 1, 1], "SAME", 7),
        ([1, 3, 3, 1], "VALID", 10),
    ];
    for (strides, padding, side) in cases {
        let orig = conv_graph([1, 1, 3, 5], strides, padding);
        let mut gd = orig.clone();
        assert_eq!(rewrite(&mut gd), vec!["conv".to_string()]);
        let conv = gd.node.iter().find(|n| n.name == "conv").unwrap();
        assert_eq!(ints(conv, "strides").unwrap(), vec![1, 1, 1, 1]);
        assert_eq!(conv.input[0], "conv/pretext_unstride/slice:0");
        let x = Tensor::new(&[2, side, side, 3])
            .with_values(
                &(0..2 * side * side * 3)
                    .map(|i| (i as f32 * 0.61).cos())
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let (a, b) = (run(&orig, &x), run(&gd, &x));
        assert_eq!(a.len(), b.len(), "{strides:?} {padding} {side}");
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-6 * p.abs().max(1.0), "{p} vs {q}");
        }
    }
}

#[test]
fn other_convolutions_are_left_alone() {
    for (kernel, strides, padding) in [
        ([3, 3, 3, 5], [1, 2, 2, 1], "SAME"),
        ([1, 1, 3, 5], [1, 1, 1, 1], "SAME"),
        ([1, 3, 3, 5], [1, 2, 2, 1], "VALID"),
    ] {
        let mut gd = conv_graph(kernel, strides, padding);
        assert!(rewrite(&mut gd).is_empty(), "{kernel:?} {strides:?}");
    }
    // A kernel whose shape is unknown is not touched.
    let mut gd = conv_graph([1, 1, 3, 5], [1, 2, 2, 1], "SAME");
    assert!(unstride_1x1(&mut gd, |_| None).is_empty());
    // Explicit non-zero padding is not a pure stride.
    let mut gd = conv_graph([1, 1, 3, 5], [1, 2, 2, 1], "EXPLICIT");
    let conv = gd.node.iter_mut().find(|n| n.name == "conv").unwrap();
    conv.attr.insert(
        "explicit_paddings".into(),
        int_list(&[0, 0, 1, 1, 1, 1, 0, 0]),
    );
    assert!(rewrite(&mut gd).is_empty());
}
