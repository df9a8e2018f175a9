//! Nothing is lost: SIGKILL at random moments of a run with in-place retraining never damages
//! the original model and the newest checkpoint resumes; a failed write during export leaves no
//! version directory behind.
mod common;
use common::cli::*;
use common::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

/// Where the untouched original must be after an in-place run was cut at any moment: the
/// backup once the swap completed, the swap directory between exchange and rename, else the
/// model directory itself.
fn original_of(trial: &Path) -> PathBuf {
    let (orig, swap) = (trial.join("model.orig"), trial.join(".model.pretext-swap"));
    if orig.exists() {
        orig
    } else if swap.exists() {
        swap
    } else {
        trial.join("model")
    }
}

fn experiment_in(trial: &Path) -> PathBuf {
    let extra = "checkpoint:\n  every: 5\n  keep: 2\nlogging:\n  every: 1\n  tensorboard: false\nexport:\n  in_place: true\n";
    let text = experiment(&trial.join("model"), &images(), "simclr", 150, extra);
    write(trial, "exp.yaml", &text)
}

#[test]
fn sigkill_at_20_random_moments_never_damages_the_original_and_resume_works() {
    let tmp = tempfile::tempdir().unwrap();
    // One uninterrupted run gives the span the kill moments are drawn from.
    let probe = tmp.path().join("probe");
    copy_dir(&fixture("tiny_cnn"), &probe.join("model"));
    let exp = experiment_in(&probe);
    let t0 = Instant::now();
    let (code, _, err) = pretext(&[
        "run",
        exp.to_str().unwrap(),
        "--run-dir",
        probe.join("run").to_str().unwrap(),
    ]);
    let span = t0.elapsed();
    assert_eq!(code, 0, "{err}");
    assert!(probe.join("model.orig").is_dir());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    // Snapshots of where the original must be, taken at the moment (a later resume swaps
    // the model directory again).
    let snaps = tmp.path().join("snapshots");
    let snapshot = |trial: &Path, tag: &str| -> PathBuf {
        let d = snaps.join(tag);
        copy_dir(&original_of(trial), &d);
        d
    };
    let mut to_check = vec![snapshot(&probe, "probe")];
    let (mut resumed, mut no_ckpt, mut finished) = (0, 0, 0);
    for i in 0..20 {
        let trial = tmp.path().join(format!("trial{i}"));
        copy_dir(&fixture("tiny_cnn"), &trial.join("model"));
        let exp = experiment_in(&trial);
        let run = trial.join("run");
        let mut child = pretext_cmd()
            .args([
                "run",
                exp.to_str().unwrap(),
                "--run-dir",
                run.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let at = Duration::from_secs_f64(rng.gen_range(0.05..1.1) * span.as_secs_f64());
        std::thread::sleep(at);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        to_check.push(snapshot(&trial, &format!("trial{i}-killed")));
        let done = std::fs::read_to_string(run.join("report.json"))
            .map(|r| r.contains("\"status\": \"finished\""))
            .unwrap_or(false);
        let has_ckpt = std::fs::read_dir(run.join("checkpoints"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
            })
            .unwrap_or(false);
        if done {
            finished += 1;
        } else if has_ckpt {
            let (code, _, err) = pretext(&["resume", run.to_str().unwrap()]);
            assert_eq!(
                code, 0,
                "trial {i} (killed at {at:?}): resume failed: {err}"
            );
            assert_eq!(report(&run)["status"], "finished", "trial {i}");
            resumed += 1;
            to_check.push(snapshot(&trial, &format!("trial{i}-resumed")));
        } else {
            let (code, _, err) = pretext(&["resume", run.to_str().unwrap()]);
            assert_eq!(code, 2, "trial {i}: {err}");
            no_ckpt += 1;
        }
    }
    println!("20 SIGKILL trials over a {span:?} run: {resumed} resumed from a checkpoint, {no_ckpt} killed before the first checkpoint, {finished} killed after the end");
    let o = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/check_original.py"
        ))
        .arg("--golden")
        .arg(golden("tiny_cnn"))
        .args(&to_check)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let res: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (dir, v) in res.as_object().unwrap() {
        let d = v.as_f64().unwrap_or_else(|| panic!("{dir}: {v}"));
        if d > 1e-6 {
            panic!("{dir}: the original's output moved by {d}");
        }
    }
    assert_eq!(res.as_object().unwrap().len(), to_check.len());
}

#[test]
fn a_failed_write_during_export_surfaces_and_leaves_no_version_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "logging:\n  tensorboard: false\n";
    let text = experiment(&fixture("mobilenet_v2_035"), &images(), "dae", 2, extra);
    let exp = write(tmp.path(), "exp.yaml", &text);
    let run = tmp.path().join("run");
    let (code, _, err) = pretext(&[
        "run",
        exp.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // Files over 1 MiB cannot be written (saved_model.pb is 2.9 MB): the export fails midway.
    let base = tmp.path().join("export");
    let script = format!(
        "trap '' XFSZ; ulimit -f 1024; exec '{}' export '{}' --to '{}'",
        env!("CARGO_BIN_EXE_pretext"),
        run.display(),
        base.display()
    );
    let (code, _, err) = out(std::process::Command::new("sh")
        .args(["-c", &script])
        .env("TF_ENABLE_ONEDNN_OPTS", "0")
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap());
    assert_eq!(code, 1, "{err}");
    let l = error_line(&err);
    assert!(
        l.contains("saved_model.pb") || l.contains("variables"),
        "{l}"
    );
    let left: Vec<String> = std::fs::read_dir(&base)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        base.display()
    );
    // Without the limit the same command succeeds.
    let (code, stdout, err) = pretext(&[
        "export",
        run.to_str().unwrap(),
        "--to",
        base.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("exported") && base.join("1/saved_model.pb").is_file());
}
