//! Denoising autoencoder: corrupt the image, embed it with the backbone, and decode the
//! embedding back to a small copy of the clean image. A dense decoder from the embedding works
//! on every image model (feature vector or feature map, pooled), whatever its architecture.
use serde::{Deserialize, Serialize};
use tensorflow::{ops, DataType};

use super::{Activation, Head, HeadBuilder, HeadOutput};
use crate::error::{Error, Result, TfContext};

/// Which decoder reconstructs the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoder {
    /// `conv` when the backbone has a spatial feature map near its output, else `dense`.
    Auto,
    /// Dense layers from the (pooled) embedding: works on every image model.
    Dense,
    /// 1×1 conv, bilinear upsampling and two 3×3 convs from the last spatial feature map.
    Conv,
}

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
    pub decoder: Decoder,
}

impl Default for DaeConfig {
    fn default() -> Self {
        DaeConfig {
            noise_std: 0.1,
            hidden: 512,
            target_size: 24,
            decoder: Decoder::Auto,
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

impl DaeConfig {
    /// Dense layers from the embedding (feature maps average-pooled) to a t×t×c image.
    fn dense_decoder(
        &self,
        b: &mut HeadBuilder,
        mut e: tensorflow::Output,
        t: i64,
        c: i64,
    ) -> Result<tensorflow::Output> {
        let ctx = || "building the dense decoder".to_string();
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
        let h = b.dense("dae/decoder1", e, d, self.hidden, Activation::Relu)?;
        let r = b.dense(
            "dae/decoder2",
            h,
            self.hidden,
            t * t * c,
            Activation::Sigmoid,
        )?;
        let s = &mut b.scope;
        let shape = ops::constant(&[-1i64, t, t, c][..], s).tf_ctx(ctx)?;
        Ok(ops::reshape(r, shape, s).tf_ctx(ctx)?.into())
    }

    /// From a spatial feature map: 1×1 conv to `hidden/4` channels, bilinear upsampling to
    /// t×t, then 3×3 convs to 64 channels and to the image's channels (sigmoid).
    fn conv_decoder(
        &self,
        b: &mut HeadBuilder,
        f: tensorflow::Output,
        t: i64,
        c: i64,
    ) -> Result<tensorflow::Output> {
        let ctx = || "building the conv decoder".to_string();
        let cin = b.static_dim(&f, 3)?;
        let width = (self.hidden / 4).max(8);
        let h = b.conv2d("dae/reduce", f, 1, cin, width, Activation::Relu)?;
        let h: tensorflow::Output = {
            let s = &mut b.scope;
            let size = ops::constant(&[t as i32, t as i32][..], s).tf_ctx(ctx)?;
            ops::ResizeBilinear::new()
                .half_pixel_centers(true)
                .build(h, size, s)
                .tf_ctx(ctx)?
                .into()
        };
        let h = b.conv2d("dae/conv1", h, 3, width, 64, Activation::Relu)?;
        b.conv2d("dae/conv2", h, 3, 64, c, Activation::Sigmoid)
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
        let e = b.tower(noisy.into())?;
        let t = self.target_size;
        let fmap = match self.decoder {
            Decoder::Dense => None,
            // Auto: conv only where the output is a parameter-free pooling of the map, so the
            // head trains every layer the signature uses.
            Decoder::Auto => b.feature_map(&e).filter(|(_, between)| !between).map(|(f, _)| f),
            Decoder::Conv => Some(b.feature_map(&e).map(|(f, _)| f).ok_or_else(|| {
                Error::config("head.decoder", "conv needs a spatial feature map near the backbone output; this model has none (use dense)")
            })?),
        };
        match &fmap {
            Some(f) => log::info!(
                "dae: conv decoder from feature map '{}'",
                f.operation.name().unwrap_or_default()
            ),
            None => log::info!("dae: dense decoder from the embedding"),
        }
        let r: tensorflow::Output = match fmap {
            Some(f) => self.conv_decoder(b, f, t, channels)?,
            None => self.dense_decoder(b, e, t, channels)?,
        };
        let s = &mut b.scope;
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
