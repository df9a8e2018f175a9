//! How one variable's gradients from several reads (towers, replicas) become one
//! (`train.gradient_reduce`): summed beside the variable, where the replicas send them, or
//! all-reduced across the replicas' devices with TF's collective ops (`CollectiveReduceV2`,
//! ring or whatever TF picks), each device's own gradients summed first.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};

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

/// The collective instance keys of this process: one per all-reduce, the same on every device
/// taking part.
static INSTANCE: AtomicI32 = AtomicI32::new(1);
/// The collective group of the step's devices.
const GROUP_KEY: i32 = 1;

/// The sum of one variable's gradients `gs` (one per read), `how` says where.
pub(super) fn reduce(
    s: &mut Scope,
    value: &Output,
    gs: Vec<Output>,
    how: GradientReduce,
) -> Result<Output> {
    if gs.len() == 1 {
        return Ok(gs.into_iter().next().expect("one gradient"));
    }
    match how {
        GradientReduce::Variable => sum_beside(s, value, gs),
        GradientReduce::Collective => match by_device(&gs) {
            Some(per) if per.len() > 1 => all_reduce(s, per),
            _ => sum_beside(s, value, gs),
        },
    }
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

/// Each device's gradients summed there, then all-reduced across the devices; the first
/// device's result, after every device's (each must run for any to finish).
fn all_reduce(s: &mut Scope, per: BTreeMap<String, Vec<Output>>) -> Result<Output> {
    let n = per.len() as i32;
    let key = INSTANCE.fetch_add(1, Ordering::Relaxed);
    let mut results = Vec::with_capacity(per.len());
    for (device, gs) in per {
        let mut d = s.with_device(&device);
        let local = match gs.len() {
            1 => gs[0].clone(),
            _ => add_n(&mut d, &gs, Some(&device), None)?,
        };
        results.push(collective(&mut d, &device, local, n, key)?);
    }
    let (first, rest) = results.split_first().expect("two devices or more");
    let mut after =
        s.with_control_dependencies(&rest.iter().map(|o| o.operation.clone()).collect::<Vec<_>>());
    Ok(ops::identity(first.clone(), &mut after)
        .tf_ctx(|| "all-reduced gradient".into())?
        .into())
}

/// A `CollectiveReduceV2` summing `x` over the `n` devices of the group, instance `key`.
fn collective(s: &mut Scope, device: &str, x: Output, n: i32, key: i32) -> Result<Output> {
    let ctx = || format!("collective all-reduce {key}");
    let size = ops::constant(n, s).tf_ctx(ctx)?;
    let group = ops::constant(GROUP_KEY, s).tf_ctx(ctx)?;
    let instance = ops::constant(key, s).tf_ctx(ctx)?;
    let name = s.get_unique_name_for_op("CollectiveReduceV2");
    let mut g = s.graph_mut();
    let mut d = g
        .new_operation("CollectiveReduceV2", &name)
        .map_err(|e| Error::graph(&name, e.to_string()))?;
    d.add_input(x);
    d.add_input(size);
    d.add_input(group);
    d.add_input(instance);
    d.add_input_list(&[]);
    let nul = |e: std::ffi::NulError| Error::graph(&name, e.to_string());
    d.set_device(device).map_err(nul)?;
    d.set_attr_string("merge_op", "Add").map_err(nul)?;
    d.set_attr_string("final_op", "Id").map_err(nul)?;
    d.set_attr_string("communication_hint", "auto")
        .map_err(nul)?;
    Ok(Output {
        operation: d.finish().tf_ctx(ctx)?,
        index: 0,
    })
}

/// An `AddN` of `gs` on `device`, or colocated with variable handle `beside`, when given.
fn add_n(
    s: &mut Scope,
    gs: &[Output],
    device: Option<&str>,
    beside: Option<&str>,
) -> Result<Output> {
    let name = s.get_unique_name_for_op("AddN");
    let mut g = s.graph_mut();
    let mut d = g
        .new_operation("AddN", &name)
        .map_err(|e| Error::graph(&name, e.to_string()))?;
    d.add_input_list(gs);
    if let Some(device) = device {
        d.set_device(device)
            .map_err(|e| Error::graph(&name, e.to_string()))?;
    }
    if let Some(h) = beside {
        d.set_attr_string_list("_class", &[format!("loc:@{h}")])
            .map_err(|e| Error::graph(&name, e.to_string()))?;
    }
    Ok(Output {
        operation: d
            .finish()
            .tf_ctx(|| format!("adding gradients as {name}"))?,
        index: 0,
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
