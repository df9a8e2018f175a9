//! Device names as users and TF write them (`/device:GPU:0`, `/cpu:1`,
//! `/job:worker/replica:0/task:1/device:CPU:0`): parsed once, compared by type, index and task,
//! and the CPU devices a session must create for them. On the floor because sessions
//! (`savedmodel`), placement (`graph`) and runs (`train`) all need them.
use crate::error::{Error, Result};

/// A device as a user names it (`/device:GPU:0`, `/gpu:0`, `/cpu:1`,
/// `/job:localhost/replica:0/task:0/device:CPU:1`, `/job:worker/task:1/device:CPU:0`): its type
/// (upper case), index, and the cluster task it is on (None: this process's, `localhost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName {
    pub kind: String,
    pub index: u32,
    /// (job, task) of a device on another task of a cluster.
    pub task: Option<(String, u32)>,
}

impl DeviceName {
    /// The type and index from the name's last component, the job and task from the others;
    /// None if it has no type and index.
    pub fn parse(name: &str) -> Option<DeviceName> {
        let mut parts = name.trim().split('/').filter(|p| !p.is_empty());
        let last = parts.next_back()?;
        let (mut job, mut task) = (None, 0);
        for p in parts {
            match p.split_once(':') {
                Some(("job", j)) if !j.is_empty() => job = Some(j.to_string()),
                Some(("task", t)) => task = t.parse().ok()?,
                Some(("replica", r)) => r.parse::<u32>().ok().map(|_| ())?,
                _ => return None,
            }
        }
        let last = last.strip_prefix("device:").unwrap_or(last);
        let (kind, index) = last.rsplit_once(':')?;
        let index = index.parse().ok()?;
        let ok = !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        ok.then(|| DeviceName {
            kind: kind.to_ascii_uppercase(),
            index,
            task: job.filter(|j| j != "localhost").map(|j| (j, task)),
        })
    }

    /// Whether `assigned` (a full device name, as TF writes it) is this device (a name without
    /// a job matches that device on any task).
    pub fn is(&self, assigned: &str) -> bool {
        let Some(a) = DeviceName::parse(assigned) else {
            return false;
        };
        a.kind == self.kind && a.index == self.index && (self.task.is_none() || a.task == self.task)
    }
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((job, task)) = &self.task {
            write!(f, "/job:{job}/task:{task}")?;
        }
        write!(f, "/device:{}:{}", self.kind, self.index)
    }
}

/// Checks each asked device names a type and an index (`key`: the setting they come from).
pub fn check_devices(key: &str, asked: &[String]) -> Result<Vec<DeviceName>> {
    asked
        .iter()
        .map(|d| {
            DeviceName::parse(d).ok_or_else(|| {
                Error::config(
                    key,
                    format!("'{d}' is not a device name (e.g. /device:GPU:0)"),
                )
            })
        })
        .collect()
}

/// The CPU devices a session must create so that every asked `/device:CPU:N` exists (TF makes
/// one unless its config's `device_count` says more); 0: TF's default.
pub fn cpu_devices(asked: &[String]) -> i32 {
    asked
        .iter()
        .filter_map(|d| DeviceName::parse(d))
        .filter(|d| d.kind == "CPU" && d.index > 0 && d.task.is_none())
        .map(|d| d.index as i32 + 1)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_in_every_spelling_tf_accepts() {
        let cpu1 = DeviceName {
            kind: "CPU".into(),
            index: 1,
            task: None,
        };
        for s in [
            "/device:CPU:1",
            "/cpu:1",
            "/job:localhost/replica:0/task:0/device:CPU:1",
        ] {
            assert_eq!(DeviceName::parse(s).as_ref(), Some(&cpu1), "{s}");
        }
        assert!(cpu1.is("/job:localhost/replica:0/task:0/device:CPU:1"));
        assert!(!cpu1.is("/job:localhost/replica:0/task:0/device:CPU:0"));
        assert_eq!(DeviceName::parse("gpu").as_ref(), None);
        assert_eq!(DeviceName::parse("/device:GPU:x").as_ref(), None);
        assert!(check_devices("model.device", &["GPU".into()]).is_err());
        let w1 = DeviceName::parse("/job:worker/replica:0/task:1/device:CPU:0").unwrap();
        assert_eq!(w1.task, Some(("worker".into(), 1)));
        assert_eq!(w1.to_string(), "/job:worker/task:1/device:CPU:0");
        assert!(w1.is("/job:worker/replica:0/task:1/device:CPU:0"));
        assert!(!w1.is("/job:worker/replica:0/task:0/device:CPU:0"));
        assert!(!w1.is("/job:chief/replica:0/task:1/device:CPU:0"));
        assert_eq!(DeviceName::parse("/job:worker/task:x/device:CPU:0"), None);
        assert_eq!(cpu_devices(&["/job:worker/task:0/device:CPU:3".into()]), 0);
    }

    #[test]
    fn cpu_devices_cover_the_highest_cpu_asked() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(cpu_devices(&v(&["/device:CPU:0"])), 0);
        assert_eq!(cpu_devices(&v(&["/device:CPU:0", "/cpu:2"])), 3);
        assert_eq!(cpu_devices(&v(&["/device:GPU:1"])), 0);
    }
}
