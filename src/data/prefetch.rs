//! Overlaps input with the session's step: a producer thread runs `Batches` ahead into a bounded
//! queue of ready batches (decoding on its own rayon pool), while the step loop takes them. Each
//! batch carries the position *after* it, so the position a checkpoint records is that of the
//! last batch consumed, however far the producer has run ahead.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tensorflow::Tensor;

use super::batches::{Batches, BatchesState};
use super::source::Dataset;
use super::{ViewBatch, ViewPlan};
use crate::error::{Error, Result};

/// How the loader runs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoaderOptions {
    /// Batches prepared ahead of the step (0: prepare each batch when asked, on the caller's
    /// thread).
    pub prefetch: usize,
    /// Decoding threads (0: one per core).
    pub workers: usize,
    /// Scheduling niceness of the input threads (0–19): above the session's threads' 0, the
    /// input runs in the CPU time the step leaves idle instead of competing with it.
    pub nice: i32,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            prefetch: 2,
            workers: 0,
            nice: 19,
        }
    }
}

/// Lowers the calling thread's scheduling priority (Linux: niceness is per thread).
fn renice(nice: i32) {
    if nice > 0 {
        // SAFETY: gettid and setpriority act on the calling thread only; a failure leaves it
        // as it was.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice);
        }
    }
}

struct Ready {
    batch: ViewBatch,
    after: BatchesState,
    seconds: f64,
}

struct Producer {
    rx: Receiver<Result<Ready>>,
    /// Tensors of consumed batches, back to the producer for reuse.
    recycle: Sender<Vec<Tensor<f32>>>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Batches>,
}

/// Batches of views, prepared ahead on worker threads.
pub struct Loader {
    data: Arc<Dataset>,
    idle: Option<Batches>,
    producer: Option<Producer>,
    consumed: BatchesState,
    plan: ViewPlan,
    batch: usize,
    opts: LoaderOptions,
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Tensors handed back while no producer runs (the synchronous loader's, or kept for the
    /// next producer).
    spare: Vec<Tensor<f32>>,
    /// Seconds spent preparing the batches consumed so far (on the producer's threads).
    pub data_seconds: f64,
    /// Seconds the caller waited for a batch (what the step loop lost to input).
    pub wait_seconds: f64,
}

impl Loader {
    pub fn new(
        batches: Batches,
        plan: ViewPlan,
        batch: usize,
        opts: LoaderOptions,
    ) -> Result<Self> {
        if !(0..=19).contains(&opts.nice) {
            return Err(Error::config(
                "data.nice",
                format!("{} is outside 0..=19", opts.nice),
            ));
        }
        let nice = opts.nice;
        let p = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.workers)
            .thread_name(|i| format!("pretext-data-{i}"))
            .start_handler(move |_| renice(nice))
            .build()
            .map_err(|e| {
                Error::config(
                    "data.workers",
                    format!("cannot start {} threads: {e}", opts.workers),
                )
            })?;
        let pool = Some(Arc::new(p));
        Ok(Loader {
            data: batches.dataset().clone(),
            consumed: batches.state(),
            idle: Some(batches),
            producer: None,
            plan,
            batch,
            opts,
            pool,
            spare: Vec::new(),
            data_seconds: 0.0,
            wait_seconds: 0.0,
        })
    }

    /// The position after the last batch handed out (what a checkpoint records).
    pub fn state(&self) -> &BatchesState {
        &self.consumed
    }

    /// Images decoded into the batches handed out.
    pub fn images_read(&self) -> u64 {
        self.consumed.images_read
    }

    /// (image, reason) of every image skipped in the batches handed out.
    pub fn skipped(&self) -> &[(String, String)] {
        &self.consumed.skipped
    }

    /// The dataset read (its index, scan notes).
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.data
    }

    /// Images in the dataset.
    pub fn len(&self) -> usize {
        self.consumed.files
    }

    pub fn is_empty(&self) -> bool {
        self.consumed.files == 0
    }

    fn make(
        b: &mut Batches,
        n: usize,
        plan: &ViewPlan,
        pool: Option<&rayon::ThreadPool>,
        spare: &mut Vec<Tensor<f32>>,
    ) -> Result<Ready> {
        let t = Instant::now();
        let batch = match pool {
            Some(p) => p.install(|| b.next_views_reusing(n, plan, spare))?,
            None => b.next_views_reusing(n, plan, spare)?,
        };
        Ok(Ready {
            batch,
            after: b.state(),
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// The next batch of views.
    pub fn next(&mut self) -> Result<ViewBatch> {
        let t = Instant::now();
        let ready = if self.opts.prefetch == 0 {
            let b = self
                .idle
                .as_mut()
                .expect("a synchronous loader keeps its batches");
            Self::make(
                b,
                self.batch,
                &self.plan,
                self.pool.as_deref(),
                &mut self.spare,
            )?
        } else {
            if self.producer.is_none() {
                self.start();
            }
            let p = self.producer.as_ref().expect("started");
            match p.rx.recv() {
                Ok(r) => r?,
                Err(_) => {
                    // The producer ended without a message: it panicked.
                    let p = self.producer.take().expect("started");
                    return Err(match p.handle.join() {
                        Ok(b) => {
                            self.idle = Some(b);
                            Error::graph("pretext/data", "the input thread stopped unexpectedly")
                        }
                        Err(_) => Error::graph("pretext/data", "the input thread panicked"),
                    });
                }
            }
        };
        self.wait_seconds += t.elapsed().as_secs_f64();
        self.data_seconds += ready.seconds;
        self.consumed = ready.after;
        Ok(ready.batch)
    }

    /// Hands back a consumed batch's tensors (after the step that read them) for the input
    /// threads to write later batches into: batches in flight then cost no fresh memory.
    pub fn recycle(&mut self, tensors: Vec<Tensor<f32>>) {
        let cap = self.spare_cap();
        match &self.producer {
            Some(p) => {
                // A producer that has stopped drops them.
                let _ = p.recycle.send(tensors);
            }
            None => {
                self.spare.extend(tensors);
                self.spare.truncate(cap);
            }
        }
    }

    /// Spare tensors worth keeping: those of the batches that can be in flight at once (queued,
    /// being made, being stepped on); any more would only sit idle.
    fn spare_cap(&self) -> usize {
        (self.opts.prefetch + 2) * (self.plan.clean as usize + self.plan.augmented)
    }

    fn start(&mut self) {
        let mut b = self.idle.take().expect("an idle loader keeps its batches");
        let (tx, rx) = sync_channel(self.opts.prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let (n, plan, pool, flag) = (
            self.batch,
            self.plan.clone(),
            self.pool.clone(),
            stop.clone(),
        );
        let nice = self.opts.nice;
        let (recycle, returned) = channel::<Vec<Tensor<f32>>>();
        let mut spare = std::mem::take(&mut self.spare);
        let cap = self.spare_cap();
        let handle = std::thread::Builder::new()
            .name("pretext-input".into())
            .spawn(move || {
                renice(nice);
                while !flag.load(Ordering::Relaxed) {
                    spare.extend(returned.try_iter().flatten());
                    spare.truncate(cap);
                    let r = Self::make(&mut b, n, &plan, pool.as_deref(), &mut spare);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
                b
            })
            .expect("spawning the input thread");
        self.producer = Some(Producer {
            rx,
            recycle,
            stop,
            handle,
        });
    }

    /// Stops the producer and returns to the consumed position (batches prepared ahead are
    /// dropped; they will be prepared again, identically).
    fn halt(&mut self) -> Result<()> {
        if let Some(p) = self.producer.take() {
            p.stop.store(true, Ordering::Relaxed);
            drop(p.rx); // unblocks a producer waiting on a full queue
            let mut b = p
                .handle
                .join()
                .map_err(|_| Error::graph("pretext/data", "the input thread panicked"))?;
            b.restore(&self.consumed)?;
            self.idle = Some(b);
        }
        Ok(())
    }

    /// Continues from a recorded position.
    pub fn restore(&mut self, st: &BatchesState) -> Result<()> {
        self.halt()?;
        self.idle.as_mut().expect("halted").restore(st)?;
        self.consumed = st.clone();
        Ok(())
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}
