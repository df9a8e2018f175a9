//! `TF_CONFIG`, the convention of tf.distribute and of the Kubernetes operators for TF: a JSON
//! object with the cluster (`{"chief": [..], "worker": [..]}`) and this process's task
//! (`{"type": "worker", "index": 1}`). `--cluster` takes the same cluster object, inline or in
//! a file.
use std::collections::BTreeMap;

use serde::Deserialize;

use super::ClusterConfig;
use crate::error::{Error, Result};

/// The environment variable.
pub const TF_CONFIG: &str = "TF_CONFIG";

/// Which part this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Chief,
    Worker,
}

/// A parsed `TF_CONFIG`.
#[derive(Debug, Clone, PartialEq)]
pub struct TfConfig {
    pub cluster: ClusterConfig,
    pub kind: TaskKind,
    pub index: usize,
}

/// TF_CONFIG as platforms write it; other keys (`environment`, `rpc_layer`, `job`, a task's
/// `trial` or `cloud`) are ignored, as tf.distribute ignores them.
#[derive(Deserialize)]
struct Raw {
    cluster: BTreeMap<String, serde_json::Value>,
    task: RawTask,
}

#[derive(Deserialize)]
struct RawTask {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    index: usize,
}

/// Reads `TF_CONFIG` if set.
pub fn from_env() -> Result<Option<TfConfig>> {
    match std::env::var(TF_CONFIG) {
        Ok(v) if !v.trim().is_empty() => parse(&v).map(Some),
        _ => Ok(None),
    }
}

/// A bad setting named by `key`: a flag (`--cluster`) or a setting (`cluster`, `TF_CONFIG`).
fn bad_setting(key: &str, msg: impl Into<String>) -> Error {
    match key.starts_with("--") {
        true => Error::Flag {
            flag: key.into(),
            msg: msg.into(),
        },
        false => Error::config(key, msg),
    }
}

/// The cluster and task of `pretext worker`: `--cluster` and `--task`, else `TF_CONFIG`.
pub fn worker_task(cluster: Option<&str>, task: Option<usize>) -> Result<(ClusterConfig, usize)> {
    if let (Some(spec), Some(i)) = (cluster, task) {
        return Ok((parse_spec(spec, "--cluster")?, i));
    }
    // A flag missing: both from TF_CONFIG (never a mix of the two sources).
    let Some(env) = from_env()? else {
        let missing = if cluster.is_none() {
            "--cluster"
        } else {
            "--task"
        };
        return Err(bad_setting(
            missing,
            "give --cluster '{\"chief\": [HOST:PORT], \"worker\": [HOST:PORT, …]}' and --task N, or set TF_CONFIG",
        ));
    };
    if cluster.is_some() || task.is_some() {
        return Err(bad_setting(
            if cluster.is_some() {
                "--task"
            } else {
                "--cluster"
            },
            "give both --cluster and --task, or neither (TF_CONFIG then gives both)",
        ));
    }
    match env.kind {
        TaskKind::Worker => Ok((env.cluster, env.index)),
        TaskKind::Chief => Err(Error::config(
            TF_CONFIG,
            "its task is the chief's: run the chief with `pretext run`, workers with `pretext worker`",
        )),
    }
}

/// The cluster `TF_CONFIG` gives a chief (`pretext run` when the experiment has no `cluster`).
pub fn chief_cluster() -> Result<Option<ClusterConfig>> {
    match from_env()? {
        None => Ok(None),
        Some(t) if t.kind == TaskKind::Chief && t.cluster.worker.is_empty() => {
            log::info!("{TF_CONFIG} lists no worker: training in this process alone");
            Ok(None)
        }
        Some(t) if t.kind == TaskKind::Chief => {
            log::info!("cluster from {TF_CONFIG}: this process is the chief");
            Ok(Some(t.cluster))
        }
        Some(t) => Err(Error::config(
            TF_CONFIG,
            format!(
                "this process is worker task {}: start it with `pretext worker`, the chief with `pretext run`",
                t.index
            ),
        )),
    }
}

/// Parses a `TF_CONFIG` value.
pub fn parse(text: &str) -> Result<TfConfig> {
    let bad = |msg: String| Error::config(TF_CONFIG, msg);
    let raw: Raw =
        serde_json::from_str(text).map_err(|e| bad(format!("not TF_CONFIG JSON: {e}")))?;
    // A chief alone (a TFJob of one replica) is a single-machine run: `chief_cluster`.
    let cluster = cluster_of(raw.cluster, TF_CONFIG, false)?;
    let kind = match raw.task.kind.as_str() {
        "chief" | "master" => TaskKind::Chief,
        "worker" => TaskKind::Worker,
        k => {
            return Err(bad(format!(
                "task type '{k}': pretext runs a chief and workers (no parameter servers or evaluators)"
            )))
        }
    };
    let n = match kind {
        TaskKind::Chief => cluster.chief.len(),
        TaskKind::Worker => cluster.worker.len(),
    };
    if raw.task.index >= n {
        return Err(bad(format!(
            "task {} {}: the cluster has {n} such task(s)",
            raw.task.kind, raw.task.index
        )));
    }
    Ok(TfConfig {
        cluster,
        kind,
        index: raw.task.index,
    })
}

/// `--cluster`: the cluster object (`{"chief": [..], "worker": [..]}`, JSON or YAML), inline or
/// in the file it names.
pub fn parse_spec(spec: &str, flag: &str) -> Result<ClusterConfig> {
    let text = match std::path::Path::new(spec).is_file() {
        true => std::fs::read_to_string(spec).map_err(|e| Error::io(spec, e))?,
        false => spec.to_string(),
    };
    let jobs: BTreeMap<String, serde_json::Value> = serde_yaml::from_str(&text).map_err(|e| {
        bad_setting(
            flag,
            format!("'{spec}' is neither a file nor a cluster object: {e}"),
        )
    })?;
    cluster_of(jobs, flag, true)
}

/// The chief and workers of a cluster object; other jobs are refused.
fn cluster_of(
    jobs: BTreeMap<String, serde_json::Value>,
    key: &str,
    need_workers: bool,
) -> Result<ClusterConfig> {
    let bad = |msg: String| bad_setting(key, msg);
    let addrs = |job: &str| -> Result<Vec<String>> {
        match jobs.get(job) {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| bad(format!("cluster job '{job}': a list of host:port ({e})"))),
        }
    };
    let (chief, master, worker) = (addrs("chief")?, addrs("master")?, addrs("worker")?);
    let known = ["chief", "master", "worker", "timeout_seconds", "input"];
    if let Some(j) = jobs.keys().find(|j| !known.contains(&j.as_str())) {
        return Err(bad(format!(
            "cluster job '{j}': pretext runs a chief and workers (variables live on the chief: no parameter servers or evaluators)"
        )));
    }
    let c = ClusterConfig {
        chief: if chief.is_empty() { master } else { chief },
        worker,
        timeout_seconds: match jobs.get("timeout_seconds") {
            None => ClusterConfig::DEFAULT_TIMEOUT,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(format!("timeout_seconds: {v} is not a number")))?,
        },
        input: match jobs.get("input") {
            None => Default::default(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| bad(format!("input: {v}: workers or chief")))?,
        },
    };
    if !need_workers && c.worker.is_empty() {
        return Ok(c);
    }
    c.validate(key).map_err(|e| match e {
        Error::Config { msg, .. } => bad_setting(key, msg),
        e => e,
    })?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_config_as_kubernetes_operators_write_it() {
        let t = parse(
            r#"{"cluster": {"chief": ["job-chief-0.ns.svc:2222"],
                "worker": ["job-worker-0.ns.svc:2222", "job-worker-1.ns.svc:2222"]},
                "task": {"type": "worker", "index": 1}, "environment": "cloud"}"#,
        )
        .unwrap();
        assert_eq!(t.kind, TaskKind::Worker);
        assert_eq!(t.index, 1);
        assert_eq!(t.cluster.worker.len(), 2);
        assert_eq!(t.cluster.timeout_seconds, ClusterConfig::DEFAULT_TIMEOUT);
    }

    #[test]
    fn what_pretext_cannot_run_is_refused_naming_tf_config() {
        let e = |s: &str| parse(s).unwrap_err().to_string();
        let ps = e(
            r#"{"cluster": {"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"]},
                      "task": {"type": "chief"}}"#,
        );
        assert!(ps.contains("TF_CONFIG") && ps.contains("'ps'"), "{ps}");
        let idx = e(r#"{"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                       "task": {"type": "worker", "index": 3}}"#);
        assert!(idx.contains("worker 3"), "{idx}");
        assert!(e("{").contains("not TF_CONFIG JSON"));
    }

    #[test]
    fn cluster_flag_takes_json_or_yaml() {
        let c = parse_spec(
            r#"{"chief": ["a:1"], "worker": ["b:1", "c:1"]}"#,
            "--cluster",
        )
        .unwrap();
        assert_eq!(c.worker, ["b:1", "c:1"]);
        let y = parse_spec(
            "{chief: [a:1], worker: [b:1], timeout_seconds: 9}",
            "--cluster",
        )
        .unwrap();
        assert_eq!(y.chief, ["a:1"]);
        assert_eq!(y.timeout_seconds, 9.0);
        let e = parse_spec("{chief: [a:1]}", "--cluster")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cluster") && e.contains("worker"), "{e}");
    }
}
