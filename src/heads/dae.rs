//! Denoising autoencoder: corrupt the image, embed it with the backbone, and decode the
//! embedding back to a small copy of the clean image. A dense decoder from the embedding works
//! on every image model (feature vector or feature map, pooled), whatever its architecture.
use serde::{Deserialize, Serialize};
use tensorflow::{ops, DataType};

use super::{Activation, Head, HeadBuilder, HeadOutput};
use crate::error::{Error, Result, TfContext};

/// Denoising-autoencoder settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaeConfig {
    /// Gaussian noise std, as a fraction of the pixel range (0 gives a plain autoencoder).
    pub noise_std: f32,
    /// Hidden units of the decoder.
    pub hidden: i64,
    /// Side of the reconstructed (downsampled) image.
    pub target_size: i64,
}

impl Default for DaeConfig {
    fn default() -> Self {
        DaeConfig {
            noise_std: 0.1,
            hidden: 512,
            target_size: 24,
        }
    }
}

impl DaeConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.noise_std >= 0.0 && self.noise_std.is_finite()) {
            return Err(Error::config("head.noise_std", "must be ≥ 0"));
        }
        if self.hidden < 1 {
            return Err(Error::config("head.hidden", "must be ≥ 1"));
        }
        if !(4..=256).contains(&self.target_size) {
            return Err(Error::config("head.target_size", "must be in [4, 256]"));
        }
        Ok(())
    }
}

impl Head for DaeConfig {
    fn kind(&self) -> &'static str {
        "dae"
    }

    fn build(&self, b: &mut HeadBuilder) -> Result<HeadOutput> {
        self.validate()?;
        let ctx = || "building the denoising autoencoder head".to_string();
        let x = b.input();
        let channels = b.static_dim(&x, 3)?;
        let (lo, hi) = b.range;
        let seed = b.next_seed();
        let gseed = b.seed;
        // View: x + noise, clipped to the pixel range.
        let noisy = {
            let s = &mut b.scope;
            let shape = ops::shape(x.clone(), s).tf_ctx(ctx)?;
            let n = ops::RandomStandardNormal::new()
                .dtype(DataType::Float)
                .seed(gseed)
                .seed2(seed)
                .build(shape, s)
                .tf_ctx(ctx)?;
            let n = ops::mul(
                n,
                ops::constant(self.noise_std * (hi - lo), s).tf_ctx(ctx)?,
                s,
            )
            .tf_ctx(ctx)?;
            let y = ops::add(x.clone(), n, s).tf_ctx(ctx)?;
            let lo_t = ops::constant(lo, s).tf_ctx(ctx)?;
            let hi_t = ops::constant(hi, s).tf_ctx(ctx)?;
            ops::clip_by_value(y, lo_t, hi_t, s).tf_ctx(ctx)?
        };
        let mut e = b.tower(noisy.into())?;
        match b.rank(&e) {
            Some(2) => {}
            Some(4) => {
                let s = &mut b.scope;
                let axes = ops::constant(&[1i32, 2][..], s).tf_ctx(ctx)?;
                e = ops::mean(e, axes, s).tf_ctx(ctx)?.into();
            }
            r => {
                return Err(Error::config(
                    "head.kind",
                    format!("dae needs a backbone output of rank 2 or 4, got {r:?}"),
                ))
            }
        }
        let d = b.static_dim(&e, 1)?;
        let t = self.target_size;
        let h = b.dense("dae/decoder1", e, d, self.hidden, Activation::Relu)?;
        let r = b.dense(
            "dae/decoder2",
            h,
            self.hidden,
            t * t * channels,
            Activation::Sigmoid,
        )?;
        let s = &mut b.scope;
        let rshape = ops::constant(&[-1i64, t, t, channels][..], s).tf_ctx(ctx)?;
        let r = ops::reshape(r, rshape, s).tf_ctx(ctx)?;
        let size = ops::constant(&[t as i32, t as i32][..], s).tf_ctx(ctx)?;
        let target = ops::resize_area(x, size, s).tf_ctx(ctx)?;
        let target = ops::sub(target, ops::constant(lo, s).tf_ctx(ctx)?, s).tf_ctx(ctx)?;
        let target =
            ops::mul(target, ops::constant(1.0 / (hi - lo), s).tf_ctx(ctx)?, s).tf_ctx(ctx)?;
        let sq = ops::squared_difference(r, target, s).tf_ctx(ctx)?;
        let all = ops::constant(&[0i32, 1, 2, 3][..], s).tf_ctx(ctx)?;
        let loss: tensorflow::Output = ops::mean(sq, all, &mut s.with_op_name("dae_loss"))
            .tf_ctx(ctx)?
            .into();
        Ok(HeadOutput {
            loss: loss.clone(),
            summaries: vec![("loss/dae".into(), loss)],
        })
    }
}
