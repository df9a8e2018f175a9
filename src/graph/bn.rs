//! Batch-norm mode as a graph patch: `frozen` keeps the exported inference graph; `train`
//! switches the tower's FusedBatchNorm ops to batch statistics with running-average outputs,
//! which the trainer assigns back to the model's moving mean/variance each step.
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::savedmodel::proto::{attr_value::Value, AttrValue, GraphDef};

/// How batch norm behaves while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnMode {
    /// Inference batch norm with the model's moving statistics (nothing but γ/β changes).
    #[default]
    Frozen,
    /// Batch statistics; moving statistics updated with `momentum`.
    Train,
}

const FUSED: &[&str] = &["FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"];

/// Switches every fused batch norm of `gd` to training mode with running-average factor
/// 1 − `momentum`; returns the switched node names. A graph with batch norm but no fused op
/// (Keras 3 decomposes it into Rsqrt/Mul/Sub) is reported as unsupported, naming a node.
pub fn set_training(gd: &mut GraphDef, momentum: f32) -> Result<Vec<String>> {
    if !(0.0..1.0).contains(&momentum) {
        return Err(Error::config(
            "model.bn_momentum",
            format!("{momentum} is outside [0, 1)"),
        ));
    }
    let mut switched = Vec::new();
    for n in gd
        .node
        .iter_mut()
        .filter(|n| FUSED.contains(&n.op.as_str()))
    {
        if n.op != "FusedBatchNormV3" {
            return Err(Error::graph(
                &n.name,
                format!("bn mode 'train' supports FusedBatchNormV3, not {}", n.op),
            ));
        }
        n.attr.insert(
            "is_training".into(),
            AttrValue {
                value: Some(Value::B(true)),
            },
        );
        n.attr.insert(
            "exponential_avg_factor".into(),
            AttrValue {
                value: Some(Value::F(1.0 - momentum)),
            },
        );
        switched.push(n.name.clone());
    }
    if switched.is_empty() {
        if let Some(n) = gd.node.iter().find(|n| n.op == "Rsqrt") {
            return Err(Error::graph(&n.name, "bn mode 'train' is unsupported for this model: its batch norm is decomposed (Keras 3 export: Rsqrt/Mul/Sub), not a FusedBatchNormV3; use bn mode 'frozen'"));
        }
    }
    Ok(switched)
}
