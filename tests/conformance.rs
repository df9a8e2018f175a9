//! The conformance corpus (scripts/make_conformance.py; `make test` builds its fast half,
//! `make conformance` all of it): for every architecture, `inspect` finds it differentiable, the
//! inlined forward equals the original signature, the gradients equal tf.GradientTape's, three
//! training steps run and TF Python loads the export. Each model's figures go to
//! `results.json` beside the corpus (docs/MODELS.md is rendered from it).
mod common;
use common::{dims, export_and_check, images, max_abs_diff, read_f32, weighted_sum_loss};

use std::path::{Path, PathBuf};
use std::time::Instant;

use pretext::graph::{inline_signature, PassContext, Tower};
use pretext::savedmodel::Loaded;
use pretext::train::Trainer;
use serde_json::{json, Value};
use tensorflow::Tensor;

fn corpus() -> PathBuf {
    let p = std::env::var_os("PRETEXT_CONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/conformance"));
    assert!(
        p.join("corpus.json").is_file(),
        "{}: run `make conformance-fast` (or `make test`)",
        p.display()
    );
    p
}

fn json_of(p: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

/// One model of the corpus and its golden values.
struct Model {
    name: String,
    dir: PathBuf,
    golden: PathBuf,
    index: Value,
    /// NAME.json: description, `set` (fast or all).
    meta: Value,
}

impl Model {
    fn input(&self) -> Tensor<f32> {
        Tensor::new(&dims(&self.index["input_shape"]))
            .with_values(&read_f32(&self.golden.join("input.bin")))
            .unwrap()
    }
    fn key(&self) -> &str {
        self.index["output_key"].as_str().unwrap()
    }
}

/// The tower as the trainer prepares it (folding off: GradientTape differentiates the model as
/// saved); the passes' log.
fn tower(m: &Model) -> (Loaded, Tower, pretext::graph::PassLog) {
    let mut l = Loaded::load(&m.dir, Default::default()).unwrap();
    let sig = l.info.signature("serving_default").unwrap();
    let mut flat = inline_signature(&l.info, &sig, &l.scope.graph()).unwrap();
    let none = std::collections::HashSet::new();
    let cx = PassContext {
        info: &l.info,
        trainable: &none,
        bn: pretext::graph::bn::BnMode::Frozen,
        bn_momentum: 0.99,
        bn_fold: false,
        recompute: pretext::graph::recompute::Recompute::Off,
        custom_gradients: Default::default(),
        devices: &[],
        bn_sync: false,
    };
    let log = pretext::train::prepare::prepare_graph(&mut flat, &cx).unwrap();
    let t = Tower::import(&mut l, &flat, "t", None, None).unwrap();
    (l, t, log)
}

/// Inlined forward vs the original signature and vs TF Python: max error / output scale.
fn forward(m: &Model, l: &Loaded, t: &Tower) -> (f32, f32) {
    let sig = l.info.signature("serving_default").unwrap();
    let x = m.input();
    let original = l.run_signature(&sig, &x, m.key()).unwrap();
    let k = sig.outputs.iter().position(|o| o.key == m.key()).unwrap();
    let flat = l
        .run_f32(&[(&t.inputs[0], &x)], &t.outputs[k])
        .unwrap()
        .to_vec();
    let py = read_f32(&m.golden.join("output.bin"));
    let scale = py.iter().fold(1f32, |a, b| a.max(b.abs()));
    (
        max_abs_diff(&original, &flat) / scale,
        max_abs_diff(&flat, &py) / scale,
    )
}

/// The worst per-variable max relative error of the gradients of sum(output · w), and how many
/// variables were compared.
fn gradients(m: &Model, l: &mut Loaded, t: &Tower) -> (f32, usize) {
    let w = Tensor::new(&dims(&m.index["output_shape"]))
        .with_values(&read_f32(&m.golden.join("weights.bin")))
        .unwrap();
    let sig = l.info.signature("serving_default").unwrap();
    let k = sig.outputs.iter().position(|o| o.key == m.key()).unwrap();
    let loss = weighted_sum_loss(&l.scope, t.outputs[k].clone(), w);
    let grads =
        pretext::autodiff::gradients(&mut l.scope, std::slice::from_ref(t), loss, &t.reads, "cg")
            .unwrap();
    let want = read_f32(&m.golden.join("grads.bin"));
    // Every gradient in one run (one forward and backward pass).
    let x = m.input();
    let mut run = tensorflow::SessionRunArgs::new();
    run.add_feed(&t.inputs[0].operation, t.inputs[0].index, &x);
    let toks: Vec<_> = grads
        .iter()
        .map(|g| run.request_fetch(&g.grad.operation, g.grad.index))
        .collect();
    l.session.run(&mut run).unwrap();
    let values: std::collections::HashMap<&str, Vec<f32>> = grads
        .iter()
        .zip(toks)
        .map(|(g, tok)| (g.handle.as_str(), run.fetch::<f32>(tok).unwrap().to_vec()))
        .collect();
    // A gradient TF computes as rounding noise (e.g. an attention key bias: softmax ignores it)
    // is compared against a thousandth of the largest gradient scale, not its own.
    let floor = 1e-3 * want.iter().fold(0f32, |a, b| a.max(b.abs()));
    let (mut worst, mut n) = (0f32, 0);
    for v in m.index["vars"].as_array().unwrap() {
        let handle =
            pretext::proto::TensorRef::node_of(v["graph_input"].as_str().unwrap()).to_string();
        let (off, size) = (
            v["offset"].as_u64().unwrap() as usize,
            v["size"].as_u64().unwrap() as usize,
        );
        let expect = &want[off..off + size];
        let got = values
            .get(handle.as_str())
            .cloned()
            .unwrap_or_else(|| vec![0.0; size]);
        let scale = expect.iter().fold(floor, |a, b| a.max(b.abs()));
        let rel = if scale == 0.0 {
            max_abs_diff(&got, expect)
        } else {
            max_abs_diff(&got, expect) / scale
        };
        if std::env::var_os("PRETEXT_CONFORMANCE_VERBOSE").is_some() {
            println!(
                "  {} {handle}: max relative error {rel:e} (scale {scale:e})",
                v["name"]
            );
        }
        worst = worst.max(rel);
        n += 1;
    }
    (worst, n)
}

/// Three training steps with the default experiment, then TF Python checks the export.
fn train_and_export(m: &Model) -> Result<(f32, f32), String> {
    let mut c = pretext::train::TrainConfig::new(m.dir.clone(), images());
    c.steps = 3;
    c.batch = 8;
    let mut t = Trainer::new(&c).map_err(|e| e.to_string())?;
    let losses = t.run(3).map_err(|e| e.to_string())?;
    if !losses.iter().all(|l| l.is_finite()) {
        return Err(format!("losses {losses:?}"));
    }
    let out = tempfile::tempdir().unwrap();
    export_and_check(&t, out.path(), &m.dir, &m.golden, m.key())?;
    Ok((losses[0], losses[2]))
}

fn conforms(m: &Model) -> (Value, Vec<String>) {
    let mut fails = Vec::new();
    let t0 = Instant::now();
    let report = pretext::inspect::inspect(&m.dir, None, None, Default::default()).unwrap();
    let line = |p: &str| {
        report
            .lines()
            .find(|l| l.starts_with(p))
            .unwrap_or("")
            .to_string()
    };
    let coverage = line("gradient coverage");
    if !coverage.contains("all differentiable") {
        fails.push(coverage.clone());
    }
    let ops: u64 = line("serving path")
        .rsplit(": ")
        .next()
        .and_then(|s| s.trim_end_matches(" ops").parse().ok())
        .unwrap_or(0);
    let t_inspect = t0.elapsed().as_secs_f32();
    let t1 = Instant::now();
    let (mut l, tower, log) = tower(m);
    let (fwd, fwd_py) = forward(m, &l, &tower);
    if fwd > 1e-5 {
        fails.push(format!(
            "inlined forward differs from the signature by {fwd:e} of the output scale"
        ));
    }
    let (grad, nvars) = gradients(m, &mut l, &tower);
    if grad > 1e-4 {
        fails.push(format!(
            "gradients differ from GradientTape's by {grad:e} (max relative)"
        ));
    }
    let t_check = t1.elapsed().as_secs_f32();
    let t2 = Instant::now();
    let trained = train_and_export(m);
    if let Err(e) = &trained {
        fails.push(e.clone());
    }
    let passes: Value = log
        .0
        .iter()
        .filter(|(_, c)| !c.is_empty())
        .map(|(p, c)| (p.to_string(), json!(c.len())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let row = json!({
        "name": m.name, "description": m.meta["description"], "set": m.meta["set"],
        "input": m.index["input_shape"], "ops": ops, "coverage": coverage, "passes": passes,
        "forward_rel_err": fwd, "forward_vs_python_rel_err": fwd_py,
        "grad_max_rel_err": grad, "vars_compared": nvars,
        "losses": trained.as_ref().map(|(a, b)| json!([a, b])).unwrap_or(json!(null)),
        "seconds": {"inspect": t_inspect, "forward_and_gradients": t_check, "train_3_steps_and_export": t2.elapsed().as_secs_f32()},
        "ok": fails.is_empty(),
    });
    (row, fails)
}

#[test]
fn every_corpus_model_conforms() {
    let dir = corpus();
    let names: Vec<String> = serde_json::from_value(json_of(&dir.join("corpus.json"))).unwrap();
    assert!(!names.is_empty());
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for name in &names {
        let golden = dir.join("golden").join(name);
        let m = Model {
            name: name.clone(),
            dir: dir.join(name),
            index: json_of(&golden.join("index.json")),
            meta: json_of(&dir.join(format!("{name}.json"))),
            golden,
        };
        let (row, fails) = conforms(&m);
        println!("{name}: {row}");
        rows.push(row);
        failures.extend(fails.into_iter().map(|f| format!("{name}: {f}")));
    }
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&rows).unwrap() + "\n",
    )
    .unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
