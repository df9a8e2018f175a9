//! The protos of one `Session::run` call that pretext reads back: `RunOptions` asking for the
//! partition graphs, and `RunMetadata` carrying them (each node with the device TF assigned).
use super::GraphDef;

/// tensorflow.RunOptions: a run's deadline and `output_partition_graphs`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunOptions {
    /// Milliseconds before the run fails with DeadlineExceeded (0: the session's own).
    #[prost(int64, tag = "2")]
    pub timeout_in_ms: i64,
    #[prost(bool, tag = "5")]
    pub output_partition_graphs: bool,
}

/// tensorflow.RunMetadata: only the partition graphs (one per device the run used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunMetadata {
    #[prost(message, repeated, tag = "3")]
    pub partition_graphs: Vec<GraphDef>,
}
