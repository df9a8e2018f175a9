//! TensorBoard logs written by TF's own summary ops (`CreateSummaryFileWriter`,
//! `WriteScalarSummary`, `WriteImageSummary`): per-head losses, learning rate, gradient norm and
//! images/s as scalars; input views and reconstructions as images.
use std::path::Path;

use tensorflow::{ops, DataType, Operation, Output, Scope, SessionRunArgs, Tensor};

use super::Trainer;
use crate::error::{Result, TfContext};

/// Summary ops over one run directory's event file.
pub struct Summaries {
    step: Output,
    rate: Output,
    /// Ops run with a logging step (they read that step's tensors).
    pub step_ops: Vec<Operation>,
    rate_op: Operation,
    flush: Operation,
}

fn tag(s: &mut Scope, t: &str) -> Result<Output> {
    Ok(ops::constant(Tensor::from(t.to_string()), s)
        .tf_ctx(|| format!("summary tag {t}"))?
        .into())
}

/// A summary writer on a new event file in `logdir` (its name ending in `suffix`), created in
/// the session now; returns it with the scope (`name`) its ops are built in.
fn open_writer(
    t: &mut Trainer,
    name: &str,
    logdir: &Path,
    suffix: &str,
) -> Result<(Scope, Output)> {
    let ctx = || {
        format!(
            "creating the TensorBoard event file in {}",
            logdir.display()
        )
    };
    let mut s = t.model.scope.new_sub_scope(name);
    let writer: Output = ops::SummaryWriter::new()
        .shared_name(s.get_unique_name_for_op("writer"))
        .build(&mut s)
        .tf_ctx(ctx)?
        .into();
    let dir =
        ops::constant(Tensor::from(logdir.to_string_lossy().into_owned()), &mut s).tf_ctx(ctx)?;
    let create = ops::create_summary_file_writer(
        writer.clone(),
        dir,
        ops::constant(100i32, &mut s).tf_ctx(ctx)?,
        ops::constant(5000i32, &mut s).tf_ctx(ctx)?,
        ops::constant(Tensor::from(suffix.to_string()), &mut s).tf_ctx(ctx)?,
        &mut s,
    )
    .tf_ctx(ctx)?;
    let mut run = SessionRunArgs::new();
    run.add_target(&create);
    t.model.session.run(&mut run).tf_ctx(ctx)?;
    Ok((s, writer))
}

impl Summaries {
    /// Builds the writer for `logdir` and the summaries of `t`; `images` are NHWC tensors in
    /// [0, 1] (up to 3 of each batch are written).
    pub fn new(t: &mut Trainer, logdir: &Path, images: &[(String, Output)]) -> Result<Summaries> {
        let ctx = || "building the TensorBoard summaries".to_string();
        let (mut s, writer) = open_writer(t, "pretext/summary", logdir, ".pretext")?;
        let step: Output = ops::Placeholder::new()
            .dtype(DataType::Int64)
            .build(&mut s.with_op_name("step"))
            .tf_ctx(ctx)?
            .into();
        let rate: Output = ops::Placeholder::new()
            .dtype(DataType::Float)
            .build(&mut s.with_op_name("images_per_second"))
            .tf_ctx(ctx)?
            .into();
        let mut scalars = vec![
            ("loss".to_string(), t.loss().clone()),
            ("learning_rate".to_string(), t.learning_rate().clone()),
            ("gradient_norm".to_string(), t.grad_norm().clone()),
        ];
        scalars.extend(t.summaries().iter().filter(|(k, _)| k != "loss").cloned());
        let mut step_ops = Vec::new();
        for (k, v) in &scalars {
            let tg = tag(&mut s, k)?;
            step_ops.push(
                ops::write_scalar_summary(writer.clone(), step.clone(), tg, v.clone(), &mut s)
                    .tf_ctx(ctx)?,
            );
        }
        let bad = ops::constant(&[255u8, 0, 0, 255][..], &mut s).tf_ctx(ctx)?;
        for (k, v) in images {
            let tg = tag(&mut s, k)?;
            let clipped = ops::clip_by_value(
                v.clone(),
                ops::constant(0.0f32, &mut s).tf_ctx(ctx)?,
                ops::constant(1.0f32, &mut s).tf_ctx(ctx)?,
                &mut s,
            )
            .tf_ctx(ctx)?;
            step_ops.push(
                ops::WriteImageSummary::new()
                    .max_images(3)
                    .build(
                        writer.clone(),
                        step.clone(),
                        tg,
                        clipped,
                        bad.clone(),
                        &mut s,
                    )
                    .tf_ctx(ctx)?,
            );
        }
        let tg = tag(&mut s, "images_per_second")?;
        let rate_op =
            ops::write_scalar_summary(writer.clone(), step.clone(), tg, rate.clone(), &mut s)
                .tf_ctx(ctx)?;
        let flush = ops::flush_summary_writer(writer, &mut s).tf_ctx(ctx)?;
        Ok(Summaries {
            step,
            rate,
            step_ops,
            rate_op,
            flush,
        })
    }

    /// The step feed for `step_ops`.
    pub fn step_feed(&self, step: u64) -> (Output, Tensor<i64>) {
        (self.step.clone(), Tensor::from(step as i64))
    }

    /// Writes images/s at `step` and flushes the event file.
    pub fn write_rate(&self, t: &Trainer, step: u64, images_per_second: f32) -> Result<()> {
        let st = Tensor::from(step as i64);
        let r = Tensor::from(images_per_second);
        let mut run = SessionRunArgs::new();
        run.add_feed(&self.step.operation, self.step.index, &st);
        run.add_feed(&self.rate.operation, self.rate.index, &r);
        run.add_target(&self.rate_op);
        run.add_target(&self.flush);
        t.model
            .session
            .run(&mut run)
            .tf_ctx(|| "writing TensorBoard summaries".into())
    }
}

/// Scalars computed outside the graph (evaluation scores), written at a given step to their
/// own event file in a log directory (TensorBoard merges the files of a directory).
pub struct ScalarWriter {
    step: Output,
    tag: Output,
    value: Output,
    write: Operation,
    flush: Operation,
}

impl ScalarWriter {
    /// A writer into `logdir`, its event file named with `suffix` (e.g. `.pretext`).
    pub fn new(t: &mut Trainer, logdir: &Path, suffix: &str) -> Result<ScalarWriter> {
        let ctx = || format!("building the TensorBoard writer for {}", logdir.display());
        let (mut s, writer) = open_writer(t, "pretext/scalars", logdir, suffix)?;
        let ph = |s: &mut Scope, dt: DataType, name: &str| -> Result<Output> {
            Ok(ops::Placeholder::new()
                .dtype(dt)
                .build(&mut s.with_op_name(name))
                .tf_ctx(ctx)?
                .into())
        };
        let step = ph(&mut s, DataType::Int64, "step")?;
        let tag = ph(&mut s, DataType::String, "tag")?;
        let value = ph(&mut s, DataType::Float, "value")?;
        let write = ops::write_scalar_summary(
            writer.clone(),
            step.clone(),
            tag.clone(),
            value.clone(),
            &mut s,
        )
        .tf_ctx(ctx)?;
        let flush = ops::flush_summary_writer(writer, &mut s).tf_ctx(ctx)?;
        Ok(ScalarWriter {
            step,
            tag,
            value,
            write,
            flush,
        })
    }

    /// Writes each `(tag, value)` at `step`, then flushes.
    pub fn write(&self, t: &Trainer, step: u64, scalars: &[(String, f32)]) -> Result<()> {
        let st = Tensor::from(step as i64);
        for (k, v) in scalars {
            let (tag, value) = (Tensor::from(k.clone()), Tensor::from(*v));
            let mut run = SessionRunArgs::new();
            run.add_feed(&self.step.operation, self.step.index, &st);
            run.add_feed(&self.tag.operation, self.tag.index, &tag);
            run.add_feed(&self.value.operation, self.value.index, &value);
            run.add_target(&self.write);
            t.model
                .session
                .run(&mut run)
                .tf_ctx(|| format!("writing the TensorBoard scalar {k}"))?;
        }
        let mut run = SessionRunArgs::new();
        run.add_target(&self.flush);
        t.model
            .session
            .run(&mut run)
            .tf_ctx(|| "flushing TensorBoard scalars".into())
    }
}
