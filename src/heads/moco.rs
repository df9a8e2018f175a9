//! MoCo v2: queries from the online backbone and MLP, keys from a momentum (EMA) copy of both,
//! InfoNCE against the positive key and a queue of K earlier keys; the queue and the momentum
//! encoder are updated in-graph after each optimizer step.
use serde::{Deserialize, Serialize};
use tensorflow::{ops, DataType, Output, Scope};

use super::momentum::Ema;
use super::simclr::l2_normalize;
use super::{batch_dims, concat, xent_mean, Activation, Head, HeadBuilder, HeadOutput};
use crate::error::{Error, Result, TfContext};

/// MoCo v2 settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoConfig {
    pub temperature: f32,
    /// K: keys kept in the queue (a multiple of the batch size).
    pub queue_size: i64,
    /// EMA momentum of the key encoder.
    pub momentum: f32,
    pub proj_width: i64,
    pub proj_dim: i64,
}

impl Default for MocoConfig {
    fn default() -> Self {
        MocoConfig {
            temperature: 0.2,
            queue_size: 4096,
            momentum: 0.999,
            proj_width: 512,
            proj_dim: 128,
        }
    }
}

impl MocoConfig {
    /// Checks the settings; `batch` is the training batch size the queue must be a multiple of.
    pub fn validate(&self, batch: usize) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::config(
                "head.temperature",
                format!("{} must be > 0", self.temperature),
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::config(
                "head.momentum",
                format!("{} is outside [0, 1)", self.momentum),
            ));
        }
        if self.queue_size < 1 || batch == 0 || self.queue_size % batch as i64 != 0 {
            return Err(Error::config(
                "head.queue_size",
                format!(
                    "{} must be a positive multiple of the batch size ({batch})",
                    self.queue_size
                ),
            ));
        }
        if self.proj_width < 1 || self.proj_dim < 1 {
            return Err(Error::config(
                "head.proj_width",
                "proj_width and proj_dim must be ≥ 1",
            ));
        }
        Ok(())
    }
}

/// Linear → ReLU → Linear with the given (kernel, bias) variable handles.
fn mlp(s: &mut Scope, x: Output, layers: &[(Output, Output)]) -> Result<Output> {
    let ctx = || "momentum projection".to_string();
    let mut h = x;
    for (i, (w, b)) in layers.iter().enumerate() {
        let w = ops::ReadVariableOp::new()
            .dtype(DataType::Float)
            .build(w.clone(), s)
            .tf_ctx(ctx)?;
        let b = ops::ReadVariableOp::new()
            .dtype(DataType::Float)
            .build(b.clone(), s)
            .tf_ctx(ctx)?;
        let y = ops::bias_add(ops::mat_mul(h, w, s).tf_ctx(ctx)?, b, s).tf_ctx(ctx)?;
        h = if i + 1 < layers.len() {
            ops::relu(y, s).tf_ctx(ctx)?.into()
        } else {
            y.into()
        };
    }
    Ok(h)
}

impl Head for MocoConfig {
    fn kind(&self) -> &'static str {
        "moco"
    }

    fn views(&self) -> (bool, usize) {
        (false, 2)
    }

    fn build(&self, b: &mut HeadBuilder) -> Result<HeadOutput> {
        let ctx = || "building the MoCo head".to_string();
        let (vq, vk) = (b.view(0)?, b.view(1)?);
        // Queries: online backbone + online MLP.
        let hq = b.tower(vq)?;
        let hq = b.pooled(hq)?;
        let d = b.static_dim(&hq, 1)?;
        let first = b.vars.len();
        let h = b.dense("moco/proj0", hq, d, self.proj_width, Activation::Relu)?;
        let q = b.dense(
            "moco/proj1",
            h,
            self.proj_width,
            self.proj_dim,
            Activation::Linear,
        )?;
        let online_mlp = b.head_handles_since(first);
        // Keys: momentum copies of backbone and MLP.
        let (hk, mut pairs) = b.momentum_tower(vk)?;
        let hk = b.pooled(hk)?;
        let mut target_layers = Vec::new();
        for pair in online_mlp.chunks(2) {
            let (wn, w) = &pair[0];
            let (bn, bias) = &pair[1];
            let (tw, tb) = (b.shadow(wn, w)?, b.shadow(bn, bias)?);
            pairs.push((tw.clone(), w.clone()));
            pairs.push((tb.clone(), bias.clone()));
            target_layers.push((tw, tb));
        }
        let queue = b.unit_rows("moco/queue", self.queue_size, self.proj_dim)?;
        let s = &mut b.scope;
        let k = mlp(s, hk.clone(), &target_layers)?;
        let k = ops::stop_gradient(l2_normalize(s, k)?, s).tf_ctx(ctx)?;
        let q = l2_normalize(s, q)?;
        let mut tensors = vec![
            ("moco/key_features".to_string(), hk),
            ("moco/query".to_string(), q.clone()),
            ("moco/key".to_string(), k.clone().into()),
        ];
        let queued = ops::ReadVariableOp::new()
            .dtype(DataType::Float)
            .build(queue.clone(), s)
            .tf_ctx(ctx)?;
        let one = ops::constant(&[1i32][..], s).tf_ctx(ctx)?;
        let l_pos = ops::Sum::new()
            .keep_dims(true)
            .build(ops::mul(q.clone(), k.clone(), s).tf_ctx(ctx)?, one, s)
            .tf_ctx(ctx)?;
        let l_neg = ops::MatMul::new()
            .transpose_b(true)
            .build(q, queued.clone(), s)
            .tf_ctx(ctx)?;
        let logits = concat(s, &[l_pos.into(), l_neg.into()], 1)?;
        let logits = ops::mul(
            logits,
            ops::constant(1.0 / self.temperature, s).tf_ctx(ctx)?,
            s,
        )
        .tf_ctx(ctx)?;
        tensors.push(("moco/logits".to_string(), logits.clone().into()));
        let n = batch_dims(s, k.clone().into())?;
        let zeros = ops::fill(n, ops::constant(0i32, s).tf_ctx(ctx)?, s).tf_ctx(ctx)?;
        let depth = ops::constant((self.queue_size + 1) as i32, s).tf_ctx(ctx)?;
        let loss = xent_mean(s, logits.into(), zeros.into(), depth.into())?;
        // Enqueue this step's keys, dequeue the oldest.
        let grown = concat(s, &[k.into(), queued.into()], 0)?;
        let begin = ops::constant(&[0i32, 0][..], s).tf_ctx(ctx)?;
        let size = ops::constant(&[self.queue_size as i32, -1][..], s).tf_ctx(ctx)?;
        let next_queue: Output = ops::slice(grown, begin, size, s).tf_ctx(ctx)?.into();
        Ok(HeadOutput {
            loss: loss.clone(),
            summaries: vec![("loss/moco".into(), loss)],
            tensors,
            ema: vec![Ema {
                momentum: self.momentum,
                pairs,
            }],
            post_assign: vec![(queue, next_queue)],
        })
    }
}
