//! `inspect --device D`: where TF runs the model's part of a training step on D, found by
//! running it once. The signature is inlined and rewritten as training rewrites it (the
//! experiment schema's defaults), imported on D, differentiated to every trainable variable and
//! stepped on a zero batch; the placement is read back from that run (`graph::placement`).
//! Head, loss and optimizer ops are pretext's own and the same for every model: the run report
//! lists theirs.
use std::collections::HashSet;
use std::path::Path;

use tensorflow::{ops, DataType, Output, SessionRunArgs, Tensor};

use super::prepare::prepare_graph;
use crate::autodiff;
use crate::error::{Error, Result, TfContext};
use crate::graph::placement::{self, Placement};
use crate::graph::{inline_signature, Tower};
use crate::savedmodel::{Loaded, SavedModelInfo, Trust};

/// Batch of the probe step (two images: batch statistics are defined).
const PROBE_BATCH: u64 = 2;

/// Runs the model's forward and backward pass once on `device` and reads where each op ran.
pub fn placement(
    dir: &Path,
    info: &SavedModelInfo,
    signature: &str,
    device: &str,
) -> Result<Placement> {
    placement::check_devices("--device", &[device.to_string()])?;
    let cfg = crate::experiment::Experiment::new(dir.to_path_buf(), vec![]).train_config(1);
    let sig = info.signature(signature)?;
    if sig.inputs.len() != 1 {
        return Err(Error::config(
            "--device",
            format!(
                "the probe feeds one image input; signature '{signature}' takes {}",
                sig.inputs.len()
            ),
        ));
    }
    let spec = super::image_spec(&sig, cfg.size, cfg.range)?;
    let devices = [device.to_string()];
    let mut model = Loaded::load_for(info.clone(), Trust::Trusted, &devices, None)?;
    model.scope = model.scope.with_device(device);
    let mut flat = inline_signature(&model.info, &sig, &model.scope.graph())?;
    let trainable: HashSet<String> = model.info.trainable_handles();
    let cx = super::prepare::pass_context(&model.info, &trainable, &cfg);
    prepare_graph(&mut flat, &cx)?;
    let tower = Tower::import(&mut model, &flat, "pretext_probe/tower", Some(device), None)?;
    let loss = sum_of_squares(&mut model, &tower.outputs)?;
    let reads: Vec<(String, Output)> = tower
        .reads
        .iter()
        .filter(|(h, _)| trainable.contains(h))
        .cloned()
        .collect();
    let grads = autodiff::gradients(
        &mut model.scope,
        std::slice::from_ref(&tower),
        loss.clone(),
        &reads,
        "pretext_probe/gradients",
    )?;
    let dims = [
        PROBE_BATCH,
        spec.height as u64,
        spec.width as u64,
        spec.channels as u64,
    ];
    let x = Tensor::<f32>::new(&dims);
    let mut run = SessionRunArgs::new();
    run.add_feed(&tower.inputs[0].operation, tower.inputs[0].index, &x);
    run.add_target(&loss.operation);
    for g in &grads {
        run.add_target(&g.grad.operation);
    }
    run.set_run_options(&placement::run_options());
    run.set_request_metadata(true);
    model
        .session
        .run(&mut run)
        .tf_ctx(|| format!("running the model's forward and backward pass on {device}"))?;
    let graph = model.scope.graph();
    let built = |n: &str| matches!(graph.operation_by_name(n), Ok(Some(_)));
    Placement::read(run.get_metadata().unwrap_or_default(), &devices, &built)
}

/// Σ o² over every float output: a scalar that reaches every output.
fn sum_of_squares(model: &mut Loaded, outputs: &[Output]) -> Result<Output> {
    let ctx = || "the probe's loss".to_string();
    let mut s = model.scope.new_sub_scope("pretext_probe/loss");
    let mut total: Option<Output> = None;
    for o in outputs {
        if o.operation.output_type(o.index as usize) != DataType::Float {
            continue;
        }
        let r = ops::rank(o.clone(), &mut s).tf_ctx(ctx)?;
        let zero = ops::constant(0i32, &mut s).tf_ctx(ctx)?;
        let one = ops::constant(1i32, &mut s).tf_ctx(ctx)?;
        let axes = ops::range(zero, r, one, &mut s).tf_ctx(ctx)?;
        let sq = ops::square(o.clone(), &mut s).tf_ctx(ctx)?;
        let sum: Output = ops::sum(sq, axes, &mut s).tf_ctx(ctx)?.into();
        total = Some(match total {
            None => sum,
            Some(t) => ops::add(t, sum, &mut s).tf_ctx(ctx)?.into(),
        });
    }
    total.ok_or_else(|| Error::graph("pretext_probe/loss", "the signature has no float output"))
}
