//! Where a trainer's batches come from: its own input threads (`data::Loader`, fed through
//! placeholders), or, on a cluster with `cluster.input: workers`, each worker's own threads
//! (`cluster::input`): the chief then sends the workers their jobs, its step dequeues each
//! replica's share on that replica's worker, and the notes the batches carry give each
//! replica's position for the checkpoints.
use std::sync::Arc;

use tensorflow::{DataType, Operation, Output, Session, SessionRunArgs, Tensor};

use crate::cluster::input::{self, BatchNote, DataQueue, InputJob, Message, ReplicaFeed, Reply};
use crate::cluster::ClusterConfig;
use crate::data::{Batches, BatchesState, Dataset, ImageSpec, Loader, Shard};
use crate::error::{Error, Result, TfContext};

/// A trainer's input.
pub enum Input {
    Local(Loader),
    Workers(RemoteInput),
}

/// The workers' input, seen from the chief.
pub struct RemoteInput {
    run: String,
    generation: u64,
    job: InputJob,
    replicas: Vec<ReplicaFeed>,
    tasks: Vec<TaskControl>,
    /// Each replica's batch note, fetched with every step.
    notes: Vec<Output>,
    data: Arc<Dataset>,
    cluster: ClusterConfig,
    /// The workers have the current job.
    sent: bool,
    data_seconds: f64,
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
pub(super) type Shares = Vec<Vec<Output>>;

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
            let mut b = Batches::new(data.clone(), spec.clone(), job.seed).sharded(shard)?;
            if !job.shuffle {
                b = b.sequential();
            }
            replicas.push(ReplicaFeed {
                queue,
                shard,
                state: Some(b.state()),
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
    fn start(&mut self, session: &Session) -> Result<()> {
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
    fn noted(&mut self, notes: Vec<String>) -> Result<()> {
        for (k, text) in notes.iter().enumerate() {
            let note: BatchNote = input::from_json(text, &format!("replica {k}'s worker"))?;
            self.data_seconds += note.seconds;
            self.replicas[k].state = Some(note.state);
        }
        Ok(())
    }

    fn states(&self) -> impl Iterator<Item = &BatchesState> {
        self.replicas.iter().filter_map(|r| r.state.as_ref())
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
        let Input::Workers(r) = self else { return None };
        for t in &r.tasks {
            while let Ok(Some(reply)) = t.next_reply(session, 2000) {
                if let (true, Some(e)) = (reply.run == r.run, reply.error) {
                    return Some(Error::Cluster {
                        task: t.name(&r.cluster),
                        msg: format!("reading its input: {e}"),
                    });
                }
            }
        }
        None
    }

    /// Tells the workers to stop reading for this run (at the trainer's end; nothing waits).
    pub(super) fn stop(&mut self, session: &Session) {
        let Input::Workers(r) = self else { return };
        if r.generation == 0 {
            return;
        }
        r.sent = false;
        for t in &r.tasks {
            let m = Message {
                run: r.run.clone(),
                generation: r.generation,
                job: None,
            };
            let mut quick = r.cluster.clone();
            quick.timeout_seconds = 2.0;
            if let Err(e) = t.send(session, &m, &quick) {
                log::debug!("{e}");
            }
        }
    }
}
