//! Running the `pretext` binary on experiment files in tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The pretext binary, in the environment users have (no TF variable set).
pub fn pretext_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pretext"));
    c.env_remove("TF_ENABLE_ONEDNN_OPTS")
        .env_remove("TF_CPP_MIN_LOG_LEVEL")
        .env_remove("TF_CONFIG");
    c
}

/// (exit code, stdout, stderr).
pub fn out(o: Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// Runs pretext; `train` without `--run-dir` runs in a temporary directory (its default run
/// directory, runs/train-N, is made in the working directory).
pub fn pretext(args: &[&str]) -> (i32, String, String) {
    let mut c = pretext_cmd();
    let cwd = tempfile::tempdir().unwrap();
    if args.first() == Some(&"train") && !args.contains(&"--run-dir") {
        c.current_dir(cwd.path());
    }
    out(c.args(args).output().unwrap())
}

/// The one `error:` line of a failed command.
pub fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    lines[0].to_string()
}

/// A small experiment on `model` (a fixture name or a path) over `images`.
pub fn experiment(model: &Path, images: &Path, head: &str, steps: u64, extra: &str) -> String {
    format!(
        "model:\n  path: {}\ndata:\n  folders: [{}]\nhead:\n  kind: {head}\ntrain:\n  steps: {steps}\n  batch: 8\n{extra}",
        model.display(),
        images.display()
    )
}

/// Writes `text` as `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The `report.json` of a run directory.
pub fn report(run: &Path) -> serde_json::Value {
    let p = run.join("report.json");
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

pub fn losses(run: &Path) -> Vec<f32> {
    report(run)["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// Copies a directory tree.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let d = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &d);
        } else {
            std::fs::copy(e.path(), d).unwrap();
        }
    }
}

/// `pretext run EXP --run-dir RUN`, which must succeed; returns its stdout.
pub fn run_ok(exp: &Path, run: &Path) -> String {
    let (code, stdout, err) = pretext(&[
        "run",
        exp.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    stdout
}

/// `pretext train` on the tiny_cnn fixture over the test images, with `extra` flags.
pub fn train_tiny(extra: &[&str]) -> (i32, String, String) {
    let model = super::fixture("tiny_cnn");
    let images = super::images();
    let mut args = vec![
        "train",
        "--model",
        model.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    pretext(&args)
}

/// `pretext eval` of the tiny_cnn fixture on the labeled test set, with `extra` flags.
pub fn eval_tiny(extra: &[&str]) -> (i32, String, String) {
    let model = super::fixture("tiny_cnn");
    let labeled = super::labeled();
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--labeled",
        labeled.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    pretext(&args)
}

/// `pretext run EXP --run-dir RUN`.
pub fn run_in(exp: &Path, run: &Path) -> (i32, String, String) {
    pretext(&[
        "run",
        exp.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ])
}

/// The scalars and images TensorBoard's own reader finds in the event files of `dir`
/// (scripts/read_events.py).
pub fn events(dir: &Path) -> serde_json::Value {
    let o = Command::new(super::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/read_events.py"
        ))
        .arg(dir)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}
