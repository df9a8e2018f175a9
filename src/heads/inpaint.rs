//! Predictive coding by masked inpainting: hide a random block (or random patches) of each image,
//! embed the rest with the backbone, decode the whole image, and score only the hidden part.
use serde::{Deserialize, Serialize};
use tensorflow::{ops, DataType, Output, Scope};

use super::dae::{decoder_tensors, small_target, DaeConfig, Decoder};
use super::{Head, HeadBuilder, HeadOutput};
use crate::error::{Error, Result, TfContext};

/// Which pixels are hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    /// One square block per image covering `mask_ratio` of it, at a random position.
    Block,
    /// A grid of `patch`-pixel patches, each hidden with probability `mask_ratio`.
    Patches,
}

/// Masked-inpainting settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InpaintConfig {
    pub mask: MaskKind,
    pub mask_ratio: f32,
    /// Patch side in input pixels (`patches` masks).
    pub patch: i64,
    pub decoder: Decoder,
    pub hidden: i64,
    pub target_size: i64,
}

impl Default for InpaintConfig {
    fn default() -> Self {
        InpaintConfig {
            mask: MaskKind::Block,
            mask_ratio: 0.25,
            patch: 16,
            decoder: Decoder::Auto,
            hidden: 512,
            target_size: 24,
        }
    }
}

impl InpaintConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return Err(Error::config(
                "head.mask_ratio",
                format!("{} is outside (0, 1)", self.mask_ratio),
            ));
        }
        if self.patch < 1 {
            return Err(Error::config("head.patch", "must be ≥ 1"));
        }
        self.decoder_config().validate()
    }

    fn decoder_config(&self) -> DaeConfig {
        DaeConfig {
            decoder: self.decoder,
            hidden: self.hidden,
            target_size: self.target_size,
            ..Default::default()
        }
    }
}

/// A [N, h, w, 1] float mask (1 = hidden) for a batch shaped like `x`, drawn statelessly from
/// the int64[2] `seed` (`seed2` for the block's second coordinate).
pub fn mask(
    s: &mut Scope,
    x: &Output,
    cfg: &InpaintConfig,
    h: i64,
    w: i64,
    seed: Output,
    seed2: Output,
) -> Result<Output> {
    let ctx = || "building the inpainting mask".to_string();
    let n = super::batch_dims(s, x.clone())?;
    let dims = |s: &mut Scope, rest: &[i32]| -> Result<Output> {
        let r = ops::constant(rest, s).tf_ctx(ctx)?;
        super::concat(s, &[n.clone(), r.into()], 0)
    };
    match cfg.mask {
        MaskKind::Block => {
            let side_h = ((cfg.mask_ratio.sqrt() * h as f32).round() as i64).clamp(1, h);
            let side_w = ((cfg.mask_ratio.sqrt() * w as f32).round() as i64).clamp(1, w);
            let d = dims(s, &[1, 1, 1])?;
            let u = super::random(s, d.clone(), seed, false)?;
            let v = super::random(s, d, seed2, false)?;
            let y0 = ops::floor(
                ops::mul(u, ops::constant((h - side_h + 1) as f32, s).tf_ctx(ctx)?, s)
                    .tf_ctx(ctx)?,
                s,
            )
            .tf_ctx(ctx)?;
            let x0 = ops::floor(
                ops::mul(v, ops::constant((w - side_w + 1) as f32, s).tf_ctx(ctx)?, s)
                    .tf_ctx(ctx)?,
                s,
            )
            .tf_ctx(ctx)?;
            let grid = |s: &mut Scope, len: i64, shape: &[i32]| -> Result<Output> {
                let r = ops::range(
                    ops::constant(0.0f32, s).tf_ctx(ctx)?,
                    ops::constant(len as f32, s).tf_ctx(ctx)?,
                    ops::constant(1.0f32, s).tf_ctx(ctx)?,
                    s,
                )
                .tf_ctx(ctx)?;
                Ok(ops::reshape(r, ops::constant(shape, s).tf_ctx(ctx)?, s)
                    .tf_ctx(ctx)?
                    .into())
            };
            let rows = grid(s, h, &[1, h as i32, 1, 1])?;
            let cols = grid(s, w, &[1, 1, w as i32, 1])?;
            let inside = |s: &mut Scope, p: Output, start: Output, side: i64| -> Result<Output> {
                let ge = ops::greater_equal(p.clone(), start.clone(), s).tf_ctx(ctx)?;
                let end =
                    ops::add(start, ops::constant(side as f32, s).tf_ctx(ctx)?, s).tf_ctx(ctx)?;
                let lt = ops::less(p, end, s).tf_ctx(ctx)?;
                Ok(ops::logical_and(ge, lt, s).tf_ctx(ctx)?.into())
            };
            let in_rows = inside(s, rows, y0.into(), side_h)?;
            let in_cols = inside(s, cols, x0.into(), side_w)?;
            let m = ops::logical_and(in_rows, in_cols, s).tf_ctx(ctx)?;
            Ok(ops::Cast::new()
                .DstT(DataType::Float)
                .build(m, s)
                .tf_ctx(ctx)?
                .into())
        }
        MaskKind::Patches => {
            let (gh, gw) = (
                ((h + cfg.patch - 1) / cfg.patch) as i32,
                ((w + cfg.patch - 1) / cfg.patch) as i32,
            );
            let d = dims(s, &[gh, gw, 1])?;
            let u = super::random(s, d, seed, false)?;
            let hidden =
                ops::less(u, ops::constant(cfg.mask_ratio, s).tf_ctx(ctx)?, s).tf_ctx(ctx)?;
            let m = ops::Cast::new()
                .DstT(DataType::Float)
                .build(hidden, s)
                .tf_ctx(ctx)?;
            let size = ops::constant(&[h as i32, w as i32][..], s).tf_ctx(ctx)?;
            Ok(ops::resize_nearest_neighbor(m, size, s).tf_ctx(ctx)?.into())
        }
    }
}

impl Head for InpaintConfig {
    fn kind(&self) -> &'static str {
        "inpaint"
    }

    fn build(&self, b: &mut HeadBuilder) -> Result<HeadOutput> {
        self.validate()?;
        let ctx = || "building the inpainting head".to_string();
        let x = b.input();
        let (h, w, c) = (
            b.static_dim(&x, 1)?,
            b.static_dim(&x, 2)?,
            b.static_dim(&x, 3)?,
        );
        let (lo, hi) = b.range;
        let (seed, seed2) = (b.step_seed()?, b.step_seed()?);
        let (masked, m) = {
            let s = &mut b.scope;
            let m = mask(s, &x, self, h, w, seed, seed2)?;
            let keep = ops::sub(ops::constant(1.0f32, s).tf_ctx(ctx)?, m.clone(), s).tf_ctx(ctx)?;
            let fill = ops::mul(m.clone(), ops::constant((lo + hi) / 2.0, s).tf_ctx(ctx)?, s)
                .tf_ctx(ctx)?;
            let kept = ops::mul(x.clone(), keep, s).tf_ctx(ctx)?;
            (Output::from(ops::add(kept, fill, s).tf_ctx(ctx)?), m)
        };
        let e = b.tower(masked.clone())?;
        let t = self.target_size;
        let (r, fmap) = self.decoder_config().reconstruct(b, e, t, c)?;
        let s = &mut b.scope;
        let target = small_target(s, x, t, (lo, hi))?;
        let size = ops::constant(&[t as i32, t as i32][..], s).tf_ctx(ctx)?;
        let weight = ops::resize_area(m.clone(), size, s).tf_ctx(ctx)?;
        let sq = ops::squared_difference(r.clone(), target.clone(), s).tf_ctx(ctx)?;
        let weighted = ops::mul(sq, weight.clone(), s).tf_ctx(ctx)?;
        let all = ops::constant(&[0i32, 1, 2, 3][..], s).tf_ctx(ctx)?;
        let num = ops::sum(weighted, all.clone(), s).tf_ctx(ctx)?;
        let den = ops::sum(weight, all, s).tf_ctx(ctx)?;
        let den = ops::add(
            ops::mul(den, ops::constant(c as f32, s).tf_ctx(ctx)?, s).tf_ctx(ctx)?,
            ops::constant(1e-6f32, s).tf_ctx(ctx)?,
            s,
        )
        .tf_ctx(ctx)?;
        let loss: Output = ops::div(num, den, s).tf_ctx(ctx)?.into();
        let mut tensors = vec![("inpaint/mask".to_string(), m)];
        tensors.extend(decoder_tensors("inpaint", masked, fmap, r, target));
        Ok(HeadOutput {
            loss: loss.clone(),
            summaries: vec![("loss/inpaint".into(), loss)],
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

    fn draw(cfg: &InpaintConfig) -> Vec<f32> {
        let mut s = Scope::new_root_scope();
        let x: Output = ops::constant(
            Tensor::new(&[200, 32, 32, 3])
                .with_values(&vec![0.0f32; 200 * 32 * 32 * 3])
                .unwrap(),
            &mut s,
        )
        .unwrap()
        .into();
        let seed: Output = ops::constant(&[3i64, 4][..], &mut s).unwrap().into();
        let seed2: Output = ops::constant(&[3i64, 5][..], &mut s).unwrap().into();
        let m = mask(&mut s, &x, cfg, 32, 32, seed, seed2).unwrap();
        let sess = Session::new(&SessionOptions::new(), &s.graph()).unwrap();
        let mut run = SessionRunArgs::new();
        let t = run.request_fetch(&m.operation, m.index);
        sess.run(&mut run).unwrap();
        run.fetch::<f32>(t).unwrap().to_vec()
    }

    #[test]
    fn masks_hide_the_asked_fraction() {
        let block = draw(&InpaintConfig {
            mask_ratio: 0.25,
            ..Default::default()
        });
        // Every image hides exactly one 16×16 block: 256 of 1024 pixels.
        for img in block.chunks(1024) {
            assert_eq!(img.iter().filter(|v| **v == 1.0).count(), 256);
        }
        let patches = draw(&InpaintConfig {
            mask: MaskKind::Patches,
            mask_ratio: 0.4,
            patch: 8,
            ..Default::default()
        });
        let frac = patches.iter().sum::<f32>() / patches.len() as f32;
        assert!((frac - 0.4).abs() < 0.03, "patch mask fraction {frac}");
    }

    #[test]
    fn mask_ratio_must_be_inside_the_unit_interval() {
        for r in [0.0, 1.0, 1.5] {
            let e = InpaintConfig {
                mask_ratio: r,
                ..Default::default()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(e.contains("head.mask_ratio") && e.contains("(0, 1)"), "{e}");
        }
    }
}
