//! graph::unstride: a strided 1×1 convolution rewritten to a strided slice + unit-stride
//! convolution has the forward values and the gradients (input and filter) that TF computes for
//! the original node with oneDNN off (`scripts/golden.py`, cases from the oneDNN probe), within
//! 1e-5 of the largest magnitude; and every fixture, those with such layers included, trains
//! with oneDNN on.
mod common;

use common::*;
use pretext::graph::unstride::unstride_1x1;
use pretext::graph::{attr_type, const_node, node_def};
use pretext::proto::{
    attr_value::Value, AttrValue, Dim, GraphDef, ListValue, TensorProto, TensorShapeProto,
};
use prost::Message;
use tensorflow::{Graph, ImportGraphDefOptions, Session, SessionOptions, SessionRunArgs, Tensor};

const TOL: f32 = 1e-5;

fn array(bin: &[f32], v: &serde_json::Value) -> (Vec<u64>, Vec<f32>) {
    let shape = dims(&v["shape"]);
    let off = v["offset"].as_u64().unwrap() as usize;
    let n: u64 = shape.iter().product();
    (shape, bin[off..off + n as usize].to_vec())
}

fn tensor((shape, values): &(Vec<u64>, Vec<f32>)) -> Tensor<f32> {
    Tensor::new(shape).with_values(values).unwrap()
}

/// x, w, dy placeholders, conv (the case's strides and padding), loss = sum(conv · dy).
fn graph_def(case: &serde_json::Value) -> GraphDef {
    let f = || vec![("dtype", attr_type(1))];
    let strides: Vec<i64> = case["strides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect();
    let list = AttrValue {
        value: Some(Value::List(ListValue {
            i: strides,
            ..Default::default()
        })),
    };
    let padding = AttrValue {
        value: Some(Value::S(
            case["padding"].as_str().unwrap().as_bytes().to_vec(),
        )),
    };
    let t = || ("T", attr_type(1));
    GraphDef {
        node: vec![
            node_def("x".into(), "Placeholder", vec![], f()),
            node_def("w".into(), "Placeholder", vec![], f()),
            node_def("dy".into(), "Placeholder", vec![], f()),
            node_def(
                "conv".into(),
                "Conv2D",
                vec!["x".into(), "w".into()],
                vec![t(), ("strides", list), ("padding", padding)],
            ),
            node_def(
                "prod".into(),
                "Mul",
                vec!["conv".into(), "dy".into()],
                vec![t()],
            ),
            const_node(
                "axes".into(),
                TensorProto {
                    dtype: 3,
                    tensor_shape: Some(TensorShapeProto {
                        dim: vec![Dim {
                            size: 4,
                            name: String::new(),
                        }],
                        unknown_rank: false,
                    }),
                    int_val: vec![0, 1, 2, 3],
                    ..Default::default()
                },
            ),
            node_def(
                "loss".into(),
                "Sum",
                vec!["prod".into(), "axes".into()],
                vec![t(), ("Tidx", attr_type(3))],
            ),
        ],
        ..Default::default()
    }
}

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |a, b| a.max(b.abs())).max(1e-30);
    max_abs_diff(got, want) / scale
}

#[test]
fn rewritten_strided_1x1_convolutions_match_tf_gradients() {
    let dir = golden("unstride");
    let idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let bin = read_f32(&dir.join("cases.bin"));
    for case in idx["cases"].as_array().unwrap() {
        let x = array(&bin, &case["x"]);
        let w = array(&bin, &case["w"]);
        let w_shape: Vec<i64> = w.0.iter().map(|&d| d as i64).collect();
        let mut gd = graph_def(case);
        let done = unstride_1x1(&mut gd, |t| (t == "w").then(|| w_shape.clone()));
        assert_eq!(done, vec!["conv".to_string()]);
        let mut g = Graph::new();
        g.import_graph_def(&gd.encode_to_vec(), &ImportGraphDefOptions::new())
            .unwrap();
        let (xt, wt, dyt) = (tensor(&x), tensor(&w), tensor(&array(&bin, &case["dy"])));
        let find = |g: &Graph, n: &str| g.operation_by_name_required(n).unwrap();
        let (loss, xo, wo) = (find(&g, "loss"), find(&g, "x"), find(&g, "w"));
        let grads = g
            .add_gradients(Some("g"), &[loss.into()], &[xo.into(), wo.into()], None)
            .unwrap();
        let op = |n: &str| find(&g, n);
        let s = Session::new(&SessionOptions::new(), &g).unwrap();
        let mut args = SessionRunArgs::new();
        args.add_feed(&op("x"), 0, &xt);
        args.add_feed(&op("w"), 0, &wt);
        args.add_feed(&op("dy"), 0, &dyt);
        let fy = args.request_fetch(&op("conv"), 0);
        let gx = grads[0].as_ref().unwrap();
        let gw = grads[1].as_ref().unwrap();
        let fdx = args.request_fetch(&gx.operation, gx.index);
        let fdw = args.request_fetch(&gw.operation, gw.index);
        s.run(&mut args).unwrap();
        let what = format!(
            "strides {} {} x {:?} w {:?}",
            case["strides"], case["padding"], x.0, w.0
        );
        for (name, fetch, key) in [("y", fy, "y"), ("dx", fdx, "dx"), ("dw", fdw, "dw")] {
            let got = args.fetch::<f32>(fetch).unwrap();
            let want = array(&bin, &case[key]);
            assert_eq!(got.dims(), want.0.as_slice(), "{what}: {name} shape");
            let e = rel_err(&got, &want.1);
            eprintln!("{what}: {name} rel err {e:.1e}");
            assert!(
                e <= TOL,
                "{what}: {name} differs from TF by {e:.2e} (> {TOL:e})"
            );
        }
    }
}

/// Every fixture trains with oneDNN on (pretext's default): `resnet_style` and `fer_emotion`
/// have the strided 1×1 shapes that crash or corrupt gradients without `graph::unstride`.
#[test]
fn every_fixture_trains_with_onednn() {
    assert!(
        pretext::runtime::onednn_enabled(),
        "run the tests without TF_ENABLE_ONEDNN_OPTS=0"
    );
    for &name in ALL {
        let mut c = cfg(name, 3);
        c.batch = 8;
        let mut t = pretext::train::Trainer::new(&c).unwrap();
        let losses = t.run(3).unwrap();
        assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
    }
}
