//! Rotation prediction (Gidaris et al. 2018): each image is shown at 0°, 90°, 180° and 270°
//! (one batched backbone pass) and a linear classifier on the embedding names the rotation.
use serde::{Deserialize, Serialize};
use tensorflow::{ops, Output, Scope};

use super::{batch_dims, concat, xent_mean, Activation, Head, HeadBuilder, HeadOutput};
use crate::error::{Error, Result, TfContext};

/// Rotation-prediction settings (nothing to tune but the weight of the head in a multi-task sum).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {}

/// `x` (NHWC, square) rotated by k quarter turns counter-clockwise, k = 0..4.
pub fn rotations(s: &mut Scope, x: Output) -> Result<[Output; 4]> {
    let ctx = || "building image rotations".to_string();
    let perm = ops::constant(&[0i32, 2, 1, 3][..], s).tf_ctx(ctx)?;
    let rows = ops::constant(&[1i32][..], s).tf_ctx(ctx)?;
    let both = ops::constant(&[1i32, 2][..], s).tf_ctx(ctx)?;
    let t = ops::transpose(x.clone(), perm.clone(), s).tf_ctx(ctx)?;
    let r90 = ops::reverse_v2(t, rows.clone(), s).tf_ctx(ctx)?;
    let r180 = ops::reverse_v2(x.clone(), both, s).tf_ctx(ctx)?;
    let flipped = ops::reverse_v2(x.clone(), rows, s).tf_ctx(ctx)?;
    let r270 = ops::transpose(flipped, perm, s).tf_ctx(ctx)?;
    Ok([x, r90.into(), r180.into(), r270.into()])
}

impl Head for RotationConfig {
    fn kind(&self) -> &'static str {
        "rotation"
    }

    fn build(&self, b: &mut HeadBuilder) -> Result<HeadOutput> {
        let ctx = || "building the rotation head".to_string();
        let x = b.input();
        let (h, w) = (b.static_dim(&x, 1)?, b.static_dim(&x, 2)?);
        if h != w {
            return Err(Error::config(
                "head.kind",
                format!("rotation needs square inputs; the model takes {h}×{w}"),
            ));
        }
        let rs = rotations(&mut b.scope, x.clone())?;
        let all = concat(&mut b.scope, &rs, 0)?;
        let e = b.tower(all.clone())?;
        let e = b.pooled(e)?;
        let d = b.static_dim(&e, 1)?;
        let logits = b.dense("rotation/classifier", e, d, 4, Activation::Linear)?;
        let s = &mut b.scope;
        let dims = batch_dims(s, x)?;
        let mut labels = Vec::new();
        for k in 0..4i32 {
            let v = ops::constant(k, s).tf_ctx(ctx)?;
            labels.push(ops::fill(dims.clone(), v, s).tf_ctx(ctx)?.into());
        }
        let labels = concat(s, &labels, 0)?;
        let depth = ops::constant(4i32, s).tf_ctx(ctx)?;
        let loss = xent_mean(s, logits.clone(), labels.clone(), depth.into())?;
        let tensors = vec![
            ("rotation/rotated".to_string(), all),
            ("rotation/logits".to_string(), logits.clone()),
        ];
        let axes = ops::constant(&[0i32][..], s).tf_ctx(ctx)?;
        let pred = ops::ArgMax::new()
            .output_type(tensorflow::DataType::Int32)
            .build(logits, ops::constant(1i32, s).tf_ctx(ctx)?, s)
            .tf_ctx(ctx)?;
        let hit = ops::equal(pred, labels, s).tf_ctx(ctx)?;
        let hit = ops::Cast::new()
            .DstT(tensorflow::DataType::Float)
            .build(hit, s)
            .tf_ctx(ctx)?;
        let acc: Output = ops::mean(hit, axes, s).tf_ctx(ctx)?.into();
        Ok(HeadOutput {
            loss: loss.clone(),
            summaries: vec![
                ("loss/rotation".into(), loss),
                ("rotation/accuracy".into(), acc),
            ],
            tensors,
            ema: Vec::new(),
            post_assign: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorflow::{Session, SessionOptions, SessionRunArgs, Tensor};

    #[test]
    fn rotations_are_quarter_turns() {
        // 1 image, 2×2, 1 channel: [[a, b], [c, d]] with a..d = 1..4.
        let mut s = Scope::new_root_scope();
        let x: Output = ops::constant(
            Tensor::new(&[1, 2, 2, 1])
                .with_values(&[1.0f32, 2.0, 3.0, 4.0])
                .unwrap(),
            &mut s,
        )
        .unwrap()
        .into();
        let rs = rotations(&mut s, x).unwrap();
        let sess = Session::new(&SessionOptions::new(), &s.graph()).unwrap();
        let mut got = Vec::new();
        for r in &rs {
            let mut run = SessionRunArgs::new();
            let t = run.request_fetch(&r.operation, r.index);
            sess.run(&mut run).unwrap();
            got.push(run.fetch::<f32>(t).unwrap().to_vec());
        }
        // np.rot90 (counter-clockwise) of [[1,2],[3,4]]: k=1 [[2,4],[1,3]], k=2 [[4,3],[2,1]], k=3 [[3,1],[4,2]].
        assert_eq!(got[0], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(got[1], vec![2.0, 4.0, 1.0, 3.0]);
        assert_eq!(got[2], vec![4.0, 3.0, 2.0, 1.0]);
        assert_eq!(got[3], vec![3.0, 1.0, 4.0, 2.0]);
    }
}
