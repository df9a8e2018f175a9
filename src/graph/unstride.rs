//! Strided 1×1 convolutions rewritten to unit stride, so oneDNN can train every model: a graph
//! patch before import that gives the same values and gradients.
//!
//! `Conv2D(x, W)` with a 1×1 kernel and strides `s ≠ 1` becomes
//! `Conv2D(StridedSlice(x, [::1, ::s_h, ::s_w, ::1]), W)` at stride 1, padding `VALID`. A 1×1
//! kernel reads exactly the pixels the stride lands on and `SAME` pads nothing at that size, so
//! the two are equal value for value, and so are their gradients (TF's `StridedSliceGrad`
//! scatters the stride-1 input gradient back onto the strided pixels).
//!
//! Why: TF 2.21's oneDNN computes a strided 1×1 convolution's filter gradient by first copying
//! the strided pixels into a per-thread buffer ("reduce to unit stride", used when the input side
//! is a multiple of the stride). For NHWC input with fewer channels than the kernel's channel
//! block (16 with AVX-512, 8 with AVX2) it writes past that buffer (uxlfoundation/oneDNN#6035):
//! heap corruption, then `SIGSEGV` or a glibc abort, depending on sizes (fer's `conv2d_3`: 8
//! channels, 60×60, stride 2). The class is rewritten whole — every strided 1×1 `Conv2D`, any
//! channel count and input size — since the channel block depends on the machine; oneDNN then
//! never takes that path in the training graph. (Larger kernels, odd sizes and unit strides do
//! not use the buffer; `scripts/onednn_conv_probe.py` sweeps them.)
use std::collections::HashMap;

use super::{attr_type, const_node, data_inputs, FlatGraph};
use crate::proto::{
    attr_value::Value, AttrValue, Dim, GraphDef, ListValue, NodeDef, TensorProto, TensorShapeProto,
};
use crate::proto::{shape_of, TensorRef};
use crate::savedmodel::SavedModelInfo;

const DT_INT32: i32 = 3;

/// Ops whose output has their first input's shape (followed to find a kernel's shape).
const SAME_SHAPE: &[&str] = &[
    "Identity",
    "ReadVariableOp",
    "StopGradient",
    "Cast",
    "Snapshot",
];

/// Static shapes of a flat graph's tensors where they are fixed by the model: variables (their
/// `VarHandleOp`'s `shape`, through the external placeholders), constants, and what passes a
/// shape through unchanged.
pub struct StaticShapes<'a> {
    nodes: HashMap<&'a str, &'a NodeDef>,
    external: HashMap<&'a str, Vec<i64>>,
}

impl<'a> StaticShapes<'a> {
    pub fn new(flat: &'a FlatGraph, info: &'a SavedModelInfo) -> Self {
        let outer: HashMap<&str, &NodeDef> =
            info.nodes().iter().map(|n| (n.name.as_str(), n)).collect();
        let external = flat
            .external_ops()
            .into_iter()
            .filter_map(|(p, o)| Some((p, known_shape(outer.get(o)?)?)))
            .collect();
        StaticShapes {
            nodes: flat
                .graph_def
                .node
                .iter()
                .map(|n| (n.name.as_str(), n))
                .collect(),
            external,
        }
    }

    /// The shape of `tensor` ("node" or "node:k"), if the model fixes it.
    pub fn of(&self, tensor: &str) -> Option<Vec<i64>> {
        let mut t = tensor;
        for _ in 0..64 {
            let TensorRef {
                node: name,
                index: _,
            } = TensorRef::parse(t);
            let n = self.nodes.get(name)?;
            if n.op == "Placeholder" {
                return self.external.get(name).cloned();
            }
            if !SAME_SHAPE.contains(&n.op.as_str()) {
                return known_shape(n);
            }
            t = data_inputs(n).first()?;
        }
        None
    }
}

/// A node's shape from its own attributes: a variable's `shape`, a constant's value.
fn known_shape(n: &NodeDef) -> Option<Vec<i64>> {
    let dims = match (
        n.op.as_str(),
        n.attr
            .get("shape")
            .or(n.attr.get("value"))?
            .value
            .as_ref()?,
    ) {
        ("VarHandleOp" | "VariableV2", Value::Shape(s)) => shape_of(&Some(s.clone()))?,
        ("Const", Value::Tensor(t)) => shape_of(&t.tensor_shape)?,
        _ => return None,
    };
    dims.into_iter().collect()
}

fn ints(n: &NodeDef, k: &str) -> Option<Vec<i64>> {
    match n.attr.get(k)?.value.as_ref()? {
        Value::List(l) => Some(l.i.clone()),
        _ => None,
    }
}

fn int_list(v: &[i64]) -> AttrValue {
    AttrValue {
        value: Some(Value::List(ListValue {
            i: v.to_vec(),
            ..Default::default()
        })),
    }
}

/// Whether `n` is a strided 1×1 `Conv2D` that pads nothing (`SAME`, `VALID`, or all-zero
/// `EXPLICIT`), given its kernel's shape.
fn strided_1x1(n: &NodeDef, kernel: Option<Vec<i64>>) -> bool {
    if n.op != "Conv2D" || data_inputs(n).len() != 2 {
        return false;
    }
    let Some(strides) = ints(n, "strides").filter(|s| s.len() == 4) else {
        return false;
    };
    let pads_nothing = match n.attr.get("padding").and_then(|a| a.value.as_ref()) {
        Some(Value::S(p)) if p == b"SAME" || p == b"VALID" => true,
        Some(Value::S(p)) if p == b"EXPLICIT" => {
            ints(n, "explicit_paddings").is_some_and(|p| p.iter().all(|&x| x == 0))
        }
        _ => false,
    };
    let one_by_one = kernel.is_some_and(|k| k.len() == 4 && k[0] == 1 && k[1] == 1);
    pads_nothing && one_by_one && strides.iter().any(|&s| s != 1)
}

fn int32_const(name: String, v: &[i32]) -> NodeDef {
    const_node(
        name,
        TensorProto {
            dtype: DT_INT32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![Dim {
                    size: v.len() as i64,
                    name: String::new(),
                }],
                unknown_rank: false,
            }),
            int_val: v.to_vec(),
            ..Default::default()
        },
    )
}

/// The slice taking every `strides[d]`-th element of each dimension (the conv's own `strides`
/// attribute is per dimension in its data format, so it serves as the slice's strides as is).
fn slice_nodes(conv: &NodeDef, x: &str, strides: &[i64]) -> Vec<NodeDef> {
    let p = format!("{}/pretext_unstride", conv.name);
    let s: Vec<i32> = strides.iter().map(|&v| v as i32).collect();
    let mut slice = super::node_def(
        format!("{p}/slice"),
        "StridedSlice",
        vec![
            x.to_string(),
            format!("{p}/begin:0"),
            format!("{p}/end:0"),
            format!("{p}/strides:0"),
        ],
        vec![
            ("Index", attr_type(DT_INT32)),
            ("begin_mask", int_attr(0b1111)),
            ("end_mask", int_attr(0b1111)),
            ("ellipsis_mask", int_attr(0)),
            ("new_axis_mask", int_attr(0)),
            ("shrink_axis_mask", int_attr(0)),
        ],
    );
    if let Some(t) = conv.attr.get("T") {
        slice.attr.insert("T".into(), t.clone());
    }
    let mut nodes = vec![
        int32_const(format!("{p}/begin"), &[0; 4]),
        int32_const(format!("{p}/end"), &[0; 4]),
        int32_const(format!("{p}/strides"), &s),
        slice,
    ];
    for n in &mut nodes {
        n.device = conv.device.clone();
    }
    nodes
}

fn int_attr(v: i64) -> AttrValue {
    AttrValue {
        value: Some(Value::I(v)),
    }
}

/// Rewrites every strided 1×1 `Conv2D` of `gd` (module doc) whose kernel shape `kernel_shape`
/// knows; returns the rewritten nodes' names. Each keeps its name, so consumers are untouched.
pub fn unstride_1x1(
    gd: &mut GraphDef,
    kernel_shape: impl Fn(&str) -> Option<Vec<i64>>,
) -> Vec<String> {
    let plans: Vec<usize> = (0..gd.node.len())
        .filter(|&k| {
            let n = &gd.node[k];
            let kernel = data_inputs(n).get(1).and_then(|w| kernel_shape(w));
            strided_1x1(n, kernel)
        })
        .collect();
    let mut added = Vec::new();
    let mut rewritten = Vec::new();
    for k in plans {
        let conv = &mut gd.node[k];
        let strides = ints(conv, "strides").unwrap_or_default();
        let x = data_inputs(conv)[0].clone();
        let nodes = slice_nodes(conv, &x, &strides);
        let first = conv
            .input
            .iter()
            .position(|i| !i.starts_with('^'))
            .unwrap_or(0);
        conv.input[first] = format!("{}:0", nodes[3].name);
        conv.attr.insert("strides".into(), int_list(&[1, 1, 1, 1]));
        conv.attr
            .insert("dilations".into(), int_list(&[1, 1, 1, 1]));
        conv.attr.insert(
            "padding".into(),
            AttrValue {
                value: Some(Value::S(b"VALID".to_vec())),
            },
        );
        conv.attr.remove("explicit_paddings");
        added.extend(nodes);
        rewritten.push(conv.name.clone());
    }
    gd.node.extend(added);
    rewritten
}

/// Strided 1x1 convolutions trained at unit stride (`apply`).
pub struct Unstride;

impl super::GraphPass for Unstride {
    fn name(&self) -> &'static str {
        "strided 1x1 convolutions at unit stride (oneDNN-safe)"
    }
    fn run(
        &self,
        flat: &mut FlatGraph,
        cx: &super::PassContext,
    ) -> crate::error::Result<Vec<String>> {
        Ok(apply(flat, cx.info))
    }
}

/// `unstride_1x1` on a tower's flat graph, kernel shapes from the model's variables.
pub fn apply(flat: &mut FlatGraph, info: &SavedModelInfo) -> Vec<String> {
    let shapes: HashMap<String, Vec<i64>> = {
        let s = StaticShapes::new(flat, info);
        flat.graph_def
            .node
            .iter()
            .filter(|n| n.op == "Conv2D")
            .filter_map(|n| {
                let w = data_inputs(n).get(1)?.to_string();
                Some((w.clone(), s.of(&w)?))
            })
            .collect()
    };
    unstride_1x1(&mut flat.graph_def, |w| shapes.get(w).cloned())
}

#[cfg(test)]
#[path = "unstride_tests.rs"]
mod tests;
