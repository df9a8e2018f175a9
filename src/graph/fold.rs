//! Frozen batch norm folded into the convolution before it, as a graph patch: the training step
//! then neither runs nor differentiates the batch norm, and keeps one activation less per layer.
//!
//! `FusedBatchNorm(conv(x, W), γ, β, μ, σ², ε)` with `is_training = false` becomes
//! `BiasAdd(conv(x, W · s), β − μ · s)` with `s = γ / sqrt(σ² + ε)`, recomputed every step from
//! the *same* variable reads, so γ, β and W still receive their gradients and the exported
//! SavedModel (the original serving graph with the trained variables) is unchanged. Why it pays:
//! a frozen batch norm's gradient (`FusedBatchNormGradV3`) reads the convolution's output, so
//! that output stays alive until the backward pass next to the batch norm's own output; after
//! folding, the gradient of `BiasAdd` needs only the incoming gradient, and grappler can fuse
//! convolution, bias and activation into one kernel (oneDNN) in the forward pass.
use std::collections::HashMap;

use super::bn::FUSED;
use super::{attr_type, const_node, data_inputs, node_def};
use crate::proto::nodes::float_op;
use crate::proto::{
    attr_value::Value, AttrValue, Dim, GraphDef, NodeDef, TensorProto, TensorShapeProto,
};

const CONVS: &[&str] = &["Conv2D", "DepthwiseConv2dNative"];
const DT_FLOAT: i32 = 1;
const DT_INT32: i32 = 3;

/// "node" → "node:0"; "node:k" unchanged.
fn canonical(t: &str) -> String {
    if t.contains(':') {
        t.to_string()
    } else {
        format!("{t}:0")
    }
}

fn attr<'a>(n: &'a NodeDef, k: &str) -> Option<&'a Value> {
    n.attr.get(k).and_then(|a| a.value.as_ref())
}

/// NHWC unless the node says otherwise (TF's default for both ops).
fn is_nhwc(n: &NodeDef) -> bool {
    match attr(n, "data_format") {
        None => true,
        Some(Value::S(s)) => s.as_slice() == b"NHWC",
        _ => false,
    }
}

fn is_float(n: &NodeDef) -> bool {
    matches!(attr(n, "T"), Some(Value::Type(DT_FLOAT)))
}

/// A batch norm that can be folded: (its index, its convolution's index, epsilon).
fn foldable(
    gd: &GraphDef,
    bi: usize,
    index: &HashMap<&str, usize>,
    uses: &HashMap<String, usize>,
) -> Option<(usize, usize, f32)> {
    let bn = &gd.node[bi];
    if !FUSED.contains(&bn.op.as_str()) || !is_nhwc(bn) || !is_float(bn) {
        return None;
    }
    // `is_training` defaults to true: only an explicit false is frozen.
    if !matches!(attr(bn, "is_training"), Some(Value::B(false))) {
        return None;
    }
    let ins = data_inputs(bn);
    if ins.len() != 5 {
        return None;
    }
    let x = canonical(ins[0]);
    let (conv_name, k) = x.rsplit_once(':')?;
    let ci = *index.get(conv_name)?;
    let conv = &gd.node[ci];
    let only_this_bn = k == "0" && uses.get(&x) == Some(&1);
    // The batch norm's other outputs (batch statistics, reserve space) must be unused.
    let side_outputs_unused = (1..6).all(|k| !uses.contains_key(&format!("{}:{k}", bn.name)));
    if !CONVS.contains(&conv.op.as_str())
        || !is_nhwc(conv)
        || !is_float(conv)
        || data_inputs(conv).len() != 2
        || !only_this_bn
        || !side_outputs_unused
    {
        return None;
    }
    let eps = match attr(bn, "epsilon") {
        Some(Value::F(e)) => *e,
        _ => 1e-4,
    };
    Some((bi, ci, eps))
}

/// Frozen batch norms folded into their convolutions, when `bn_fold` is on.
pub struct FoldFrozenBn;

impl super::GraphPass for FoldFrozenBn {
    fn name(&self) -> &'static str {
        "inference-mode batch norms folded into their convolutions"
    }
    fn run(
        &self,
        flat: &mut super::FlatGraph,
        cx: &super::PassContext,
    ) -> crate::error::Result<Vec<String>> {
        Ok(match cx.bn_fold {
            true => fold_frozen(&mut flat.graph_def),
            false => Vec::new(),
        })
    }
}

/// Folds every frozen batch norm whose input is a convolution used by nothing else (module
/// doc); returns the folded batch norms' names. Each keeps its name (now a `BiasAdd`), so its
/// consumers are untouched; batch norms in training mode, or fed by anything but an NHWC
/// `Conv2D`/`DepthwiseConv2dNative`, stay as they are.
pub fn fold_frozen(gd: &mut GraphDef) -> Vec<String> {
    let mut uses: HashMap<String, usize> = HashMap::new();
    for n in &gd.node {
        for i in data_inputs(n) {
            *uses.entry(canonical(i)).or_default() += 1;
        }
    }
    let plans: Vec<(usize, usize, f32)> = {
        let index: HashMap<&str, usize> = gd
            .node
            .iter()
            .enumerate()
            .map(|(k, n)| (n.name.as_str(), k))
            .collect();
        (0..gd.node.len())
            .filter_map(|bi| foldable(gd, bi, &index, &uses))
            .collect()
    };
    let mut added = Vec::new();
    let mut folded = Vec::new();
    for (bi, ci, eps) in plans {
        let bn = gd.node[bi].clone();
        let ins: Vec<String> = data_inputs(&bn).into_iter().cloned().collect();
        let w = data_inputs(&gd.node[ci])[1].clone();
        let p = format!("{}/fold", bn.name);
        let mut nodes = scale_and_bias(&p, &ins[1..5], eps);
        // The output channel is the filter's last axis for Conv2D; for a depthwise filter
        // [h, w, in, multiplier] it is (in, multiplier) flattened, so the scale is reshaped.
        let per_channel = match gd.node[ci].op == "DepthwiseConv2dNative" {
            true => depthwise_scale(&mut nodes, &p, &w),
            false => format!("{p}/scale:0"),
        };
        nodes.push(float_op(
            format!("{p}/filter"),
            "Mul",
            vec![w.clone(), per_channel],
        ));
        for n in nodes.iter_mut() {
            n.device = bn.device.clone();
        }
        added.extend(nodes);
        // The convolution reads the scaled filter; its only consumer becomes a BiasAdd.
        let conv = &mut gd.node[ci];
        let wi = conv.input.iter().position(|i| *i == w).unwrap_or(1);
        conv.input[wi] = format!("{p}/filter:0");
        gd.node[bi] = bias_add(&bn, &ins[0], &p);
        folded.push(bn.name);
    }
    gd.node.extend(added);
    folded
}

/// The folded scale γ/√(σ²+ε) (`{p}/scale`) and bias β − μ·scale (`{p}/bias`) of a batch norm
/// whose `[γ, β, μ, σ²]` inputs are `stats`.
fn scale_and_bias(p: &str, stats: &[String], eps: f32) -> Vec<NodeDef> {
    let (gamma, beta, mean, var) = (&stats[0], &stats[1], &stats[2], &stats[3]);
    // The moving statistics are constants to the step, as in TF's frozen batch-norm gradient
    // (which gives them none): without the stop, μ and σ² would get gradients of their own.
    vec![
        float_op(format!("{p}/mean"), "StopGradient", vec![mean.clone()]),
        float_op(format!("{p}/var"), "StopGradient", vec![var.clone()]),
        const_node(
            format!("{p}/eps"),
            TensorProto {
                dtype: DT_FLOAT,
                float_val: vec![eps],
                ..Default::default()
            },
        ),
        float_op(
            format!("{p}/var_eps"),
            "AddV2",
            vec![format!("{p}/var:0"), format!("{p}/eps:0")],
        ),
        float_op(
            format!("{p}/rsqrt"),
            "Rsqrt",
            vec![format!("{p}/var_eps:0")],
        ),
        float_op(
            format!("{p}/scale"),
            "Mul",
            vec![gamma.clone(), format!("{p}/rsqrt:0")],
        ),
        float_op(
            format!("{p}/mean_scaled"),
            "Mul",
            vec![format!("{p}/mean:0"), format!("{p}/scale:0")],
        ),
        float_op(
            format!("{p}/bias"),
            "Sub",
            vec![beta.clone(), format!("{p}/mean_scaled:0")],
        ),
    ]
}

/// The scale reshaped to a depthwise filter's `[in, multiplier]` axes (read from the filter
/// `w`'s shape): appends the nodes, returns the tensor.
fn depthwise_scale(nodes: &mut Vec<NodeDef>, p: &str, w: &str) -> String {
    let one_d = |v: i32| TensorProto {
        dtype: DT_INT32,
        tensor_shape: Some(TensorShapeProto {
            dim: vec![Dim {
                size: 1,
                name: String::new(),
            }],
            unknown_rank: false,
        }),
        int_val: vec![v],
        ..Default::default()
    };
    nodes.push(node_def(
        format!("{p}/filter_shape"),
        "Shape",
        vec![w.to_string()],
        vec![
            ("T", attr_type(DT_FLOAT)),
            ("out_type", attr_type(DT_INT32)),
        ],
    ));
    nodes.push(const_node(format!("{p}/two"), one_d(2)));
    nodes.push(node_def(
        format!("{p}/in_mult"),
        "Slice",
        vec![
            format!("{p}/filter_shape:0"),
            format!("{p}/two:0"),
            format!("{p}/two:0"),
        ],
        vec![("T", attr_type(DT_INT32)), ("Index", attr_type(DT_INT32))],
    ));
    nodes.push(node_def(
        format!("{p}/scale_in_mult"),
        "Reshape",
        vec![format!("{p}/scale:0"), format!("{p}/in_mult:0")],
        vec![("T", attr_type(DT_FLOAT)), ("Tshape", attr_type(DT_INT32))],
    ));
    format!("{p}/scale_in_mult:0")
}

/// The BiasAdd that replaces batch norm `bn` (same name, device and control inputs): `x` plus
/// the folded bias.
fn bias_add(bn: &NodeDef, x: &str, p: &str) -> NodeDef {
    let controls = bn.input.iter().filter(|i| i.starts_with('^')).cloned();
    let mut inputs = vec![x.to_string(), format!("{p}/bias:0")];
    inputs.extend(controls);
    let mut n = node_def(
        bn.name.clone(),
        "BiasAdd",
        inputs,
        vec![
            ("T", attr_type(DT_FLOAT)),
            (
                "data_format",
                AttrValue {
                    value: Some(Value::S(b"NHWC".to_vec())),
                },
            ),
        ],
    );
    n.device = bn.device.clone();
    n
}

#[cfg(test)]
#[path = "fold_tests.rs"]
mod tests;
