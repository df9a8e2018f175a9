//! `pretext worker` processes on loopback ports for the chief to place towers on, started by
//! flags or TF_CONFIG and killed when dropped.
use std::process::{Child, Stdio};

use super::common::cli::*;

/// Worker processes, killed when dropped.
pub struct Workers {
    cluster: String,
    pub procs: Vec<Option<Child>>,
    /// Workers started through TF_CONFIG instead of flags.
    tf_config: bool,
}

impl Workers {
    /// `n` workers on free loopback ports (and one for the chief); `timeout`: the cluster's
    /// `timeout_seconds` (None: the default).
    pub fn start(n: usize, timeout: Option<u32>, tf_config: bool) -> Workers {
        // Every listener is held until all ports are chosen: no port is handed out twice.
        let held: Vec<std::net::TcpListener> = (0..=n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(held);
        let addr = |p: &u16| format!("\"localhost:{p}\"");
        let workers: Vec<String> = ports[1..].iter().map(addr).collect();
        let timeout = timeout.map_or(String::new(), |t| format!(", \"timeout_seconds\": {t}"));
        let cluster = format!(
            "{{\"chief\": [{}], \"worker\": [{}]{timeout}}}",
            addr(&ports[0]),
            workers.join(", ")
        );
        let mut w = Workers {
            cluster,
            procs: Vec::new(),
            tf_config,
        };
        for i in 0..n {
            let c = w.spawn(i);
            w.procs.push(Some(c));
        }
        w
    }

    /// TF_CONFIG of `task` ("chief", or a worker's index), as Kubernetes operators write it.
    pub fn tf_config(&self, task: &str) -> String {
        let (kind, index) = match task {
            "chief" => ("chief", "0"),
            i => ("worker", i),
        };
        format!(
            "{{\"cluster\": {}, \"task\": {{\"type\": \"{kind}\", \"index\": {index}}}, \"environment\": \"cloud\"}}",
            self.cluster
        )
    }

    pub fn spawn(&self, task: usize) -> Child {
        let mut c = pretext_cmd();
        let i = task.to_string();
        match self.tf_config {
            true => c.arg("worker").env("TF_CONFIG", self.tf_config(&i)),
            false => c.args(["worker", "--cluster", &self.cluster, "--task", &i]),
        };
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn kill(&mut self, task: usize) {
        if let Some(mut c) = self.procs[task].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, task: usize) {
        self.kill(task);
        self.procs[task] = Some(self.spawn(task));
    }

    pub fn set(&self) -> String {
        format!("cluster={}", self.cluster)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}
