//! Hand-written prost structs of the session configuration pretext sets (config.proto,
//! rewriter_config.proto): thread pools, devices, timeouts and grappler's memory optimizer.
use std::collections::HashMap;

/// tensorflow.ConfigProto, just the knobs pretext sets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigProto {
    /// Devices of each type to create (`{"CPU": 2}`: `/device:CPU:0` and `/device:CPU:1`).
    #[prost(map = "string, int32", tag = "1")]
    pub device_count: HashMap<String, i32>,
    #[prost(int32, tag = "2")]
    pub intra_op_parallelism_threads: i32,
    /// Only the devices matching one of these are visible to the session (a cluster session
    /// that must not wait on the other tasks).
    #[prost(string, repeated, tag = "4")]
    pub device_filters: Vec<String>,
    #[prost(int32, tag = "5")]
    pub inter_op_parallelism_threads: i32,
    #[prost(bool, tag = "7")]
    pub allow_soft_placement: bool,
    #[prost(message, optional, tag = "10")]
    pub graph_options: Option<GraphOptions>,
    /// How long a blocking op (a step waiting on another task) may wait; 0: for ever.
    #[prost(int64, tag = "11")]
    pub operation_timeout_in_ms: i64,
    #[prost(message, optional, tag = "16")]
    pub experimental: Option<ConfigExperimental>,
}

/// tensorflow.ConfigProto.Experimental: the task that resolves collective groups (every task
/// of a cluster must name the same one for collective ops to meet).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigExperimental {
    #[prost(string, tag = "1")]
    pub collective_group_leader: String,
}

/// tensorflow.GraphOptions: only the grappler settings.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphOptions {
    #[prost(message, optional, tag = "10")]
    pub rewrite_options: Option<RewriterConfig>,
}

/// tensorflow.RewriterConfig: the memory optimizer's level (`MemOptType`; 2 = MANUAL: recompute
/// the nodes marked `_recompute_hint` for their gradient consumers) and the number of rounds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RewriterConfig {
    #[prost(int32, tag = "4")]
    pub memory_optimization: i32,
    /// `RewriterConfig.NumIterationsType`: 0 default (two rounds), 1 one round.
    #[prost(int32, tag = "12")]
    pub meta_optimizer_iterations: i32,
}

/// `RewriterConfig.MemOptType.MANUAL`.
pub const MEM_OPT_MANUAL: i32 = 2;
