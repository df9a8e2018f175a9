//! Batch-norm mode as a graph patch: `frozen` keeps the exported inference graph; `train`
//! switches the tower's FusedBatchNorm ops to batch statistics with running-average outputs,
//! which the trainer assigns back to the model's moving mean/variance each step.
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};

use crate::proto::{attr_value::Value, AttrValue, GraphDef, NodeDef, TensorRef};

/// How batch norm behaves while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnMode {
    /// Inference batch norm with the model's moving statistics (nothing but γ/β changes).
    #[default]
    Frozen,
    /// Batch statistics, moving statistics updated with `momentum`, in the layers that train
    /// (whose γ or β is among the trained variables); batch norms of frozen layers keep
    /// inference mode, as a frozen Keras `BatchNormalization` layer does.
    Train,
    /// Batch statistics in every batch norm, frozen layers included.
    #[serde(rename = "train_all")]
    TrainAll,
}

/// Batch norms switched to batch statistics as `BnMode` says: in the layers whose variables
/// train (`train`), or all (`train_all`); none when frozen.
pub struct BnTrainMode;

impl super::GraphPass for BnTrainMode {
    fn name(&self) -> &'static str {
        "batch norms in train mode"
    }
    fn run(&self, flat: &mut super::FlatGraph, cx: &super::PassContext) -> Result<Vec<String>> {
        match cx.bn {
            BnMode::Frozen => Ok(Vec::new()),
            BnMode::Train => {
                let ext = flat.external_ops();
                let of_trained = of_trained_layers(&flat.graph_def, &ext, cx.trainable);
                let own = !flat.updates.is_empty();
                set_training(&mut flat.graph_def, cx.bn_momentum, own, |n| {
                    of_trained.contains(&n.name)
                })
            }
            BnMode::TrainAll => {
                let own = !flat.updates.is_empty();
                set_training(&mut flat.graph_def, cx.bn_momentum, own, |_| true)
            }
        }
    }
}

/// The fused batch-norm op types (what `set_training` switches and `fold` folds).
pub(crate) const FUSED: &[&str] = &["FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"];

/// Switches the fused batch norms of `gd` for which `which` holds to training mode with
/// running-average factor 1 − `momentum`; returns the switched node names. A graph with batch
/// norm but no fused op (Keras 3 decomposes it into Rsqrt/Mul/Sub) is reported as unsupported,
/// naming a node.
pub fn set_training(
    gd: &mut GraphDef,
    momentum: f32,
    own_updates: bool,
    which: impl Fn(&NodeDef) -> bool,
) -> Result<Vec<String>> {
    if !(0.0..1.0).contains(&momentum) {
        return Err(Error::config(
            "model.bn_momentum",
            format!("{momentum} is outside [0, 1)"),
        ));
    }
    let mut switched = Vec::new();
    let mut fused = 0;
    for n in gd
        .node
        .iter_mut()
        .filter(|n| FUSED.contains(&n.op.as_str()))
    {
        fused += 1;
        // Already on batch statistics in a graph with its own update ops (a TF1 Hub module's
        // `train` variant): those keep its moving averages.
        let training = own_updates
            && !matches!(
                n.attr.get("is_training").and_then(|a| a.value.as_ref()),
                Some(Value::B(false))
            );
        if !which(n) || training {
            continue;
        }
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
    if fused == 0 {
        if let Some(n) = gd.node.iter().find(|n| n.op == "Rsqrt") {
            return Err(Error::graph(&n.name, "bn mode 'train' is unsupported for this model: its batch norm is decomposed (Keras 3 export: Rsqrt/Mul/Sub), not a FusedBatchNormV3; use bn mode 'frozen'"));
        }
    }
    Ok(switched)
}

/// The batch norms of `gd` whose γ (input 1) or β (input 2) reads a variable of `trained`
/// (outer handle names); `ext` maps the flat graph's placeholders to the outer ops they stand
/// for (`FlatGraph::external_ops`). Reads are followed back through Identity ops.
pub fn of_trained_layers(
    gd: &GraphDef,
    ext: &HashMap<&str, &str>,
    trained: &HashSet<String>,
) -> HashSet<String> {
    let nodes: HashMap<&str, &NodeDef> = gd.node.iter().map(|n| (n.name.as_str(), n)).collect();
    let variable = |t: &str| -> Option<&str> {
        let mut n = *nodes.get(TensorRef::node_of(t))?;
        for _ in 0..64 {
            let first = TensorRef::node_of(n.input.first()?);
            match n.op.as_str() {
                "Identity" => n = *nodes.get(first)?,
                "ReadVariableOp" => return ext.get(first).copied(),
                _ => return None,
            }
        }
        None
    };
    gd.node
        .iter()
        .filter(|n| FUSED.contains(&n.op.as_str()))
        .filter(|n| {
            n.input
                .iter()
                .skip(1)
                .take(2)
                .any(|t| variable(t).is_some_and(|v| trained.contains(v)))
        })
        .map(|n| n.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::nodes::node_def;

    fn n(name: &str, op: &str, inputs: &[&str]) -> NodeDef {
        node_def(
            name.into(),
            op,
            inputs.iter().map(|s| s.to_string()).collect(),
            vec![],
        )
    }

    /// Two batch norms: `a` reads γ through an Identity from trained variable `ga`, `b` reads
    /// only variables that do not train; `external` maps the placeholders to outer handles.
    fn graph() -> (GraphDef, HashMap<&'static str, &'static str>) {
        let mut gd = GraphDef::default();
        gd.node.push(n("x", "Placeholder", &[]));
        for (k, v) in ["ga", "ba", "gb", "bb", "m", "v"].iter().enumerate() {
            gd.node.push(n(&format!("ext/{k}"), "Placeholder", &[]));
            gd.node.push(n(
                &format!("read_{v}"),
                "ReadVariableOp",
                &[&format!("ext/{k}")],
            ));
        }
        gd.node.push(n("id_ga", "Identity", &["read_ga"]));
        let frozen = |mut n: NodeDef| {
            let f = AttrValue {
                value: Some(Value::B(false)),
            };
            n.attr.insert("is_training".into(), f);
            n
        };
        let bn = ["x", "id_ga", "read_ba", "read_m", "read_v"];
        gd.node.push(frozen(n("a", "FusedBatchNormV3", &bn)));
        let bn = ["a", "read_gb", "read_bb:0", "read_m", "read_v", "^a"];
        gd.node.push(frozen(n("b", "FusedBatchNormV3", &bn)));
        // Already on batch statistics (a TF1 `train` graph): never switched.
        gd.node.push(n("c", "FusedBatchNormV3", &["b", "x", "x"]));
        let ext = [
            ("ext/0", "ga"),
            ("ext/1", "ba"),
            ("ext/2", "gb"),
            ("ext/3", "bb"),
            ("ext/4", "m"),
            ("ext/5", "v"),
        ]
        .into();
        (gd, ext)
    }

    fn is_training(gd: &GraphDef, name: &str) -> bool {
        let node = gd.node.iter().find(|x| x.name == name).unwrap();
        matches!(
            node.attr.get("is_training").and_then(|a| a.value.as_ref()),
            Some(Value::B(true))
        )
    }

    #[test]
    fn only_the_trained_layers_switch() {
        let (mut gd, ext) = graph();
        let trained: HashSet<String> = ["ga".to_string()].into();
        let of = of_trained_layers(&gd, &ext, &trained);
        assert_eq!(of, ["a".to_string()].into());
        let beta_only: HashSet<String> = ["bb".to_string()].into();
        assert_eq!(
            of_trained_layers(&gd, &ext, &beta_only),
            ["b".to_string()].into()
        );
        let stats: HashSet<String> = ["m".to_string(), "v".to_string()].into();
        assert!(of_trained_layers(&gd, &ext, &stats).is_empty());
        let switched = set_training(&mut gd, 0.9, true, |x| of.contains(&x.name)).unwrap();
        assert_eq!(switched, vec!["a".to_string()]);
        assert!(is_training(&gd, "a") && !is_training(&gd, "b"));
        let (mut all, _) = graph();
        assert_eq!(
            set_training(&mut all, 0.9, true, |_| true).unwrap().len(),
            2
        );
        let (mut no_updates, _) = graph();
        let n = set_training(&mut no_updates, 0.9, false, |_| true).unwrap();
        assert_eq!(
            n.len(),
            3,
            "without update ops of its own, every batch norm switches"
        );
        assert!(set_training(&mut all, 1.0, true, |_| true)
            .unwrap_err()
            .to_string()
            .contains("model.bn_momentum"));
    }
}
