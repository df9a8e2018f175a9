//! The first stage of building a trainer: the model read and loaded, the input pipeline
//! started, the signature inlined into a flat graph and rewritten for training, the variables
//! that train chosen, and the placeholders each step feeds.
use std::collections::HashSet;

use tensorflow::{ops, DataType, Output, Shape};

use super::input::{Input, RemoteInput, Shares};
use super::{build, image_spec, TrainConfig};
use crate::autodiff::control_flow::ControlFlowGradients;
use crate::autodiff::custom::CutCustomGradients;
use crate::autodiff::fallback::FallbackGradients;
use crate::cluster::input::InputJob;
use crate::cluster::InputSite;
use crate::data::{Batches, DataSources, Dataset, ImageSpec, Loader, ViewPlan};
use crate::error::{Result, TfContext};
use crate::graph::bn::BnTrainMode;
use crate::graph::fold::FoldFrozenBn;
use crate::graph::recompute::RecomputeBn;
use crate::graph::replicate::Replicate;
use crate::graph::unstride::Unstride;
use crate::graph::{inline_signature, FlatGraph};
use crate::graph::{GraphPass, PassContext, PassLog};
use crate::heads::{Head, HeadInputs};
use crate::savedmodel::{Loaded, SavedModelInfo, Signature};

/// A loaded model with its training graph prepared, before any head is built.
pub(super) struct Prepared {
    pub model: Loaded,
    pub signature: Signature,
    pub spec: ImageSpec,
    pub flat: FlatGraph,
    /// The input: this process's pipeline, or the workers'.
    pub input: Input,
    /// Each replica's share of each image tensor, when the workers read them.
    pub shares: Option<Shares>,
    /// Handles of the model variables that train.
    pub trainable: HashSet<String>,
    /// Batch-norm nodes switched to batch statistics.
    pub switched: Vec<String>,
}

/// A config's model parsed and its images indexed: what checking an experiment reads, handed to
/// `Trainer::build` so a run reads neither twice.
#[derive(Clone)]
pub struct Opened {
    pub info: SavedModelInfo,
    pub data: std::sync::Arc<Dataset>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Opened({}, {} images)",
            self.info.dir.display(),
            self.data.len()
        )
    }
}

impl Opened {
    /// Parses `cfg`'s model (its graph variant) and indexes its images.
    pub fn open(cfg: &TrainConfig) -> Result<Opened> {
        Ok(Opened {
            info: SavedModelInfo::read_tagged(&cfg.model, cfg.tags.as_deref())?,
            data: std::sync::Arc::new(Dataset::open(&cfg.data)?),
        })
    }
}

/// Reads and loads the model (unless `opened` holds it and the index of the images), starts the
/// input threads (the first batches decode while the graph is built), inlines the signature,
/// picks the variables that train and runs `PASSES`.
pub(super) fn prepare(
    cfg: &TrainConfig,
    head: &dyn Head,
    opened: Option<Opened>,
) -> Result<Prepared> {
    let Opened { info, data } = match opened {
        Some(o) => o,
        None => Opened::open(cfg)?,
    };
    let signature = info
        .signature(&cfg.signature)?
        .with_fixed(&cfg.fixed_inputs)?;
    let spec = image_spec(&signature, cfg.size, cfg.range)?;
    let (clean, augmented) = head.views();
    let plan = ViewPlan {
        clean,
        augmented,
        augment: cfg.augment.clone(),
    };
    let seed = cfg.data_seed.unwrap_or(cfg.seed);
    let remote = cfg
        .cluster
        .as_ref()
        .filter(|c| c.input == InputSite::Workers);
    // This process's input threads start now: the first batches decode while the graph is built.
    let local = match remote {
        Some(_) => None,
        None => {
            let batches = Batches::ordered(data.clone(), spec.clone(), seed, cfg.shuffle);
            Some(Loader::new(batches, plan.clone(), cfg.batch, cfg.loader)?)
        }
    };
    let devices = super::replicas::session_devices(cfg);
    let mut model = Loaded::load_for(info, cfg.trust, &devices, cfg.cluster.as_ref())?;
    if let Some(d) = &super::replicas::main_device(cfg) {
        // Every op pretext builds from here on (head, loss, optimizer, updates) asks for `d`.
        model.scope = model.scope.with_device(d);
    }
    let (input, shares) = match (local, remote) {
        (Some(l), _) => (Input::Local(l), None),
        (None, Some(c)) => {
            let job = InputJob {
                data: absolute(&cfg.data),
                spec: spec.clone(),
                plan,
                seed,
                shuffle: cfg.shuffle,
                loader: cfg.loader,
                feeds: Vec::new(),
            };
            let (r, shares) =
                RemoteInput::build(&mut model, c, &cfg.devices, job, data, cfg.batch)?;
            (Input::Workers(r), Some(shares))
        }
        (None, None) => unreachable!("no loader is made only when the workers read"),
    };
    let updates = model.info.update_ops().len();
    if model.info.tf1_hub && updates > 0 {
        log::info!(
            "TF1 Hub module, graph variant {}: its batch norms train on batch statistics and its {updates} update op(s) (UPDATE_OPS) keep the moving averages, whatever model.bn says (model.tags: [] loads the inference variant)",
            crate::savedmodel::tf1hub::show_tags(&model.info.tags)
        );
    }
    let mut flat = inline_signature(&model.info, &signature, &model.scope.graph())?;
    let read_order = build::read_order(&flat);
    let trainable = cfg
        .train_vars
        .select(&model.info.variables(), &read_order)?;
    let cx = pass_context(&model.info, &trainable, cfg);
    let passes = prepare_graph(&mut flat, &cx)?;
    let switched = passes.changed(BnTrainMode.name()).to_vec();
    Ok(Prepared {
        model,
        signature,
        spec,
        flat,
        input,
        shares,
        trainable,
        switched,
    })
}

/// What the passes read of `cfg`, for the model `info` whose variables `trainable` train.
pub(super) fn pass_context<'a>(
    info: &'a SavedModelInfo,
    trainable: &'a HashSet<String>,
    cfg: &'a TrainConfig,
) -> PassContext<'a> {
    PassContext {
        info,
        trainable,
        bn: cfg.bn,
        bn_momentum: cfg.bn_momentum,
        bn_fold: cfg.bn_fold,
        recompute: cfg.recompute,
        custom_gradients: cfg.custom_gradients,
        devices: &cfg.devices,
        bn_sync: cfg.bn_sync,
    }
}

/// The rewrites of a tower's flat graph, in the order they run: kept control flow checked first
/// (refused on a gradient path, else read through StopGradients), gradients TF lacks (they
/// replace whole nodes), then strided 1x1 convolutions, then batch norm: train mode for the
/// layers that train, folding of those left in inference mode, recompute marks; then the copies
/// for `train.devices` (synchronised batch norms rewritten there); last, the cuts around custom
/// gradients (they plan the backward on the final graph).
pub const PASSES: &[&dyn GraphPass] = &[
    &ControlFlowGradients,
    &FallbackGradients,
    &Unstride,
    &BnTrainMode,
    &FoldFrozenBn,
    &RecomputeBn,
    &Replicate,
    &CutCustomGradients,
];

/// Runs `PASSES` on `flat`.
pub fn prepare_graph(flat: &mut FlatGraph, cx: &PassContext) -> Result<PassLog> {
    crate::graph::pass::run_passes(flat, cx, PASSES)
}

/// `data` with absolute paths (a worker started elsewhere reads the same files).
fn absolute(data: &DataSources) -> DataSources {
    let abs = |v: &[std::path::PathBuf]| -> Vec<std::path::PathBuf> {
        v.iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect()
    };
    DataSources {
        folders: abs(&data.folders),
        tfrecords: abs(&data.tfrecords),
        idx: abs(&data.idx),
        ..data.clone()
    }
}

/// The step's inputs: the clean batch and each augmented view (placeholders, or with `shares`
/// each replica's dequeued shares gathered), and `[seed, step]`.
pub(super) fn placeholders(
    model: &mut Loaded,
    spec: &ImageSpec,
    (clean, views): (bool, usize),
    seed: i64,
    shares: Option<&Shares>,
) -> Result<HeadInputs> {
    let placeholder = |model: &mut Loaded, name: &str| -> Result<Output> {
        let s = model.scope.new_sub_scope("pretext");
        let shape = Shape::from(Some(vec![
            None,
            Some(spec.height as i64),
            Some(spec.width as i64),
            Some(spec.channels as i64),
        ]));
        Ok(ops::Placeholder::new()
            .dtype(DataType::Float)
            .shape(shape)
            .build(&mut s.with_op_name(name))
            .tf_ctx(|| format!("placeholder {name}"))?
            .into())
    };
    let input = placeholder(model, "images")?;
    // [seed, step] for the heads' per-step random draws (fed each step; 0 otherwise).
    let step_seed: Output = {
        let mut s = model.scope.new_sub_scope("pretext");
        let d = ops::constant(&[seed, 0][..], &mut s).tf_ctx(|| "step seed".into())?;
        ops::PlaceholderWithDefault::new()
            .dtype(DataType::Int64)
            .shape(Shape::from(Some(vec![Some(2)])))
            .build(d, &mut s.with_op_name("step_seed"))
            .tf_ctx(|| "step seed".into())?
            .into()
    };
    let Some(shares) = shares else {
        let views = (0..views)
            .map(|i| placeholder(model, &format!("view{i}")))
            .collect::<Result<Vec<_>>>()?;
        return Ok(HeadInputs {
            input,
            views,
            step_seed,
            shards: Vec::new(),
        });
    };
    let mut s = model.scope.new_sub_scope("pretext_input");
    let mut shards = Vec::new();
    for c in 0..clean as usize + views {
        let per: Vec<Output> = shares.iter().map(|r| r[c].clone()).collect();
        let full = match per.len() {
            1 => per[0].clone(),
            _ => crate::graph::concat(&mut s, &per, 0)?,
        };
        shards.push((full, per));
    }
    let full: Vec<Output> = shards.iter().map(|(f, _)| f.clone()).collect();
    let (input, views) = match clean {
        true => (full[0].clone(), full[1..].to_vec()),
        false => (input, full),
    };
    Ok(HeadInputs {
        input,
        views,
        step_seed,
        shards,
    })
}
