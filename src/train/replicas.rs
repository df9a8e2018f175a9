//! Towers on several devices (`train.devices`): which runs may replicate the tower, and which
//! device each part of the step asks for. The tower is replicated as one graph
//! (`graph::replicate`, batch norms per replica or synchronised) and imported on the batch's
//! shares by the head builder (`heads::replicas`); head, loss and optimizer run on one device (`model.device`, else the
//! first of `train.devices`); the replicas' gradients of a variable are summed beside it
//! (`autodiff`): the loss is the mean over the whole batch, so that sum is the average of the
//! towers' own gradients, and one optimizer update follows (or, with `train.gradient_reduce:
//! collective`, TF's all-reduce adds them up across the devices). Every head replicates: the loss
//! sees the gathered batch (SimCLR's and MoCo's negatives from every tower), and the frozen
//! towers of MoCo, BYOL and distillation are split the same way.
use super::TrainConfig;
use crate::error::{Error, Result};
use crate::graph::bn::BnMode;
use crate::graph::placement::check_devices;

/// Checks `train.devices` against the rest of the run.
pub(super) fn check(cfg: &TrainConfig) -> Result<()> {
    let names = check_devices("train.devices", &cfg.devices)?;
    for (i, d) in names.iter().enumerate() {
        if names[..i].contains(d) {
            return Err(Error::config(
                "train.devices",
                format!("{d} is listed twice"),
            ));
        }
    }
    check_cluster(cfg)?;
    let n = cfg.devices.len();
    if n == 0 && cfg.cluster.is_some() {
        return Err(Error::config(
            "train.devices",
            "empty on a cluster: name the workers' devices (Experiment::train_config fills them in, one per worker)",
        ));
    }
    if n < 2 && cfg.cluster.is_none() {
        if cfg.bn_sync {
            log::warn!("model.bn_sync has no effect on one device (train.devices lists {n})");
        }
        if cfg.gradient_reduce != crate::autodiff::reduce::GradientReduce::Variable {
            log::warn!(
                "train.gradient_reduce has no effect on one device (train.devices lists {n})"
            );
        }
        return Ok(());
    }
    if cfg.batch % n != 0 {
        return Err(Error::config(
            "train.batch",
            format!(
                "{} images do not split evenly over the {n} devices of train.devices",
                cfg.batch
            ),
        ));
    }
    if cfg.bn_sync && cfg.bn == BnMode::Frozen {
        return Err(Error::config(
            "model.bn_sync",
            "needs batch norm in train mode (model.bn: train or train_all): frozen batch norms use the model's moving statistics, there is nothing to synchronise",
        ));
    }
    Ok(())
}

/// On a cluster, every asked device names one of its tasks (and off a cluster, none does).
fn check_cluster(cfg: &TrainConfig) -> Result<()> {
    let asked = cfg.device.iter().map(|d| ("model.device", d));
    let asked = asked.chain(cfg.devices.iter().map(|d| ("train.devices", d)));
    if let Some(c) = &cfg.cluster {
        c.validate("cluster")?;
        let elsewhere = cfg.devices.iter().find(|d| c.input_device(d).is_none());
        if let (crate::cluster::InputSite::Workers, Some(d)) = (c.input, elsewhere) {
            return Err(Error::config(
                "cluster.input",
                format!("workers: {d} (train.devices) is not on a worker, whose own threads would read its share; list only workers' devices, or read on the chief (cluster.input: chief)"),
            ));
        }
    }
    for (key, d) in asked {
        let Some(name) = crate::graph::placement::DeviceName::parse(d) else {
            continue;
        };
        let msg = match (&cfg.cluster, &name.task) {
            (None, Some(_)) => format!("{d} is on a cluster task; a run on several machines needs `cluster` (docs/DISTRIBUTED.md)"),
            (Some(_), None) => format!("{d}: on a cluster, name the task (e.g. /job:worker/task:0/device:CPU:0)"),
            (Some(c), Some((job, t))) => match (job.as_str(), *t as usize) {
                ("chief", 0) => continue,
                ("worker", t) if t < c.worker.len() => continue,
                _ => format!("{d}: the cluster has no such task (chief task 0, worker tasks 0–{})", c.worker.len() - 1),
            },
            (None, None) => continue,
        };
        return Err(Error::config(key, msg));
    }
    Ok(())
}

/// The device of the head, the loss and the optimizer: `model.device`, else the first of
/// `train.devices`.
pub(super) fn main_device(cfg: &TrainConfig) -> Option<String> {
    cfg.device.clone().or_else(|| cfg.devices.first().cloned())
}

/// Every device the step uses (the session must have each).
pub(super) fn session_devices(cfg: &TrainConfig) -> Vec<String> {
    cfg.device.iter().chain(&cfg.devices).cloned().collect()
}
