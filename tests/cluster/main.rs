//! Workers on TF's own distributed runtime, on loopback addresses: `pretext worker` processes
//! serve towers that the chief's `pretext run` places on them; the losses equal one process with
//! as many local devices; a worker that dies or hangs stops the chief, naming the task, with the
//! last checkpoint kept, and `pretext resume` continues exactly once the worker is back.
#[path = "../common/mod.rs"]
mod common;
mod workers;
use common::cli::*;
use common::*;
use workers::Workers;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `pretext run EXP --set S… --run-dir RUN`.
fn run_with(exp: &Path, run: &Path, set: &[String]) -> (i32, String, String) {
    out(run_cmd(exp, run, set).output().unwrap())
}

fn run_cmd(exp: &Path, run: &Path, set: &[String]) -> std::process::Command {
    let mut c = pretext_cmd();
    c.args(["run", exp.to_str().unwrap()]);
    for s in set {
        c.args(["--set", s]);
    }
    c.args(["--run-dir", run.to_str().unwrap()]);
    c
}

const SGD: &str = "optimizer:\n  kind: sgd\n  learning_rate: 0.01\n  momentum: 0.9\n";

fn write_experiment(
    dir: &Path,
    head: &str,
    steps: u64,
    batch: usize,
    extra: &str,
) -> std::path::PathBuf {
    let text = experiment(&fixture("tiny_cnn"), &images(), head, steps, "")
        .replace("batch: 8", &format!("batch: {batch}"));
    let text = format!("{text}{SGD}{extra}").replace("model:\n", "model:\n  bn: frozen\n");
    write(dir, &format!("{head}.yaml"), &text)
}

/// (max relative difference of the losses, losses a, losses b).
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(1e-3))
        .fold(0.0, f32::max)
}

#[test]
fn towers_on_workers_equal_towers_on_local_devices() {
    let tmp = tempfile::tempdir().unwrap();
    // The SimCLR cluster is described by TF_CONFIG alone (as Kubernetes operators set it); then
    // batch norm normalises across the workers (`model.bn_sync`), and gradients are all-reduced
    // among the workers with TF's collective ops.
    let sync = [
        "model.bn=train_all".to_string(),
        "model.bn_sync=true".into(),
    ];
    let ring = ["train.gradient_reduce=collective".to_string()];
    // The workers read their own shards (the default), except where the chief reads.
    let chief = ["cluster.input=chief".to_string()];
    let cases: [(&str, usize, bool, &[String]); 5] = [
        ("dae", 2, false, &[]),
        ("simclr", 3, true, &[]),
        ("dae", 2, false, &sync),
        ("dae", 2, false, &ring),
        ("simclr", 2, false, &chief),
    ];
    for (case, (head, n, tf_config, sets)) in cases.into_iter().enumerate() {
        let exp = write_experiment(tmp.path(), head, 6, 4 * n, "logging:\n  every: 1\n");
        let workers = Workers::start(n, None, tf_config);
        let dist = tmp.path().join(format!("{head}-cluster{case}"));
        let (code, _, err) = match tf_config {
            true => {
                let mut c = run_cmd(&exp, &dist, sets);
                out(c
                    .env("TF_CONFIG", workers.tf_config("chief"))
                    .output()
                    .unwrap())
            }
            // `--set cluster.input=…` after `--set cluster={…}`.
            false => run_with(&exp, &dist, &[&[workers.set()], sets].concat()),
        };
        assert_eq!(code, 0, "{err}");
        let cfg = std::fs::read_to_string(dist.join("config.yaml")).unwrap();
        assert!(
            cfg.contains("cluster:"),
            "the run's config keeps its cluster"
        );
        let local: Vec<String> = (0..n).map(|i| format!("/device:CPU:{i}")).collect();
        let one = tmp.path().join(format!("{head}-local{case}"));
        let set = format!("train.devices=[{}]", local.join(", "));
        let same: Vec<String> = (sets.iter())
            .filter(|s| !s.starts_with("cluster"))
            .cloned()
            .collect();
        let (code, _, err) = run_with(&exp, &one, &[&[set], &same[..]].concat());
        assert_eq!(code, 0, "{err}");
        let (ld, ll) = (losses(&dist), losses(&one));
        let worst = rel_diff(&ld, &ll);
        println!("{head} {sets:?}: {n} workers vs {n} local devices, batch {}: losses max rel diff {worst:.2e}; {ld:?} vs {ll:?}", 4 * n);
        assert!(worst <= 1e-5, "{head}: {worst}");
        // Each worker ran its tower; the chief the rest.
        let p = &report(&dist)["placement"];
        let per = p["per_device"].as_object().unwrap();
        for i in 0..n {
            let ops = per[&format!("/job:worker/task:{i}/device:CPU:0")]
                .as_u64()
                .unwrap();
            assert!(ops > 10, "{head}: worker {i} ran {ops} ops");
        }
        assert!(per["/job:chief/task:0/device:CPU:0"].as_u64().unwrap() > 0);
        assert_eq!(p["elsewhere"].as_array().unwrap().len(), 0, "{p}");
    }
}

/// Starts `pretext run` in the background.
fn spawn_run(exp: &Path, run: &Path, set: &str) -> Child {
    pretext_cmd()
        .args([
            "run",
            exp.to_str().unwrap(),
            "--set",
            set,
            "--run-dir",
            run.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The newest checkpoint's step of a run, if any.
fn newest_checkpoint(run: &Path) -> Option<u64> {
    std::fs::read_dir(run.join("checkpoints"))
        .ok()?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("ckpt-")?
                .parse()
                .ok()
        })
        .max()
}

/// Waits for the chief to end (at most `limit`): its exit code, stderr and how long it took.
/// Its stderr is read on a thread as it comes (a full pipe would block the chief).
fn wait_chief(mut chief: Child, limit: Duration) -> (i32, String, Duration) {
    let mut pipe = chief.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        use std::io::Read;
        pipe.read_to_string(&mut err).unwrap();
        err
    });
    let t = Instant::now();
    loop {
        if let Some(s) = chief.try_wait().unwrap() {
            let took = t.elapsed();
            return (s.code().unwrap_or(-1), reader.join().unwrap(), took);
        }
        if t.elapsed() > limit {
            let _ = chief.kill();
            panic!("the chief did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills (or stops, `hang`) worker 1 once the chief has a checkpoint; the chief must stop,
/// naming the task; after a restart of the worker, `resume` must give the uninterrupted losses.
fn lose_a_worker(hang: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let steps = 400;
    let extra = "checkpoint:\n  every: 20\nlogging:\n  every: 20\n  tensorboard: false\n";
    let exp = write_experiment(tmp.path(), "dae", steps, 8, extra);
    // A short timeout where a stuck worker must be noticed; the default where one dies.
    let mut workers = Workers::start(2, hang.then_some(10), false);
    let a = tmp.path().join("a");
    let (code, _, err) = run_with(&exp, &a, &[workers.set()]);
    assert_eq!(code, 0, "{err}");

    let b = tmp.path().join("b");
    let chief = spawn_run(&exp, &b, &workers.set());
    let t = Instant::now();
    while newest_checkpoint(&b).unwrap_or(0) < 40 {
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = workers.procs[1].as_ref().unwrap().id() as i32;
    match hang {
        true => unsafe { libc_kill(pid, 19) }, // SIGSTOP: alive, answering nothing
        false => {
            workers.kill(1);
            0
        }
    };
    let (code, err, took) = wait_chief(chief, Duration::from_secs(120));
    println!(
        "worker 1 {}: the chief stopped {took:?} later",
        if hang { "stopped (SIGSTOP)" } else { "killed" }
    );
    assert_eq!(code, 1, "{err}");
    let line = error_line(&err);
    assert!(
        line.contains("worker task 1") && line.contains("pretext resume"),
        "{line}"
    );
    let kept = newest_checkpoint(&b).unwrap();
    let stopped = report(&b)["steps"].as_u64().unwrap();
    assert!(
        stopped < steps,
        "the run finished before the worker was lost"
    );
    assert_eq!(report(&b)["status"], "failed");

    if hang {
        unsafe { libc_kill(pid, 9) };
    }
    workers.restart(1);
    let (code, _, err) = pretext(&["resume", b.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(lb.len(), steps as usize);
    let worst = rel_diff(&la, &lb);
    println!("kept checkpoint {kept}, stopped at step {stopped}; resumed vs uninterrupted losses: max rel diff {worst:e}");
    assert_eq!(la[..kept as usize], lb[..kept as usize]);
    assert!(worst <= 1e-6, "{worst}");
    // Export needs no worker: it runs on the chief's machine alone.
    drop(workers);
    let served = tmp.path().join("served");
    let (code, _, err) = pretext(&[
        "export",
        b.to_str().unwrap(),
        "--to",
        served.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(served.join("1/saved_model.pb").exists());
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn a_dead_worker_stops_the_chief_naming_it_and_resume_is_exact() {
    lose_a_worker(false);
}

#[test]
fn a_stuck_worker_stops_the_chief_after_the_timeout() {
    lose_a_worker(true);
}

#[test]
fn a_worker_that_cannot_read_its_data_stops_the_chief_naming_it() {
    // The chief only indexes the images (the workers decode them): none of these decodes.
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for i in 0..8 {
        std::fs::write(images.join(format!("{i}.png")), b"not a png").unwrap();
    }
    let text = experiment(&fixture("tiny_cnn"), &images, "dae", 4, SGD);
    let exp = write(
        tmp.path(),
        "bad.yaml",
        &text.replace("model:\n", "model:\n  bn: frozen\n"),
    );
    let workers = Workers::start(2, Some(20), false);
    let t = Instant::now();
    let (code, _, err) = run_with(&exp, &tmp.path().join("r"), &[workers.set()]);
    println!(
        "unreadable data on the workers: the chief stopped after {:?}",
        t.elapsed()
    );
    assert_eq!(code, 1, "{err}");
    let line = error_line(&err);
    assert!(
        line.contains("worker task")
            && line.contains("reading its input")
            && line.contains("no readable image"),
        "{line}"
    );
}

#[test]
fn cluster_settings_are_checked_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write_experiment(tmp.path(), "dae", 2, 8, "");
    let set = "cluster={chief: [localhost:1], worker: [localhost:2]}".to_string();
    let sync = "model.bn_sync=true".to_string();
    let (code, _, err) = run_with(&exp, &tmp.path().join("m"), &[set.clone(), sync]);
    assert_eq!(code, 2, "{err}");
    assert!(error_line(&err).contains("model.bn_sync"), "{err}");
    let bad = [
        (
            "cluster={chief: [localhost:1], worker: [localhost]}",
            "host:port",
        ),
        (
            "cluster={chief: [localhost:1], worker: [localhost:2], ps: [localhost:3]}",
            "ps",
        ),
        ("train.devices=[/job:worker/task:5/device:CPU:0]", "cluster"),
        (
            "cluster={chief: [localhost:1], worker: [localhost:2], input: disk}",
            "input",
        ),
    ];
    for (s, want) in bad {
        let (code, _, err) = run_with(&exp, &tmp.path().join("x"), &[s.to_string()]);
        assert_eq!(code, 2, "{s}: {err}");
        assert!(error_line(&err).contains(want), "{s}: {err}");
    }
    let (code, _, err) = run_with(
        &exp,
        &tmp.path().join("y"),
        &[
            set.clone(),
            "train.devices=[/job:worker/task:5/device:CPU:0]".into(),
        ],
    );
    assert_eq!(code, 2);
    assert!(error_line(&err).contains("no such task"), "{err}");
    // A replica on the chief has no worker to read its share.
    let on_chief = "train.devices=[/job:chief/task:0/device:CPU:0]".to_string();
    let (code, _, err) = run_with(&exp, &tmp.path().join("w"), &[set.clone(), on_chief]);
    assert_eq!(code, 2, "{err}");
    assert!(error_line(&err).contains("cluster.input"), "{err}");
    // TF_CONFIG naming this process a worker, or a parameter server, is refused for `run`.
    let tf = |jobs: &str, task: &str| {
        format!(
            r#"{{"cluster": {{"chief": ["localhost:1"], "worker": ["localhost:2"]{jobs}}}, "task": {task}}}"#
        )
    };
    for (config, want) in [
        (
            tf("", r#"{"type": "worker", "index": 0}"#),
            "pretext worker",
        ),
        (
            tf(r#", "ps": ["localhost:3"]"#, r#"{"type": "chief"}"#),
            "'ps'",
        ),
    ] {
        let mut c = run_cmd(&exp, &tmp.path().join("z"), &[]);
        let (code, _, err) = out(c.env("TF_CONFIG", config).output().unwrap());
        assert_eq!(code, 2, "{err}");
        let line = error_line(&err);
        assert!(line.contains("TF_CONFIG") && line.contains(want), "{line}");
    }
    // A worker without a cluster, or with a task out of range.
    let (code, _, err) = pretext(&["worker", "--task", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(error_line(&err).contains("--cluster"), "{err}");
    let (code, _, err) = pretext(&[
        "worker",
        "--cluster",
        "{chief: [localhost:1], worker: [localhost:2]}",
        "--task",
        "3",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(error_line(&err).contains("--task"), "{err}");
}
