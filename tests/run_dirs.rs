//! Run directories under stress: one process at a time (lock), no dead end after a kill at any
//! moment (no checkpoint yet, a damaged newest checkpoint, an export cut short or finished just
//! before the report), and the same fault gets the same words and exit code everywhere.
mod common;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cli::*;
use common::*;

const QUIET: &str = "logging:\n  tensorboard: false\n";

fn run_ok(exp: &Path, run: &Path) {
    let (code, stdout, err) = run_in(exp, run);
    assert_eq!(code, 0, "{stdout}\n{err}");
}

fn resume(run: &Path) -> (i32, String, String) {
    pretext(&["-v", "resume", run.to_str().unwrap()])
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_run_directory_in_use_is_refused_at_once_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!("{QUIET}train:\n  steps: 1000000\n  batch: 8\n  max_minutes: 2\n");
    let text = format!(
        "model:\n  path: {}\ndata:\n  folders: [{}]\nhead:\n  kind: dae\n{extra}",
        fixture("tiny_cnn").display(),
        images().display()
    );
    let exp = write(tmp.path(), "exp.yaml", &text);
    let run = tmp.path().join("run");
    let mut child = pretext_cmd()
        .args(["run", exp.to_str().unwrap(), "--run-dir"])
        .arg(&run)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !run.join("config.yaml").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let holder = format!("pretext process {}", child.id());
    let r = run.to_str().unwrap();
    for args in [
        vec!["resume", r],
        vec!["export", r, "--to", "/nonexistent/never"],
        vec!["run", exp.to_str().unwrap(), "--run-dir", r],
    ] {
        let (code, _, err) = pretext(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let l = error_line(&err);
        assert!(
            l.contains("in use by") && l.contains(&holder),
            "{args:?}: {l}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn two_runs_without_a_directory_get_two_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(
        tmp.path(),
        "twin.yaml",
        &experiment(&fixture("tiny_cnn"), &images(), "dae", 2, QUIET),
    );
    let spawn = || {
        pretext_cmd()
            .current_dir(tmp.path())
            .args(["run", exp.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (out(a.join().unwrap()), out(b.join().unwrap()))
    });
    assert_eq!((a.0, b.0), (0, 0), "{}\n{}", a.2, b.2);
    assert_eq!(names(&tmp.path().join("runs")), ["twin-1", "twin-2"]);
}

#[test]
fn a_run_killed_before_its_first_checkpoint_resumes_from_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(
        tmp.path(),
        "exp.yaml",
        &experiment(&fixture("tiny_cnn"), &images(), "dae", 3, QUIET),
    );
    let run = tmp.path().join("run");
    run_ok(&exp, &run);
    let first = losses(&run);
    // What a kill before the first checkpoint leaves: the resolved config alone.
    for f in ["checkpoints", "report.json", "report.md"] {
        let p = run.join(f);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    let (code, _, err) = resume(&run);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("training again from step 0"), "{err}");
    assert_eq!(report(&run)["status"], "finished");
    assert_eq!(losses(&run), first, "the same run, from the same seed");
}

#[test]
fn resume_passes_over_a_damaged_newest_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!("{QUIET}checkpoint:\n  every: 2\n  keep: 3\n");
    let exp = write(
        tmp.path(),
        "exp.yaml",
        &experiment(&fixture("tiny_cnn"), &images(), "dae", 4, &extra),
    );
    let run = tmp.path().join("run");
    run_ok(&exp, &run);
    let first = losses(&run);
    let newest = run.join("checkpoints/ckpt-4");
    let data = std::fs::read_dir(&newest)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".data-"))
        .unwrap();
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::write(&data, vec![0x5au8; len as usize]).unwrap();
    std::fs::remove_file(run.join("report.json")).unwrap();
    let (code, _, err) = resume(&run);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("ckpt-4") && err.contains("passed over"),
        "{err}"
    );
    assert!(err.contains("at step 2"), "{err}");
    assert_eq!(losses(&run), first, "steps 3 and 4 again, exactly");
}

#[test]
fn an_export_finished_just_before_a_kill_is_not_exported_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let extra = format!("{QUIET}export:\n  dir: {}\n", served.display());
    let exp = write(
        tmp.path(),
        "exp.yaml",
        &experiment(&fixture("tiny_cnn"), &images(), "dae", 2, &extra),
    );
    let run = tmp.path().join("run");
    run_ok(&exp, &run);
    assert_eq!(names(&served), ["1"]);
    // Killed after the export's rename, before the report: resume finishes without a copy.
    std::fs::remove_file(run.join("report.json")).unwrap();
    let (code, _, err) = resume(&run);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already exported"), "{err}");
    assert_eq!(names(&served), ["1"]);
    assert_eq!(report(&run)["export"], served.join("1").to_str().unwrap());
    // A temp folder of an export killed midway (its process is gone) is cleaned by the next.
    let stale: PathBuf = served.join(format!(".tmp-7-{}", i32::MAX));
    std::fs::create_dir_all(stale.join("variables")).unwrap();
    let (code, _, err) = pretext(&["export", run.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(names(&served), ["1", "2"]);
}

/// A copy of tiny_cnn in `tmp` with `damage` done to it, and an experiment on it.
fn damaged(tmp: &Path, damage: impl Fn(&Path)) -> (PathBuf, PathBuf) {
    let model = tmp.join("model");
    copy_dir(&fixture("tiny_cnn"), &model);
    damage(&model);
    let exp = write(
        tmp,
        "exp.yaml",
        &experiment(&model, &images(), "dae", 2, QUIET),
    );
    (model, exp)
}

#[test]
fn damaged_models_are_one_fault_with_one_code_everywhere() {
    let data = "variables/variables.data-00000-of-00001";
    let cases: Vec<(&str, Box<dyn Fn(&Path)>)> = vec![
        (
            "truncated variables",
            Box::new(move |m: &Path| {
                let p = m.join(data);
                let len = std::fs::metadata(&p).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            }),
        ),
        (
            "missing variables",
            Box::new(|m: &Path| std::fs::remove_dir_all(m.join("variables")).unwrap()),
        ),
        (
            "corrupt saved_model.pb",
            Box::new(|m: &Path| std::fs::write(m.join("saved_model.pb"), b"\x0a\xff\xff").unwrap()),
        ),
    ];
    for (what, damage) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (model, exp) = damaged(tmp.path(), damage);
        let m = model.to_str().unwrap();
        let i = images();
        for args in [
            vec!["validate", exp.to_str().unwrap()],
            vec!["inspect", m],
            vec![
                "train",
                "--model",
                m,
                "--images",
                i.to_str().unwrap(),
                "--steps",
                "1",
            ],
        ] {
            let (code, _, err) = pretext(&args);
            assert_eq!(code, 2, "{what}: {args:?}: {err}");
            assert!(error_line(&err).contains(m), "{what}: {args:?}: {err}");
        }
    }
}

#[test]
fn settings_that_mean_nothing_are_refused_with_their_key() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(
        tmp.path(),
        "exp.yaml",
        &experiment(&fixture("tiny_cnn"), &images(), "dae", 2, QUIET),
    );
    let e = exp.to_str().unwrap();
    let (code, _, err) = pretext(&["validate", e, "--set", "train.steps="]);
    assert_eq!(code, 2, "{err}");
    let l = error_line(&err);
    assert!(
        l.contains("train.steps") && l.contains("empty value"),
        "{l}"
    );
    let (code, _, err) = train_tiny(&["--steps", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        error_line(&err).contains("steps") && !err.contains("NaN"),
        "{err}"
    );
    let deep = format!(
        "model: {{path: x}}\ndata: {}{}\n",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    let p = write(tmp.path(), "deep.yaml", &deep);
    let (code, _, err) = pretext(&["validate", p.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(error_line(&err).contains("nested deeper than 64"), "{err}");
}

#[test]
fn an_unknown_signature_and_an_existing_export_version_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(served.join("1")).unwrap();
    let extra = format!(
        "{QUIET}export:\n  dir: {}\n  version: 1\n",
        served.display()
    );
    let exp = write(
        tmp.path(),
        "exp.yaml",
        &experiment(&fixture("tiny_cnn"), &images(), "dae", 2, &extra),
    );
    let run = tmp.path().join("run");
    let (code, _, err) = run_in(&exp, &run);
    assert_eq!(code, 2, "{err}");
    assert!(error_line(&err).contains("export.version"), "{err}");
    assert!(!run.exists(), "a refused run leaves no directory");
    let (code, _, err) = eval_tiny(&["--signature", "nosuch"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        error_line(&err).contains("no signature named 'nosuch'"),
        "{err}"
    );
}
