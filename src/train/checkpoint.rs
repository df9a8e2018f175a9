//! Checkpoints of a run: every variable the run changes (model, head, optimizer slots and step,
//! momentum targets, queues, moving statistics) through TF's own SaveV2/RestoreV2, plus the
//! run's position (step, data order, losses) as JSON; written to a temp directory and renamed,
//! the last K kept.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::BatchesState;
use crate::error::{Error, Result};
use crate::savedmodel::Loaded;

/// Where a run stands (saved beside the variables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub step: u64,
    pub data: BatchesState,
    /// Each replica's position, when the workers read (`cluster.input: workers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<BatchesState>,
    /// Loss of every step so far.
    pub losses: Vec<f32>,
    /// Training seconds so far.
    pub seconds: f64,
}

pub use crate::savedmodel::Saver;

/// `DIR/ckpt-<step>/` directories, oldest first.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("ckpt-")?.parse().ok()?;
            e.path()
                .join("state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Writes checkpoint `ckpt-<step>` in `dir` atomically (temp dir + rename) and keeps the
/// newest `keep`.
pub fn write(
    saver: &Saver,
    model: &Loaded,
    dir: &Path,
    state: &RunState,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let dst = dir.join(format!("ckpt-{}", state.step));
    let tmp = dir.join(format!(".ckpt-{}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    saver.save(model, &tmp.join("variables"))?;
    let json = serde_json::to_string(state)
        .map_err(|e| Error::internal("serialising the checkpoint state", e))?;
    let st = tmp.join("state.json");
    std::fs::write(&st, json).map_err(|e| Error::io(&st, e))?;
    sync_dir(&tmp)?;
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
    }
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    sync_dir(dir)?;
    let all = list(dir);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
    }
    Ok(dst)
}

/// fsyncs a directory's files and the directory itself.
fn sync_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        if e.path().is_file() {
            std::fs::File::open(e.path())
                .and_then(|f| f.sync_all())
                .map_err(|err| Error::io(e.path(), err))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Reads a checkpoint's run state.
pub fn read_state(ckpt: &Path) -> Result<RunState> {
    let p = ckpt.join("state.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: p,
        what: "checkpoint state",
        msg: e.to_string(),
    })
}

impl super::Trainer {
    /// Writes checkpoint `ckpt-<step>` into `dir`, keeping the newest `keep`.
    pub fn checkpoint(
        &self,
        dir: &std::path::Path,
        losses: &[f32],
        seconds: f64,
        keep: usize,
    ) -> Result<std::path::PathBuf> {
        let (data, shards) = self.input.state();
        let state = RunState {
            step: self.step,
            data,
            shards,
            losses: losses.to_vec(),
            seconds,
        };
        write(&self.plan.saver, &self.model, dir, &state, keep)
    }

    /// Restores variables and position from a checkpoint directory; returns its state.
    pub fn restore(&mut self, ckpt: &std::path::Path) -> Result<RunState> {
        let state = self.restore_variables(ckpt)?;
        self.input.restore(&state.data, &state.shards)?;
        Ok(state)
    }

    /// Restores the variables and the step only (to export: the data position does not
    /// matter, and may have been kept by workers this process does not use).
    pub fn restore_variables(&mut self, ckpt: &std::path::Path) -> Result<RunState> {
        let state = read_state(ckpt)?;
        self.plan
            .saver
            .restore(&self.model, &ckpt.join("variables"))?;
        self.step = state.step;
        Ok(state)
    }
}
