//! The workers' input seen from the chief (`cluster.input: workers`): the queues of every
//! replica and the chief's ends of its workers' job and reply queues in the step's graph,
//! the jobs it sends (each replica's shard and position) and the positions the batches' notes
//! bring back.
use std::sync::Arc;

use tensorflow::{DataType, Operation, Output, Session, SessionRunArgs, Tensor};

use crate::cluster::input::{self, BatchNote, DataQueue, InputJob, Message, ReplicaFeed, Reply};
use crate::cluster::ClusterConfig;
use crate::data::{BatchesState, Dataset, ImageSpec, Shard};
use crate::error::{Error, Result, TfContext};

/// The workers' input, seen from the chief.
pub struct RemoteInput {
    run: String,
    generation: u64,
    job: InputJob,
    pub(super) replicas: Vec<ReplicaFeed>,
    tasks: Vec<TaskControl>,
    /// Each replica's batch note, fetched with every step.
    pub(super) notes: Vec<Output>,
    pub(super) data: Arc<Dataset>,
    cluster: ClusterConfig,
    /// The workers have the current job.
    pub(super) sent: bool,
    pub(super) data_seconds: f64,
}

/// The chief's ends of one worker's job and reply queues.
struct TaskControl {
    task: usize,
    replicas: Vec<usize>,
    msg: Output,
    send: Operation,
    reply: Operation,
}

/// What a replica's input tensors are: its share of each image tensor (clean view first).
pub(crate) type Shares = Vec<Vec<Output>>;

impl RemoteInput {
    /// The queues of every replica of `devices` and the chief's ends of its workers' control
    /// queues in `model`'s graph; `job` without feeds. Returns the input and each replica's
    /// share of each image tensor (dequeued on its worker).
    pub(super) fn build(
        model: &mut crate::savedmodel::Loaded,
        cluster: &ClusterConfig,
        devices: &[String],
        job: InputJob,
        data: Arc<Dataset>,
        batch: usize,
    ) -> Result<(RemoteInput, Shares)> {
        let run = format!("{:016x}", rand::random::<u64>());
        let n = devices.len();
        let share = batch / n;
        let views = job.plan.clean as usize + job.plan.augmented;
        let spec: &ImageSpec = &job.spec;
        let dims = [
            share as i64,
            spec.height as i64,
            spec.width as i64,
            spec.channels as i64,
        ];
        let mut scope = model.scope.new_sub_scope("pretext_input");
        let (mut replicas, mut shares, mut notes) = (Vec::new(), Vec::new(), Vec::new());
        let mut tasks: Vec<TaskControl> = Vec::new();
        for (k, d) in devices.iter().enumerate() {
            let device = cluster.input_device(d).ok_or_else(|| {
                Error::internal(
                    "the workers' input",
                    format!("{d} is not on a worker (train::replicas::check refuses it)"),
                )
            })?;
            let queue = DataQueue {
                name: format!("pretext_input_{run}_{k}"),
                device: device.clone(),
                views,
                dims,
                capacity: job.loader.prefetch.max(1),
            };
            let q = queue.build(&scope)?;
            let take = input::dequeue(&mut scope, &q, &queue.types())?;
            // Dequeued tensors have no static shape; the graph after them needs one.
            let known =
                tensorflow::Shape::from(Some(dims.iter().map(|&d| Some(d)).collect::<Vec<_>>()));
            let mut at = scope.with_device(&device);
            let mut mine = Vec::with_capacity(views);
            for v in 0..views {
                let x = Output {
                    operation: take.clone(),
                    index: v as i32,
                };
                let op = tensorflow::ops::EnsureShape::new()
                    .shape(known.clone())
                    .T(DataType::Float)
                    .build(x, &mut at)
                    .tf_ctx(|| format!("the shape of replica {k}'s input"))?;
                mine.push(op.into());
            }
            shares.push(mine);
            notes.push(Output {
                operation: take,
                index: views as i32,
            });
            let shard = Shard {
                index: k,
                replicas: n,
                share,
            };
            // No position until the first batch's note: the worker starts from the beginning.
            replicas.push(ReplicaFeed {
                queue,
                shard,
                state: None,
            });
            let task = crate::proto::device::DeviceName::parse(&device)
                .and_then(|d| d.task)
                .map_or(0, |(_, t)| t as usize);
            match tasks.iter_mut().find(|t| t.task == task) {
                Some(t) => t.replicas.push(k),
                None => tasks.push(TaskControl::build(&mut scope, task, &device, k)?),
            }
        }
        let input = RemoteInput {
            run,
            generation: 0,
            job,
            replicas,
            tasks,
            notes,
            data,
            cluster: cluster.clone(),
            sent: false,
            data_seconds: 0.0,
        };
        Ok((input, shares))
    }

    /// Sends every worker its job (this generation) and waits for each to take it.
    pub(super) fn start(&mut self, session: &Session) -> Result<()> {
        self.generation += 1;
        for t in &self.tasks {
            let mut job = self.job.clone();
            job.feeds = t
                .replicas
                .iter()
                .map(|&k| self.replicas[k].clone())
                .collect();
            let m = Message {
                run: self.run.clone(),
                generation: self.generation,
                job: Some(job),
            };
            t.send(session, &m, &self.cluster)?;
        }
        for t in &self.tasks {
            t.await_reply(session, &self.run, self.generation, &self.cluster)?;
        }
        log::info!(
            "input: {} worker(s) read their own shards (run {}, job {})",
            self.tasks.len(),
            self.run,
            self.generation
        );
        self.sent = true;
        Ok(())
    }

    /// Takes the notes of a step's batches (one per replica, in order).
    pub(super) fn noted(&mut self, notes: Vec<String>) -> Result<()> {
        for (k, text) in notes.iter().enumerate() {
            let note: BatchNote = input::from_json(text, &format!("replica {k}'s worker"))?;
            self.data_seconds += note.seconds;
            self.replicas[k].state = Some(note.state);
        }
        Ok(())
    }

    pub(super) fn states(&self) -> impl Iterator<Item = &BatchesState> {
        self.replicas.iter().filter_map(|r| r.state.as_ref())
    }

    /// A failed step's cause when a worker's input failed (it said so on its reply queue).
    pub(super) fn failed(&self, session: &Session) -> Option<Error> {
        for t in &self.tasks {
            while let Ok(Some(reply)) = t.next_reply(session, 2000) {
                if let (true, Some(e)) = (reply.run == self.run, reply.error) {
                    return Some(Error::Cluster {
                        task: t.name(&self.cluster),
                        msg: format!("reading its input: {e}"),
                    });
                }
            }
        }
        None
    }

    /// Tells the workers to stop reading for this run (at the trainer's end; nothing waits).
    pub(super) fn stop(&mut self, session: &Session) {
        if self.generation == 0 {
            return;
        }
        self.sent = false;
        for t in &self.tasks {
            let m = Message {
                run: self.run.clone(),
                generation: self.generation,
                job: None,
            };
            let mut quick = self.cluster.clone();
            quick.timeout_seconds = 2.0;
            if let Err(e) = t.send(session, &m, &quick) {
                log::debug!("{e}");
            }
        }
    }
}

impl TaskControl {
    fn build(scope: &mut tensorflow::Scope, task: usize, device: &str, k: usize) -> Result<Self> {
        let jobs = input::control_queue(scope, input::JOBS, device)?;
        let msg = input::string_placeholder(&mut scope.with_device(device), "job")?;
        let send = input::enqueue(
            scope,
            &jobs,
            std::slice::from_ref(&msg),
            &[DataType::String],
        )?;
        let replies = input::control_queue(scope, input::REPLIES, device)?;
        let reply = input::dequeue(scope, &replies, &[DataType::String])?;
        Ok(TaskControl {
            task,
            replicas: vec![k],
            msg,
            send,
            reply,
        })
    }

    fn name(&self, c: &ClusterConfig) -> String {
        let addr = c.worker.get(self.task).cloned().unwrap_or_default();
        format!("worker task {} ({addr})", self.task)
    }

    fn send(&self, session: &Session, m: &Message, c: &ClusterConfig) -> Result<()> {
        let text = Tensor::from(input::to_json(m)?);
        let mut run = SessionRunArgs::new();
        run.add_feed(&self.msg.operation, self.msg.index, &text);
        run.add_target(&self.send);
        run.set_run_options(&input::deadline(c.timeout_ms()));
        session.run(&mut run).map_err(|e| Error::Cluster {
            task: self.name(c),
            msg: format!("sending its input job: {e}"),
        })
    }

    /// The next reply within `ms` (None when none came).
    fn next_reply(&self, session: &Session, ms: i64) -> Result<Option<Reply>> {
        let mut run = SessionRunArgs::new();
        let tok = run.request_fetch(&self.reply, 0);
        run.set_run_options(&input::deadline(ms));
        match session.run(&mut run) {
            Ok(()) => {}
            Err(e) if input::timed_out(&e) => return Ok(None),
            Err(e) => return Err(Error::graph("pretext_input", e.to_string())),
        }
        let t: Tensor<String> = run.fetch(tok).tf_ctx(|| "a worker's reply".into())?;
        let text = t.first().cloned().unwrap_or_default();
        input::from_json(&text, &format!("worker task {}", self.task)).map(Some)
    }

    /// Waits for the reply to job `generation` of `run` (older replies are skipped).
    fn await_reply(
        &self,
        s: &Session,
        run: &str,
        generation: u64,
        c: &ClusterConfig,
    ) -> Result<()> {
        let limit =
            std::time::Instant::now() + std::time::Duration::from_millis(c.timeout_ms() as u64);
        loop {
            let left = limit
                .saturating_duration_since(std::time::Instant::now())
                .as_millis() as i64;
            let r = match self.next_reply(s, left.max(1))? {
                Some(r) => r,
                None => {
                    return Err(Error::Cluster {
                        task: self.name(c),
                        msg: format!("did not take its input job within cluster.timeout_seconds ({} s); is it a `pretext worker` of this version? (cluster.input: chief reads on the chief instead)", c.timeout_seconds),
                    })
                }
            };
            if r.run != run || r.generation != generation {
                continue;
            }
            return match r.error {
                None => Ok(()),
                Some(e) => Err(Error::Cluster {
                    task: self.name(c),
                    msg: format!("reading its input: {e}"),
                }),
            };
        }
    }
}
