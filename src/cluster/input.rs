//! Workers reading their own shard of the data (`cluster.input: workers`): what the chief and
//! a worker say to each other, and the queues that carry it, all on the worker's TF server.
//!
//! The chief puts an `InputJob` on the worker's job queue (`JOBS`): the data to read, the views
//! to make, and for each replica the worker hosts its shard of the order and its position. The
//! worker (`feeder`) answers on its reply queue (`REPLIES`), then decodes and augments each
//! replica's share of every batch on its own threads into that replica's data queue, which the
//! chief's step dequeues on that worker: the images never pass through the chief. Each batch
//! carries a `BatchNote` (the replica's position after it), which the chief's checkpoints keep.
//! Nothing but TF's queues and gRPC moves any of it.
use serde::{Deserialize, Serialize};
use tensorflow::{ops, DataType, Operation, Output, Scope, Shape};

use crate::data::{BatchesState, DataSources, ImageSpec, LoaderOptions, Shard, ViewPlan};
use crate::error::{Error, Result, TfContext};

/// The shared name of every worker's job queue (on its first CPU).
pub const JOBS: &str = "pretext_input_jobs";
/// The shared name of every worker's reply queue.
pub const REPLIES: &str = "pretext_input_replies";
/// Messages a job or reply queue holds.
const CONTROL_CAPACITY: i64 = 64;

/// What a worker reads, makes and feeds for one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputJob {
    pub data: DataSources,
    pub spec: ImageSpec,
    pub plan: ViewPlan,
    /// The order's seed (`data.seed`, else the run's) and whether it shuffles.
    pub seed: u64,
    pub shuffle: bool,
    pub loader: LoaderOptions,
    /// One per replica on the worker.
    pub feeds: Vec<ReplicaFeed>,
}

/// One replica's input: its queue, its shard of the order, where it continues from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaFeed {
    pub queue: DataQueue,
    pub shard: Shard,
    /// None: from the start.
    pub state: Option<BatchesState>,
}

/// A replica's data queue: built identically by the chief and the worker (TF refuses a shared
/// queue asked for with other attributes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataQueue {
    pub name: String,
    pub device: String,
    /// Image tensors per batch (the clean view first if planned, then each augmented view).
    pub views: usize,
    /// Each image tensor's dims: [share, height, width, channels].
    pub dims: [i64; 4],
    pub capacity: usize,
}

/// A message on a worker's job queue.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    /// The chief's run (a new chief process, a new run).
    pub run: String,
    /// Counts the jobs of a run (a restore sends a new one).
    pub generation: u64,
    /// None: stop feeding the run.
    pub job: Option<InputJob>,
}

/// A worker's answer to a message, or news of a feed that failed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub run: String,
    pub generation: u64,
    pub error: Option<String>,
}

/// What comes with each batch: the replica's position after it, and the seconds it took.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchNote {
    pub state: BatchesState,
    pub seconds: f64,
}

impl DataQueue {
    /// Component types: each image tensor, then the batch's note.
    pub fn types(&self) -> Vec<DataType> {
        let mut t = vec![DataType::Float; self.views];
        t.push(DataType::String);
        t
    }

    /// The queue op (a handle), on `device`.
    pub fn build(&self, scope: &Scope) -> Result<Output> {
        let dims: Vec<Option<i64>> = self.dims.iter().map(|&d| Some(d)).collect();
        let mut shapes = vec![Shape::from(Some(dims)); self.views];
        shapes.push(Shape::from(Some(vec![])));
        let s = scope.with_device(&self.device);
        let op = ops::FIFOQueueV2::new()
            .component_types(self.types())
            .shapes(shapes)
            .capacity(self.capacity as i64)
            .shared_name(self.name.clone())
            .build(&mut s.with_op_name("input_queue"))
            .tf_ctx(|| format!("input queue {} on {}", self.name, self.device))?;
        Ok(op.into())
    }
}

/// A worker's job or reply queue (`JOBS`, `REPLIES`) on `device`.
pub fn control_queue(scope: &Scope, name: &str, device: &str) -> Result<Output> {
    let s = scope.with_device(device);
    let op = ops::FIFOQueueV2::new()
        .component_types(vec![DataType::String])
        .shapes(vec![Shape::from(Some(vec![]))])
        .capacity(CONTROL_CAPACITY)
        .shared_name(name)
        .build(&mut s.with_op_name(name))
        .tf_ctx(|| format!("queue {name} on {device}"))?;
    Ok(op.into())
}

/// Enqueues `components` (of `types`) on `queue`, on `queue`'s device.
pub fn enqueue(
    scope: &mut Scope,
    queue: &Output,
    components: &[Output],
    types: &[DataType],
) -> Result<Operation> {
    let device = queue.operation.device().unwrap_or_default();
    let out = crate::graph::new_op(scope, "QueueEnqueueV2", "enqueue", |d| {
        d.add_input(queue.clone());
        d.add_input_list(components);
        d.set_attr_type_list("Tcomponents", types)
            .map_err(|e| e.to_string())?;
        d.set_device(&device).map_err(|e| e.to_string())
    })?;
    Ok(out.operation)
}

/// Dequeues one element of `types` from `queue`, on `queue`'s device.
pub fn dequeue(scope: &mut Scope, queue: &Output, types: &[DataType]) -> Result<Operation> {
    let device = queue.operation.device().unwrap_or_default();
    ops::QueueDequeueV2::new()
        .component_types(types.to_vec())
        .build(queue.clone(), &mut scope.with_device(&device))
        .tf_ctx(|| {
            format!(
                "dequeueing from {}",
                queue.operation.name().unwrap_or_default()
            )
        })
}

/// Elements waiting in `queue`.
pub fn size(scope: &mut Scope, queue: &Output) -> Result<Output> {
    let device = queue.operation.device().unwrap_or_default();
    Ok(ops::QueueSizeV2::new()
        .build(queue.clone(), &mut scope.with_device(&device))
        .tf_ctx(|| "queue size".into())?
        .into())
}

/// A string scalar fed to an enqueue.
pub fn string_placeholder(scope: &mut Scope, name: &str) -> Result<Output> {
    Ok(ops::Placeholder::new()
        .dtype(DataType::String)
        .shape(Shape::from(Some(vec![])))
        .build(&mut scope.with_op_name(name))
        .tf_ctx(|| format!("placeholder {name}"))?
        .into())
}

/// JSON of a message, a reply or a note.
pub fn to_json(what: &impl Serialize) -> Result<String> {
    serde_json::to_string(what).map_err(|e| Error::internal("writing an input message", e))
}

/// A message, reply or note read back (`from`: whose, for the error).
pub fn from_json<T: for<'de> Deserialize<'de>>(text: &str, from: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Cluster {
        task: from.to_string(),
        msg: format!(
            "unreadable input message ({e}); are the chief and the worker the same pretext?"
        ),
    })
}

/// `RunOptions` with a deadline of `ms` milliseconds.
pub fn deadline(ms: i64) -> Vec<u8> {
    use prost::Message as _;
    crate::proto::RunOptions {
        timeout_in_ms: ms.max(1),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Whether a run failed on its deadline.
pub fn timed_out(e: &tensorflow::Status) -> bool {
    e.code() == tensorflow::Code::DeadlineExceeded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_survives_its_trip_and_a_foreign_message_is_named() {
        let q = DataQueue {
            name: "pretext_input_ab_1".into(),
            device: "/job:worker/replica:0/task:1/device:CPU:0".into(),
            views: 2,
            dims: [4, 32, 32, 3],
            capacity: 2,
        };
        assert_eq!(
            q.types(),
            [DataType::Float, DataType::Float, DataType::String]
        );
        let job = InputJob {
            data: DataSources {
                folders: vec!["/data/a".into()],
                ..Default::default()
            },
            spec: ImageSpec {
                height: 32,
                width: 32,
                channels: 3,
                range: (-1.0, 1.0),
            },
            plan: ViewPlan {
                clean: false,
                augmented: 2,
                augment: Default::default(),
            },
            seed: 7,
            shuffle: true,
            loader: Default::default(),
            feeds: vec![ReplicaFeed {
                queue: q.clone(),
                shard: Shard {
                    index: 1,
                    replicas: 2,
                    share: 4,
                },
                state: None,
            }],
        };
        let m = Message {
            run: "ab".into(),
            generation: 3,
            job: Some(job),
        };
        let back: Message = from_json(&to_json(&m).unwrap(), "the chief").unwrap();
        let j = back.job.unwrap();
        assert_eq!((back.run.as_str(), back.generation), ("ab", 3));
        assert_eq!(j.feeds[0].queue, q);
        assert_eq!(j.spec.range, (-1.0, 1.0));
        assert_eq!(j.data.folders[0], std::path::PathBuf::from("/data/a"));
        let e = from_json::<Message>("{\"run\": 1}", "worker task 2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("worker task 2") && e.contains("same pretext"),
            "{e}"
        );
    }
}
