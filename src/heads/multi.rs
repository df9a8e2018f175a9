//! Multi-task: a weighted sum of heads trained together. Heads share the step's view batches
//! (a head asking for two augmented views gets the same two as any other) and the backbone
//! passes over the same input (e.g. SimCLR and BYOL embed one stack of both views once).
use serde::{Deserialize, Serialize};
use tensorflow::{ops, Output};

use super::{Head, HeadBuilder, HeadConfig, HeadOutput};
use crate::error::{Error, Result, TfContext};

/// One head and its weight in the sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedHead {
    pub weight: f32,
    pub head: HeadConfig,
}

/// Multi-task settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiConfig {
    pub heads: Vec<WeightedHead>,
}

impl MultiConfig {
    /// Parses `KIND=WEIGHT,KIND=WEIGHT` with default settings for each head.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut heads = Vec::new();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (kind, w) = part.split_once('=').unwrap_or((part, "1"));
            let weight = w
                .trim()
                .parse()
                .map_err(|_| Error::config("head.heads", format!("'{w}' is not a weight")))?;
            let head = match kind.trim() {
                "dae" => HeadConfig::Dae(Default::default()),
                "simclr" => HeadConfig::Simclr(Default::default()),
                "rotation" => HeadConfig::Rotation(Default::default()),
                "moco" => HeadConfig::Moco(Default::default()),
                "byol" => HeadConfig::Byol(Default::default()),
                "inpaint" => HeadConfig::Inpaint(Default::default()),
                k => {
                    return Err(Error::config(
                        "head.heads",
                        format!(
                            "unknown head kind '{k}' (valid: dae, simclr, rotation, moco, byol, inpaint)"
                        ),
                    ))
                }
            };
            heads.push(WeightedHead { weight, head });
        }
        Ok(MultiConfig { heads })
    }

    pub fn validate(&self, batch: usize) -> Result<()> {
        if self.heads.is_empty() {
            return Err(Error::config(
                "head.heads",
                "a multi-task head needs at least one head",
            ));
        }
        for (i, h) in self.heads.iter().enumerate() {
            if !(h.weight > 0.0 && h.weight.is_finite()) {
                return Err(Error::config(
                    format!("head.heads[{i}].weight"),
                    format!("{} must be > 0", h.weight),
                ));
            }
            h.head.validate(batch)?;
        }
        Ok(())
    }
}

impl Head for MultiConfig {
    fn kind(&self) -> &'static str {
        "multi"
    }

    fn views(&self) -> (bool, usize) {
        self.heads
            .iter()
            .map(|h| h.head.head().views())
            .fold((false, 0), |(c, n), (c2, n2)| (c || c2, n.max(n2)))
    }

    fn build(&self, b: &mut HeadBuilder) -> Result<HeadOutput> {
        let ctx = || "building the multi-task loss".to_string();
        let mut total: Option<Output> = None;
        let mut out = HeadOutput {
            loss: b.input(),
            summaries: Vec::new(),
            tensors: Vec::new(),
            ema: Vec::new(),
            post_assign: Vec::new(),
        };
        for h in &self.heads {
            let o = h.head.head().build(b)?;
            let s = &mut b.scope;
            let w = ops::constant(h.weight, s).tf_ctx(ctx)?;
            let term: Output = ops::mul(o.loss, w, s).tf_ctx(ctx)?.into();
            total = Some(match total {
                None => term,
                Some(t) => ops::add(t, term, s).tf_ctx(ctx)?.into(),
            });
            out.summaries.extend(o.summaries);
            out.tensors.extend(o.tensors);
            out.ema.extend(o.ema);
            out.post_assign.extend(o.post_assign);
        }
        out.loss = total.ok_or_else(|| Error::config("head.heads", "no heads"))?;
        out.summaries.push(("loss/total".into(), out.loss.clone()));
        Ok(out)
    }
}
