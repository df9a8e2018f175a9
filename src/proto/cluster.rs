//! TensorFlow's distributed-runtime protos (`tensorflow_server.proto`, `cluster.proto`): what a
//! gRPC server is told about its cluster and its own place in it.
use std::collections::HashMap;

/// tensorflow.ServerDef: the cluster, this server's job and task, its protocol.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerDef {
    #[prost(message, optional, tag = "1")]
    pub cluster: Option<ClusterDef>,
    #[prost(string, tag = "2")]
    pub job_name: String,
    #[prost(int32, tag = "3")]
    pub task_index: i32,
    /// Session settings of the sessions this server's master creates.
    #[prost(message, optional, tag = "4")]
    pub default_session_config: Option<super::ConfigProto>,
    /// `grpc`.
    #[prost(string, tag = "5")]
    pub protocol: String,
}

/// tensorflow.ClusterDef: every job of the cluster.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterDef {
    #[prost(message, repeated, tag = "1")]
    pub job: Vec<JobDef>,
}

/// tensorflow.JobDef: a job's tasks by index (`host:port` each).
#[derive(Clone, PartialEq, prost::Message)]
pub struct JobDef {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(map = "int32, string", tag = "2")]
    pub tasks: HashMap<i32, String>,
}
