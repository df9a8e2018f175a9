//! Feature distillation: a frozen inlined copy of the original backbone (its own copies of the
//! variables, made like MoCo's key encoder but never moved) sees the same views as each online
//! tower; the term is the cosine distance (or mean squared error) between the two embeddings.
use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tensorflow::{ops, Output, Scope};

use super::{Retain, RetainTerm};
use crate::error::{Error, Result, TfContext};
use crate::heads::simclr::l2_normalize;
use crate::heads::HeadBuilder;

/// How the trained and the original embeddings are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistillLoss {
    /// Mean over the batch of 1 − cos(z, z₀): the embeddings' directions (kNN's metric).
    #[default]
    Cosine,
    /// Mean over every element of (z − z₀)².
    Mse,
}

/// Feature-distillation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    pub weight: f32,
    pub loss: DistillLoss,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            // The weakest weight measured (docs/BENCHMARKS.md); distillation holds the target
            // domain's embeddings, not the other domains' (it saw only target images there).
            weight: 0.03,
            loss: DistillLoss::Cosine,
        }
    }
}

impl Retain for DistillConfig {
    fn kind(&self) -> &'static str {
        "distill"
    }

    fn weight(&self) -> f32 {
        self.weight
    }

    fn build(&self, b: &mut HeadBuilder, _trainable: &HashSet<String>) -> Result<RetainTerm> {
        // Each online tower gets its original on the same inputs: on `train.devices`, one import
        // of the replicated graph, each replica on its own device and share of the batch.
        let online: Vec<(Vec<Output>, Vec<Output>)> = b
            .towers()
            .iter()
            .map(|t| (t.inputs.clone(), t.replica_outputs(0)))
            .collect();
        if online.is_empty() {
            return Err(Error::config(
                "retain.kind",
                "distill: the head built no backbone pass to distill",
            ));
        }
        let copies = b.copy_externals("retain/original")?;
        let mut tensors = Vec::new();
        let mut total: Option<Output> = None;
        let mut pairs = Vec::new();
        for (t, (inputs, zs)) in online.into_iter().enumerate() {
            let prefix = format!("pretext/retain/original{t}");
            let z0s = match zs.len() {
                1 => vec![b.tower_on(&inputs, &prefix, &copies)?],
                _ => b.tower_on_shares(&inputs, &prefix, &copies)?,
            };
            let per = inputs.len() / zs.len();
            for (k, (z, z0)) in zs.into_iter().zip(z0s).enumerate() {
                pairs.push((inputs[k * per].clone(), z, z0));
            }
        }
        for (i, (input, z, z0)) in pairs.into_iter().enumerate() {
            let (z, z0) = (b.pooled(z)?, b.pooled(z0)?);
            let s = &mut b.scope.new_sub_scope("retain/distill");
            let part = match self.loss {
                DistillLoss::Cosine => cosine_distance(s, z.clone(), z0.clone())?,
                DistillLoss::Mse => mean_squared(s, z.clone(), z0.clone())?,
            };
            tensors.push((format!("retain/input{i}"), input));
            tensors.push((format!("retain/embedding{i}"), z));
            tensors.push((format!("retain/original{i}"), z0));
            total = Some(match total {
                None => part,
                Some(t) => ops::add(t, part, s)
                    .tf_ctx(|| "distillation".into())?
                    .into(),
            });
        }
        let n = (tensors.len() / 3) as f32;
        let s = &mut b.scope.new_sub_scope("retain/distill");
        let ctx = || "distillation over towers".to_string();
        let term = ops::mul(
            total.expect("at least one tower (checked above)"),
            ops::constant(1.0 / n, s).tf_ctx(ctx)?,
            s,
        )
        .tf_ctx(ctx)?;
        Ok(RetainTerm {
            term: term.into(),
            tensors,
        })
    }
}

fn all_axes_mean(s: &mut Scope, x: Output, ctx: &dyn Fn() -> String) -> Result<Output> {
    let r = ops::rank(x.clone(), s).tf_ctx(ctx)?;
    let axes = ops::range(
        ops::constant(0i32, s).tf_ctx(ctx)?,
        r,
        ops::constant(1i32, s).tf_ctx(ctx)?,
        s,
    )
    .tf_ctx(ctx)?;
    Ok(ops::mean(x, axes, s).tf_ctx(ctx)?.into())
}

/// Mean over rows of 1 − ⟨z/‖z‖, z₀/‖z₀‖⟩.
fn cosine_distance(s: &mut Scope, z: Output, z0: Output) -> Result<Output> {
    let ctx = || "cosine distillation".to_string();
    let (u, v) = (l2_normalize(s, z)?, l2_normalize(s, z0)?);
    let one = ops::constant(&[1i32][..], s).tf_ctx(ctx)?;
    let cos = ops::sum(ops::mul(u, v, s).tf_ctx(ctx)?, one, s).tf_ctx(ctx)?;
    let d = ops::sub(ops::constant(1.0f32, s).tf_ctx(ctx)?, cos, s).tf_ctx(ctx)?;
    all_axes_mean(s, d.into(), &ctx)
}

/// Mean over every element of (z − z₀)².
fn mean_squared(s: &mut Scope, z: Output, z0: Output) -> Result<Output> {
    let ctx = || "mean-squared distillation".to_string();
    let d = ops::squared_difference(z, z0, s).tf_ctx(ctx)?;
    all_axes_mean(s, d.into(), &ctx)
}
