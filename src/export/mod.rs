//! Export: `OUT/<version>/` with the original saved_model.pb, fingerprint and assets copied
//! byte-for-byte and new `variables/` written by the model's own saver from the live session.
//! Written to a temporary folder and renamed into place: a version is complete or absent.
use std::path::{Path, PathBuf};

use tensorflow::{SessionRunArgs, Tensor};

use crate::error::{Error, Result, TfContext};
use crate::savedmodel::Loaded;

/// Numeric version folders under `base`.
pub fn versions(base: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(base)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| Error::io(dst, e))?;
    for e in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let e = e.map_err(|e| Error::io(src, e))?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        if s.is_dir() {
            copy_tree(&s, &d)?;
        } else {
            std::fs::copy(&s, &d).map_err(|e| Error::io(&s, e))?;
        }
    }
    Ok(())
}

/// Writes the model's current variable values as `base/<version>/`; `version` defaults to the
/// next integer. Never overwrites an existing version.
pub fn export(model: &Loaded, base: &Path, version: Option<u64>) -> Result<PathBuf> {
    let ver = version.unwrap_or_else(|| versions(base).last().map(|v| v + 1).unwrap_or(1));
    let dst = base.join(ver.to_string());
    if dst.exists() {
        return Err(Error::Export {
            path: dst,
            msg: "this version already exists; pick another version or export directory".into(),
        });
    }
    std::fs::create_dir_all(base).map_err(|e| Error::io(base, e))?;
    let tmp = base.join(format!(".tmp-{ver}-{}", std::process::id()));
    let r = write_version(model, &tmp);
    if let Err(e) = r {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &dst).map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        Error::io(&dst, e)
    })?;
    Ok(dst)
}

fn write_version(model: &Loaded, tmp: &Path) -> Result<()> {
    let src = &model.info.dir;
    std::fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
    for e in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let e = e.map_err(|e| Error::io(src, e))?;
        if e.file_name() == "variables" {
            continue;
        }
        let (s, d) = (e.path(), tmp.join(e.file_name()));
        if s.is_dir() {
            copy_tree(&s, &d)?;
        } else {
            std::fs::copy(&s, &d).map_err(|e| Error::io(&s, e))?;
        }
    }
    let vars = tmp.join("variables");
    std::fs::create_dir_all(&vars).map_err(|e| Error::io(&vars, e))?;
    let saver = model
        .info
        .meta
        .saver_def
        .as_ref()
        .ok_or_else(|| Error::Export {
            path: src.clone(),
            msg: "the SavedModel has no saver_def; cannot write variables".into(),
        })?;
    let prefix = vars.join("variables");
    let fname = model.output(&saver.filename_tensor_name)?;
    let save = model.output(&saver.save_tensor_name)?;
    let t = Tensor::<String>::from(prefix.to_string_lossy().to_string());
    let mut run = SessionRunArgs::new();
    run.add_feed(&fname.operation, fname.index, &t);
    run.request_fetch(&save.operation, save.index);
    model
        .session
        .run(&mut run)
        .tf_ctx(|| format!("running the model's saver into {}", prefix.display()))?;
    Ok(())
}
