//! A TensorFlow gRPC server (`TF_NewServer` of the C API, the server behind
//! `tf.distribute.Server`): `pretext worker` runs one and waits; the chief runs one per process
//! and opens its sessions on it.
use std::ffi::CStr;
use std::sync::Mutex;

use prost::Message;
use tensorflow_sys as tf;

use super::ClusterConfig;
use crate::error::{Error, Result};
use crate::proto::{ClusterDef, JobDef, ServerDef};

/// A started server; TF's C API cannot stop a gRPC server, so it lives as long as its process.
pub struct Server {
    raw: *mut tf::TF_Server,
    target: String,
    task: String,
}

// The C API's server is thread-safe: its own threads serve; `join` only blocks the caller.
unsafe impl Send for Server {}
unsafe impl Sync for Server {}

/// A TF_Status that frees itself.
struct Status(*mut tf::TF_Status);

impl Status {
    fn new() -> Status {
        Status(unsafe { tf::TF_NewStatus() })
    }

    /// The status as an error about `what`, or Ok.
    fn check(&self, what: impl FnOnce() -> String) -> Result<()> {
        let code = unsafe { tf::TF_GetCode(self.0) };
        if code == tf::TF_Code::TF_OK {
            return Ok(());
        }
        let msg = unsafe { CStr::from_ptr(tf::TF_Message(self.0)) };
        Err(Error::Cluster {
            task: what(),
            msg: msg.to_string_lossy().into_owned(),
        })
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        unsafe { tf::TF_DeleteStatus(self.0) }
    }
}

impl Server {
    /// Starts the server of `job` task `index` of `cluster`.
    pub fn start(cluster: &ClusterConfig, job: &str, index: usize) -> Result<Server> {
        let task = format!("{job} task {index}");
        let def = server_def(cluster, job, index).encode_to_vec();
        let status = Status::new();
        let raw = unsafe { tf::TF_NewServer(def.as_ptr().cast(), def.len(), status.0) };
        status.check(|| format!("{task}: starting its TF server"))?;
        unsafe { tf::TF_ServerStart(raw, status.0) };
        if let Err(e) = status.check(|| format!("{task}: starting its TF server")) {
            unsafe { tf::TF_DeleteServer(raw) };
            return Err(e);
        }
        let target = unsafe { CStr::from_ptr(tf::TF_ServerTarget(raw)) }
            .to_string_lossy()
            .into_owned();
        Ok(Server { raw, target, task })
    }

    /// The session target (`grpc://host:port`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Serves until the process ends.
    pub fn join(&self) -> Result<()> {
        let status = Status::new();
        unsafe { tf::TF_ServerJoin(self.raw, status.0) };
        status.check(|| self.task.clone())
    }
}

/// TF's ServerDef of `job` task `index`: every job of the cluster, gRPC.
/// The task that resolves the cluster's collective groups.
pub const COLLECTIVE_LEADER: &str = "/job:chief/replica:0/task:0";

fn server_def(cluster: &ClusterConfig, job: &str, index: usize) -> ServerDef {
    let jobdef = |name: &str, addrs: &[String]| JobDef {
        name: name.into(),
        tasks: addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (i as i32, a.clone()))
            .collect(),
    };
    ServerDef {
        cluster: Some(ClusterDef {
            job: vec![
                jobdef("chief", &cluster.chief),
                jobdef("worker", &cluster.worker),
            ],
        }),
        job_name: job.into(),
        task_index: index as i32,
        // Collective ops (`train.gradient_reduce: collective`, in any task) meet through one
        // group leader, the same for every server: the chief.
        default_session_config: Some(crate::proto::ConfigProto {
            experimental: Some(crate::proto::ConfigExperimental {
                collective_group_leader: COLLECTIVE_LEADER.into(),
            }),
            ..Default::default()
        }),
        protocol: "grpc".into(),
    }
}

/// The chief's server, started once per process (the first run in a process starts it; later
/// runs on the same cluster reuse it). Its target is where the chief's sessions open.
pub fn chief_server(cluster: &ClusterConfig) -> Result<&'static Server> {
    static CHIEF: Mutex<Option<(Vec<String>, &'static Server)>> = Mutex::new(None);
    let mut slot = CHIEF.lock().unwrap_or_else(|p| p.into_inner());
    let key: Vec<String> = cluster.tasks().iter().map(|t| t.address.clone()).collect();
    if let Some((k, s)) = slot.as_ref() {
        if *k == key {
            return Ok(s);
        }
        return Err(Error::Cluster {
            task: "chief task 0".into(),
            msg: "this process already serves another cluster; run each cluster's chief in its own process".into(),
        });
    }
    let s: &'static Server = Box::leak(Box::new(Server::start(cluster, "chief", 0)?));
    log::info!(
        "chief: TF server at {} ({} worker(s))",
        s.target(),
        cluster.worker.len()
    );
    *slot = Some((key, s));
    Ok(s)
}

/// `pretext worker`: starts worker task `index` of `cluster` and serves until killed.
pub fn serve(cluster: &ClusterConfig, index: usize) -> Result<()> {
    if index >= cluster.worker.len() {
        return Err(Error::Flag {
            flag: "--task".into(),
            msg: format!(
                "{index}: the cluster has {} worker(s)",
                cluster.worker.len()
            ),
        });
    }
    let s = Server::start(cluster, "worker", index)?;
    super::feeder::spawn(s.target().to_string(), index)?;
    log::info!(
        "worker task {index}: TF server at {} (chief {}); serving until stopped",
        cluster.worker[index],
        cluster.chief[0]
    );
    s.join()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_def_lists_both_jobs() {
        let c = ClusterConfig {
            chief: vec!["a:1".into()],
            worker: vec!["b:1".into(), "c:1".into()],
            timeout_seconds: 1.0,
            input: Default::default(),
        };
        let d = server_def(&c, "worker", 1);
        assert_eq!(d.job_name, "worker");
        assert_eq!(d.task_index, 1);
        let jobs = d.cluster.unwrap().job;
        assert_eq!(jobs[1].tasks[&1], "c:1");
        assert_eq!(jobs[0].tasks.len(), 1);
    }
}
