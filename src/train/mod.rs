//! The training loop: inline the backbone, attach a pretext head, differentiate, optimize,
//! and step the session with batches of unlabeled images.
mod build;
pub mod checkpoint;
mod config;
mod inspect;
pub mod select;
pub mod summary;
pub mod timing;

pub use config::{image_spec, TrainConfig};
use std::time::Instant;

use tensorflow::{ops, DataType, Output, SessionRunArgs, Shape, Tensor};

use crate::autodiff;
use crate::data::{Batches, Dataset, ImageSpec, Loader, ViewPlan};
use crate::error::{Error, Result, TfContext};
use crate::graph::{inline_signature, FlatGraph};
use crate::heads::{HeadBuilder, HeadVar};
use crate::optim::Optimizer;
use crate::savedmodel::{Loaded, SavedModelInfo, Signature};

/// A model with a pretext head and an optimizer, ready to step.
pub struct Trainer {
    pub model: Loaded,
    pub signature: Signature,
    pub flat: FlatGraph,
    pub spec: ImageSpec,
    /// The input pipeline (prefetching batches of views on worker threads).
    pub input: Loader,
    /// Placeholders fed each step, in `ViewBatch` order: the clean batch (if the head uses it),
    /// then each augmented view.
    pub feeds: Vec<Output>,
    pub loss: Output,
    /// The head's named intermediate tensors (see `HeadOutput::tensors`; `Trainer::evaluate`).
    pub tensors: Vec<(String, Output)>,
    /// Variables the head created (`pretext/head/<name>/var`), not their momentum copies.
    pub head_vars: Vec<HeadVar>,
    /// (momentum copy, online variable) handles the post-step EMA moves, model and head ones.
    pub momentum_pairs: Vec<(Output, Output)>,
    pub optimizer: Optimizer,
    /// Assignments run with each step: batch-norm moving statistics (train mode), and after the
    /// optimizer's update, heads' momentum targets and queues.
    pub bn_updates: Vec<tensorflow::Operation>,
    /// The head-only phase of the first steps, if asked for.
    warmup: Option<build::HeadWarmup>,
    /// Names of the variables the optimizer updates (model handles, `head/…`).
    pub param_names: Vec<String>,
    pub trained_vars: usize,
    /// Online backbone passes in the graph (momentum copies not counted).
    pub towers: usize,
    batch: usize,
    /// Optimizer steps taken (continued across a resume).
    pub step: u64,
    /// Fed `[seed, step]` each step (per-step random draws of the heads).
    step_seed: Output,
    seed: i64,
    /// Scalars the head reports (e.g. each head's loss in a multi-task sum), by tag.
    pub summaries: Vec<(String, Output)>,
    /// Global L2 norm of the gradients.
    pub grad_norm: Output,
    /// Saves and restores every variable the run changes.
    pub saver: checkpoint::Saver,
}

use build::{checkpoint_vars, global_norm, post_step_ops};

impl Trainer {
    /// Loads the model, builds towers, head, gradients and optimizer, initialises new variables.
    pub fn new(cfg: &TrainConfig) -> Result<Self> {
        cfg.validate()?;
        let info = SavedModelInfo::read(&cfg.model)?;
        let signature = info.signature(&cfg.signature)?;
        let spec = image_spec(&signature, cfg.size, cfg.range)?;
        let data = std::sync::Arc::new(Dataset::open(&cfg.data)?);
        let head = cfg.head.head();
        let (clean, augmented) = head.views();
        let plan = ViewPlan {
            clean,
            augmented,
            augment: cfg.augment.clone(),
        };
        // The input threads start now: the first batches decode while the graph is built.
        let mut batches = Batches::new(data, spec.clone(), cfg.data_seed.unwrap_or(cfg.seed));
        if !cfg.shuffle {
            batches = batches.sequential();
        }
        let loader = Loader::new(batches, plan, cfg.batch, cfg.loader)?;
        let mut model = Loaded::load_parsed(info, cfg.trust)?;
        let mut flat = inline_signature(&model.info, &signature, &model.scope.graph())?;
        let rewritten = autodiff::fallback::apply(&mut flat.graph_def);
        if !rewritten.is_empty() {
            log::info!(
                "fallback gradient rules rewrote {} node(s), e.g. {}",
                rewritten.len(),
                rewritten[0]
            );
        }
        let unstrided = crate::graph::unstride::apply(&mut flat, &model.info);
        if !unstrided.is_empty() {
            log::info!(
                "{} strided 1x1 convolution(s) train at unit stride (oneDNN-safe rewrite): {}",
                unstrided.len(),
                unstrided.join(", ")
            );
        }
        let read_order = build::read_order(&flat);
        let trainable = cfg
            .train_vars
            .select(&model.info.variables(), &read_order)?;
        let switched = build::batch_norm_patch(&mut flat, cfg, &trainable)?;
        let placeholder = |name: &str| -> Result<Output> {
            let s = model.scope.new_sub_scope("pretext");
            let shape = Shape::from(Some(vec![
                None,
                Some(spec.height as i64),
                Some(spec.width as i64),
                Some(spec.channels as i64),
            ]));
            Ok(ops::Placeholder::new()
                .dtype(DataType::Float)
                .shape(shape)
                .build(&mut s.with_op_name(name))
                .tf_ctx(|| format!("placeholder {name}"))?
                .into())
        };
        let input = placeholder("images")?;
        // [seed, step] for the heads' per-step random draws (fed each step; 0 otherwise).
        let step_seed: Output = {
            let mut s = model.scope.new_sub_scope("pretext");
            let d =
                ops::constant(&[cfg.seed as i64, 0][..], &mut s).tf_ctx(|| "step seed".into())?;
            ops::PlaceholderWithDefault::new()
                .dtype(DataType::Int64)
                .shape(Shape::from(Some(vec![Some(2)])))
                .build(d, &mut s.with_op_name("step_seed"))
                .tf_ctx(|| "step seed".into())?
                .into()
        };
        let views = (0..augmented)
            .map(|i| placeholder(&format!("view{i}")))
            .collect::<Result<Vec<_>>>()?;
        let mut feeds = if clean { vec![input.clone()] } else { vec![] };
        feeds.extend(views.iter().cloned());
        let (loss, tensors, towers, head_vars, head_inits, ema, post_assign, summaries) = {
            let mut b = HeadBuilder::new(
                &mut model,
                &flat,
                input.clone(),
                views,
                cfg.range,
                cfg.seed as i64,
                cfg.device.clone(),
                step_seed.clone(),
            );
            let out = head.build(&mut b)?;
            (
                out.loss,
                out.tensors,
                std::mem::take(&mut b.towers),
                std::mem::take(&mut b.vars),
                std::mem::take(&mut b.init_ops),
                out.ema,
                out.post_assign,
                out.summaries,
            )
        };
        let mut reads: Vec<(String, Output)> = towers
            .iter()
            .flat_map(|t| {
                t.reads
                    .iter()
                    .filter(|(h, _)| trainable.contains(h))
                    .cloned()
            })
            .collect();
        reads.extend(build::head_reads(&head_vars));
        let grads = autodiff::gradients(
            &mut model.scope,
            &towers,
            loss.clone(),
            &reads,
            "pretext/gradients",
        )?;
        let params = build::params_of(&model, &grads, &head_vars)?;
        let grad_norm = {
            let mut s = model.scope.new_sub_scope("pretext/grad_norm");
            let gs: Vec<Output> = grads.iter().map(|g| g.grad.clone()).collect();
            global_norm(&mut s, &gs)?
        };
        let trained_vars = params.len() - head_vars.len().min(params.len());
        log::info!(
            "training {} model variable(s) and {} head variable(s); {} tower(s) of {} nodes",
            trained_vars,
            head_vars.len(),
            towers.len(),
            flat.graph_def.node.len()
        );
        let mut bn_updates = Vec::new();
        {
            let mut s = model.scope.new_sub_scope("pretext/bn_update");
            for t in &towers {
                for (handle, value) in t.bn_updates(&model, &switched)? {
                    bn_updates.push(
                        ops::assign_variable_op(handle, value, &mut s)
                            .tf_ctx(|| "moving-statistics update".into())?,
                    );
                }
            }
        }
        if !switched.is_empty() {
            log::info!(
                "batch norm in train mode: {} op(s), moving statistics updated each step",
                switched.len()
            );
        }
        let optimizer = {
            let mut s = model.scope.new_sub_scope("pretext");
            cfg.optimizer
                .init(&mut s, &params, &[loss.operation.clone()])?
        };
        let warmup = match cfg.head_warmup_steps {
            0 => None,
            _ => Some(build::head_warmup(
                &mut model,
                cfg,
                build::HeadParts {
                    towers: &towers,
                    loss: &loss,
                    vars: &head_vars,
                    ema: &ema,
                    assign: &post_assign,
                },
                &bn_updates,
            )?),
        };
        let post_step = post_step_ops(&mut model, &optimizer, &ema, &post_assign)?;
        bn_updates.extend(post_step);
        let param_names = params.iter().map(|p| p.name.clone()).collect();
        let vars = checkpoint_vars(&model)?;
        let saver = checkpoint::Saver::new(&mut model, &vars)?;
        let momentum_pairs = ema.iter().flat_map(|e| e.pairs.iter().cloned()).collect();
        let mut run = SessionRunArgs::new();
        let warmup_init = warmup.as_ref().map(|w| &w.init_op);
        for op in head_inits
            .iter()
            .chain([&optimizer.init_op])
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
            flat,
            spec,
            input: loader,
            feeds,
            loss,
            tensors,
            head_vars,
            momentum_pairs,
            optimizer,
            bn_updates,
            warmup,
            param_names,
            trained_vars,
            towers: towers.len(),
            batch: cfg.batch,
            step: 0,
            step_seed,
            seed: cfg.seed as i64,
            summaries,
            grad_norm,
            saver,
        })
    }

    /// The next step's input tensors, in `feeds` order.
    pub fn next_batch(&mut self) -> Result<Vec<Tensor<f32>>> {
        Ok(self.input.next()?.into_tensors())
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
        let (train_op, updates) = match &self.warmup {
            Some(w) if self.step < w.steps => (&w.train_op, &w.targets),
            _ => (&self.optimizer.train_op, &self.bn_updates),
        };
        if self.step > 0 && self.warmup.as_ref().map(|w| w.steps) == Some(self.step) {
            log::info!(
                "head warm-up done: the model's variables train from step {}",
                self.step + 1
            );
        }
        run.add_target(train_op);
        for u in updates.iter().chain(extra.iter().copied()) {
            run.add_target(u);
        }
        let mut toks = vec![run.request_fetch(&self.loss.operation, self.loss.index)];
        for f in fetch {
            toks.push(run.request_fetch(&f.operation, f.index));
        }
        self.model
            .session
            .run(&mut run)
            .tf_ctx(|| format!("running training step {}", self.step + 1))?;
        self.step += 1;
        toks.into_iter()
            .map(|t| {
                let v: Tensor<f32> = run.fetch(t).tf_ctx(|| "fetching a step's scalars".into())?;
                Ok(v.first().copied().unwrap_or(f32::NAN))
            })
            .collect()
    }

    /// Runs `steps` steps on fresh batches; logs progress; returns the losses.
    pub fn run(&mut self, steps: u64) -> Result<Vec<f32>> {
        self.run_until(steps, None)
    }

    /// Like `run`, stopping early (after a whole step) once `deadline` has passed.
    pub fn run_until(&mut self, steps: u64, deadline: Option<Instant>) -> Result<Vec<f32>> {
        let mut losses = Vec::with_capacity(steps as usize);
        let t0 = Instant::now();
        for i in 0..steps {
            if deadline.map(|d| Instant::now() >= d).unwrap_or(false) {
                log::info!("time budget reached after {i} step(s)");
                break;
            }
            let x = self.next_batch()?;
            let l = self.step_on(&x)?;
            self.recycle(x);
            if !l.is_finite() {
                return Err(Error::graph(
                    "pretext/head",
                    format!("loss became {l} at step {}", i + 1),
                ));
            }
            losses.push(l);
            if (i + 1) % 10 == 0 || i + 1 == steps {
                let el = t0.elapsed().as_secs_f64();
                log::info!(
                    "step {}/{steps} loss {l:.5} ({:.2} steps/s, {:.1} images/s)",
                    i + 1,
                    (i + 1) as f64 / el,
                    ((i + 1) as usize * self.batch) as f64 / el
                );
            }
        }
        Ok(losses)
    }
}
