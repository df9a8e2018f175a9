//! The retain terms in whole runs, through the CLI: retain sets scored before, during and after,
//! `eval.keep_best`, resume, and the settings' errors.
use std::path::Path;

use super::common::cli::*;
use super::common::*;

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
