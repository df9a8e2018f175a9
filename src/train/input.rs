//! Where a trainer's batches come from: its own input threads (`data::Loader`, fed through
//! placeholders), or, on a cluster with `cluster.input: workers`, each worker's own threads
//! (`cluster::input`): the chief then sends the workers their jobs, its step dequeues each
//! replica's share on that replica's worker, and the notes the batches carry give each
//! replica's position for the checkpoints.
use std::sync::Arc;

use tensorflow::{Output, Session, Tensor};

pub use super::remote_input::RemoteInput;
pub(super) use super::remote_input::Shares;
use crate::data::{BatchesState, Dataset, Loader};
use crate::error::{Error, Result};

/// A trainer's input.
pub enum Input {
    Local(Loader),
    Workers(RemoteInput),
}

impl Input {
    /// Images decoded into the batches handed out.
    pub fn images_read(&self) -> u64 {
        match self {
            Input::Local(l) => l.images_read(),
            Input::Workers(r) => r.states().map(|s| s.images_read).sum(),
        }
    }

    /// (image, reason) of every image skipped in the batches handed out.
    pub fn skipped(&self) -> Vec<(String, String)> {
        match self {
            Input::Local(l) => l.skipped().to_vec(),
            Input::Workers(r) => r.states().flat_map(|s| s.skipped.iter().cloned()).collect(),
        }
    }

    /// The dataset read (its index, scan notes).
    pub fn dataset(&self) -> &Arc<Dataset> {
        match self {
            Input::Local(l) => l.dataset(),
            Input::Workers(r) => &r.data,
        }
    }

    /// Images in the dataset.
    pub fn len(&self) -> usize {
        self.dataset().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seconds spent preparing the batches handed out (on the input threads, wherever they run).
    pub fn data_seconds(&self) -> f64 {
        match self {
            Input::Local(l) => l.data_seconds,
            Input::Workers(r) => r.data_seconds,
        }
    }

    /// The next step's feeds (none when the workers read: the step dequeues their batches).
    pub(super) fn next(&mut self, session: &Session) -> Result<Vec<Tensor<f32>>> {
        match self {
            Input::Local(l) => Ok(l.next()?.into_tensors()),
            Input::Workers(r) => {
                if !r.sent {
                    r.start(session)?;
                }
                Ok(Vec::new())
            }
        }
    }

    pub(super) fn recycle(&mut self, xs: Vec<Tensor<f32>>) {
        if let Input::Local(l) = self {
            l.recycle(xs);
        }
    }

    /// Tensors each step fetches for the input (the workers' batch notes).
    pub(super) fn notes(&self) -> &[Output] {
        match self {
            Input::Local(_) => &[],
            Input::Workers(r) => &r.notes,
        }
    }

    /// After a step: the fetched `notes`.
    pub(super) fn noted(&mut self, notes: Vec<String>) -> Result<()> {
        match self {
            Input::Local(_) => Ok(()),
            Input::Workers(r) => r.noted(notes),
        }
    }

    /// The position a checkpoint records: the whole order's, and each replica's when the
    /// workers read (then the first sums up theirs).
    pub(super) fn state(&self) -> (BatchesState, Vec<BatchesState>) {
        match self {
            Input::Local(l) => (l.state().clone(), Vec::new()),
            Input::Workers(r) => {
                let shards: Vec<BatchesState> = r.states().cloned().collect();
                let mut sum = BatchesState {
                    files: r.data.len(),
                    epoch: shards.iter().map(|s| s.epoch).max().unwrap_or(0),
                    pos: 0,
                    served: shards.iter().map(|s| s.served).sum(),
                    images_read: shards.iter().map(|s| s.images_read).sum(),
                    bad: shards.iter().flat_map(|s| s.bad.iter().copied()).collect(),
                    skipped: shards
                        .iter()
                        .flat_map(|s| s.skipped.iter().cloned())
                        .collect(),
                };
                sum.bad.sort_unstable();
                sum.bad.dedup();
                (sum, shards)
            }
        }
    }

    /// Continues from a checkpoint's position (`shards`: the replicas' when the workers read).
    pub(super) fn restore(&mut self, data: &BatchesState, shards: &[BatchesState]) -> Result<()> {
        match self {
            Input::Local(l) if shards.is_empty() => l.restore(data),
            Input::Workers(r) if shards.len() == r.replicas.len() => {
                for (f, s) in r.replicas.iter_mut().zip(shards) {
                    if s.files != r.data.len() {
                        return Err(Error::config("data", format!("the checkpoint was taken over {} images, the data now holds {}; resume needs the same data", s.files, r.data.len())));
                    }
                    f.state = Some(s.clone());
                }
                r.sent = false;
                Ok(())
            }
            _ => Err(Error::config(
                "cluster.input",
                format!(
                    "the checkpoint's data position was kept for {} replica(s) reading on the workers, this run reads {}; resume with the run's own cluster.input and workers",
                    shards.len(),
                    match self {
                        Input::Local(_) => "on the chief".to_string(),
                        Input::Workers(r) => format!("on {} replica(s) of the workers", r.replicas.len()),
                    }
                ),
            )),
        }
    }

    /// A failed step's cause when a worker's input failed (it said so on its reply queue).
    pub(super) fn failed(&self, session: &Session) -> Option<Error> {
        match self {
            Input::Local(_) => None,
            Input::Workers(r) => r.failed(session),
        }
    }

    /// Tells the workers to stop reading for this run (at the trainer's end; nothing waits).
    pub(super) fn stop(&mut self, session: &Session) {
        if let Input::Workers(r) = self {
            r.stop(session);
        }
    }
}
