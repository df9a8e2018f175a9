//! The floor every other module stands on: TensorFlow's protos (hand-written prost structs),
//! references to tensors (`TensorRef` instead of `"node:index"` strings), OpDef look-ups, and
//! the NodeDef / dtype helpers graph rewrites share. It depends on nothing else of pretext but
//! the error type.
mod cluster;
mod config;
pub mod device;
mod messages;
pub mod nodes;
mod object_graph;
pub mod opdefs;
mod run;
mod tensor;

pub use cluster::{ClusterDef, JobDef, ServerDef};
pub use config::*;
pub use messages::*;
pub use object_graph::*;
pub use opdefs::OpDefs;
pub use run::{RunMetadata, RunOptions};
pub use tensor::{BodyRef, TensorId, TensorRef};

use tensorflow::DataType;

/// Human name of a TF DataType enum value.
pub fn dtype_name(dt: i32) -> &'static str {
    match dt {
        1 => "float32",
        2 => "float64",
        3 => "int32",
        4 => "uint8",
        6 => "int8",
        7 => "string",
        9 => "int64",
        10 => "bool",
        19 => "float16",
        20 => "resource",
        21 => "variant",
        _ => "other",
    }
}

/// The function library of a graph by function name.
pub fn function_library(gd: &GraphDef) -> std::collections::HashMap<&str, &FunctionDef> {
    gd.library
        .iter()
        .flat_map(|l| &l.function)
        .filter_map(|f| f.signature.as_ref().map(|s| (s.name.as_str(), f)))
        .collect()
}

/// A shape proto as dimensions (None: unknown); None for an unknown rank.
pub fn shape_of(p: &Option<TensorShapeProto>) -> Option<Vec<Option<i64>>> {
    let p = p.as_ref()?;
    if p.unknown_rank {
        return None;
    }
    Some(
        p.dim
            .iter()
            .map(|d| if d.size < 0 { None } else { Some(d.size) })
            .collect(),
    )
}

/// TF DataType enum value of a crate DataType.
pub fn dtype_code(dt: DataType) -> i32 {
    match dt {
        DataType::Float => 1,
        DataType::Double => 2,
        DataType::Int32 => 3,
        DataType::UInt8 => 4,
        DataType::Int16 => 5,
        DataType::Int8 => 6,
        DataType::String => 7,
        DataType::Int64 => 9,
        DataType::Bool => 10,
        DataType::BFloat16 => 14,
        DataType::Half => 19,
        DataType::Resource => 20,
        DataType::Variant => 21,
        _ => 0,
    }
}
