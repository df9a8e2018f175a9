//! What heads build with: `HeadBuilder` imports towers of the backbone on the step's views,
//! creates the head's variables (initialised once, checkpointed, never exported) and common
//! layers; `build` hands the result over as a `BuiltHead`.
use tensorflow::{ops, DataType, Operation, Output, Scope};

use super::{concat, normalize, Head, HeadOutput, HeadVar};
use crate::error::{Error, Result, TfContext};
use crate::graph::{FlatGraph, Tower};
use crate::savedmodel::Loaded;

/// The tensors a head is built on: the step's feeds.
pub struct HeadInputs {
    /// The clean batch (NHWC).
    pub input: Output,
    /// The augmented views the head declared.
    pub views: Vec<Output>,
    /// int64[2] `[seed, step]`, fed each step: per-step random draws are a pure function of it.
    pub step_seed: Output,
    /// (image tensor, each replica's share of it) when the replicas' shares are read apart (the
    /// workers' input): the replicas take them as they are instead of splitting the tensor.
    pub shards: Vec<(Output, Vec<Output>)>,
}

/// How a head is built: the input's pixel range, the seed of its initialisation and noise,
/// the device of its towers.
#[derive(Debug, Clone)]
pub struct HeadSettings {
    pub range: (f32, f32),
    pub seed: i64,
    pub device: Option<String>,
    /// Devices the backbone is replicated on (`heads::replicas`; empty: one tower on `device`).
    pub devices: Vec<String>,
}

/// A head in the graph: its output and what the builder made for it.
pub struct BuiltHead {
    pub out: HeadOutput,
    /// The online backbone passes (momentum copies not counted).
    pub towers: Vec<Tower>,
    /// Variables the head created (not their momentum copies).
    pub vars: Vec<HeadVar>,
    /// Ops that initialise them, run once.
    pub init_ops: Vec<Operation>,
}

/// Everything a head may build with.
pub struct HeadBuilder<'m> {
    pub model: &'m mut Loaded,
    pub(super) flat: &'m FlatGraph,
    pub(super) input: Output,
    pub(super) views: Vec<Output>,
    /// Pixel value range of the input.
    pub range: (f32, f32),
    pub seed: i64,
    pub(super) device: Option<String>,
    pub(super) towers: Vec<Tower>,
    pub(super) vars: Vec<HeadVar>,
    pub(super) init_ops: Vec<Operation>,
    pub scope: Scope,
    pub(super) seeds: i64,
    /// int64[2] `[seed, step]`, fed each step: per-step random draws are a pure function of it.
    pub(super) step_seed: Output,
    pub(super) tower_cache: std::collections::HashMap<(String, i32), Output>,
    pub(super) stack_cache: std::collections::HashMap<Vec<usize>, Output>,
    pub(super) devices: Vec<String>,
    pub(super) replicas: super::replicas::Replicas,
}

impl<'m> HeadBuilder<'m> {
    pub fn new(
        model: &'m mut Loaded,
        flat: &'m FlatGraph,
        inputs: HeadInputs,
        settings: HeadSettings,
    ) -> Self {
        let scope = model.scope.new_sub_scope("pretext/head");
        HeadBuilder {
            model,
            flat,
            input: inputs.input,
            views: inputs.views,
            range: settings.range,
            seed: settings.seed,
            device: settings.device,
            towers: Vec::new(),
            vars: Vec::new(),
            init_ops: Vec::new(),
            scope,
            seeds: 0,
            step_seed: inputs.step_seed,
            tower_cache: Default::default(),
            stack_cache: Default::default(),
            devices: settings.devices,
            replicas: super::replicas::Replicas::with_shards(inputs.shards),
        }
    }

    /// Builds `head`, adds the retention term of `retain` (on the model variables in
    /// `trainable`, by handle) to its loss, and hands over what it made.
    pub fn build(
        mut self,
        head: &dyn Head,
        retain: &crate::retain::RetainConfig,
        trainable: &std::collections::HashSet<String>,
    ) -> Result<BuiltHead> {
        let out = head.build(&mut self)?;
        let out = crate::retain::attach(&mut self, out, retain, trainable)?;
        Ok(BuiltHead {
            out,
            towers: self.towers,
            vars: self.vars,
            init_ops: self.init_ops,
        })
    }

    /// The online backbone passes built so far.
    pub fn towers(&self) -> &[Tower] {
        &self.towers
    }

    /// The device of the head, the loss and the optimizer (`model.device`), if one was asked.
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    /// The clean input batch (NHWC).
    pub fn input(&self) -> Output {
        self.input.clone()
    }

    /// Augmented view `i` (NHWC), one of those the head declared.
    pub fn view(&self, i: usize) -> Result<Output> {
        self.views.get(i).cloned().ok_or_else(|| {
            Error::graph(
                "pretext/views",
                format!("view {i} was not declared by the head"),
            )
        })
    }

    /// The embedding: rank-2 outputs as they are, feature maps average-pooled.
    pub fn pooled(&mut self, e: Output) -> Result<Output> {
        match self.rank(&e) {
            Some(2) => Ok(e),
            Some(4) => {
                let s = &mut self.scope;
                let axes = ops::constant(&[1i32, 2][..], s).tf_ctx(|| "pooling".into())?;
                Ok(ops::mean(e, axes, s).tf_ctx(|| "pooling".into())?.into())
            }
            r => Err(Error::config(
                "head.kind",
                format!("heads need a backbone output of rank 2 or 4, got {r:?}"),
            )),
        }
    }

    /// Batch normalisation over axis 0 with batch statistics and learned scale and offset.
    pub fn batch_norm(&mut self, name: &str, x: Output, width: i64) -> Result<Output> {
        let gamma = self.variable(&format!("{name}/gamma"), &[width], None)?;
        let beta = self.variable(&format!("{name}/beta"), &[width], None)?;
        normalize(&mut self.scope, x, gamma, beta)
    }

    /// The seed tensor of a per-step random op: `[seed + k, step]` for this op's own k, so
    /// every op draws differently and every step anew, reproducibly across sessions.
    pub fn step_seed(&mut self) -> Result<Output> {
        let k = self.next_seed();
        let s = &mut self.scope;
        let off = ops::constant(&[k, 0i64][..], s).tf_ctx(|| "op seed".into())?;
        Ok(ops::add(self.step_seed.clone(), off, s)
            .tf_ctx(|| "op seed".into())?
            .into())
    }

    /// A fresh op-level seed (deterministic given the experiment seed).
    pub fn next_seed(&mut self) -> i64 {
        self.seeds += 1;
        self.seed.wrapping_mul(1_000_003).wrapping_add(self.seeds)
    }

    /// A tower of the backbone fed from `x`; returns its first output (the signature's
    /// first output key), sharing the model's variables with every other tower.
    /// A head asking for a tower on an input another head already embedded gets the same
    /// pass (multi-task heads share backbone passes where their views allow).
    pub fn tower(&mut self, x: Output) -> Result<Output> {
        let key = (x.operation.name().unwrap_or_default(), x.index);
        if let Some(out) = self.tower_cache.get(&key) {
            log::debug!("sharing the backbone pass on '{}'", key.0);
            return Ok(out.clone());
        }
        if !self.devices.is_empty() {
            let out = self.replicated_tower(x)?;
            self.tower_cache.insert(key, out.clone());
            return Ok(out);
        }
        let prefix = format!("pretext/tower{}", self.towers.len());
        let t = Tower::import(
            self.model,
            self.flat,
            &prefix,
            self.device.as_deref(),
            Some(&[x]),
        )?;
        let out = t.outputs[0].clone();
        self.towers.push(t);
        self.tower_cache.insert(key, out.clone());
        Ok(out)
    }

    /// The augmented views `idx` stacked along the batch axis (one op per distinct list, so
    /// heads embedding the same stack share one tower pass).
    pub fn stacked_views(&mut self, idx: &[usize]) -> Result<Output> {
        if let Some(x) = self.stack_cache.get(idx) {
            return Ok(x.clone());
        }
        let views = idx
            .iter()
            .map(|&i| self.view(i))
            .collect::<Result<Vec<_>>>()?;
        let x = concat(&mut self.scope, &views, 0)?;
        self.stack_cache.insert(idx.to_vec(), x.clone());
        let groups = &mut self.replicas.groups;
        groups.insert(super::replicas::key(&x), idx.len());
        self.stack_shards(&x, &views)?;
        Ok(x)
    }

    /// Static size of dimension `d` of `t`, or an error naming the tensor.
    pub fn static_dim(&self, t: &Output, d: usize) -> Result<i64> {
        let shape = self
            .model
            .scope
            .graph()
            .tensor_shape(t.clone())
            .tf_ctx(|| "reading a static shape".into())?;
        match shape.dims().filter(|&r| d < r).and_then(|_| shape[d]) {
            Some(v) if v > 0 => Ok(v),
            _ => Err(Error::graph(
                t.operation.name().unwrap_or_default(),
                format!("dimension {d} of the backbone output is not static"),
            )),
        }
    }

    /// The last spatial feature map behind a backbone output: walks back (at most a few ops,
    /// e.g. through a global-average-pool `Mean`) to the first rank-4 tensor with static
    /// height, width and channels. The flag says whether variables are read on the way (layers
    /// between the map and the output, which a head built on the map would not train).
    pub fn feature_map(&mut self, out: &Output) -> Option<(Output, bool)> {
        match self.devices.is_empty() {
            true => self.feature_map_of(out),
            false => self.replicated_feature_map(out),
        }
    }

    /// `feature_map` of one tower's output.
    pub(super) fn feature_map_of(&self, out: &Output) -> Option<(Output, bool)> {
        let g = self.model.scope.graph();
        let static4 = |t: &Output| -> bool {
            match g.tensor_shape(t.clone()) {
                Ok(sh) if sh.dims() == Some(4) => {
                    (1..4).all(|i| sh[i].map(|v| v > 0).unwrap_or(false))
                }
                _ => false,
            }
        };
        let mut params_between = false;
        let mut frontier = vec![out.clone()];
        for _ in 0..6 {
            let mut next = Vec::new();
            for t in &frontier {
                if static4(t) {
                    return Some((t.clone(), params_between));
                }
                let op = &t.operation;
                if op.op_type().map(|o| o == "ReadVariableOp").unwrap_or(false) {
                    params_between = true;
                    continue;
                }
                for i in 0..op.num_inputs() {
                    let (src, idx) = op.input(i);
                    if src.output_type(idx) == DataType::Float {
                        next.push(Output {
                            operation: src,
                            index: idx as i32,
                        });
                    }
                }
            }
            frontier = next;
        }
        None
    }

    /// Rank of `t`, if known.
    pub fn rank(&self, t: &Output) -> Option<usize> {
        self.model
            .scope
            .graph()
            .tensor_shape(t.clone())
            .ok()
            .and_then(|s| s.dims())
    }
}
