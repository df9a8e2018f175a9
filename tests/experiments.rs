//! YAML experiments through the CLI: located errors for bad input, the run directory (config,
//! report, checkpoints, TensorBoard events read back by TensorBoard's reader), exact resume
//! after Ctrl-C, and a non-finite loss stopping the run.
mod common;
use common::cli::*;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

/// Runs `validate` on `text` and returns its one error line (exit code 2 asserted).
fn invalid(text: &str, sets: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "exp.yaml", text);
    let mut args = vec!["validate", p.to_str().unwrap()];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (code, _, err) = pretext(&args);
    assert_eq!(code, 2, "{err}");
    error_line(&err).replace(&format!("{}", p.display()), "exp.yaml")
}

#[test]
fn bad_experiments_name_file_line_column_key_and_choices() {
    let ok = experiment(&fixture("tiny_cnn"), &images(), "dae", 5, "");
    let empty = invalid("", &[]);
    assert!(
        empty.contains("exp.yaml: (file): the experiment file is empty"),
        "{empty}"
    );
    let garbage = invalid("model: [unclosed\n  - : :\n", &[]);
    assert!(garbage.starts_with("error: exp.yaml:"), "{garbage}");
    let kind = invalid(&ok.replace("kind: dae", "kind: simclrr"), &[]);
    assert!(
        kind.contains("exp.yaml:6:")
            && kind.contains("unknown variant `simclrr`")
            && kind.contains("`moco`"),
        "{kind}"
    );
    let lr = invalid(&format!("{ok}optimizer:\n  learning_rate: -0.001\n"), &[]);
    assert_eq!(
        lr,
        "error: exp.yaml:11:3: optimizer.learning_rate: -0.001 must be a positive number"
    );
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-model");
    let m = invalid(
        &ok.replace(
            fixture("tiny_cnn").to_str().unwrap(),
            missing.to_str().unwrap(),
        ),
        &[],
    );
    assert!(
        m.contains("exp.yaml:2:3: model.path") && m.contains("no-such-model"),
        "{m}"
    );
    let file = fixture("tiny_cnn").join("saved_model.pb");
    let f = invalid(&ok, &[&format!("model.path={}", file.display())]);
    assert!(f.contains("model.path") && f.contains("is a file"), "{f}");
    let no_images = tempfile::tempdir().unwrap();
    std::fs::write(no_images.path().join("notes.txt"), "not an image").unwrap();
    let d = invalid(
        &ok,
        &[&format!("data.folders=[{}]", no_images.path().display())],
    );
    assert!(
        d.contains("data.folders") && d.contains("no readable image"),
        "{d}"
    );
    let x = invalid(
        &format!("{ok}export:\n  dir: /proc/pretext-cannot-write-here\n"),
        &[],
    );
    assert!(
        x.contains("exp.yaml:11:3: export.dir") && x.contains("not writable"),
        "{x}"
    );
    let unknown = invalid(&format!("{ok}logging:\n  evry: 3\n"), &[]);
    assert!(
        unknown.contains("exp.yaml:11:3: logging: unknown field `evry`")
            && unknown.contains("`every`"),
        "{unknown}"
    );
    let dup = invalid(&format!("{ok}train:\n  steps: 3\n"), &[]);
    assert!(dup.contains("duplicate entry with key \"train\""), "{dup}");
}

#[test]
fn a_run_writes_config_report_checkpoints_and_tensorboard_events() {
    let tmp = tempfile::tempdir().unwrap();
    // A corrupt JPEG among the images: skipped, counted, the run goes on.
    let imgs = tmp.path().join("images");
    copy_dir(&images(), &imgs);
    std::fs::write(imgs.join("0000-corrupt.jpg"), b"\xff\xd8\xff\xe0 truncated").unwrap();
    let extra = format!(
        "checkpoint:\n  every: 5\n  keep: 2\nlogging:\n  every: 5\nexport:\n  dir: {}\n",
        tmp.path().join("export").display()
    );
    let p = write(
        tmp.path(),
        "exp.yaml",
        &experiment(&fixture("tiny_cnn"), &imgs, "dae", 20, &extra),
    );
    let run = tmp.path().join("run");
    let stdout = run_ok(&p, &run);
    assert!(stdout.contains("exported:"), "{stdout}");
    let r = report(&run);
    assert_eq!(r["status"], "finished");
    assert_eq!(r["steps"], 20);
    assert_eq!(r["losses"].as_array().unwrap().len(), 20);
    let skipped = r["images_skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0][0]
        .as_str()
        .unwrap()
        .ends_with("0000-corrupt.jpg"));
    assert!(run.join("report.md").is_file() && run.join("config.yaml").is_file());
    let ckpts: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut sorted = ckpts.clone();
    sorted.sort();
    assert_eq!(sorted, ["ckpt-15", "ckpt-20"], "last 2 kept");
    assert!(tmp.path().join("export/1/saved_model.pb").is_file());
    // The resolved config is itself a valid experiment.
    let (code, _, err) = pretext(&["validate", run.join("config.yaml").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // TensorBoard's reader sees the scalars at steps 5..20 and the input images.
    let ev = events(&run.join("tensorboard"));
    for tag in [
        "loss",
        "loss/dae",
        "learning_rate",
        "gradient_norm",
        "images_per_second",
    ] {
        let steps: Vec<u64> = ev["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no scalar {tag}: {ev}"))
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [5, 10, 15, 20], "{tag}");
    }
    let losses = r["losses"].as_array().unwrap();
    let tb_loss = ev["scalars"]["loss"][0][1].as_f64().unwrap();
    assert!(
        (tb_loss - losses[4].as_f64().unwrap()).abs() < 1e-6,
        "step-5 loss in TensorBoard"
    );
    let images = ev["images"].as_object().unwrap();
    assert!(
        images.keys().any(|k| k.starts_with("input/0")),
        "{images:?}"
    );
    assert!(
        images.keys().any(|k| k.starts_with("dae/reconstruction")),
        "{images:?}"
    );
    let hs = r["head_scalars"].as_array().unwrap();
    assert!(hs.iter().any(|h| h["tag"] == "loss/dae"), "{hs:?}");
}

/// Starts a run, sends SIGINT once it logs step `at`, returns (exit code, stderr).
fn interrupt_at(exp: &std::path::Path, run: &std::path::Path, at: u64) -> (i32, String) {
    interrupt_args_at(
        &[
            "run",
            exp.to_str().unwrap(),
            "--run-dir",
            run.to_str().unwrap(),
        ],
        at,
    )
}

/// Runs pretext with `args`, sends SIGINT when the log reports step `at`; (code, stderr).
fn interrupt_args_at(args: &[&str], at: u64) -> (i32, String) {
    let mut child = pretext_cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    let mut sent = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if !sent && line.contains(&format!("step {at}/")) {
            unsafe { libc_kill(child.id() as i32, 2) };
            sent = true;
        }
        err += &line;
        err.push('\n');
    }
    (child.wait().unwrap().code().unwrap_or(-1), err)
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn ctrl_c_checkpoints_and_resume_reproduces_the_uninterrupted_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "checkpoint:\n  every: 10\nlogging:\n  every: 1\n  tensorboard: false\n";
    for head in ["simclr", "dae", "inpaint", "moco", "byol"] {
        let text = experiment(&fixture("mobilenet_v2_035"), &images(), head, 40, extra);
        let p = write(tmp.path(), &format!("{head}.yaml"), &text);
        let (a, b) = (
            tmp.path().join(format!("{head}-a")),
            tmp.path().join(format!("{head}-b")),
        );
        run_ok(&p, &a);
        let (code, err) = interrupt_at(&p, &b, 13);
        assert_eq!(code, 130, "{err}");
        assert!(
            err.contains(&format!("resume with: pretext resume {}", b.display())),
            "{err}"
        );
        let stopped = report(&b)["steps"].as_u64().unwrap();
        assert!((13..40).contains(&stopped), "stopped at {stopped}");
        let (code, _, err) = pretext(&["resume", b.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let (la, lb) = (losses(&a), losses(&b));
        assert_eq!(la.len(), 40);
        assert_eq!(lb.len(), 40);
        let worst = la[stopped as usize..]
            .iter()
            .zip(&lb[stopped as usize..])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        println!("{head}: interrupted after step {stopped}; max |resumed − uninterrupted| over steps {}..40 = {worst:e}", stopped + 1);
        assert!(worst <= 1e-6, "{head}: resumed losses differ by {worst}");
        assert_eq!(la[..stopped as usize], lb[..stopped as usize]);
    }
}

#[test]
fn train_flags_are_an_experiment_that_checkpoints_on_ctrl_c_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, imgs) = (fixture("tiny_cnn"), images());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let args = |run: &std::path::Path| -> Vec<String> {
        [
            "train",
            "--model",
            model.to_str().unwrap(),
            "--images",
            imgs.to_str().unwrap(),
            "--steps",
            "200",
            "--batch",
            "4",
            "--head",
            "simclr",
            "--lr",
            "0.001",
            "--set",
            "logging.every=1",
            "--set",
            "checkpoint.every=10",
            "--set",
            "logging.tensorboard=false",
            "--run-dir",
            run.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a_args = args(&a);
    let (code, _, err) = pretext(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    // The flags are the experiment's keys, resolved in the run directory.
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(a.join("config.yaml")).unwrap()).unwrap();
    assert_eq!(config["train"]["batch"], serde_yaml::Value::from(4));
    assert_eq!(config["train"]["steps"], serde_yaml::Value::from(200));
    assert_eq!(config["head"]["kind"], serde_yaml::Value::from("simclr"));
    let lr = config["optimizer"]["learning_rate"].as_f64().unwrap();
    assert!((lr - 0.001).abs() < 1e-9, "{lr}");
    let b_args = args(&b);
    let (code, err) = interrupt_args_at(&b_args.iter().map(String::as_str).collect::<Vec<_>>(), 7);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("resume with: pretext resume"), "{err}");
    let stopped = report(&b)["steps"].as_u64().unwrap();
    assert!((7..200).contains(&stopped), "stopped at {stopped}");
    let (code, _, err) = pretext(&["resume", b.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!((la.len(), lb.len()), (200, 200));
    let worst = la
        .iter()
        .zip(&lb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "resumed losses differ by {worst}");
}

#[test]
fn train_flags_name_themselves_in_errors_and_show_the_schema_defaults() {
    for (flags, want) in [
        (&["--steps", "0"][..], "error: --steps: must be ≥ 1"),
        (&["--batch", "0"][..], "error: --batch: must be ≥ 1"),
        (
            &["--temperature", "0.5"][..],
            "error: --temperature: unknown field `temperature`",
        ),
        (
            &["--head", "moco", "--queue-size", "100"][..],
            "error: --queue-size: 100 must be",
        ),
        (
            &["--optimizer", "adam", "--set", "optimizer.nesterov=true"][..],
            "optimizer.nesterov",
        ),
        (&["--lr", "abc"][..], "'--lr <LR>'"),
        (&["--steps", ""][..], "'--steps <STEPS>'"),
        (&["--signature", ""][..], "error: --signature: empty value"),
        (&["--multi", "dae=0"][..], "error: --multi: "),
        (
            &["--head", "simclr", "--set", "head.temperature=abc"][..],
            "--set head.temperature=abc",
        ),
    ] {
        let (code, _, err) = train_tiny(flags);
        assert_eq!(code, 2, "{flags:?}: {err}");
        assert!(
            error_line(&err).starts_with(want) || error_line(&err).contains(want),
            "{flags:?}: {err}"
        );
    }
    // bench refuses what it would silently not do.
    let (model, imgs) = (fixture("tiny_cnn"), images());
    let (m, i) = (model.to_str().unwrap(), imgs.to_str().unwrap());
    let (code, _, err) = pretext(&["bench", "--model", m, "--images", i, "--export", "/tmp/x"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        error_line(&err).starts_with("error: --export: bench writes no model"),
        "{err}"
    );
    let (code, out, _) = pretext(&["train", "--help"]);
    assert_eq!(code, 0);
    for d in [
        "[default: 32]",
        "[default: adam]",
        "[default: 0.0003]",
        "[default: 100]",
    ] {
        assert!(out.contains(d), "{d} missing from:\n{out}");
    }
}

#[test]
fn a_non_finite_loss_stops_the_run_and_names_step_and_head() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "optimizer:\n  kind: sgd\n  momentum: 0\n  learning_rate: 1.0e+30\ncheckpoint:\n  every: 1\nlogging:\n  tensorboard: false\n";
    let p = write(
        tmp.path(),
        "exp.yaml",
        &experiment(&fixture("tiny_cnn"), &images(), "simclr", 20, extra),
    );
    let run = tmp.path().join("run");
    let (code, _, err) = pretext(&[
        "run",
        p.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    let l = error_line(&err);
    assert!(
        l.contains("non-finite loss at step") && l.contains("simclr"),
        "{l}"
    );
    assert!(l.contains("last good checkpoint is step"), "{l}");
    assert_eq!(report(&run)["status"], "failed");
    let why = report(&run)["error"].as_str().unwrap().to_string();
    assert!(why.contains("non-finite loss at step"), "{why}");
}
