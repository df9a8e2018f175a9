//! How one variable's gradients from several reads (towers, replicas) become one
//! (`train.gradient_reduce`): summed beside the variable, where the replicas send them, or
//! all-reduced across the replicas' devices with TF's collective ops (`CollectiveReduceV2`,
//! ring or whatever TF picks), each device's own gradients summed first.
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tensorflow::{ops, Output, Scope};

use crate::error::{Error, Result, TfContext};

/// Where a variable's gradients from several devices are added up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradientReduce {
    /// An `AddN` beside the variable (`_class` colocation): every replica sends its gradient to
    /// the variable's device.
    #[default]
    Variable,
    /// A collective all-reduce across the replicas' devices; the variable's update reads the
    /// result of one of them.
    Collective,
}

/// Collective keys of this process: a group per set of devices (TF fixes a group's members
/// and size for the servers' lifetime), an instance per all-reduce (the same on every device
/// taking part). Both start at a per-process random base: workers outlive a chief, and the
/// next chief's collectives must not meet the keys the last one left on them.
struct Keys {
    instance: i32,
    group: i32,
    groups: HashMap<Vec<String>, i32>,
}

static KEYS: Mutex<Option<Keys>> = Mutex::new(None);

/// (group key of `devices`, a new instance key).
fn keys(devices: &[String]) -> (i32, i32) {
    let mut k = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    let k = k.get_or_insert_with(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0);
        let seed = t ^ std::process::id().rotate_left(16);
        Keys {
            instance: 1 + (seed % (1 << 29)) as i32,
            group: 2 + (seed.rotate_left(7) % (1 << 29)) as i32,
            groups: HashMap::new(),
        }
    });
    let next = k.group + k.groups.len() as i32;
    let group = *k.groups.entry(devices.to_vec()).or_insert(next);
    k.instance += 1;
    (group, k.instance)
}

/// One variable's gradients to add up: its name, a read of it, one gradient per read.
pub(super) type Parts = (String, Output, Vec<Output>);

/// A variable to all-reduce: its index in `reduce_all`'s items, its gradients by device, its
/// shape.
type Packed = (usize, BTreeMap<String, Vec<Output>>, Vec<i64>);

/// The sum of each variable's gradients, in `items`' order, `how` says where. Collectively,
/// the variables whose gradients come from the same devices are packed into one vector per
/// device and all-reduced at once (one collective per step, as tf.distribute packs its
/// gradients); the others are summed beside their variable.
pub(super) fn reduce_all(
    s: &mut Scope,
    items: Vec<Parts>,
    how: GradientReduce,
) -> Result<Vec<Output>> {
    let mut out: Vec<Option<Output>> = vec![None; items.len()];
    let names: Vec<String> = items.iter().map(|(n, _, _)| n.clone()).collect();
    let mut groups: BTreeMap<Vec<String>, Vec<Packed>> = BTreeMap::new();
    for (i, (name, value, gs)) in items.into_iter().enumerate() {
        let per = match (how, gs.len()) {
            (_, 1) => {
                out[i] = gs.into_iter().next();
                continue;
            }
            (GradientReduce::Collective, _) => by_device(&gs).filter(|p| p.len() > 1),
            (GradientReduce::Variable, _) => None,
        };
        match per.zip(static_shape(s, &value)) {
            Some((per, shape)) => {
                let devices = per.keys().cloned().collect();
                groups.entry(devices).or_default().push((i, per, shape));
            }
            None => {
                let g = sum_beside(s, &value, gs)
                    .map_err(|e| Error::graph(&name, format!("summing its gradients: {e}")))?;
                out[i] = Some(g);
            }
        }
    }
    for (_, group) in groups {
        let idx: Vec<usize> = group.iter().map(|(i, _, _)| *i).collect();
        let which = match idx.len() {
            1 => names[idx[0]].clone(),
            n => format!("{} and {} more", names[idx[0]], n - 1),
        };
        let reduced = all_reduce_packed(s, group)
            .map_err(|e| Error::graph(&which, format!("all-reducing the gradients: {e}")))?;
        for (i, g) in idx.into_iter().zip(reduced) {
            out[i] = Some(g);
        }
    }
    Ok(out
        .into_iter()
        .map(|g| g.expect("every variable reduced"))
        .collect())
}

/// A variable's fully known shape (None if any dimension is not).
fn static_shape(s: &Scope, value: &Output) -> Option<Vec<i64>> {
    let shape = s.graph().tensor_shape(value.clone()).ok()?;
    let rank = shape.dims()?;
    (0..rank).map(|d| shape[d].filter(|&n| n >= 0)).collect()
}

/// `gs` grouped by the device each was placed on (None when one has no device).
fn by_device(gs: &[Output]) -> Option<BTreeMap<String, Vec<Output>>> {
    let mut per: BTreeMap<String, Vec<Output>> = BTreeMap::new();
    for g in gs {
        let d = g.operation.device().ok().filter(|d| !d.is_empty())?;
        per.entry(d).or_default().push(g.clone());
    }
    Some(per)
}

/// Variables' gradients on the same devices: on each device every variable's gradients summed,
/// flattened and concatenated, the vector all-reduced across the devices; the first device's
/// result split back into each variable's shape where the step's update runs (after every
/// device's all-reduce: each must run for any to finish).
fn all_reduce_packed(s: &mut Scope, group: Vec<Packed>) -> Result<Vec<Output>> {
    let ctx = || "packing gradients for the all-reduce".to_string();
    let devices: Vec<String> = group[0].1.keys().cloned().collect();
    let (group_key, key) = keys(&devices);
    let mut results = Vec::with_capacity(devices.len());
    for device in &devices {
        let mut d = s.with_device(device);
        let flat = ops::constant(&[-1i32][..], &mut d).tf_ctx(ctx)?;
        let mut pieces: Vec<Output> = Vec::with_capacity(group.len());
        for (_, per, _) in &group {
            let gs = &per[device];
            let local = match gs.len() {
                1 => gs[0].clone(),
                _ => add_n(&mut d, gs, Some(device), None)?,
            };
            pieces.push(
                ops::reshape(local, flat.clone(), &mut d)
                    .tf_ctx(ctx)?
                    .into(),
            );
        }
        let packed = match pieces.len() {
            1 => pieces.remove(0),
            _ => crate::graph::concat(&mut d, &pieces, 0)?,
        };
        let n = devices.len() as i32;
        results.push(collective(&mut d, device, packed, (n, group_key, key))?);
    }
    let (first, rest) = results.split_first().expect("two devices or more");
    let waits: Vec<_> = rest.iter().map(|o| o.operation.clone()).collect();
    let mut after = s.with_control_dependencies(&waits);
    let sizes: Vec<i64> = group.iter().map(|(_, _, sh)| sh.iter().product()).collect();
    let sizes = ops::constant(&sizes[..], &mut after).tf_ctx(ctx)?;
    let axis = ops::constant(0i32, &mut after).tf_ctx(ctx)?;
    let split = ops::SplitV::new()
        .num_split(group.len() as i64)
        .build(first.clone(), sizes, axis, &mut after)
        .tf_ctx(ctx)?;
    let mut out = Vec::with_capacity(group.len());
    for (k, (_, _, shape)) in group.iter().enumerate() {
        let piece = Output {
            operation: split.clone(),
            index: k as i32,
        };
        let dims = ops::constant(&shape[..], &mut after).tf_ctx(ctx)?;
        out.push(ops::reshape(piece, dims, &mut after).tf_ctx(ctx)?.into());
    }
    Ok(out)
}

/// A `CollectiveReduceV2` summing `x` over the group (its size, its key) of instance `key`.
fn collective(
    s: &mut Scope,
    device: &str,
    x: Output,
    (n, group_key, key): (i32, i32, i32),
) -> Result<Output> {
    let ctx = || format!("collective all-reduce {key} of group {group_key} on {device}");
    let size = ops::constant(n, s).tf_ctx(ctx)?;
    let group = ops::constant(group_key, s).tf_ctx(ctx)?;
    let instance = ops::constant(key, s).tf_ctx(ctx)?;
    crate::graph::new_op(s, "CollectiveReduceV2", "CollectiveReduceV2", |d| {
        d.add_input(x);
        d.add_input(size);
        d.add_input(group);
        d.add_input(instance);
        d.add_input_list(&[]);
        let e = |e: std::ffi::NulError| e.to_string();
        d.set_device(device).map_err(e)?;
        d.set_attr_string("merge_op", "Add").map_err(e)?;
        d.set_attr_string("final_op", "Id").map_err(e)?;
        d.set_attr_string("communication_hint", "auto").map_err(e)
    })
}

/// An `AddN` of `gs` on `device`, or colocated with variable handle `beside`, when given.
fn add_n(
    s: &mut Scope,
    gs: &[Output],
    device: Option<&str>,
    beside: Option<&str>,
) -> Result<Output> {
    crate::graph::new_op(s, "AddN", "AddN", |d| {
        d.add_input_list(gs);
        if let Some(device) = device {
            d.set_device(device).map_err(|e| e.to_string())?;
        }
        if let Some(h) = beside {
            let class = [format!("loc:@{h}")];
            d.set_attr_string_list("_class", &class)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// The sum of one variable's gradients beside the variable (`_class` colocation with its
/// `VarHandleOp`, no device of its own): replicas on several devices send their gradients to
/// the variable's device, where one update follows.
fn sum_beside(s: &mut Scope, value: &Output, gs: Vec<Output>) -> Result<Output> {
    let handle = (value.operation.op_type().ok().as_deref() == Some("ReadVariableOp"))
        .then(|| crate::graph::resolve_handle(&value.operation.input(0).0))
        .flatten();
    add_n(s, &gs, None, handle.as_deref())
}
