//! Training on several machines through TensorFlow's own distributed runtime: the cluster a
//! run spans (a chief and its workers, as `TF_CONFIG` describes one), the devices each part of
//! the step asks for there, and which task stopped answering when a step fails.
//!
//! The layout is TF's in-graph replication: `pretext run` is the chief. It starts its own gRPC
//! server (`server`), opens its session on it, keeps the variables, the head, the loss and the
//! optimizer on `/job:chief/task:0`, and places one replica of the tower on each worker
//! (`/job:worker/task:i`, the batch split evenly, as `train.devices` does on one machine).
//! `pretext worker` only serves: TF's runtime ships it its part of the graph each step.
//! Checkpoints, TensorBoard and export are the chief's alone.
mod feeder;
pub mod input;
mod probe;
mod server;
mod tf_config;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use server::{chief_server, serve, Server, COLLECTIVE_LEADER};
pub use tf_config::{
    chief_cluster, from_env, parse_spec, worker_task, TaskKind, TfConfig, TF_CONFIG,
};

use crate::error::{Error, Result};

/// The cluster of a run (`cluster:` in an experiment; `TF_CONFIG`'s `cluster` has the same
/// shape): one chief, one or more workers, each `host:port`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The chief's address (a list of one, as in `TF_CONFIG`).
    pub chief: Vec<String>,
    /// The workers' addresses, by task index.
    pub worker: Vec<String>,
    /// How long the chief waits for a task: for every task to answer when the run starts, and
    /// for a step blocked on a task that stopped answering (a task whose process died fails the
    /// step at once).
    #[serde(default = "ClusterConfig::default_timeout")]
    pub timeout_seconds: f64,
    /// Where the training images are read, decoded and augmented.
    #[serde(default)]
    pub input: InputSite,
}

/// Where a cluster's training images are read (`cluster.input`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputSite {
    /// Each worker reads its own replicas' shares on its own threads (`cluster::input`); every
    /// task sees the data at the same path.
    #[default]
    Workers,
    /// The chief reads every batch and TF sends each worker its share.
    Chief,
}

/// A task of the cluster: its job and index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub job: &'static str,
    pub index: usize,
    pub address: String,
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} task {} ({})", self.job, self.index, self.address)
    }
}

impl ClusterConfig {
    /// Default of `timeout_seconds`: long enough for a first step that ships and optimizes a
    /// large graph on every worker.
    pub const DEFAULT_TIMEOUT: f64 = 120.0;
    /// The longest `timeout_seconds`.
    pub const MAX_TIMEOUT: f64 = 86_400.0;

    fn default_timeout() -> f64 {
        Self::DEFAULT_TIMEOUT
    }

    /// Checks the addresses and the timeout (`key`: where the cluster came from).
    pub fn validate(&self, key: &str) -> Result<()> {
        let bad = |msg: String| Error::config(key, msg);
        if self.chief.len() != 1 {
            return Err(bad(format!(
                "chief: {} address(es); a cluster has exactly one chief",
                self.chief.len()
            )));
        }
        if self.worker.is_empty() {
            return Err(bad(
                "worker: no address; a cluster needs one worker or more".into(),
            ));
        }
        let tasks = self.tasks();
        for (i, t) in tasks.iter().enumerate() {
            check_address(&t.address).map_err(|m| bad(format!("{t}: {m}")))?;
            if let Some(o) = tasks[..i].iter().find(|o| o.address == t.address) {
                return Err(bad(format!("{t} and {o} have the same address")));
            }
        }
        if !(self.timeout_seconds > 0.0 && self.timeout_seconds <= Self::MAX_TIMEOUT) {
            return Err(Error::config(
                format!("{key}.timeout_seconds"),
                format!(
                    "{}: must be a number of seconds in (0, {}] (a day)",
                    self.timeout_seconds,
                    Self::MAX_TIMEOUT
                ),
            ));
        }
        Ok(())
    }

    /// Every task: the chief, then the workers in index order.
    pub fn tasks(&self) -> Vec<Task> {
        let job = |job: &'static str, addrs: &[String]| -> Vec<Task> {
            let tasks = addrs.iter().enumerate();
            tasks
                .map(|(index, a)| Task {
                    job,
                    index,
                    address: a.clone(),
                })
                .collect()
        };
        let mut out = job("chief", &self.chief);
        out.extend(job("worker", &self.worker));
        out
    }

    /// Where the variables, head, loss and optimizer live.
    pub fn chief_device(&self) -> String {
        device("chief", 0)
    }

    /// A device's task's first CPU (where its replica's input queue lives).
    pub fn input_device(&self, replica_device: &str) -> Option<String> {
        let name = crate::proto::device::DeviceName::parse(replica_device)?;
        let (job, task) = name.task?;
        (job == "worker").then(|| device("worker", task as usize))
    }

    /// One tower per worker, on its first CPU.
    pub fn worker_devices(&self) -> Vec<String> {
        (0..self.worker.len())
            .map(|i| device("worker", i))
            .collect()
    }

    /// `operation_timeout_in_ms` of the chief's session.
    pub fn timeout_ms(&self) -> i64 {
        (self.timeout_seconds * 1000.0).ceil() as i64
    }

    /// The tasks that do not accept a connection within `wait` (each tried once).
    pub fn unreachable(&self, wait: Duration) -> Vec<Task> {
        self.tasks()
            .into_iter()
            .filter(|t| !answers(&t.address, wait))
            .collect()
    }

    /// Waits (up to `timeout_seconds`) until every worker accepts connections; the error names
    /// those that never did.
    pub fn wait_for_workers(&self) -> Result<()> {
        let start = Instant::now();
        let limit = Duration::from_secs_f64(self.timeout_seconds);
        let mut logged = false;
        loop {
            let missing: Vec<Task> = self
                .tasks()
                .into_iter()
                .filter(|t| t.job == "worker" && !answers(&t.address, Duration::from_secs(1)))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= limit {
                return Err(Error::Cluster {
                    task: missing[0].to_string(),
                    msg: format!(
                        "{} of {} worker(s) did not answer within {} s ({}); start them with `pretext worker` (docs/DISTRIBUTED.md)",
                        missing.len(),
                        self.worker.len(),
                        self.timeout_seconds,
                        list(&missing)
                    ),
                });
            }
            if !logged {
                log::info!("waiting for {}", list(&missing));
                logged = true;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A failed step's error in the cluster's words: which task stopped answering, when one
    /// did; None when every task answers (the failure was the step's own).
    pub fn failed_step(&self, msg: &str) -> Option<Error> {
        let timed_out = ["DeadlineExceeded", "DEADLINE_EXCEEDED", "Deadline Exceeded"]
            .iter()
            .any(|s| msg.contains(s));
        // Only workers are blamed: the chief is this process.
        let mut gone: Vec<Task> = self.unreachable(Duration::from_secs(2));
        gone.retain(|t| t.job == "worker");
        let mut why = "does not answer (its process stopped, or its machine is unreachable)";
        if gone.is_empty() && timed_out {
            // Alive but stuck: it accepts connections and runs nothing.
            if let Ok(s) = chief_server(self) {
                gone = probe::stuck_workers(self, s.target(), Duration::from_secs(5));
                why = "accepts connections but runs nothing (stuck, or its machine is overloaded)";
            }
        }
        let task = match (gone.first(), timed_out) {
            (Some(t), _) => t.to_string(),
            (None, true) => "a task".to_string(),
            (None, false) => return None,
        };
        let why = match (gone.is_empty(), timed_out) {
            (true, _) => format!(
                "a step waited longer than cluster.timeout_seconds ({} s)",
                self.timeout_seconds
            ),
            (false, true) => format!(
                "{why}; a step waited longer than cluster.timeout_seconds ({} s)",
                self.timeout_seconds
            ),
            (false, false) => why.to_string(),
        };
        let tf: Vec<&str> = msg
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let tf = tf.join(" ");
        let tf: String = tf.chars().take(300).collect();
        Some(Error::Cluster {
            task,
            msg: format!(
                "{why}. Training stopped; the last checkpoint is kept, and `pretext resume` on this run continues from it once the cluster is back. (TF: {tf})"
            ),
        })
    }
}

/// A task's device name (its first CPU).
fn device(job: &str, task: usize) -> String {
    format!("/job:{job}/replica:0/task:{task}/device:CPU:0")
}

fn list(tasks: &[Task]) -> String {
    tasks
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `host:port` with a port number.
fn check_address(a: &str) -> std::result::Result<(), String> {
    let (host, port) = a
        .rsplit_once(':')
        .ok_or_else(|| format!("'{a}' is not host:port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("'{a}' is not host:port"));
    }
    Ok(())
}

/// Whether something accepts TCP connections at `address` within `wait`.
fn answers(address: &str, wait: Duration) -> bool {
    let addrs: Vec<SocketAddr> = match address.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return false,
    };
    addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, wait).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> ClusterConfig {
        ClusterConfig {
            chief: vec!["localhost:2222".into()],
            worker: vec!["localhost:2223".into(), "h2:2222".into()],
            timeout_seconds: 5.0,
            input: Default::default(),
        }
    }

    #[test]
    fn tasks_and_devices_follow_tf_names() {
        let c = two();
        c.validate("cluster").unwrap();
        let t: Vec<String> = c.tasks().iter().map(|t| t.to_string()).collect();
        assert_eq!(
            t,
            [
                "chief task 0 (localhost:2222)",
                "worker task 0 (localhost:2223)",
                "worker task 1 (h2:2222)"
            ]
        );
        assert_eq!(c.chief_device(), "/job:chief/replica:0/task:0/device:CPU:0");
        assert_eq!(
            c.worker_devices()[1],
            "/job:worker/replica:0/task:1/device:CPU:0"
        );
        assert_eq!(c.timeout_ms(), 5000);
    }

    #[test]
    fn bad_clusters_are_refused_naming_the_task() {
        let err = |f: &dyn Fn(&mut ClusterConfig)| {
            let mut c = two();
            f(&mut c);
            c.validate("cluster").unwrap_err().to_string()
        };
        assert!(err(&|c| c.chief.clear()).contains("exactly one chief"));
        assert!(err(&|c| c.worker.clear()).contains("one worker or more"));
        let e = err(&|c| c.worker[1] = "h2".into());
        assert!(
            e.contains("worker task 1") && e.contains("host:port"),
            "{e}"
        );
        assert!(err(&|c| c.worker[1] = "localhost:2223".into()).contains("same address"));
        assert!(err(&|c| c.timeout_seconds = 0.0).contains("cluster.timeout_seconds"));
    }

    #[test]
    fn a_closed_port_is_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap().to_string();
        let closed = {
            let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l2.local_addr().unwrap().to_string()
        };
        let c = ClusterConfig {
            chief: vec![open],
            worker: vec![closed.clone()],
            timeout_seconds: 1.0,
            input: Default::default(),
        };
        let gone = c.unreachable(Duration::from_millis(500));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].address, closed);
        let e = c
            .failed_step("UNAVAILABLE: Socket closed")
            .unwrap()
            .to_string();
        assert!(e.contains("worker task 0"), "{e}");
    }
}
