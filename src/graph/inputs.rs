//! The inlined signature's new inputs: one placeholder per signature input, in its shape (a
//! constant for one with a fixed value, `model.fixed_inputs`). An
//! integer image input (uint8, int32) gets a float placeholder instead, whose pixels (0..255) are
//! rounded, clipped and cast to the model's dtype in the graph, so heads feed every model floats.
use std::collections::HashMap;

use super::{attr_type, const_node, node_def};
use crate::proto::{attr_value::Value, AttrValue, NodeDef, TensorRef, TensorShapeProto};
use crate::savedmodel::Signature;

/// Appends the placeholders to `out`: (signature input node → the flat node standing for it,
/// the new input tensors in signature order).
pub(super) fn placeholders<'s>(
    out: &mut Vec<NodeDef>,
    sig: &'s Signature,
) -> (HashMap<&'s str, String>, Vec<String>) {
    let mut input_nodes = HashMap::new();
    let mut inputs = Vec::new();
    // Inputs with a fixed value (`model.fixed_inputs`): a constant stands for each.
    for f in &sig.fixed {
        let name = format!("input/{}", f.spec.key);
        out.push(const_node(name.clone(), f.proto()));
        input_nodes.insert(TensorRef::node_of(&f.spec.tensor), name);
    }
    for s in &sig.inputs {
        let n = TensorRef::node_of(&s.tensor);
        let name = format!("input/{}", s.key);
        // Integer images only (rank 4, 1 or 3 channels): token ids and the like stay as they are.
        let image =
            matches!(&s.shape, Some(d) if d.len() == 4 && matches!(d[3], None | Some(1) | Some(3)));
        let integer = matches!(s.dtype, 3 | 4) && image;
        let mut attr = HashMap::new();
        attr.insert(
            "dtype".to_string(),
            attr_type(if integer { 1 } else { s.dtype }),
        );
        if let Some(shape) = &s.shape {
            let dim = shape
                .iter()
                .map(|d| crate::proto::Dim {
                    size: d.unwrap_or(-1),
                    name: String::new(),
                })
                .collect();
            let shape = TensorShapeProto {
                dim,
                unknown_rank: false,
            };
            attr.insert(
                "shape".into(),
                AttrValue {
                    value: Some(Value::Shape(shape)),
                },
            );
        }
        out.push(NodeDef {
            name: name.clone(),
            op: "Placeholder".into(),
            attr,
            ..Default::default()
        });
        let feeds = match integer {
            true => integer_pixels(out, &name, s.dtype),
            false => name.clone(),
        };
        input_nodes.insert(n, feeds);
        inputs.push(format!("{name}:0"));
    }
    (input_nodes, inputs)
}

/// Float pixels from placeholder `x` as the model's integer `dtype`: rounded, clipped to 0..255
/// and cast. Returns the node standing for the model's input.
fn integer_pixels(out: &mut Vec<NodeDef>, x: &str, dtype: i32) -> String {
    let scalar = |v: f32| crate::proto::TensorProto {
        dtype: 1,
        float_val: vec![v],
        ..Default::default()
    };
    let f = || ("T", attr_type(1));
    out.push(const_node(format!("{x}/lo"), scalar(0.0)));
    out.push(const_node(format!("{x}/hi"), scalar(255.0)));
    out.push(node_def(
        format!("{x}/round"),
        "Round",
        vec![format!("{x}:0")],
        vec![f()],
    ));
    let clip_in = vec![
        format!("{x}/round:0"),
        format!("{x}/lo:0"),
        format!("{x}/hi:0"),
    ];
    out.push(node_def(
        format!("{x}/clip"),
        "ClipByValue",
        clip_in,
        vec![f()],
    ));
    let cast = format!("{x}/cast");
    out.push(node_def(
        cast.clone(),
        "Cast",
        vec![format!("{x}/clip:0")],
        vec![("SrcT", attr_type(1)), ("DstT", attr_type(dtype))],
    ));
    cast
}
