//! Momentum (EMA) targets for MoCo/BYOL-style heads: a second inlined copy of the backbone bound
//! to its own variables (initialised from the online ones), shadow copies of head variables, and
//! the EMA pairs the trainer updates after each optimizer step.
use tensorflow::{ops, DataType, Output};

use super::HeadBuilder;
use crate::error::{Result, TfContext};
use crate::graph::Tower;

/// target ← m·target + (1 − m)·online, for each (target, online) variable handle pair.
#[derive(Debug, Clone, Default)]
pub struct Ema {
    pub momentum: f32,
    pub pairs: Vec<(Output, Output)>,
}

impl<'m> HeadBuilder<'m> {
    /// A new variable shaped like `online` (a VarHandleOp output), initialised from its value
    /// after every initialiser created so far; returns its handle.
    pub fn shadow(&mut self, name: &str, online: &Output) -> Result<Output> {
        self.copy_variable("momentum", name, online)
    }

    /// A new variable under `group/` shaped like `online` (a VarHandleOp output), initialised
    /// from its value after every initialiser created so far (so from the model's own values:
    /// the trainer runs them before any step); returns its handle. Checkpointed with the run.
    pub fn copy_variable(&mut self, group: &str, name: &str, online: &Output) -> Result<Output> {
        let ctx = || format!("{group} copy of {name}");
        let op = &online.operation;
        let dtype = op.get_attr_type("dtype").tf_ctx(ctx)?;
        let shape = op.get_attr_shape("shape").tf_ctx(ctx)?;
        let s = self
            .scope
            .new_sub_scope(&format!("{group}/{}", crate::optim::sanitize(name)));
        let h: Output = ops::VarHandleOp::new()
            .dtype(dtype)
            .shape(shape)
            .shared_name(self.scope.get_unique_name_for_op(&format!("{group}_var")))
            .build(&mut s.with_op_name("var"))
            .tf_ctx(ctx)?
            .into();
        let mut after = s.with_control_dependencies(&self.init_ops);
        let v = ops::ReadVariableOp::new()
            .dtype(dtype)
            .build(online.clone(), &mut after)
            .tf_ctx(ctx)?;
        self.init_ops
            .push(ops::assign_variable_op(h.clone(), v, &mut after).tf_ctx(ctx)?);
        Ok(h)
    }

    /// The backbone on `x` with momentum copies of every model variable it reads: returns the
    /// output (gradient stopped) and the (copy, online) pairs of the trainable ones.
    pub fn momentum_tower(&mut self, x: Output) -> Result<(Output, Vec<(Output, Output)>)> {
        let trainable = self.model.info.trainable_handles();
        let copies = self.copy_externals("momentum")?;
        let mut pairs = Vec::new();
        for (e, copy) in self.flat.external.iter().zip(&copies) {
            let online = self.model.output(e.outer.as_tensor_ref())?;
            if copy.operation.name() != online.operation.name() && trainable.contains(&e.outer.node)
            {
                pairs.push((copy.clone(), online));
            }
        }
        let out = self.tower_on(&[x], "pretext/momentum_tower", &copies)?;
        Ok((out, pairs))
    }

    /// Copies (under `group/`) of every model variable the backbone reads, initialised from the
    /// model's values, in `FlatGraph::external` order (other externals as they are): the
    /// bindings of a frozen original backbone, for `tower_on`.
    pub fn copy_externals(&mut self, group: &str) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for e in &self.flat.external.clone() {
            let o = self.model.output(e.outer.as_tensor_ref())?;
            let is_var = o.operation.op_type().map(|t| t == "VarHandleOp");
            // Named `node_0` as by earlier versions, so their run directories still resume.
            let name = format!("{}_{}", e.outer.node, e.outer.index);
            out.push(match is_var.unwrap_or(false) {
                true => self.copy_variable(group, &name, &o)?,
                false => o,
            });
        }
        Ok(out)
    }

    /// The backbone on `inputs` bound to `externals` (from `copy_externals`) under `prefix`:
    /// its first output, gradient stopped (no variable of this pass trains).
    pub fn tower_on(
        &mut self,
        inputs: &[Output],
        prefix: &str,
        externals: &[Output],
    ) -> Result<Output> {
        match (self.devices.is_empty(), inputs) {
            // One replica per device, like the online tower's (`train.devices`).
            (false, [x]) => {
                let (out, _, _) = self.replicate(x.clone(), &mut |b, shares| {
                    b.tower_on_shares(shares, prefix, externals)
                })?;
                Ok(out)
            }
            _ => {
                let device = self.device.clone();
                let (model, flat) = (&mut *self.model, self.flat);
                let t = Tower::import_mapped(
                    model,
                    flat,
                    prefix,
                    device.as_deref(),
                    Some(inputs),
                    externals,
                )?;
                self.stopped(t.outputs[0].clone(), prefix)
            }
        }
    }

    /// `tower_on` of the replicas' shares already split (one input per replica, as a
    /// replicated tower's `inputs`): one import of the replicated graph, not split again; each
    /// replica's first output, gradient stopped.
    pub fn tower_on_shares(
        &mut self,
        shares: &[Output],
        prefix: &str,
        externals: &[Output],
    ) -> Result<Vec<Output>> {
        let (model, flat) = (&mut *self.model, self.flat);
        let t = Tower::import_mapped(model, flat, prefix, None, Some(shares), externals)?;
        t.replica_outputs(0)
            .into_iter()
            .map(|o| self.stopped(o, prefix))
            .collect()
    }

    fn stopped(&mut self, o: Output, prefix: &str) -> Result<Output> {
        let out =
            ops::stop_gradient(o, &mut self.scope).tf_ctx(|| format!("frozen tower {prefix}"))?;
        Ok(out.into())
    }

    /// Handles of the head variables created since index `from` (for shadowing a head MLP).
    pub fn head_handles_since(&self, from: usize) -> Vec<(String, Output)> {
        self.vars[from..]
            .iter()
            .map(|v| (v.name.clone(), v.handle.clone()))
            .collect()
    }

    /// A `[k, d]` variable of random unit rows (a MoCo queue); returns its handle.
    pub fn unit_rows(&mut self, name: &str, k: i64, d: i64) -> Result<Output> {
        let ctx = || format!("queue {name}");
        let mut s = self.scope.new_sub_scope(name);
        let h: Output = ops::VarHandleOp::new()
            .dtype(DataType::Float)
            .shape(tensorflow::Shape::from(Some(vec![Some(k), Some(d)])))
            .shared_name(self.scope.get_unique_name_for_op(name))
            .build(&mut s.with_op_name("var"))
            .tf_ctx(ctx)?
            .into();
        let dims = ops::constant(&[k, d][..], &mut s).tf_ctx(ctx)?;
        let seed = self.next_seed();
        let r: Output = ops::RandomStandardNormal::new()
            .dtype(DataType::Float)
            .seed(self.seed)
            .seed2(seed)
            .build(dims, &mut s)
            .tf_ctx(ctx)?
            .into();
        let r = super::simclr::l2_normalize(&mut s, r)?;
        self.init_ops
            .push(ops::assign_variable_op(h.clone(), r, &mut s).tf_ctx(ctx)?);
        Ok(h)
    }
}
