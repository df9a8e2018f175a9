//! Hand-written prost structs of a TF2 SavedModel's object graph (saved_object_graph.proto):
//! the objects, variables and concrete functions pretext binds custom gradients and variables
//! through.
use std::collections::HashMap;

use super::TensorShapeProto;

#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedObjectGraph {
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<SavedObject>,
    #[prost(map = "string, message", tag = "2")]
    pub concrete_functions: HashMap<String, SavedConcreteFunction>,
}

/// Only the members of SavedObject's `kind` oneof that pretext reads are modelled.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedObject {
    #[prost(message, repeated, tag = "1")]
    pub children: Vec<ObjectReference>,
    #[prost(message, optional, tag = "7")]
    pub variable: Option<SavedVariable>,
    #[prost(message, optional, tag = "9")]
    pub constant: Option<SavedConstant>,
    #[prost(message, optional, tag = "12")]
    pub captured_tensor: Option<CapturedTensor>,
}

/// A constant the object graph binds to a function input: an operation of the graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedConstant {
    #[prost(string, tag = "1")]
    pub operation: String,
}

/// A tensor of a function's body bound to another function's input (e.g. a forward value a
/// saved custom gradient reads): `name` is `node:output` inside `concrete_function`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CapturedTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub concrete_function: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectReference {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    #[prost(string, tag = "2")]
    pub local_name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedVariable {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
    #[prost(bool, tag = "3")]
    pub trainable: bool,
    #[prost(string, tag = "6")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedConcreteFunction {
    #[prost(int32, repeated, tag = "2")]
    pub bound_inputs: Vec<i32>,
    #[prost(message, optional, tag = "4")]
    pub output_signature: Option<StructuredValue>,
}

/// tensorflow.StructuredValue, just enough to tell `None` entries of a list or tuple apart.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StructuredValue {
    #[prost(message, optional, tag = "1")]
    pub none_value: Option<NoneValue>,
    #[prost(message, optional, tag = "51")]
    pub list_value: Option<StructuredList>,
    #[prost(message, optional, tag = "52")]
    pub tuple_value: Option<StructuredList>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NoneValue {}

/// The `values` of a StructuredValue list or tuple.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StructuredList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<StructuredValue>,
}
