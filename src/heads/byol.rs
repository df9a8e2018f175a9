//! BYOL (and SimSiam as its momentum-0 case): an online backbone + projector + predictor
//! regresses, with cosine loss, the projection of the other view by a momentum (EMA) target
//! backbone + projector; both views go through each network in one batched pass.
use serde::{Deserialize, Serialize};
use tensorflow::{ops, DataType, Output, Scope};

use super::momentum::Ema;
use super::simclr::l2_normalize;
use super::{normalize, Head, HeadBuilder, HeadOutput};
use crate::error::{Error, Result, TfContext};

/// BYOL settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ByolConfig {
    /// EMA momentum of the target network (0: SimSiam, the target is the online network).
    pub momentum: f32,
    pub hidden: i64,
    pub proj_dim: i64,
}

impl Default for ByolConfig {
    fn default() -> Self {
        ByolConfig {
            momentum: 0.99,
            hidden: 1024,
            proj_dim: 256,
        }
    }
}

impl ByolConfig {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::config(
                "head.momentum",
                format!("{} is outside [0, 1)", self.momentum),
            ));
        }
        if self.hidden < 1 || self.proj_dim < 1 {
            return Err(Error::config(
                "head.hidden",
                "hidden and proj_dim must be ≥ 1",
            ));
        }
        Ok(())
    }
}

/// Linear → batch norm → ReLU → Linear, from value tensors [w0, b0, gamma, beta, w1, b1].
fn mlp(s: &mut Scope, x: Output, p: &[Output]) -> Result<Output> {
    let ctx = || "BYOL MLP".to_string();
    let h = ops::bias_add(
        ops::mat_mul(x, p[0].clone(), s).tf_ctx(ctx)?,
        p[1].clone(),
        s,
    )
    .tf_ctx(ctx)?;
    let h = normalize(s, h.into(), p[2].clone(), p[3].clone())?;
    let h = ops::relu(h, s).tf_ctx(ctx)?;
    Ok(ops::bias_add(
        ops::mat_mul(h, p[4].clone(), s).tf_ctx(ctx)?,
        p[5].clone(),
        s,
    )
    .tf_ctx(ctx)?
    .into())
}

/// 2 − 2·cos(a, b), averaged over rows.
fn cosine_loss(s: &mut Scope, a: Output, b: Output) -> Result<Output> {
    let ctx = || "BYOL loss".to_string();
    let (a, b) = (l2_normalize(s, a)?, l2_normalize(s, b)?);
    let one = ops::constant(&[1i32][..], s).tf_ctx(ctx)?;
    let cos = ops::sum(ops::mul(a, b, s).tf_ctx(ctx)?, one, s).tf_ctx(ctx)?;
    let l = ops::sub(
        ops::constant(2.0f32, s).tf_ctx(ctx)?,
        ops::mul(cos, ops::constant(2.0f32, s).tf_ctx(ctx)?, s).tf_ctx(ctx)?,
        s,
    )
    .tf_ctx(ctx)?;
    let axes = ops::constant(&[0i32][..], s).tf_ctx(ctx)?;
    Ok(ops::mean(l, axes, s).tf_ctx(ctx)?.into())
}

impl ByolConfig {
    /// Creates an MLP's variables (d → hidden → out); returns their values.
    fn mlp_vars(&self, b: &mut HeadBuilder, name: &str, d: i64, out: i64) -> Result<Vec<Output>> {
        let h = self.hidden;
        Ok(vec![
            b.variable(&format!("{name}/w0"), &[d, h], Some((d, h)))?,
            b.variable(&format!("{name}/b0"), &[h], None)?,
            b.variable(&format!("{name}/gamma"), &[h], None)?,
            b.variable(&format!("{name}/beta"), &[h], None)?,
            b.variable(&format!("{name}/w1"), &[h, out], Some((h, out)))?,
            b.variable(&format!("{name}/b1"), &[out], None)?,
        ])
    }
}

impl Head for ByolConfig {
    fn kind(&self) -> &'static str {
        "byol"
    }

    fn views(&self) -> (bool, usize) {
        (false, 2)
    }

    fn build(&self, b: &mut HeadBuilder) -> Result<HeadOutput> {
        self.validate()?;
        let ctx = || "building the BYOL head".to_string();
        let x = b.stacked_views(&[0, 1])?;
        let h = b.tower(x.clone())?;
        let h = b.pooled(h)?;
        let d = b.static_dim(&h, 1)?;
        let first = b.vars.len();
        let proj = self.mlp_vars(b, "byol/projector", d, self.proj_dim)?;
        let proj_handles = b.head_handles_since(first);
        let pred = self.mlp_vars(b, "byol/predictor", self.proj_dim, self.proj_dim)?;
        let (ht, mut pairs) = b.momentum_tower(x)?;
        let ht = b.pooled(ht)?;
        let mut target = Vec::new();
        for (name, handle) in &proj_handles {
            let t = b.shadow(name, handle)?;
            target.push(
                ops::ReadVariableOp::new()
                    .dtype(DataType::Float)
                    .build(t.clone(), &mut b.scope)
                    .tf_ctx(ctx)?
                    .into(),
            );
            pairs.push((t, handle.clone()));
        }
        let s = &mut b.scope;
        let z = mlp(s, h, &proj)?;
        let p = mlp(s, z, &pred)?;
        let zt = ops::stop_gradient(mlp(s, ht.clone(), &target)?, s).tf_ctx(ctx)?;
        let tensors = vec![
            ("byol/target_features".to_string(), ht),
            ("byol/prediction".to_string(), p.clone()),
            ("byol/target_projection".to_string(), zt.clone().into()),
        ];
        let axis = ops::constant(0i32, s).tf_ctx(ctx)?;
        let ps = ops::Split::new()
            .num_split(2)
            .build(axis.clone(), p, s)
            .tf_ctx(ctx)?;
        let zs = ops::Split::new()
            .num_split(2)
            .build(axis, zt, s)
            .tf_ctx(ctx)?;
        let half = |op: &tensorflow::Operation, i: i32| Output {
            operation: op.clone(),
            index: i,
        };
        let l1 = cosine_loss(s, half(&ps, 0), half(&zs, 1))?;
        let l2 = cosine_loss(s, half(&ps, 1), half(&zs, 0))?;
        let loss: Output = ops::add(l1, l2, s).tf_ctx(ctx)?.into();
        Ok(HeadOutput {
            loss: loss.clone(),
            summaries: vec![("loss/byol".into(), loss)],
            tensors,
            ema: vec![Ema {
                momentum: self.momentum,
                pairs,
            }],
            post_assign: Vec::new(),
        })
    }
}
