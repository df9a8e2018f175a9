//! Folding frozen batch norms: values and gradients equal the unfolded graph, on random convolutions.
use super::*;
use prost::Message;
use rand::{Rng, SeedableRng};
use tensorflow::{
    Graph, ImportGraphDefOptions, Output, Session, SessionOptions, SessionRunArgs, Tensor,
};

fn s_attr(v: &str) -> AttrValue {
    AttrValue {
        value: Some(Value::S(v.as_bytes().to_vec())),
    }
}

fn placeholder(name: &str) -> NodeDef {
    node_def(
        name.into(),
        "Placeholder",
        vec![],
        vec![("dtype", attr_type(DT_FLOAT))],
    )
}

/// x → conv (Conv2D or depthwise) → frozen FusedBatchNormV3 → Relu6 → out, every tensor fed.
fn conv_bn_graph(conv_op: &str, training: bool) -> GraphDef {
    let mut gd = GraphDef::default();
    for p in ["x", "w", "gamma", "beta", "mean", "var"] {
        gd.node.push(placeholder(p));
    }
    let mut conv = node_def(
        "conv".into(),
        conv_op,
        vec!["x".into(), "w".into()],
        vec![("T", attr_type(DT_FLOAT)), ("padding", s_attr("SAME"))],
    );
    conv.attr.insert(
        "strides".into(),
        AttrValue {
            value: Some(Value::List(crate::proto::ListValue {
                i: vec![1, 1, 1, 1],
                ..Default::default()
            })),
        },
    );
    gd.node.push(conv);
    gd.node.push(node_def(
        "bn".into(),
        "FusedBatchNormV3",
        ["conv", "gamma", "beta", "mean", "var"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        vec![
            ("T", attr_type(DT_FLOAT)),
            ("U", attr_type(DT_FLOAT)),
            (
                "epsilon",
                AttrValue {
                    value: Some(Value::F(1e-3)),
                },
            ),
            (
                "is_training",
                AttrValue {
                    value: Some(Value::B(training)),
                },
            ),
        ],
    ));
    gd.node
        .push(float_op("out".into(), "Relu6", vec!["bn".into()]));
    gd
}

fn out(g: &Graph, name: &str) -> Output {
    Output {
        operation: g.operation_by_name_required(name).unwrap(),
        index: 0,
    }
}

/// Output and gradients of sum(out · r) w.r.t. x, w, γ, β, with every input fed.
fn run(gd: &GraphDef, feeds: &[(&str, Tensor<f32>)]) -> Vec<Vec<f32>> {
    let mut g = Graph::new();
    g.import_graph_def(&gd.encode_to_vec(), &ImportGraphDefOptions::new())
        .unwrap();
    let y = out(&g, "out");
    let xs: Vec<Output> = ["x", "w", "gamma", "beta"]
        .iter()
        .map(|n| out(&g, n))
        .collect();
    let grads = g
        .add_gradients(None, std::slice::from_ref(&y), &xs, None)
        .unwrap();
    let s = Session::new(&SessionOptions::new(), &g).unwrap();
    let mut args = SessionRunArgs::new();
    for (n, t) in feeds {
        args.add_feed(&g.operation_by_name_required(n).unwrap(), 0, t);
    }
    let mut tokens = vec![args.request_fetch(&y.operation, 0)];
    for d in grads.iter().map(|d| d.clone().unwrap()) {
        tokens.push(args.request_fetch(&d.operation, d.index));
    }
    s.run(&mut args).unwrap();
    tokens
        .into_iter()
        .map(|t| args.fetch::<f32>(t).unwrap().to_vec())
        .collect()
}

fn random(dims: &[u64], lo: f32, hi: f32, rng: &mut impl Rng) -> Tensor<f32> {
    let n: u64 = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Tensor::new(dims).with_values(&v).unwrap()
}

fn check_equal(conv_op: &str, filter: &[u64], channels: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let feeds = vec![
        ("x", random(&[2, 5, 5, filter[2]], -1.0, 1.0, &mut rng)),
        ("w", random(filter, -0.5, 0.5, &mut rng)),
        ("gamma", random(&[channels], 0.5, 1.5, &mut rng)),
        ("beta", random(&[channels], -0.5, 0.5, &mut rng)),
        ("mean", random(&[channels], -0.3, 0.3, &mut rng)),
        ("var", random(&[channels], 0.2, 2.0, &mut rng)),
    ];
    let gd = conv_bn_graph(conv_op, false);
    let mut folded = gd.clone();
    assert_eq!(fold_frozen(&mut folded), vec!["bn".to_string()]);
    let bn = folded.node.iter().find(|n| n.name == "bn").unwrap();
    assert_eq!(bn.op, "BiasAdd");
    assert!(!folded
        .node
        .iter()
        .any(|n| n.op.starts_with("FusedBatchNorm")));
    let (want, got) = (run(&gd, &feeds), run(&folded, &feeds));
    for (k, what) in ["out", "d x", "d w", "d gamma", "d beta"]
        .iter()
        .enumerate()
    {
        assert_eq!(want[k].len(), got[k].len(), "{what}");
        let scale = want[k].iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (a, b) in want[k].iter().zip(&got[k]) {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{conv_op} {what}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn folded_conv2d_gives_the_same_output_and_gradients() {
    check_equal("Conv2D", &[3, 3, 4, 6], 6);
}

#[test]
fn folded_depthwise_conv_with_a_multiplier_gives_the_same_output_and_gradients() {
    // 3 input channels × multiplier 2 = 6 output channels, ordered (in, multiplier).
    check_equal("DepthwiseConv2dNative", &[3, 3, 3, 2], 6);
}

#[test]
fn training_mode_shared_convolutions_and_used_side_outputs_are_left_alone() {
    let mut gd = conv_bn_graph("Conv2D", true);
    assert!(fold_frozen(&mut gd).is_empty());

    let mut gd = conv_bn_graph("Conv2D", false);
    gd.node
        .push(float_op("peek".into(), "Identity", vec!["conv:0".into()]));
    assert!(fold_frozen(&mut gd).is_empty(), "conv output used twice");

    let mut gd = conv_bn_graph("Conv2D", false);
    gd.node
        .push(float_op("stats".into(), "Identity", vec!["bn:1".into()]));
    assert!(fold_frozen(&mut gd).is_empty(), "batch mean used");

    let mut gd = conv_bn_graph("Conv2D", false);
    let bn = gd.node.iter_mut().find(|n| n.name == "bn").unwrap();
    bn.attr.insert("data_format".into(), s_attr("NCHW"));
    assert!(fold_frozen(&mut gd).is_empty(), "NCHW batch norm");
    let mut gd = conv_bn_graph("Conv2D", false);
    gd.node.retain(|n| n.name != "conv");
    gd.node
        .push(float_op("conv".into(), "Relu", vec!["x".into()]));
    assert!(fold_frozen(&mut gd).is_empty(), "not a convolution");
}
