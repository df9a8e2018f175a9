//! Looking inside a trainer without stepping it: the loss and the head's named tensors on a
//! batch, and reading or setting variables (for parity tests against references, and summaries).
use tensorflow::{ops, DataType, Output, SessionRunArgs, Tensor};

use super::Trainer;
use crate::error::{Error, Result, TfContext};

/// Values by variable name.
type Named = Vec<(String, Tensor<f32>)>;

impl Trainer {
    /// The named head tensor `name` (see `tensors`), or an error listing the names there are.
    fn tensor(&self, name: &str) -> Result<Output> {
        let all = self.tensors();
        all.iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
                Error::graph(
                    name,
                    format!("no such head tensor (known: {})", known.join(", ")),
                )
            })
    }

    /// The loss and the named head tensors `names` (see `tensors`) on `xs` (in `feeds` order),
    /// all from one session run that updates nothing: random corruptions drawn in that run are
    /// the ones the returned loss saw.
    pub fn evaluate(&self, xs: &[Tensor<f32>], names: &[&str]) -> Result<(f32, Vec<Tensor<f32>>)> {
        let mut fetches = vec![self.loss().clone()];
        for n in names {
            fetches.push(self.tensor(n)?);
        }
        let mut got = self
            .fetch_on(xs, &fetches, "evaluating the loss without a step")?
            .into_iter();
        let loss = got
            .next()
            .ok_or_else(|| Error::internal("evaluate", "no loss"))?;
        Ok((loss[0], got.collect()))
    }

    /// `fetches` from one session run on `xs` (in `feeds` order) that updates nothing; a
    /// failed run is said to be `what`.
    fn fetch_on(
        &self,
        xs: &[Tensor<f32>],
        fetches: &[Output],
        what: &str,
    ) -> Result<Vec<Tensor<f32>>> {
        let mut run = SessionRunArgs::new();
        for (f, x) in self.feeds.iter().zip(xs) {
            run.add_feed(&f.operation, f.index, x);
        }
        let toks: Vec<_> = fetches
            .iter()
            .map(|t| run.request_fetch(&t.operation, t.index))
            .collect();
        self.model
            .session
            .run(&mut run)
            .tf_ctx(|| what.to_string())?;
        toks.into_iter()
            .zip(fetches)
            .map(|(tok, t)| {
                let name = t.operation.name().unwrap_or_default();
                run.fetch(tok).tf_ctx(|| format!("fetching {name}"))
            })
            .collect()
    }

    /// The current value of the float variable behind `handle` (a `VarHandleOp` output: a model
    /// variable, a head variable, a momentum copy or a queue).
    pub fn read_variable(&mut self, handle: &Output) -> Result<Tensor<f32>> {
        let name = handle.operation.name().unwrap_or_default();
        let value: Output = {
            let mut s = self.model.scope.new_sub_scope("pretext/inspect");
            ops::ReadVariableOp::new()
                .dtype(DataType::Float)
                .build(handle.clone(), &mut s)
                .tf_ctx(|| format!("reading variable {name}"))?
                .into()
        };
        self.model.run_f32(&[], &value)
    }

    /// Sets the float variable behind `handle` to `value` (same shape).
    pub fn assign_variable(&mut self, handle: &Output, value: &Tensor<f32>) -> Result<()> {
        let name = handle.operation.name().unwrap_or_default();
        let ctx = || format!("assigning variable {name}");
        let (feed, assign) = {
            let mut s = self.model.scope.new_sub_scope("pretext/inspect");
            let p: Output = ops::Placeholder::new()
                .dtype(DataType::Float)
                .build(&mut s)
                .tf_ctx(ctx)?
                .into();
            let a = ops::assign_variable_op(handle.clone(), p.clone(), &mut s).tf_ctx(ctx)?;
            (p, a)
        };
        let mut run = SessionRunArgs::new();
        run.add_feed(&feed.operation, feed.index, value);
        run.add_target(&assign);
        self.model.session.run(&mut run).tf_ctx(ctx)
    }
}

impl Trainer {
    /// The gradients of the named head tensor `name` (a scalar such as `retain/loss`; see
    /// `tensors`) to every variable the optimizer updates, on `xs` (in `feeds` order),
    /// with the named tensors `also` from the same session run: `(variable, gradient)` pairs
    /// (variables the tensor does not depend on are left out), then `also`'s values.
    pub fn gradients_of(
        &mut self,
        name: &str,
        xs: &[Tensor<f32>],
        also: &[&str],
    ) -> Result<(Named, Vec<Tensor<f32>>)> {
        let y = self.tensor(name)?;
        let wanted = also
            .iter()
            .map(|n| self.tensor(n))
            .collect::<Result<Vec<_>>>()?;
        let params: std::collections::HashSet<&String> = self.plan.param_names.iter().collect();
        let reads = super::build::trained_reads(&self.head, |h| params.contains(&h.to_string()));
        let grads = crate::autodiff::gradients(
            &mut self.model.scope,
            &self.head.towers,
            y,
            &reads,
            "pretext/inspect_gradients",
        )?;
        let fetches: Vec<Output> = grads.iter().map(|g| g.grad.clone()).chain(wanted).collect();
        let what = format!("evaluating the gradients of {name}");
        let mut got = self.fetch_on(xs, &fetches, &what)?.into_iter();
        let out = grads
            .iter()
            .map(|g| g.handle.clone())
            .zip(got.by_ref())
            .collect();
        let vals = got.collect();
        Ok((out, vals))
    }
}
