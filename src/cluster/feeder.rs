//! A worker's own input threads (`cluster.input: workers`): `pretext worker` takes the chief's
//! jobs from its job queue, reads, decodes and augments each of its replicas' share of every
//! batch on its own threads (`data::Loader` over a sharded `data::Batches`), and fills the
//! replicas' data queues on its own TF server, through sessions on that server.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use prost::Message as _;
use tensorflow::{DataType, Graph, Operation, Output, Scope, Session, SessionOptions};
use tensorflow::{SessionRunArgs, Tensor};

use super::input::{self, BatchNote, InputJob, Message, ReplicaFeed, Reply, JOBS, REPLIES};
use crate::data::{Batches, DataSources, Dataset, Loader};
use crate::error::{Error, Result, TfContext};

/// How long an enqueue waits on a full queue before it looks for a stop again.
const ENQUEUE_WAIT_MS: i64 = 500;

/// Starts the thread that serves worker task `index`'s input jobs on its server at `target`.
pub fn spawn(target: String, index: usize) -> Result<()> {
    std::thread::Builder::new()
        .name("pretext-input-jobs".into())
        .spawn(move || {
            if let Err(e) = listen(&target, index) {
                log::error!("worker task {index}: its input jobs stopped: {e}");
            }
        })
        .map(|_| ())
        .map_err(|e| Error::internal("starting the input job thread", e))
}

/// A session on this worker's own server that sees only this worker (no wait for the others).
fn session(target: &str, index: usize, graph: &Graph) -> Result<Session> {
    let mut opts = SessionOptions::new();
    opts.set_target(target)
        .map_err(|e| Error::internal("setting the session target", e))?;
    let cfg = crate::proto::ConfigProto {
        device_filters: vec![format!("/job:worker/task:{index}")],
        ..Default::default()
    };
    opts.set_config(&cfg.encode_to_vec())
        .tf_ctx(|| "setting session config".into())?;
    Session::new(&opts, graph).tf_ctx(|| format!("worker task {index}: an input session"))
}

/// The worker's side of its job and reply queues.
struct Control {
    session: Session,
    take: Operation,
    reply_in: Output,
    put: Operation,
    task: usize,
}

impl Control {
    fn new(target: &str, index: usize) -> Result<Control> {
        let dev = super::device("worker", index);
        let mut scope = Scope::new_root_scope();
        let jobs = input::control_queue(&scope, JOBS, &dev)?;
        let take = input::dequeue(&mut scope, &jobs, &[DataType::String])?;
        let replies = input::control_queue(&scope, REPLIES, &dev)?;
        let reply_in = input::string_placeholder(&mut scope.with_device(&dev), "reply")?;
        let put = input::enqueue(
            &mut scope,
            &replies,
            std::slice::from_ref(&reply_in),
            &[DataType::String],
        )?;
        let session = session(target, index, &scope.graph())?;
        Ok(Control {
            session,
            take,
            reply_in,
            put,
            task: index,
        })
    }

    /// The next message (blocks until the chief sends one).
    fn next(&self) -> Result<String> {
        let mut run = SessionRunArgs::new();
        let tok = run.request_fetch(&self.take, 0);
        self.session
            .run(&mut run)
            .tf_ctx(|| format!("worker task {}: reading its job queue", self.task))?;
        let t: Tensor<String> = run.fetch(tok).tf_ctx(|| "an input job".into())?;
        Ok(t.first().cloned().unwrap_or_default())
    }

    fn reply(&self, r: &Reply) -> Result<()> {
        let text = Tensor::from(input::to_json(r)?);
        let mut run = SessionRunArgs::new();
        run.add_feed(&self.reply_in.operation, self.reply_in.index, &text);
        run.add_target(&self.put);
        self.session
            .run(&mut run)
            .tf_ctx(|| format!("worker task {}: answering the chief", self.task))
    }
}

/// Serves jobs until the process ends: each message stops the feeds running, starts the new job's.
fn listen(target: &str, index: usize) -> Result<()> {
    let control = Arc::new(Control::new(target, index)?);
    let mut feeding: Option<Feeding> = None;
    let mut opened: Option<(DataSources, Arc<Dataset>)> = None;
    loop {
        let text = match control.next() {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{e}");
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
        };
        let mut m: Message = match input::from_json(&text, "the chief") {
            Ok(m) => m,
            Err(e) => {
                log::warn!("worker task {index}: {e}");
                continue;
            }
        };
        if let Some(f) = feeding.take() {
            f.stop();
        }
        let Some(job) = m.job.take() else {
            log::info!("worker task {index}: run {} stopped its input", m.run);
            continue;
        };
        let started = open(&mut opened, &job.data)
            .and_then(|data| Feeding::start(target, index, &m, job, data, control.clone()));
        let error = match started {
            Ok(f) => {
                feeding = Some(f);
                None
            }
            Err(e) => Some(format!("worker task {index}: {e}")),
        };
        control.reply(&Reply {
            run: m.run,
            generation: m.generation,
            error,
        })?;
    }
}

/// The job's images, indexed once per distinct data (a restore reuses the index).
fn open(
    opened: &mut Option<(DataSources, Arc<Dataset>)>,
    data: &DataSources,
) -> Result<Arc<Dataset>> {
    if let Some((_, set)) = opened.as_ref().filter(|(d, _)| d == data) {
        return Ok(set.clone());
    }
    let set = Arc::new(Dataset::open(data)?);
    *opened = Some((data.clone(), set.clone()));
    Ok(set)
}

/// The feeds of one job: a thread per replica.
struct Feeding {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Feeding {
    fn start(
        target: &str,
        index: usize,
        m: &Message,
        job: InputJob,
        data: Arc<Dataset>,
        control: Arc<Control>,
    ) -> Result<Feeding> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for feed in &job.feeds {
            let ordered = Batches::ordered(data.clone(), job.spec.clone(), job.seed, job.shuffle);
            let mut batches = ordered.sharded(feed.shard)?;
            if let Some(st) = &feed.state {
                batches.restore(st)?;
            }
            let loader = Loader::new(batches, job.plan.clone(), feed.shard.share, job.loader)?;
            let replica = Replica::new(target, index, feed)?;
            let (stop, control) = (stop.clone(), control.clone());
            let (run, generation) = (m.run.clone(), m.generation);
            let k = feed.shard.index;
            let h = std::thread::Builder::new()
                .name(format!("pretext-feed-{k}"))
                .spawn(move || {
                    if let Err(e) = replica.feed(loader, &stop) {
                        let error = format!("worker task {index}, replica {k}: {e}");
                        log::error!("{error}");
                        replica.close();
                        let r = Reply {
                            run,
                            generation,
                            error: Some(error),
                        };
                        let _ = control.reply(&r);
                    }
                })
                .map_err(|e| Error::internal("starting an input thread", e))?;
            threads.push(h);
        }
        log::info!(
            "worker task {index}: feeding {} replica(s) of run {} (job {})",
            job.feeds.len(),
            m.run,
            m.generation
        );
        Ok(Feeding { stop, threads })
    }

    /// Stops every feed; each drains its queue (batches made for the old position) first.
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One replica's data queue, seen from the worker.
struct Replica {
    session: Session,
    inputs: Vec<Output>,
    put: Operation,
    size: Output,
    take: Operation,
    close: Operation,
    what: String,
}

impl Replica {
    fn new(target: &str, index: usize, feed: &ReplicaFeed) -> Result<Replica> {
        let q = &feed.queue;
        let mut scope = Scope::new_root_scope();
        let queue = q.build(&scope)?;
        let dims: Vec<Option<i64>> = q.dims.iter().map(|&d| Some(d)).collect();
        let mut inputs = Vec::with_capacity(q.views + 1);
        for v in 0..q.views {
            let p = tensorflow::ops::Placeholder::new()
                .dtype(DataType::Float)
                .shape(tensorflow::Shape::from(Some(dims.clone())))
                .build(
                    &mut scope
                        .with_device(&q.device)
                        .with_op_name(&format!("view{v}")),
                )
                .tf_ctx(|| "an input placeholder".into())?;
            inputs.push(p.into());
        }
        inputs.push(input::string_placeholder(
            &mut scope.with_device(&q.device),
            "note",
        )?);
        let put = input::enqueue(&mut scope, &queue, &inputs, &q.types())?;
        let size = input::size(&mut scope, &queue)?;
        let take = input::dequeue(&mut scope, &queue, &q.types())?;
        let close = tensorflow::ops::QueueCloseV2::new()
            .build(queue.clone(), &mut scope.with_device(&q.device))
            .tf_ctx(|| "closing an input queue".into())?;
        let session = session(target, index, &scope.graph())?;
        Ok(Replica {
            session,
            inputs,
            put,
            size,
            take,
            close,
            what: format!("input queue {}", q.name),
        })
    }

    /// Makes and enqueues batches until `stop`, then drains the queue.
    fn feed(&self, mut loader: Loader, stop: &AtomicBool) -> Result<()> {
        while !stop.load(Ordering::SeqCst) {
            let before = loader.data_seconds;
            let xs = loader.next()?.into_tensors();
            let note = BatchNote {
                state: loader.state().clone(),
                seconds: loader.data_seconds - before,
            };
            let note = Tensor::from(input::to_json(&note)?);
            // Not handed back for reuse (`Loader::recycle`): the queued element shares the
            // tensors' memory until the chief's step dequeues it.
            if !self.put(&xs, &note, stop)? {
                break;
            }
        }
        self.drain()
    }

    /// One enqueue, retried until it goes in (true) or `stop` is set (false).
    fn put(&self, xs: &[Tensor<f32>], note: &Tensor<String>, stop: &AtomicBool) -> Result<bool> {
        let opts = input::deadline(ENQUEUE_WAIT_MS);
        loop {
            let mut run = SessionRunArgs::new();
            for (p, x) in self.inputs.iter().zip(xs) {
                run.add_feed(&p.operation, p.index, x);
            }
            let n = &self.inputs[xs.len()];
            run.add_feed(&n.operation, n.index, note);
            run.add_target(&self.put);
            run.set_run_options(&opts);
            match self.session.run(&mut run) {
                Ok(()) => return Ok(true),
                Err(e) if input::timed_out(&e) => {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(Error::graph(&self.what, e.to_string())),
            }
        }
    }

    /// Takes out the batches left in the queue (made for a position no longer wanted).
    fn drain(&self) -> Result<()> {
        let mut run = SessionRunArgs::new();
        let tok = run.request_fetch(&self.size.operation, self.size.index);
        self.session
            .run(&mut run)
            .map_err(|e| Error::graph(&self.what, e.to_string()))?;
        let n: Tensor<i32> = run.fetch(tok).tf_ctx(|| "a queue's size".into())?;
        for _ in 0..n.first().copied().unwrap_or(0) {
            let mut run = SessionRunArgs::new();
            run.add_target(&self.take);
            run.set_run_options(&input::deadline(ENQUEUE_WAIT_MS));
            if self.session.run(&mut run).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Closes the queue after a failure: the chief's waiting step fails at once.
    fn close(&self) {
        let mut run = SessionRunArgs::new();
        run.add_target(&self.close);
        if let Err(e) = self.session.run(&mut run) {
            log::warn!("closing {}: {e}", self.what);
        }
    }
}
