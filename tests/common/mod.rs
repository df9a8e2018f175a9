//! Shared test helpers: where `make fixtures` put the fixtures and their golden values.
#![allow(dead_code)]
pub mod cli;
use std::path::PathBuf;

use pretext::graph::{inline_signature, Tower};
use pretext::savedmodel::Loaded;
use tensorflow::Tensor;

pub const ALL: &[&str] = &[
    "tiny_cnn",
    "mobilenet_v2_035",
    "keras3_export",
    "fer_emotion",
    "nsfwjs_mobilenet_v2",
    "resnet_style",
    "custom_grads",
];

fn from_env(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default));
    assert!(
        p.is_dir(),
        "{} does not exist: run `make fixtures images` (or `make test`) first",
        p.display()
    );
    p
}

pub fn fixtures() -> PathBuf {
    from_env("PRETEXT_FIXTURES", ".cache/fixtures")
}

pub fn images() -> PathBuf {
    from_env("PRETEXT_IMAGES", ".cache/images")
}

pub fn labeled() -> PathBuf {
    from_env("PRETEXT_LABELED", ".cache/labeled")
}

pub fn python() -> PathBuf {
    std::env::var_os("PRETEXT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

pub fn golden(name: &str) -> PathBuf {
    fixtures().join("golden").join(name)
}

pub fn read_f32(p: &std::path::Path) -> Vec<f32> {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn index(name: &str) -> serde_json::Value {
    let p = golden(name).join("index.json");
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

pub fn dims(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect()
}

pub fn golden_input(name: &str) -> Tensor<f32> {
    let idx = index(name);
    Tensor::new(&dims(&idx["input_shape"]))
        .with_values(&read_f32(&golden(name).join("input.bin")))
        .unwrap()
}

pub fn output_key(name: &str) -> String {
    index(name)["output_key"].as_str().unwrap().to_string()
}

/// Loads a fixture and imports its inlined serving signature as tower `t` (after the rewrites
/// the trainer applies: fallback gradient rules, strided 1×1 convolutions at unit stride).
pub fn load_with_tower(name: &str) -> (Loaded, pretext::savedmodel::Signature, Tower) {
    load_with_tower_folded(name, false)
}

/// As `load_with_tower`; with `fold`, the frozen batch norms are folded into their convolutions
/// (`graph::fold`), as the trainer does by default.
pub fn load_with_tower_folded(
    name: &str,
    fold: bool,
) -> (Loaded, pretext::savedmodel::Signature, Tower) {
    let mut m = Loaded::load(&fixture(name), Default::default()).unwrap();
    let sig = m.info.signature("serving_default").unwrap();
    let t = prepared_tower(&mut m, &sig, fold, Default::default()).unwrap();
    (m, sig, t)
}

/// The current value behind a variable handle, read through a new ReadVariableOp.
pub fn read_value(t: &pretext::train::Trainer, h: tensorflow::Output) -> Vec<f32> {
    let r: tensorflow::Output = {
        let mut s = t.model().scope.new_sub_scope("test_read");
        tensorflow::ops::ReadVariableOp::new()
            .dtype(tensorflow::DataType::Float)
            .build(h, &mut s)
            .unwrap()
            .into()
    };
    t.model().run_f32(&[], &r).unwrap().to_vec()
}

/// The current value of the model variable whose handle is `handle`.
pub fn value_of(t: &pretext::train::Trainer, handle: &str) -> Vec<f32> {
    read_value(t, t.model().handle(handle).unwrap())
}

/// The golden input of `golden_dir` (input.bin in index.json's input_shape).
pub fn golden_input_of(golden_dir: &std::path::Path) -> Tensor<f32> {
    let idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir.join("index.json")).unwrap())
            .unwrap();
    Tensor::new(&dims(&idx["input_shape"]))
        .with_values(&read_f32(&golden_dir.join("input.bin")))
        .unwrap()
}

/// Inlines `m`'s signature `sig` and runs the trainer's passes on it (batch norm frozen,
/// folded if `fold`, custom gradients as `custom`), then imports it as tower `t`.
pub fn prepared_tower(
    m: &mut Loaded,
    sig: &pretext::savedmodel::Signature,
    fold: bool,
    custom: pretext::graph::custom::CustomGradients,
) -> pretext::Result<Tower> {
    let mut flat = inline_signature(&m.info, sig, &m.scope.graph())?;
    let none = std::collections::HashSet::new();
    let cx = pretext::graph::PassContext {
        info: &m.info,
        trainable: &none,
        bn: pretext::graph::bn::BnMode::Frozen,
        bn_momentum: 0.99,
        bn_fold: fold,
        recompute: pretext::graph::recompute::Recompute::Off,
        custom_gradients: custom,
        devices: &[],
        bn_sync: false,
    };
    pretext::train::prepare::prepare_graph(&mut flat, &cx)?;
    Tower::import(m, &flat, "t", None, None)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A training config on fixture `model` over the bundled images (batch 16; nsfwjs at 96 px).
pub fn cfg(model: &str, steps: u64) -> pretext::train::TrainConfig {
    let mut c = pretext::train::TrainConfig::new(fixture(model), images());
    c.steps = steps;
    c.batch = 16;
    c.size = if model == "nsfwjs_mobilenet_v2" {
        Some(96)
    } else {
        None
    };
    c
}

/// sum(output · w) over both axes of a rank-2 output: the loss the golden gradients are of
/// (scripts/golden.py).
pub fn weighted_sum_loss(
    scope: &tensorflow::Scope,
    output: tensorflow::Output,
    w: Tensor<f32>,
) -> tensorflow::Output {
    use tensorflow::ops;
    let mut s = scope.new_sub_scope("test_loss");
    let wc = ops::constant(w, &mut s).unwrap();
    let p = ops::mul(output, wc, &mut s).unwrap();
    let axes = ops::constant(&[0i32, 1][..], &mut s).unwrap();
    ops::sum(p, axes, &mut s).unwrap().into()
}

/// Runs scripts/check_export.py: TF Python loads `export` and must compute `expected` (raw f32)
/// on `input` (raw f32 of `shape`); Err holds its output when it does not.
pub fn check_export(
    export: &std::path::Path,
    original: &std::path::Path,
    input: &std::path::Path,
    shape: &[u64],
    expected: &std::path::Path,
    key: &str,
) -> Result<(), String> {
    let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let o = std::process::Command::new(python())
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_export.py"))
        .args(["--export", &arg(export), "--original", &arg(original)])
        .args(["--input", &arg(input), "--shape", &shape.join(",")])
        .args(["--expected", &arg(expected), "--key", key])
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap();
    match o.status.success() {
        true => Ok(()),
        false => Err(format!(
            "TF Python rejected the export: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}

/// Exports `t` under `base` (next version) and has TF Python check that the export computes
/// what pretext computes on the golden input of `golden_dir` (output `key`); the version
/// directory.
pub fn export_and_check(
    t: &pretext::train::Trainer,
    base: &std::path::Path,
    original: &std::path::Path,
    golden_dir: &std::path::Path,
    key: &str,
) -> Result<PathBuf, String> {
    let dir = pretext::export::export(t.model(), base, None).map_err(|e| e.to_string())?;
    if t.model().info.tf1_hub {
        check_tf1_export(t, base, &dir, original, golden_dir, key)?;
        return Ok(dir);
    }
    let x = golden_input_of(golden_dir);
    let y = t
        .model()
        .run_signature(t.signature(), &x, key)
        .map_err(|e| e.to_string())?;
    let expected = base.join("expected.bin");
    let b: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&expected, b).unwrap();
    let input = golden_dir.join("input.bin");
    check_export(&dir, original, &input, x.dims(), &expected, key)?;
    Ok(dir)
}

/// Runs scripts/check_tf1_hub.py on the export `dir` of a TF1 Hub module: hub.Module loads it
/// with the variant that trained (and the untagged one, if another) and computes what pretext computes for each
/// (output `key` of signature `default`) on the golden input of `golden_dir`.
fn check_tf1_export(
    t: &pretext::train::Trainer,
    base: &std::path::Path,
    dir: &std::path::Path,
    original: &std::path::Path,
    golden_dir: &std::path::Path,
    key: &str,
) -> Result<(), String> {
    let x = golden_input_of(golden_dir);
    let m = t.model();
    let mut expected = Vec::new();
    let mut variants = vec![(m.info.tags.join(","), t.signature().clone())];
    if m.info.inference.is_some() {
        variants.push((String::new(), m.inference_signature(t.signature())));
    }
    for (label, sig) in variants {
        let y = m.run_signature(&sig, &x, key).map_err(|e| e.to_string())?;
        let p = base.join(format!("expected_{label}.bin"));
        let b: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, b).unwrap();
        expected.push(format!("{label}={}", p.display()));
    }
    let shape: Vec<String> = x.dims().iter().map(|d| d.to_string()).collect();
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let o = std::process::Command::new(python())
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_tf1_hub.py"))
        .args(["--export", &arg(dir), "--original", &arg(original)])
        .args(["--input", &arg(&golden_dir.join("input.bin"))])
        .args(["--shape", &shape.join(","), "--key", key])
        .args(expected.iter().flat_map(|e| ["--expected", e.as_str()]))
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&o.stdout));
    match o.status.success() {
        true => Ok(()),
        false => Err(format!(
            "hub.Module rejected the export: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}
