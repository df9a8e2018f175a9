//! Untrusted models run nothing before they are checked (savedmodel::audit): models that write a
//! file from their init op, their serving function or a nested function are refused by
//! `inspect`, `validate`, `train` and `eval` with exit code 2, the error naming function, node and
//! op, and no file appears; `--trust-model` loads them (and then TF does write the file, which is
//! what the refusal prevented). Every fixture passes the audit. Exports copy nothing from
//! outside the model folder (symlinked assets), and `eval` refuses a batch of 0.
mod common;
use common::cli::*;
use common::*;
use std::path::Path;

const HOSTILE: [(&str, &str); 3] = [
    ("writes_in_init", "pretext_canary_init.txt"),
    ("writes_in_serving", "pretext_canary_serving.txt"),
    ("writes_in_nested", "pretext_canary_nested.txt"),
];

fn hostile(name: &str) -> std::path::PathBuf {
    fixtures().join("hostile").join(name)
}

/// `pretext ARGS` run in `dir` (the canaries are relative paths).
fn in_dir(dir: &Path, args: &[&str]) -> (i32, String, String) {
    out(pretext_cmd().current_dir(dir).args(args).output().unwrap())
}

#[test]
fn models_that_write_files_are_refused_before_anything_runs() {
    for (name, canary) in HOSTILE {
        let model = hostile(name);
        let m = model.to_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let exp = write(
            tmp.path(),
            "exp.yaml",
            &experiment(&model, &images(), "dae", 2, ""),
        );
        let e = exp.to_str().unwrap();
        let (labeled, imgs) = (labeled(), images());
        let (l, i) = (labeled.to_str().unwrap(), imgs.to_str().unwrap());
        let runs: [&[&str]; 4] = [
            &["inspect", m],
            &["validate", e],
            &["train", "--model", m, "--images", i, "--steps", "1"],
            &["eval", "--model", m, "--labeled", l, "--size", "8"],
        ];
        for args in runs {
            let (code, _, err) = in_dir(tmp.path(), args);
            assert_eq!(code, 2, "{name} {args:?}: {err}");
            let line = error_line(&err);
            assert!(line.contains("refused before loading"), "{name}: {line}");
            assert!(err.contains("WriteFile"), "{name}: {err}");
            assert!(err.contains("--trust-model"), "{name}: {err}");
            assert!(
                !tmp.path().join(canary).exists(),
                "{name} {args:?} wrote its file"
            );
        }
        // The nested writer is named by the function that holds it.
        if name == "writes_in_nested" {
            let (_, _, err) = in_dir(tmp.path(), &["inspect", m]);
            assert!(err.contains("function __inference_nested_write"), "{err}");
        }
    }
}

#[test]
fn trusted_models_load_and_then_tf_runs_their_ops() {
    // The init op runs at load: trusting the model lets it write, which is what the audit stops.
    let tmp = tempfile::tempdir().unwrap();
    let m = hostile("writes_in_init");
    let (code, stdout, err) = in_dir(
        tmp.path(),
        &["inspect", m.to_str().unwrap(), "--trust-model"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("audit: 1 op(s) touch files"), "{stdout}");
    assert!(
        tmp.path().join("pretext_canary_init.txt").exists(),
        "{stdout}"
    );
}

#[test]
fn every_fixture_passes_the_audit() {
    for name in ALL {
        let (code, stdout, err) = pretext(&["inspect", fixture(name).to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            stdout.contains("audit: no op touches files, processes or the network"),
            "{name}: {stdout}"
        );
    }
}

/// A copy of tiny_cnn with `assets/NAME -> target` planted.
fn model_with_link(tmp: &Path, name: &str, target: &Path) -> std::path::PathBuf {
    let m = tmp.join("model");
    let (code, _, err) = out(std::process::Command::new("cp")
        .args([
            "-r",
            fixture("tiny_cnn").to_str().unwrap(),
            m.to_str().unwrap(),
        ])
        .output()
        .unwrap());
    assert_eq!(code, 0, "{err}");
    std::fs::create_dir_all(m.join("assets")).unwrap();
    std::os::unix::fs::symlink(target, m.join("assets").join(name)).unwrap();
    m
}

fn train_and_export(model: &Path, export: &Path) -> (i32, String, String) {
    pretext(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--images",
        images().to_str().unwrap(),
        "--steps",
        "1",
        "--batch",
        "4",
        "--export",
        export.to_str().unwrap(),
    ])
}

#[test]
fn exports_copy_nothing_from_outside_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, "not the model's").unwrap();
    for (name, target) in [
        ("leak", secret.clone()),
        ("loop", "..".into()),
        ("dir", "/etc".into()),
    ] {
        let case = tmp.path().join(name);
        std::fs::create_dir(&case).unwrap();
        let m = model_with_link(&case, name, &target);
        let export = case.join("export");
        let (code, _, err) = train_and_export(&m, &export);
        assert_eq!(code, 2, "{name}: {err}");
        let line = error_line(&err);
        assert!(line.contains(&format!("assets/{name}: refused")), "{line}");
        assert!(!export.exists(), "{name}: something was exported");
        // validate says the same before any training, located at model.path.
        let exp = write(
            &case,
            "exp.yaml",
            &format!(
                "{}export:\n  dir: {}\n",
                experiment(&m, &images(), "dae", 1, ""),
                export.display()
            ),
        );
        let (code, _, err) = pretext(&["validate", exp.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(error_line(&err).contains("model.path"), "{err}");
    }
    // A link to a file inside the model is copied as a regular file.
    let case = tmp.path().join("inside");
    std::fs::create_dir(&case).unwrap();
    let m = model_with_link(&case, "pb", Path::new("../saved_model.pb"));
    let export = case.join("export");
    let (code, _, err) = train_and_export(&m, &export);
    assert_eq!(code, 0, "{err}");
    let copied = export.join("1/assets/pb");
    let meta = std::fs::symlink_metadata(&copied).unwrap();
    assert!(
        meta.file_type().is_file(),
        "{copied:?} is not a regular file"
    );
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        std::fs::read(m.join("saved_model.pb")).unwrap()
    );
}

#[test]
fn eval_batch_zero_is_refused_not_scored() {
    let (code, _, err) = eval_tiny(&["--batch", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(error_line(&err).contains("must be at least 1"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(
        tmp.path(),
        "exp.yaml",
        &format!(
            "{}eval:\n  labeled: {}\n  batch: 0\n",
            experiment(&fixture("tiny_cnn"), &images(), "dae", 1, ""),
            labeled().display()
        ),
    );
    let (code, _, err) = pretext(&["validate", exp.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        error_line(&err).contains("eval.batch: must be at least 1"),
        "{err}"
    );
}
