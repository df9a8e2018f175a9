//! The protos of one `Session::run` call that pretext reads back: `RunOptions` asking for the
//! partition graphs, and `RunMetadata` carrying them (each node with the device TF assigned).
use super::GraphDef;

/// tensorflow.RunOptions: only `output_partition_graphs`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunOptions {
    #[prost(bool, tag = "5")]
    pub output_partition_graphs: bool,
}

/// tensorflow.RunMetadata: only the partition graphs (one per device the run used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunMetadata {
    #[prost(message, repeated, tag = "3")]
    pub partition_graphs: Vec<GraphDef>,
}
