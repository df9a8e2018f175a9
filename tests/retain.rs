//! Retention terms and drift reports (#22): L2-SP's gradient is the analytic α (w − w₀); the
//! distillation term is zero before the first step and its gradient equals TF Python's
//! (scripts/reference/retain.py); a run scores its retain sets before, during and after
//! training, keeps the best model by the stated rule and resumes exactly with a retain term.
mod common;
use common::cli::*;
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

/// A labeled set of another "domain": three of the labeled set's classes.
fn retain_set(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("other");
    for split in ["train", "test"] {
        for c in ["bag", "boot", "coat"] {
            let src = labeled().join(split).join(c);
            let dst = out.join(split).join(c);
            std::fs::create_dir_all(&dst).unwrap();
            for e in std::fs::read_dir(&src).unwrap().flatten().take(15) {
                std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
            }
        }
    }
    out
}

const QUIET: &str = "logging:\n  every: 1\n  tensorboard: false\n";

#[test]
fn resume_is_exact_with_a_retain_term() {
    let tmp = tempfile::tempdir().unwrap();
    for retain in ["{kind: l2sp, weight: 0.5}", "{kind: distill, weight: 2.0}"] {
        let extra = format!("{QUIET}checkpoint:\n  every: 3\n  keep: 3\nretain: {retain}\n");
        let model = fixture("mobilenet_v2_035");
        let exp = write(
            tmp.path(),
            "exp.yaml",
            &experiment(&model, &images(), "dae", 6, &extra),
        );
        let run = tmp.path().join(format!("run-{}", retain.len()));
        run_ok(&exp, &run);
        let first = losses(&run);
        std::fs::remove_dir_all(run.join("checkpoints/ckpt-6")).unwrap();
        std::fs::remove_file(run.join("report.json")).unwrap();
        let (code, _, err) = pretext(&["resume", run.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("at step 3"), "{err}");
        assert_eq!(losses(&run), first, "{retain}: steps 4-6 again, exactly");
        // The anchors are the run's own variables, checkpointed (not re-made from the model
        // on disk, which would hide a lost anchor here: it still holds the original values).
        let index = std::fs::read(run.join("checkpoints/ckpt-3/variables.index")).unwrap();
        let key = if retain.contains("l2sp") {
            "retain/l2sp"
        } else {
            "retain/original"
        };
        assert!(
            index.windows(key.len()).any(|w| w == key.as_bytes()),
            "{retain}: no {key} variable in the checkpoint"
        );
        let r = report(&run);
        let tags: Vec<&str> = r["head_scalars"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["tag"].as_str().unwrap())
            .collect();
        assert!(
            tags.iter().any(|t| t.starts_with("loss/retain/")),
            "{tags:?}"
        );
    }
}

#[test]
fn a_run_scores_its_retain_sets_before_during_and_after_and_keeps_the_best() {
    let tmp = tempfile::tempdir().unwrap();
    let other = retain_set(tmp.path());
    let extra = format!(
        "logging:\n  every: 1\noptimizer:\n  learning_rate: 0.01\nretain: {{kind: distill, weight: 0.5}}\n\
         eval:\n  labeled: {}\n  retain: [{}]\n  every: 2\n  keep_best: true\n  max_retain_drop: 0.02\n",
        labeled().display(),
        other.display()
    );
    let exp = write(
        tmp.path(),
        "exp.yaml",
        &experiment(&fixture("tiny_cnn"), &images(), "dae", 6, &extra),
    );
    // `validate` says what the run will hold on to and score.
    let (code, out, err) = pretext(&["validate", exp.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("retain: distill (weight 0.5)"), "{out}");
    assert!(
        out.contains(&format!(
            "eval.retain: {}: 3 classes, 45 train / 45 test images",
            other.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "eval.keep_best: best target kNN with every retain set within 0.02, every 2 steps"
        ),
        "{out}"
    );
    let run = tmp.path().join("run");
    run_ok(&exp, &run);
    // Evaluating during training changes nothing the training sees.
    let plain = write(
        tmp.path(),
        "plain.yaml",
        &experiment(
            &fixture("tiny_cnn"),
            &images(),
            "dae",
            6,
            "logging:\n  every: 1\n  tensorboard: false\noptimizer:\n  learning_rate: 0.01\n\
             retain: {kind: distill, weight: 0.5}\n",
        ),
    );
    run_ok(&plain, &tmp.path().join("plain"));
    assert_eq!(losses(&run), losses(&tmp.path().join("plain")));
    let r = report(&run);
    assert_eq!(
        r["keep_best_met"].as_bool(),
        Some(
            r["evaluations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["within"] == true)
        )
    );
    for when in ["eval_before", "eval_after"] {
        let e = &r[when];
        assert!(e["knn_top1"].as_f64().is_some(), "{when}: {e}");
        let sets = e["retain"].as_array().unwrap();
        assert_eq!(sets.len(), 1, "{when}: {e}");
        assert_eq!(sets[0]["set"].as_str().unwrap(), other.to_str().unwrap());
        assert!(sets[0]["knn_top1"].as_f64().is_some() && sets[0]["linear_probe"].is_f64());
    }
    let points = r["evaluations"].as_array().unwrap();
    let steps: Vec<u64> = points.iter().map(|p| p["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [2, 4, 6], "{points:?}");
    let before = r["eval_before"]["retain"][0]["knn_top1"].as_f64().unwrap();
    let mut best: Option<(u64, f64)> = None;
    for p in points {
        let drop = before - p["scores"]["retain"][0]["knn_top1"].as_f64().unwrap();
        let within = drop <= 0.02 + 1e-6;
        assert_eq!(p["within"].as_bool().unwrap(), within, "{p}");
        let knn = p["scores"]["knn_top1"].as_f64().unwrap();
        if within && best.is_none_or(|(_, b)| knn > b) {
            best = Some((p["step"].as_u64().unwrap(), knn));
        }
    }
    let last = &points[2];
    let kept = r["kept_step"].as_u64();
    let expect = match best {
        Some((s, k))
            if s != 6
                && (k > last["scores"]["knn_top1"].as_f64().unwrap()
                    || !last["within"].as_bool().unwrap()) =>
        {
            Some(s)
        }
        _ => None,
    };
    assert_eq!(kept, expect, "kept step by the rule: {points:?}");
    if let Some(s) = kept {
        // Scored again after the restore: the kept model's scores come back.
        let p = points.iter().find(|p| p["step"] == s).unwrap();
        assert_eq!(r["eval_after"]["knn_top1"], p["scores"]["knn_top1"]);
        assert!(run.join(format!("best/ckpt-{s}")).is_dir());
    }
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("| retain: other |"), "{md}");
    let ev = events(&run.join("tensorboard/eval"));
    for tag in [
        "eval/knn_top1",
        "eval/retain/other/knn_top1",
        "eval/retain/other/linear_probe",
    ] {
        let at: Vec<u64> = ev["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("{tag}: {ev}"))
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect();
        assert_eq!(at, [0, 2, 4, 6], "{tag}");
    }
}

#[test]
fn bad_retain_settings_name_their_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = experiment(&fixture("tiny_cnn"), &images(), "dae", 5, "");
    let lab = labeled();
    let check = |extra: &str, want: &[&str]| {
        let p = write(tmp.path(), "exp.yaml", &format!("{ok}{extra}"));
        let (code, _, err) = pretext(&["validate", p.to_str().unwrap()]);
        assert_eq!(code, 2, "{extra}: {err}");
        let line = error_line(&err);
        for w in want {
            assert!(line.contains(w), "{extra}: {line}");
        }
    };
    check(
        "retain: {kind: l2sp, weight: -1}\n",
        &["retain.weight", "> 0"],
    );
    check(
        "retain: {kind: distill, weight: 0}\n",
        &["retain.weight", "kind: none"],
    );
    check(
        "retain: {kind: none, weight: 2}\n",
        &["unknown field `weight`"],
    );
    check(
        "retain: {kind: ewc}\n",
        &["unknown variant `ewc`", "`distill`"],
    );
    let ev = format!("eval:\n  labeled: {}\n", lab.display());
    check(
        &format!("{ev}  keep_best: true\n"),
        &["eval.keep_best", "eval.every"],
    );
    check(
        &format!("{ev}  retain: [{}]\n", lab.display()),
        &["eval.retain", "also eval.labeled"],
    );
    check(
        &format!("{ev}  retain: [{}]\n", tmp.path().join("nope").display()),
        &["eval.retain", "nope"],
    );
    check(
        &format!("{ev}  max_retain_drop: 3\n"),
        &["eval.max_retain_drop"],
    );
    let other = retain_set(tmp.path());
    let twice = format!(
        "{ev}  retain: [{}, {}/.]\n",
        other.display(),
        other.display()
    );
    check(&twice, &["eval.retain", "listed twice"]);
    let (code, _, err) = train_tiny(&["--retain-weight", "0.1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--retain"), "{err}");
}
