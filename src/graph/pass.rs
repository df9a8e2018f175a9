//! One shape for every rewrite of a flat graph before it is imported: a `GraphPass` takes the
//! flat graph and what it may need to know (`PassContext`) and names the nodes it changed. The
//! trainer runs its passes in one stated order (`train::prepare::PASSES`).
use std::collections::HashSet;

use super::bn::BnMode;
use super::recompute::Recompute;
use super::FlatGraph;
use crate::error::Result;
use crate::savedmodel::SavedModelInfo;

/// What passes may read besides the graph.
pub struct PassContext<'a> {
    pub info: &'a SavedModelInfo,
    /// Handles of the model variables that train.
    pub trainable: &'a HashSet<String>,
    pub bn: BnMode,
    pub bn_momentum: f32,
    pub bn_fold: bool,
    pub recompute: Recompute,
    /// How nodes with a custom gradient are differentiated.
    pub custom_gradients: super::custom::CustomGradients,
    /// Devices the tower is replicated on (`graph::replicate`; fewer than two: none).
    pub devices: &'a [String],
    /// Batch norms in train mode normalise with the whole batch's statistics across replicas.
    pub bn_sync: bool,
}

/// A rewrite of a flat graph (a tower's GraphDef, before import).
pub trait GraphPass {
    /// Its name in logs.
    fn name(&self) -> &'static str;
    /// Rewrites `flat`; returns the names of the nodes it changed (or marked).
    fn run(&self, flat: &mut FlatGraph, cx: &PassContext) -> Result<Vec<String>>;
}

/// What each pass changed, in the order they ran.
#[derive(Debug, Default)]
pub struct PassLog(pub Vec<(&'static str, Vec<String>)>);

impl PassLog {
    /// The nodes pass `name` changed (none if it did not run).
    pub fn changed(&self, name: &str) -> &[String] {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.as_slice())
            .unwrap_or(&[])
    }
}

/// Runs `passes` on `flat` in order, logging what each changed.
pub fn run_passes(
    flat: &mut FlatGraph,
    cx: &PassContext,
    passes: &[&dyn GraphPass],
) -> Result<PassLog> {
    let mut log = PassLog::default();
    for p in passes {
        let changed = p.run(flat, cx)?;
        match changed.first() {
            Some(first) => log::info!("{}: {} node(s), e.g. {first}", p.name(), changed.len()),
            None => log::debug!("{}: nothing to do", p.name()),
        }
        log.0.push((p.name(), changed));
    }
    Ok(log)
}
