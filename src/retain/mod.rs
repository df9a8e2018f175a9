//! Retention terms: what keeps a retrained model good at what it knew before, built as graph ops
//! beside the head and added to its loss. Each kind is one file behind the `Retain` trait
//! (L2-SP pulls the trained weights toward the original ones, distillation the embeddings toward
//! a frozen original backbone's); `RetainConfig` is the experiment's `retain:` section.
pub mod distill;
pub mod l2sp;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tensorflow::{ops, Output};

use crate::error::{Error, Result, TfContext};
use crate::heads::{HeadBuilder, HeadOutput};

pub use distill::{DistillConfig, DistillLoss};
pub use l2sp::L2spConfig;

/// The retention term an experiment adds to its head's loss, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RetainConfig {
    /// The head's loss alone (a struct variant: `{kind: none, weight: 1}` is refused, not
    /// silently read as none).
    None {},
    L2sp(L2spConfig),
    Distill(DistillConfig),
}

impl Default for RetainConfig {
    fn default() -> Self {
        RetainConfig::None {}
    }
}

/// What a retention kind adds: an unweighted scalar term and tensors worth inspecting.
pub struct RetainTerm {
    pub term: Output,
    /// Named tensors (`retain/…`), as `HeadOutput::tensors`.
    pub tensors: Vec<(String, Output)>,
}

/// A term that holds the model near what it was.
pub trait Retain {
    /// Kind name, as written in experiment files.
    fn kind(&self) -> &'static str;
    /// The term's weight in the loss.
    fn weight(&self) -> f32;
    /// Builds the term on the head's towers (`b.towers()`), for the model variables that train
    /// (`trainable`, by handle name).
    fn build(&self, b: &mut HeadBuilder, trainable: &HashSet<String>) -> Result<RetainTerm>;
}

impl RetainConfig {
    /// The retention term behind the config, if any.
    pub fn retain(&self) -> Option<&dyn Retain> {
        match self {
            RetainConfig::None {} => None,
            RetainConfig::L2sp(c) => Some(c),
            RetainConfig::Distill(c) => Some(c),
        }
    }

    /// Checks the settings before any graph is built.
    pub fn validate(&self) -> Result<()> {
        match self.retain() {
            Some(r) if !(r.weight() > 0.0 && r.weight().is_finite()) => Err(Error::config(
                "retain.weight",
                format!(
                    "{} must be a finite number > 0 (no term: retain: {{kind: none}})",
                    r.weight()
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// `out` with the retention term of `cfg` added to its loss: loss = head + weight · term. The
/// head's own loss is kept as the scalar `loss/head`, the term as `loss/retain/<kind>`, and the
/// tensors `retain/term` (unweighted) and `retain/loss` (weighted) are named.
pub fn attach(
    b: &mut HeadBuilder,
    mut out: HeadOutput,
    cfg: &RetainConfig,
    trainable: &HashSet<String>,
) -> Result<HeadOutput> {
    let Some(r) = cfg.retain() else {
        return Ok(out);
    };
    let built = r.build(b, trainable)?;
    let ctx = || format!("adding the {} retention term to the loss", r.kind());
    let s = &mut b.scope.new_sub_scope("retain");
    let w = ops::constant(r.weight(), s).tf_ctx(ctx)?;
    let weighted: Output = ops::mul(built.term.clone(), w, s).tf_ctx(ctx)?.into();
    let total: Output = ops::add(out.loss.clone(), weighted.clone(), s)
        .tf_ctx(ctx)?
        .into();
    log::info!(
        "retention: {} (weight {}) added to the head's loss",
        r.kind(),
        r.weight()
    );
    out.summaries.push(("loss/head".into(), out.loss.clone()));
    out.summaries
        .push((format!("loss/retain/{}", r.kind()), built.term.clone()));
    out.tensors.extend(built.tensors);
    out.tensors.push(("retain/term".into(), built.term));
    out.tensors.push(("retain/loss".into(), weighted));
    out.loss = total;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_forms_parse_and_unknown_keys_are_refused() {
        let c: RetainConfig = serde_yaml::from_str("{kind: l2sp, weight: 0.5}").unwrap();
        assert_eq!(c, RetainConfig::L2sp(L2spConfig { weight: 0.5 }));
        let c: RetainConfig = serde_yaml::from_str("{kind: distill}").unwrap();
        assert_eq!(c, RetainConfig::Distill(DistillConfig::default()));
        let c: RetainConfig = serde_yaml::from_str("{kind: distill, loss: mse}").unwrap();
        match c {
            RetainConfig::Distill(d) => assert_eq!(d.loss, DistillLoss::Mse),
            other => panic!("{other:?}"),
        }
        let c: RetainConfig = serde_yaml::from_str("{kind: none}").unwrap();
        assert_eq!(c, RetainConfig::None {});
        assert!(serde_yaml::from_str::<RetainConfig>("{kind: none, weight: 5}").is_err());
        assert!(serde_yaml::from_str::<RetainConfig>("{kind: l2sp, wieght: 1}").is_err());
        assert!(serde_yaml::from_str::<RetainConfig>("{kind: ewc}").is_err());
    }

    #[test]
    fn weights_must_be_finite_and_not_negative() {
        for w in [-1.0, 0.0, f32::NAN, f32::INFINITY] {
            let e = RetainConfig::L2sp(L2spConfig { weight: w })
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains("retain.weight"), "{e}");
        }
        RetainConfig::L2sp(L2spConfig { weight: 1e-6 })
            .validate()
            .unwrap();
        RetainConfig::None {}.validate().unwrap();
    }
}
