//! Nothing is lost: SIGKILL at random moments of a run with in-place retraining never damages
//! the original model and the newest checkpoint resumes; a failed write during export leaves no
//! version directory behind.
mod common;
use common::cli::*;
use common::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

/// Where the untouched original is, found by the inode it had before the run (ground truth,
/// independent of pretext's own bookkeeping): the model directory, its backup, or the swap
/// directory of an interrupted in-place export.
fn original_of(trial: &Path, ino: u64) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let candidates = [
        trial.join("model"),
        trial.join("model.orig"),
        trial.join("model.orig-2"),
        trial.join(".model.pretext-swap"),
    ];
    candidates
        .into_iter()
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.ino() == ino)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("{}: the original directory is gone", trial.display()))
}

fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

fn experiment_in(trial: &Path) -> PathBuf {
    let extra = "checkpoint:\n  every: 5\n  keep: 2\nlogging:\n  every: 1\n  tensorboard: false\nexport:\n  in_place: true\n";
    let text = experiment(&trial.join("model"), &images(), "simclr", 150, extra);
    write(trial, "exp.yaml", &text)
}

#[test]
fn sigkill_at_30_moments_never_damages_the_original_and_resume_works() {
    let tmp = tempfile::tempdir().unwrap();
    // One uninterrupted run gives the span the kill moments are drawn from.
    let probe = tmp.path().join("probe");
    copy_dir(&fixture("tiny_cnn"), &probe.join("model"));
    let probe_ino = inode(&probe.join("model"));
    let exp = experiment_in(&probe);
    let t0 = Instant::now();
    run_ok(&exp, &probe.join("run"));
    let span = t0.elapsed();
    assert!(probe.join("model.orig").is_dir());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    // Snapshots of where the original must be, taken at the moment (a later resume swaps
    // the model directory again).
    let snaps = tmp.path().join("snapshots");
    let snapshot = |trial: &Path, ino: u64, tag: &str| -> PathBuf {
        let d = snaps.join(tag);
        copy_dir(&original_of(trial, ino), &d);
        d
    };
    let mut to_check = vec![snapshot(&probe, probe_ino, "probe")];
    let (mut resumed, mut no_ckpt, mut finished, mut in_export) = (0, 0, 0, 0);
    // 20 moments drawn over the whole run, then 10 aimed at the in-place export: a random
    // 0–25 ms after the final checkpoint is logged (export follows it at once).
    for i in 0..30 {
        let trial = tmp.path().join(format!("trial{i}"));
        copy_dir(&fixture("tiny_cnn"), &trial.join("model"));
        let ino = inode(&trial.join("model"));
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
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let at = if i < 20 {
            // Drain stderr in the background so the child never blocks on it.
            std::thread::spawn(move || std::io::copy(&mut { stderr }, &mut std::io::sink()));
            let at = Duration::from_secs_f64(rng.gen_range(0.05..1.1) * span.as_secs_f64());
            std::thread::sleep(at);
            at
        } else {
            use std::io::BufRead;
            let t0 = Instant::now();
            let mut lines = std::io::BufReader::new(stderr).lines();
            while let Some(Ok(l)) = lines.next() {
                if l.contains("ckpt-150") {
                    break;
                }
            }
            std::thread::spawn(move || lines.for_each(drop));
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..25_000)));
            t0.elapsed()
        };
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        to_check.push(snapshot(&trial, ino, &format!("trial{i}-killed")));
        if trial.join(".model.pretext-swap.json").exists() {
            in_export += 1;
        }
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
            to_check.push(snapshot(&trial, ino, &format!("trial{i}-resumed")));
        } else if run.join("config.yaml").exists() {
            // Killed before the first checkpoint: resume trains it from step 0.
            let (code, _, err) = pretext(&["resume", run.to_str().unwrap()]);
            assert_eq!(code, 0, "trial {i}: {err}");
            assert_eq!(report(&run)["status"], "finished", "trial {i}");
            no_ckpt += 1;
            to_check.push(snapshot(&trial, ino, &format!("trial{i}-restarted")));
        } else {
            // Killed before the run directory held a run: nothing to resume.
            let (code, _, err) = pretext(&["resume", run.to_str().unwrap()]);
            assert_eq!(code, 2, "trial {i}: {err}");
            no_ckpt += 1;
        }
    }
    println!("30 SIGKILL trials (20 over a {span:?} run, 10 aimed at the in-place export): {resumed} resumed from a checkpoint, {no_ckpt} killed before the first checkpoint (resumed from step 0 when config.yaml was written), {finished} killed after the end; {in_export} of them inside the in-place export");
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
    run_ok(&exp, &run);
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
        .output()
        .unwrap());
    assert_eq!(code, 1, "{err}");
    let l = error_line(&err);
    assert!(
        l.contains("saved_model.pb") || l.contains("variables"),
        "{l}"
    );
    // The write failed, so the error names the destination, not the model read.
    assert!(l.contains(base.to_str().unwrap()), "{l}");
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
