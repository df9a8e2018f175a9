//! Retention terms and drift reports (#22): L2-SP's gradient is the analytic α (w − w₀); the
//! distillation term is zero before the first step and its gradient equals TF Python's
//! (scripts/reference/retain.py); a run scores its retain sets before, during and after
//! training, keeps the best model by the stated rule and resumes exactly with a retain term.
#[path = "../common/mod.rs"]
mod common;
mod runs;
use common::*;

use std::path::Path;
use std::process::Command;

use pretext::heads::{DaeConfig, HeadConfig};
use pretext::retain::{DistillConfig, DistillLoss, L2spConfig, RetainConfig};
use pretext::train::{TrainConfig, Trainer};
use serde_json::json;
use tensorflow::Tensor;

/// tiny_cnn with a denoising head, batch norm as saved (not folded: TF Python's rounding).
fn config(retain: RetainConfig) -> TrainConfig {
    let mut c = cfg("tiny_cnn", 5);
    c.batch = 8;
    c.seed = 3;
    c.head = HeadConfig::Dae(DaeConfig::default());
    c.bn_fold = false;
    c.retain = retain;
    c
}

/// Moves every model variable the optimizer trains by a deterministic few percent; returns
/// (handle, original, perturbed) values.
fn perturb(t: &mut Trainer) -> Vec<(String, Vec<f32>, Tensor<f32>)> {
    let names: Vec<String> = t
        .param_names()
        .iter()
        .filter(|n| !n.starts_with("head/"))
        .cloned()
        .collect();
    let mut out = Vec::new();
    for (k, name) in names.into_iter().enumerate() {
        let h = t.model().handle(&name).unwrap();
        let v = t.read_variable(&h).unwrap();
        let scale = v.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(0.05);
        let new: Vec<f32> = v
            .iter()
            .enumerate()
            .map(|(i, x)| x + 0.05 * scale * (((i * 7 + k * 13) % 11) as f32 / 5.0 - 1.0))
            .collect();
        let nt = Tensor::new(v.dims()).with_values(&new).unwrap();
        t.assign_variable(&h, &nt).unwrap();
        out.push((name, v.to_vec(), nt));
    }
    out
}

#[test]
fn l2sp_gradient_is_alpha_times_the_drift_from_the_original_weights() {
    let alpha = 0.3f32;
    let mut t = Trainer::new(&config(RetainConfig::L2sp(L2spConfig { weight: alpha }))).unwrap();
    let xs = t.next_batch().unwrap();
    let (_, v) = t.evaluate(&xs, &["retain/term"]).unwrap();
    assert_eq!(v[0][0], 0.0, "no drift before the first step");
    let moved = perturb(&mut t);
    assert!(moved.len() >= 6, "{} variables train", moved.len());
    let (grads, v) = t
        .gradients_of("retain/loss", &xs, &["retain/term"])
        .unwrap();
    assert_eq!(
        grads.len(),
        moved.len(),
        "a gradient to every variable that trains"
    );
    let mut half_sq = 0.0f64;
    for (name, w0, w) in &moved {
        let (_, g) = grads.iter().find(|(n, _)| n == name).unwrap();
        let want: Vec<f32> = w.iter().zip(w0).map(|(a, b)| alpha * (a - b)).collect();
        let err = max_abs_diff(g, &want);
        let top = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(err <= 1e-6 * top.max(1.0), "{name}: {err} (largest {top})");
        half_sq += w
            .iter()
            .zip(w0)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / 2.0;
    }
    let term = v[0][0] as f64;
    assert!(
        (term - half_sq).abs() <= 1e-5 * half_sq,
        "term {term} vs ½Σ‖w − w₀‖² {half_sq}"
    );
}

fn put(dir: &Path, file: &str, v: &Tensor<f32>) -> serde_json::Value {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(dir.join(file), bytes).unwrap();
    json!({"file": file, "shape": v.dims()})
}

#[test]
fn distillation_is_zero_before_training_and_its_gradient_matches_tf_python() {
    for loss in [DistillLoss::Cosine, DistillLoss::Mse] {
        let weight = 0.7;
        let retain = RetainConfig::Distill(DistillConfig { weight, loss });
        let mut t = Trainer::new(&config(retain)).unwrap();
        let xs = t.next_batch().unwrap();
        let (_, v) = t.evaluate(&xs, &["retain/term"]).unwrap();
        assert!(
            v[0][0].abs() <= 1e-6,
            "{loss:?}: term {} at step 0",
            v[0][0]
        );
        let moved = perturb(&mut t);
        let (grads, vals) = t
            .gradients_of("retain/loss", &xs, &["retain/input0", "retain/loss"])
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let vars: Vec<serde_json::Value> = moved
            .iter()
            .enumerate()
            .map(|(i, (name, _, w))| {
                let mut e = put(d, &format!("var_{i}.bin"), w);
                e["handle"] = json!(name);
                e
            })
            .collect();
        let manifest = json!({
            "model": fixture("tiny_cnn"),
            "output_key": output_key("tiny_cnn"),
            "input": put(d, "input.bin", &vals[0]),
            "weight": weight,
            "loss": if loss == DistillLoss::Cosine { "cosine" } else { "mse" },
            "vars": vars,
        });
        std::fs::write(d.join("manifest.json"), manifest.to_string()).unwrap();
        let o = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference/retain.py"))
            .arg(d)
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r: serde_json::Value =
            serde_json::from_str(stdout.lines().rfind(|l| l.starts_with('{')).unwrap()).unwrap();
        let (ours, theirs) = (vals[1][0] as f64, r["term"].as_f64().unwrap());
        assert!(
            theirs > 0.0,
            "{loss:?}: the perturbation moves the embedding"
        );
        assert!(
            (ours - theirs).abs() <= 1e-4 * theirs,
            "{loss:?}: term {ours} vs TF {theirs}"
        );
        let mut worst = 0.0f64;
        for (name, g) in &grads {
            let want: Vec<f64> = r["grads"][name]
                .as_array()
                .unwrap_or_else(|| panic!("{name} not in the reference"))
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(want.len(), g.len(), "{name}");
            let top = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let err = g
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0f64, f64::max);
            worst = worst.max(err / top.max(1e-12));
        }
        println!(
            "{loss:?}: term {ours:.6e} vs TF {theirs:.6e}; worst gradient error relative to \
             each variable's largest: {worst:.2e} over {} variables",
            grads.len()
        );
        assert!(worst <= 1e-4, "{loss:?}: gradient differs by {worst:.2e}");
    }
}
