//! The training loop: inline the backbone, attach a pretext head, differentiate, optimize,
//! and step the session with batches of unlabeled images.
mod build;
pub mod checkpoint;
mod config;
pub mod drive;
pub mod input;
mod inspect;
mod plan;
pub mod prepare;
pub mod probe;
mod remote_input;
mod replicas;
pub mod select;
pub mod summary;
pub mod timing;

pub use config::{image_spec, Checked, TrainConfig};
pub use drive::{Feed, Hook, Stop, Tally};
pub use prepare::Opened;

use tensorflow::{Output, SessionRunArgs, Tensor};

use crate::data::ImageSpec;
use crate::error::{Result, TfContext};
use crate::graph::placement::{self, Placement};
use crate::heads::{BuiltHead, HeadBuilder, HeadSettings, HeadVar};
use crate::savedmodel::{Loaded, Signature};
use input::Input;

/// A model with a pretext head and an optimizer, ready to step. Built in three stages
/// (`prepare` → the head → `plan`); read through its accessors.
pub struct Trainer {
    model: Loaded,
    signature: Signature,
    spec: ImageSpec,
    /// The input pipeline (prefetching batches of views on worker threads), or the workers'.
    input: Input,
    /// The step's image tensors, in `ViewBatch` order: the clean batch (if the head uses it),
    /// then each augmented view. Placeholders fed each step (unless the workers read).
    feeds: Vec<Output>,
    head: BuiltHead,
    plan: plan::UpdatePlan,
    batch: usize,
    /// Optimizer steps taken (continued across a resume).
    step: u64,
    /// The head's kind (`dae`, `simclr`, …), for messages.
    head_kind: &'static str,
    /// Fed `[seed, step]` each step (per-step random draws of the heads).
    step_seed: Output,
    seed: i64,
    /// The devices asked for (`model.device`); empty: TF places the step.
    devices: Vec<String>,
    /// Where TF ran the ops of a step (read back from the first full step when devices were
    /// asked; the flag says it was a full step, not a head warm-up one).
    placement: Option<(bool, Placement)>,
    /// The cluster this process is the chief of: a failed step names the task that stopped.
    cluster: Option<crate::cluster::ClusterConfig>,
}

impl Trainer {
    /// Loads the model, builds towers, head, gradients and optimizer, initialises new variables
    /// (`cfg` checked first: `TrainConfig::check`).
    pub fn new(cfg: &TrainConfig) -> Result<Self> {
        Self::build(&cfg.clone().check()?, None)
    }

    /// The trainer of a checked config, on what checking the experiment opened if given.
    pub fn build(cfg: &Checked, opened: Option<prepare::Opened>) -> Result<Self> {
        if let Some(o) = opened.as_ref().filter(|o| o.info.dir != cfg.model) {
            return Err(crate::error::Error::internal(
                "building a trainer",
                format!(
                    "the model opened ({}) is not the config's ({})",
                    o.info.dir.display(),
                    cfg.model.display()
                ),
            ));
        }
        let head = cfg.head.head();
        let prepare::Prepared {
            mut model,
            signature,
            spec,
            flat,
            input,
            shares,
            trainable,
            switched,
        } = prepare::prepare(cfg, head, opened)?;
        let (clean, augmented) = head.views();
        let inputs = prepare::placeholders(
            &mut model,
            &spec,
            (clean, augmented),
            cfg.seed as i64,
            shares.as_ref(),
        )?;
        let mut feeds = if clean {
            vec![inputs.input.clone()]
        } else {
            vec![]
        };
        feeds.extend(inputs.views.iter().cloned());
        let step_seed = inputs.step_seed.clone();
        let settings = HeadSettings {
            range: cfg.range,
            seed: cfg.seed as i64,
            device: replicas::main_device(cfg),
            devices: cfg.devices.clone(),
        };
        let built = HeadBuilder::new(&mut model, &flat, inputs, settings).build(
            head,
            &cfg.retain,
            &trainable,
        )?;
        let plan = plan::plan(&mut model, cfg, &built, &trainable, &switched)?;
        let mut run = SessionRunArgs::new();
        let warmup_init = plan.warmup.as_ref().map(|w| &w.init_op);
        for op in built
            .init_ops
            .iter()
            .chain([&plan.optimizer.init_op])
            .chain(warmup_init)
        {
            run.add_target(op);
        }
        model
            .session
            .run(&mut run)
            .tf_ctx(|| "initialising head and optimizer variables".into())?;
        Ok(Trainer {
            model,
            signature,
            spec,
            input,
            feeds,
            head: built,
            plan,
            batch: cfg.batch,
            step: 0,
            head_kind: head.kind(),
            step_seed,
            seed: cfg.seed as i64,
            devices: replicas::session_devices(cfg),
            placement: None,
            cluster: cfg.cluster.clone(),
        })
    }

    /// The model in its session: the variables training changes are its own.
    pub fn model(&self) -> &Loaded {
        &self.model
    }

    /// The signature trained (and evaluated).
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The image layout fed to the signature.
    pub fn spec(&self) -> &ImageSpec {
        &self.spec
    }

    /// The input (counts, skipped files, position).
    pub fn input(&self) -> &Input {
        &self.input
    }

    /// Optimizer steps taken (continued across a resume).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The step's image tensors: the clean batch if the head uses it, then each view
    /// (placeholders each step feeds, unless the workers read).
    pub fn feeds(&self) -> &[Output] {
        &self.feeds
    }

    /// The loss of a step (before its update).
    pub fn loss(&self) -> &Output {
        &self.head.out.loss
    }

    /// The head's named intermediate tensors (see `HeadOutput::tensors`).
    pub fn tensors(&self) -> &[(String, Output)] {
        &self.head.out.tensors
    }

    /// Scalars the head reports (e.g. each head's loss in a multi-task sum), by tag.
    pub fn summaries(&self) -> &[(String, Output)] {
        &self.head.out.summaries
    }

    /// Variables the head created (`pretext/head/<name>/var`), not their momentum copies.
    pub fn head_vars(&self) -> &[HeadVar] {
        &self.head.vars
    }

    /// (momentum copy, online variable) handles the post-step EMA moves.
    pub fn momentum_pairs(&self) -> Vec<(Output, Output)> {
        let ema = &self.head.out.ema;
        ema.iter().flat_map(|e| e.pairs.iter().cloned()).collect()
    }

    /// Online backbone passes in the graph, each replica counted (momentum copies not).
    pub fn towers(&self) -> usize {
        self.head.towers.iter().map(|t| t.replicas).sum()
    }

    /// The learning rate of the step (a graph tensor).
    pub fn learning_rate(&self) -> &Output {
        &self.plan.optimizer.learning_rate
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self) -> &Output {
        &self.plan.grad_norm
    }

    /// Names of the variables the optimizer updates (model handles, `head/…`).
    pub fn param_names(&self) -> &[String] {
        &self.plan.param_names
    }

    /// Model variables that train.
    pub fn trained_vars(&self) -> usize {
        self.plan.trained_vars
    }

    /// Batch-norm moving-statistics updates run with each step (train mode).
    pub fn bn_updates(&self) -> &[tensorflow::Operation] {
        &self.plan.bn_updates
    }

    /// Where TF ran the ops of a step, when devices were asked (`graph::placement`).
    pub fn placement(&self) -> Option<&Placement> {
        self.placement.as_ref().map(|(_, p)| p)
    }

    /// The next step's input tensors, in `feeds` order.
    pub fn next_batch(&mut self) -> Result<Vec<Tensor<f32>>> {
        self.input.next(&self.model.session)
    }

    /// Hands a stepped batch's tensors back to the input threads, which write later batches
    /// into them instead of fresh memory.
    pub fn recycle(&mut self, xs: Vec<Tensor<f32>>) {
        self.input.recycle(xs);
    }

    /// One optimizer step on `xs` (in `feeds` order); returns the loss before the update.
    pub fn step_on(&mut self, xs: &[Tensor<f32>]) -> Result<f32> {
        Ok(self.step_with(xs, &[], &[], &[])?[0])
    }

    /// One optimizer step that also runs `extra` ops (e.g. summary writers) with `feeds` and
    /// fetches `fetch`: returns the loss, then each fetched scalar.
    pub fn step_with(
        &mut self,
        xs: &[Tensor<f32>],
        extra: &[&tensorflow::Operation],
        feeds: &[(Output, Tensor<i64>)],
        fetch: &[&Output],
    ) -> Result<Vec<f32>> {
        let seed = Tensor::new(&[2])
            .with_values(&[self.seed, self.step as i64 + 1])
            .tf_ctx(|| "step seed".into())?;
        let mut run = SessionRunArgs::new();
        for (f, x) in self.feeds.iter().zip(xs) {
            run.add_feed(&f.operation, f.index, x);
        }
        for (f, x) in feeds {
            run.add_feed(&f.operation, f.index, x);
        }
        run.add_feed(&self.step_seed.operation, self.step_seed.index, &seed);
        let p = &self.plan;
        let full = !matches!(&p.warmup, Some(w) if self.step < w.steps);
        let (train_op, updates): (_, Vec<&tensorflow::Operation>) = match &p.warmup {
            Some(w) if !full => (&w.train_op, w.targets.iter().collect()),
            _ => (
                &p.optimizer.train_op,
                p.bn_updates.iter().chain(&p.post_step).collect(),
            ),
        };
        let read_placement = !self.devices.is_empty()
            && match &self.placement {
                None => true,
                Some((was_full, _)) => full && !was_full,
            };
        if read_placement {
            run.set_run_options(&placement::run_options());
            run.set_request_metadata(true);
        }
        if self.step > 0 && p.warmup.as_ref().map(|w| w.steps) == Some(self.step) {
            log::info!(
                "head warm-up done: the model's variables train from step {}",
                self.step + 1
            );
        }
        run.add_target(train_op);
        for u in updates.into_iter().chain(extra.iter().copied()) {
            run.add_target(u);
        }
        let loss = &self.head.out.loss;
        let mut toks = vec![run.request_fetch(&loss.operation, loss.index)];
        for f in fetch {
            toks.push(run.request_fetch(&f.operation, f.index));
        }
        let note_toks: Vec<_> = (self.input.notes().iter())
            .map(|n| run.request_fetch(&n.operation, n.index))
            .collect();
        let ran = self.model.session.run(&mut run);
        ran.tf_ctx(|| format!("running training step {}", self.step + 1))
            .map_err(|e| self.failed_step(e))?;
        self.step += 1;
        let notes = note_toks
            .into_iter()
            .map(|t| {
                let v: Tensor<String> = run.fetch(t).tf_ctx(|| "fetching a batch note".into())?;
                Ok(v.first().cloned().unwrap_or_default())
            })
            .collect::<Result<Vec<String>>>()?;
        self.input.noted(notes)?;
        if read_placement {
            let md = run.get_metadata().unwrap_or_default();
            let graph = self.model.scope.graph();
            let built = |n: &str| matches!(graph.operation_by_name(n), Ok(Some(_)));
            let p = Placement::read(md, &self.devices, &built)?;
            drop(graph);
            log::info!(
                "placement: {} op(s) in a step, {} not on {}",
                p.ops(),
                p.elsewhere.len(),
                self.devices.join(", ")
            );
            self.placement = Some((full, p));
        }
        toks.into_iter()
            .map(|t| {
                let v: Tensor<f32> = run.fetch(t).tf_ctx(|| "fetching a step's scalars".into())?;
                Ok(v.first().copied().unwrap_or(f32::NAN))
            })
            .collect()
    }

    /// A failed step's error in the cluster's words: a worker whose input failed, or one that
    /// stopped answering.
    fn failed_step(&self, e: crate::error::Error) -> crate::error::Error {
        let (Some(c), crate::error::Error::Tf { msg, .. }) = (&self.cluster, &e) else {
            return e;
        };
        if msg.contains("is closed") {
            if let Some(err) = self.input.failed(&self.model.session) {
                return err;
            }
        }
        c.failed_step(msg).unwrap_or(e)
    }

    /// Runs `steps` more steps on fresh batches, logging every 10; returns their losses.
    pub fn run(&mut self, steps: u64) -> Result<Vec<f32>> {
        let mut tally = Tally::default();
        let until = self.step + steps;
        self.drive(
            until,
            &mut tally,
            &mut [&mut drive::LogLines(drive::Rate::new(10))],
        )?;
        Ok(tally.losses)
    }
}

impl Drop for Trainer {
    /// Workers reading for this trainer stop.
    fn drop(&mut self) {
        self.input.stop(&self.model.session);
    }
}
