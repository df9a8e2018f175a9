//! Graph rewrites on TF protos: inlining a signature's function calls into a flat, trainable
//! subgraph ("tower") that reads the model's own resource variables, and importing it once.
pub mod bn;
mod bn_sync;
pub mod control_flow;
pub mod custom;
pub mod fold;
mod inline;
mod inputs;
pub mod pass;
pub mod placement;
pub mod recompute;
pub mod replicate;
mod topo;
mod tower;
pub mod unstride;

pub use crate::proto::nodes::{attr_type, const_node, data_inputs, func_attr, node_def, CALL_OPS};
pub use crate::proto::{dtype_code, OpDefs};
pub use inline::{inline_signature, External, FlatGraph};
pub use pass::{GraphPass, PassContext, PassLog};
pub use tower::{resolve_handle, Tower};

use std::collections::HashMap;

use tensorflow::Output;

use crate::error::{Error, Result, TfContext};
use crate::proto::NodeDef;

/// Histogram of op types over a set of nodes, most frequent first.
pub fn op_histogram(nodes: &[NodeDef]) -> Vec<(String, usize)> {
    let mut h: HashMap<String, usize> = HashMap::new();
    for n in nodes {
        *h.entry(n.op.clone()).or_default() += 1;
    }
    let mut v: Vec<_> = h.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// `ConcatV2` of `xs` along `axis` (the crate's generated builders cannot take list inputs).
pub fn concat(s: &mut tensorflow::Scope, xs: &[Output], axis: i32) -> Result<Output> {
    let ctx = || "concatenating tensors".to_string();
    // The op builder (not `ops::constant`) gives the axis the scope's device, and the concat
    // takes it from there: it is built outside the scope's builders.
    let axis: Output = tensorflow::ops::Const::new()
        .dtype(tensorflow::DataType::Int32)
        .value(tensorflow::Tensor::from(axis))
        .build(s)
        .tf_ctx(ctx)?
        .into();
    let device = axis.operation.device().unwrap_or_default();
    new_op(s, "ConcatV2", "concat", |d| {
        d.add_input_list(xs);
        d.set_device(&device).map_err(|e| e.to_string())?;
        d.add_input(axis);
        Ok(())
    })
}

/// One `op` named after `hint` (unique in `s`), built straight on the graph for what the crate's
/// builders cannot take (list inputs, raw attributes): `fill` adds its inputs, device and
/// attributes; an error names the new node.
pub fn new_op(
    s: &mut tensorflow::Scope,
    op: &str,
    hint: &str,
    fill: impl FnOnce(&mut tensorflow::OperationDescription) -> std::result::Result<(), String>,
) -> Result<Output> {
    let name = s.get_unique_name_for_op(hint);
    let mut g = s.graph_mut();
    let mut d = g
        .new_operation(op, &name)
        .map_err(|e| Error::graph(&name, e.to_string()))?;
    fill(&mut d).map_err(|e| Error::graph(&name, e))?;
    let operation = d.finish().map_err(|e| Error::graph(&name, e.to_string()))?;
    Ok(Output {
        operation,
        index: 0,
    })
}
