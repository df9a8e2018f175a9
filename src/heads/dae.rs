//! Denoising autoencoder: corrupt the image, embed it with the backbone, and decode the
//! embedding back to a small copy of the clean image. A dense decoder from the embedding works
//! on every image model (feature vector or feature map, pooled), whatever its architecture.
use serde::{Deserialize, Serialize};
use tensorflow::{ops, Output, Scope};

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

/// How the input is corrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Noise {
    /// Additive Gaussian noise, std = level × pixel range, clipped to the range.
    Gaussian,
    /// Each value set to the range's low end with probability `level`.
    Masking,
    /// Each value set to the low or the high end, each with probability `level / 2`.
    SaltPepper,
}

/// Denoising-autoencoder settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaeConfig {
    pub noise: Noise,
    /// Noise strength (see `Noise`); 0 gives a plain autoencoder.
    pub noise_level: f32,
    /// Hidden units of the decoder.
    pub hidden: i64,
    /// Side of the reconstructed (downsampled) image.
    pub target_size: i64,
    pub decoder: Decoder,
}

impl Default for DaeConfig {
    fn default() -> Self {
        DaeConfig {
            noise: Noise::Gaussian,
            noise_level: 0.1,
            hidden: 512,
            target_size: 24,
            decoder: Decoder::Auto,
        }
    }
}

impl DaeConfig {
    pub fn validate(&self) -> Result<()> {
        let max = if self.noise == Noise::Gaussian {
            4.0
        } else {
            1.0
        };
        if !(self.noise_level >= 0.0 && self.noise_level < max) {
            return Err(Error::config(
                "head.noise_level",
                format!("{} is outside [0, {max})", self.noise_level),
            ));
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

/// The corrupted view of `x` (values in `range`), drawn statelessly from the int64[2] `seed`.
pub fn corrupt(
    s: &mut Scope,
    x: Output,
    noise: Noise,
    level: f32,
    range: (f32, f32),
    seed: Output,
) -> Result<Output> {
    let ctx = || "building the input corruption".to_string();
    let (lo, hi) = range;
    let shape = ops::shape(x.clone(), s).tf_ctx(ctx)?;
    let lo_t: Output = ops::constant(lo, s).tf_ctx(ctx)?.into();
    let hi_t: Output = ops::constant(hi, s).tf_ctx(ctx)?.into();
    let y: Output = match noise {
        Noise::Gaussian => {
            let n = super::random(s, shape.into(), seed, true)?;
            let n = ops::mul(n, ops::constant(level * (hi - lo), s).tf_ctx(ctx)?, s).tf_ctx(ctx)?;
            let y = ops::add(x, n, s).tf_ctx(ctx)?;
            ops::clip_by_value(y, lo_t, hi_t, s).tf_ctx(ctx)?.into()
        }
        Noise::Masking | Noise::SaltPepper => {
            let u: Output = super::random(s, shape.into(), seed, false)?;
            let lows = ops::zeros_like(x.clone(), s).tf_ctx(ctx)?;
            let lows = ops::add(lows, lo_t.clone(), s).tf_ctx(ctx)?;
            let (p_low, p_high) = if noise == Noise::Masking {
                (level, 0.0)
            } else {
                (level / 2.0, level / 2.0)
            };
            let is_low =
                ops::less(u.clone(), ops::constant(p_low, s).tf_ctx(ctx)?, s).tf_ctx(ctx)?;
            let y = ops::select_v2(is_low, lows, x.clone(), s).tf_ctx(ctx)?;
            if p_high > 0.0 {
                let highs = ops::zeros_like(x, s).tf_ctx(ctx)?;
                let highs = ops::add(highs, hi_t, s).tf_ctx(ctx)?;
                let is_high = ops::greater_equal(u, ops::constant(1.0 - p_high, s).tf_ctx(ctx)?, s)
                    .tf_ctx(ctx)?;
                ops::select_v2(is_high, highs, y, s).tf_ctx(ctx)?.into()
            } else {
                y.into()
            }
        }
    };
    Ok(y)
}

/// `x` resized (area) to t×t and mapped from `range` to [0, 1]: what decoders reconstruct.
pub fn small_target(s: &mut Scope, x: Output, t: i64, range: (f32, f32)) -> Result<Output> {
    let ctx = || "reconstruction target".to_string();
    let (lo, hi) = range;
    let size = ops::constant(&[t as i32, t as i32][..], s).tf_ctx(ctx)?;
    let target = ops::resize_area(x, size, s).tf_ctx(ctx)?;
    let target = ops::sub(target, ops::constant(lo, s).tf_ctx(ctx)?, s).tf_ctx(ctx)?;
    Ok(
        ops::mul(target, ops::constant(1.0 / (hi - lo), s).tf_ctx(ctx)?, s)
            .tf_ctx(ctx)?
            .into(),
    )
}

impl DaeConfig {
    /// A t×t×c reconstruction in [0, 1] from the backbone output `e` with the configured
    /// decoder (see `Decoder`), and the feature map it decoded from (conv decoder only).
    pub fn reconstruct(
        &self,
        b: &mut HeadBuilder,
        e: Output,
        t: i64,
        c: i64,
    ) -> Result<(Output, Option<Output>)> {
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
                "conv decoder from feature map '{}'",
                f.operation.name().unwrap_or_default()
            ),
            None => log::info!("dense decoder from the embedding"),
        }
        match fmap {
            Some(f) => Ok((self.conv_decoder(b, f.clone(), t, c)?, Some(f))),
            None => Ok((self.dense_decoder(b, e, t, c)?, None)),
        }
    }

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

/// The named tensors of a reconstruction head `kind`: its corrupted input, the feature map the
/// conv decoder used (if any), the reconstruction and its target.
pub(super) fn decoder_tensors(
    kind: &str,
    input: Output,
    fmap: Option<Output>,
    reconstruction: Output,
    target: Output,
) -> Vec<(String, Output)> {
    let input_name = if kind == "dae" { "noisy" } else { "masked" };
    let mut v = vec![(format!("{kind}/{input_name}"), input)];
    v.extend(fmap.map(|f| (format!("{kind}/feature_map"), f)));
    v.push((format!("{kind}/reconstruction"), reconstruction));
    v.push((format!("{kind}/target"), target));
    v
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
        let seed = b.step_seed()?;
        // View: x + noise, clipped to the pixel range.
        let noisy = corrupt(
            &mut b.scope,
            x.clone(),
            self.noise,
            self.noise_level,
            (lo, hi),
            seed,
        )?;
        let e = b.tower(noisy.clone())?;
        let t = self.target_size;
        let (r, fmap) = self.reconstruct(b, e, t, channels)?;
        let s = &mut b.scope;
        let target = small_target(s, x, t, (lo, hi))?;
        let sq = ops::squared_difference(r.clone(), target.clone(), s).tf_ctx(ctx)?;
        let all = ops::constant(&[0i32, 1, 2, 3][..], s).tf_ctx(ctx)?;
        let loss: tensorflow::Output = ops::mean(sq, all, &mut s.with_op_name("dae_loss"))
            .tf_ctx(ctx)?
            .into();
        Ok(HeadOutput {
            loss: loss.clone(),
            summaries: vec![("loss/dae".into(), loss)],
            tensors: decoder_tensors("dae", noisy, fmap, r, target),
            ema: Vec::new(),
            post_assign: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorflow::{Session, SessionOptions, SessionRunArgs, Tensor};

    fn corrupted(noise: Noise, level: f32) -> Vec<f32> {
        let mut s = Scope::new_root_scope();
        let x: Output = ops::constant(
            Tensor::new(&[100, 10, 10, 3])
                .with_values(&vec![0.5f32; 30_000])
                .unwrap(),
            &mut s,
        )
        .unwrap()
        .into();
        let seed: Output = ops::constant(&[1i64, 2][..], &mut s).unwrap().into();
        let y = corrupt(&mut s, x, noise, level, (0.0, 1.0), seed).unwrap();
        let sess = Session::new(&SessionOptions::new(), &s.graph()).unwrap();
        let mut run = SessionRunArgs::new();
        let t = run.request_fetch(&y.operation, y.index);
        sess.run(&mut run).unwrap();
        run.fetch::<f32>(t).unwrap().to_vec()
    }

    fn frac(v: &[f32], f: impl Fn(f32) -> bool) -> f32 {
        v.iter().filter(|x| f(**x)).count() as f32 / v.len() as f32
    }

    #[test]
    fn noise_statistics() {
        let g = corrupted(Noise::Gaussian, 0.1);
        let mean = g.iter().sum::<f32>() / g.len() as f32;
        let std = (g.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / g.len() as f32).sqrt();
        assert!(
            (mean - 0.5).abs() < 0.005 && (std - 0.1).abs() < 0.005,
            "gaussian mean {mean} std {std}"
        );
        let m = corrupted(Noise::Masking, 0.3);
        assert!((frac(&m, |v| v == 0.0) - 0.3).abs() < 0.01);
        assert!((frac(&m, |v| v == 0.5) - 0.7).abs() < 0.01);
        let sp = corrupted(Noise::SaltPepper, 0.2);
        assert!((frac(&sp, |v| v == 0.0) - 0.1).abs() < 0.01);
        assert!((frac(&sp, |v| v == 1.0) - 0.1).abs() < 0.01);
    }

    #[test]
    fn noise_level_out_of_range_is_named() {
        let c = DaeConfig {
            noise: Noise::Masking,
            noise_level: 1.0,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("head.noise_level"));
    }
}
