//! L2-SP (Li et al. 2018, "Explicit inductive bias for transfer learning"): ½ Σ ‖w − w₀‖² over
//! the model variables that train, w₀ their values before training, held in copies of the
//! variables the run checkpoints (so a resume keeps the same anchor).
use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tensorflow::{ops, DataType, Output};

use super::{Retain, RetainTerm};
use crate::error::{Error, Result, TfContext};
use crate::heads::HeadBuilder;

/// L2-SP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L2spConfig {
    /// α: the loss adds α · ½ Σ ‖w − w₀‖² (its gradient to w is α (w − w₀)).
    pub weight: f32,
}

impl Default for L2spConfig {
    fn default() -> Self {
        // The weakest weight measured on the quality benchmark (docs/BENCHMARKS.md): it held
        // the off-domain sets and kept 3/4 of the target's gain at 2,000 steps.
        L2spConfig { weight: 3e-4 }
    }
}

impl Retain for L2spConfig {
    fn kind(&self) -> &'static str {
        "l2sp"
    }

    fn weight(&self) -> f32 {
        self.weight
    }

    fn build(&self, b: &mut HeadBuilder, trainable: &HashSet<String>) -> Result<RetainTerm> {
        // One read per variable that trains: the first tower's (gradients sum over reads).
        let mut seen = HashSet::new();
        let reads: Vec<(String, Output)> = b
            .towers()
            .iter()
            .flat_map(|t| t.reads.iter())
            .filter(|(h, r)| {
                trainable.contains(h)
                    && r.operation.output_type(r.index as usize) == DataType::Float
                    && seen.insert(h.clone())
            })
            .cloned()
            .collect();
        if reads.is_empty() {
            return Err(Error::config(
                "retain.kind",
                "l2sp: no float model variable trains (model.train_vars selects none the \
                 backbone reads), so there is nothing to hold near its original value",
            ));
        }
        let mut total: Option<Output> = None;
        for (h, w) in &reads {
            let ctx = || format!("L2-SP term of {h}");
            let handle = b.model.handle(h)?;
            let anchor = b.copy_variable("retain/l2sp", h, &handle)?;
            let s = &mut b.scope.new_sub_scope("retain/l2sp");
            let w0 = ops::ReadVariableOp::new()
                .dtype(DataType::Float)
                .build(anchor, s)
                .tf_ctx(ctx)?;
            let d = ops::sub(w.clone(), w0, s).tf_ctx(ctx)?;
            let part: Output = ops::l2_loss(d, s).tf_ctx(ctx)?.into();
            total = Some(match total {
                None => part,
                Some(t) => ops::add(t, part, s).tf_ctx(ctx)?.into(),
            });
        }
        log::info!(
            "L2-SP: {} variable(s) held near their original values",
            reads.len()
        );
        Ok(RetainTerm {
            term: total.expect("at least one variable (checked above)"),
            tensors: Vec::new(),
        })
    }
}
