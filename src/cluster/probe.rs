//! Which task a failed step waited on: a worker whose process is gone refuses connections, but
//! one that is alive and stuck still accepts them, so each worker is asked to run one trivial op
//! in a session that sees only the chief and that worker.
use std::time::Duration;

use prost::Message;
use tensorflow::{ops, Scope, Session, SessionOptions, SessionRunArgs};

use super::{ClusterConfig, Task};
use crate::proto::ConfigProto;

/// The workers that do not run a constant on their device within `wait` (through the chief's
/// server, `target`). Each is asked on its own thread: a stuck task may hold even the session's
/// creation, so one that has not answered by the deadline counts as stuck (its thread is left
/// behind; the run is stopping).
pub fn stuck_workers(c: &ClusterConfig, target: &str, wait: Duration) -> Vec<Task> {
    let (tx, rx) = std::sync::mpsc::channel();
    let workers: Vec<Task> = c
        .tasks()
        .into_iter()
        .filter(|t| t.job == "worker")
        .collect();
    for t in workers.clone() {
        let (c, target, tx) = (c.clone(), target.to_string(), tx.clone());
        std::thread::spawn(move || {
            let ok = runs_an_op(&c, &t, &target, wait);
            let _ = tx.send((t.index, ok));
        });
    }
    let deadline = std::time::Instant::now() + wait + Duration::from_secs(1);
    let mut answered = std::collections::HashSet::new();
    for _ in 0..workers.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, ok)) if ok => {
                answered.insert(i);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    workers
        .into_iter()
        .filter(|t| !answered.contains(&t.index))
        .collect()
}

fn runs_an_op(c: &ClusterConfig, t: &Task, target: &str, wait: Duration) -> bool {
    let device = c.worker_devices()[t.index].clone();
    let mut scope = Scope::new_root_scope().with_device(&device);
    let Ok(x) = ops::constant(1.0f32, &mut scope) else {
        return false;
    };
    let Ok(y) = ops::identity(x, &mut scope) else {
        return false;
    };
    let cfg = ConfigProto {
        device_filters: vec![
            "/job:chief/task:0".into(),
            format!("/job:worker/task:{}", t.index),
        ],
        operation_timeout_in_ms: wait.as_millis() as i64,
        ..Default::default()
    };
    let mut opts = SessionOptions::new();
    if opts.set_target(target).is_err() || opts.set_config(&cfg.encode_to_vec()).is_err() {
        return false;
    }
    let Ok(mut session) = Session::new(&opts, &scope.graph()) else {
        return false;
    };
    let mut run = SessionRunArgs::new();
    run.request_fetch(&y, 0);
    let ok = session.run(&mut run).is_ok();
    let _ = session.close();
    ok
}
