//! Towers on several devices (`train.devices`): a head's backbone pass split over replicas of
//! the tower, one per device, each on an equal share of the batch, their outputs gathered back
//! in the batch's order. The replicas are one import of the replicated flat graph
//! (`graph::replicate`, which may tie their batch norms together). The head then sees the whole
//! batch (SimCLR's negatives come from every tower), and TF's gradients flow back through the
//! gather to each replica.
use std::collections::HashMap;

use tensorflow::{ops, Output};

use super::builder::HeadBuilder;
use super::concat;
use crate::error::{Result, TfContext};
use crate::graph::Tower;

/// A tensor's identity in the builder's maps: (op name, output index).
pub(super) type Key = (String, i32);

pub(super) fn key(t: &Output) -> Key {
    (t.operation.name().unwrap_or_default(), t.index)
}

/// Imports the replicated graph once on the shares (device order): each replica's output.
pub(super) type ImportShares<'a, 'm> =
    dyn FnMut(&mut HeadBuilder<'m>, &[Output]) -> Result<Vec<Output>> + 'a;

/// What the builder keeps about replicated passes.
#[derive(Default)]
pub(super) struct Replicas {
    /// Inputs stacked from `groups` views (`stacked_views`): each view is split on its own.
    pub groups: HashMap<Key, usize>,
    /// A gathered output → each replica's output and the groups of its input.
    pub gathered: HashMap<Key, (Vec<Output>, usize)>,
    /// An input read apart per replica (the workers' input) → each replica's share.
    pub sharded: HashMap<Key, Vec<Output>>,
}

impl Replicas {
    /// With the step's image tensors that come in shares (`HeadInputs::shards`).
    pub fn with_shards(shards: Vec<(Output, Vec<Output>)>) -> Replicas {
        Replicas {
            sharded: shards.into_iter().map(|(x, s)| (key(&x), s)).collect(),
            ..Default::default()
        }
    }
}

impl<'m> HeadBuilder<'m> {
    /// The backbone on `x` with one replica per device: each view stacked in `x` is split into
    /// equal shares, replica k takes share k of every view (so batch statistics are per tower
    /// over whole images' views), and the outputs come back in `x`'s row order.
    pub(super) fn replicated_tower(&mut self, x: Output) -> Result<Output> {
        let (out, outs, groups) = self.replicate(x, &mut |b, shares| {
            let prefix = format!("pretext/tower{}", b.towers.len());
            let t = Tower::import(b.model, b.flat, &prefix, None, Some(shares))?;
            let o = t.replica_outputs(0);
            b.towers.push(t);
            Ok(o)
        })?;
        self.replicas.gathered.insert(key(&out), (outs, groups));
        Ok(out)
    }

    /// `x` split over the devices as `replicated_tower` splits it, `import` run once on the
    /// shares (device order; it returns one output per replica), the outputs gathered back in
    /// `x`'s row order: (gathered, each replica's, groups).
    pub(super) fn replicate(
        &mut self,
        x: Output,
        import: &mut ImportShares<'_, 'm>,
    ) -> Result<(Output, Vec<Output>, usize)> {
        let n = self.devices.len();
        let groups = self.replicas.groups.get(&key(&x)).copied().unwrap_or(1);
        let shares = match self.replicas.sharded.get(&key(&x)) {
            Some(s) => s.clone(),
            None => {
                let parts = split(&mut self.scope, x, groups * n)?;
                let mut shares = Vec::with_capacity(n);
                for k in 0..n {
                    let share: Vec<Output> =
                        (0..groups).map(|g| parts[g * n + k].clone()).collect();
                    shares.push(match share.len() {
                        1 => share[0].clone(),
                        _ => concat(&mut self.scope, &share, 0)?,
                    });
                }
                shares
            }
        };
        let outs = import(self, &shares)?;
        let out = self.gather(&outs, groups)?;
        Ok((out, outs, groups))
    }

    /// `x`, the views `views` stacked, in shares too when each view is: replica k's stacks its
    /// shares of the views, on its device (what `replicate` would cut out of `x`).
    pub(super) fn stack_shards(&mut self, x: &Output, views: &[Output]) -> Result<()> {
        let per: Option<Vec<Vec<Output>>> = views
            .iter()
            .map(|v| self.replicas.sharded.get(&key(v)).cloned())
            .collect();
        let Some(per) = per else { return Ok(()) };
        let mut shares = Vec::with_capacity(self.devices.len());
        for (k, d) in self.devices.iter().enumerate() {
            let parts: Vec<Output> = per.iter().map(|v| v[k].clone()).collect();
            let mut s = self.scope.with_device(d);
            shares.push(match parts.len() {
                1 => parts[0].clone(),
                _ => concat(&mut s, &parts, 0)?,
            });
        }
        self.replicas.sharded.insert(key(x), shares);
        Ok(())
    }

    /// Per-replica tensors (rows: `groups` shares, one per view) back in the batch's order:
    /// every replica's share of view 0, then of view 1, …
    pub(super) fn gather(&mut self, per_replica: &[Output], groups: usize) -> Result<Output> {
        if per_replica.len() == 1 {
            return Ok(per_replica[0].clone());
        }
        let mut by_group: Vec<Vec<Output>> = vec![Vec::new(); groups];
        for t in per_replica {
            for (g, piece) in split(&mut self.scope, t.clone(), groups)?
                .into_iter()
                .enumerate()
            {
                by_group[g].push(piece);
            }
        }
        let all: Vec<Output> = by_group.into_iter().flatten().collect();
        concat(&mut self.scope, &all, 0)
    }

    /// `feature_map` of a gathered output: each replica's map, gathered the same way.
    pub(super) fn replicated_feature_map(&mut self, out: &Output) -> Option<(Output, bool)> {
        let (outs, groups) = self.replicas.gathered.get(&key(out)).cloned()?;
        let mut maps = Vec::with_capacity(outs.len());
        let mut between = false;
        for o in &outs {
            let (m, b) = self.feature_map_of(o)?;
            maps.push(m);
            between |= b;
        }
        match self.gather(&maps, groups) {
            Ok(m) => Some((m, between)),
            Err(e) => {
                log::warn!("gathering the replicas' feature maps: {e}");
                None
            }
        }
    }
}

/// `x` split into `k` equal parts along axis 0 (`[x]` when `k` is 1).
fn split(s: &mut tensorflow::Scope, x: Output, k: usize) -> Result<Vec<Output>> {
    if k == 1 {
        return Ok(vec![x]);
    }
    let ctx = || format!("splitting the batch over {k} replicas");
    let axis = ops::Const::new()
        .dtype(tensorflow::DataType::Int32)
        .value(tensorflow::Tensor::from(0i32))
        .build(s)
        .tf_ctx(ctx)?;
    let op = ops::Split::new()
        .num_split(k as i64)
        .build(axis, x, s)
        .tf_ctx(ctx)?;
    Ok((0..k as i32)
        .map(|index| Output {
            operation: op.clone(),
            index,
        })
        .collect())
}
