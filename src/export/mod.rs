//! Export: `OUT/<version>/` with the original saved_model.pb, fingerprint and assets copied
//! byte-for-byte (a TF1 Hub module's tfhub_module.pb too) and new `variables/` written by the
//! model's own saver from the live session (a TF1 Hub module, which has none: SaveV2 under the
//! keys hub.Module reads).
//! Written to a temporary folder and renamed into place: a version is complete or absent.
use std::path::{Path, PathBuf};

use tensorflow::{SessionRunArgs, Tensor};

use crate::error::{Error, Result, TfContext};
use crate::proto::TensorRef;
use crate::savedmodel::Loaded;

mod in_place;
mod tree;

pub use in_place::{backup_path, export_in_place};
pub use tree::{check_model_tree, copy_model_tree};

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

/// The version an export to `base` writes: `version`, or the next integer.
pub fn next_version(base: &Path, version: Option<u64>) -> u64 {
    version.unwrap_or_else(|| versions(base).last().map(|v| v + 1).unwrap_or(1))
}

/// Removes `base/.tmp-<version>-<pid>` folders left by exports whose process is gone (killed
/// mid-export); folders of live processes are theirs.
fn remove_stale_temps(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".tmp-")
            .and_then(|r| r.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // Our own pid here is an earlier process's (we have not started ours yet).
        // SAFETY: signal 0 only checks that the process exists.
        let alive = pid != std::process::id() as i32
            && (unsafe { libc::kill(pid, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
        if !alive && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            log::info!("removing {} (an export cut short)", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Writes the model's current variable values as `base/<version>/`; `version` defaults to the
/// next integer. Never overwrites an existing version.
pub fn export(model: &Loaded, base: &Path, version: Option<u64>) -> Result<PathBuf> {
    remove_stale_temps(base);
    let ver = next_version(base, version);
    let dst = base.join(ver.to_string());
    if dst.exists() {
        return Err(Error::Export {
            path: dst,
            msg: "this version already exists; pick another version or export directory".into(),
        });
    }
    std::fs::create_dir_all(base).map_err(|e| Error::io(base, e))?;
    let tmp = base.join(format!(".tmp-{ver}-{}", std::process::id()));
    let r = write_version(model, &tmp).and_then(|_| sync_tree(&tmp));
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
    std::fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
    copy_model_tree(&model.info.dir, tmp)?;
    let vars = tmp.join("variables");
    std::fs::create_dir_all(&vars).map_err(|e| Error::io(&vars, e))?;
    if let Some(saver) = &model.module_vars {
        // A TF1 Hub module has no saver of its own: every variable of its graph is written
        // under the checkpoint key hub.Module reads (its name), shared by all its variants.
        return saver.save(model, &vars.join("variables"));
    }
    let saver = model
        .info
        .meta
        .saver_def
        .as_ref()
        .ok_or_else(|| Error::Export {
            path: model.info.dir.clone(),
            msg: "the SavedModel has no saver_def; cannot write variables".into(),
        })?;
    sync_aliases(model)?;
    let prefix = vars.join("variables");
    let fname = model.output(TensorRef::parse(&saver.filename_tensor_name))?;
    let save = model.output(TensorRef::parse(&saver.save_tensor_name))?;
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

/// Copies each trained variable into the other handles that hold it
/// (`SavedModelInfo::variable_aliases`: a Keras 3 export's), so the model's saver writes the
/// trained value under every checkpoint key and TF2 loaders see it too.
fn sync_aliases(model: &Loaded) -> Result<()> {
    let assigns = match model.alias_sync.get() {
        Some(a) => a,
        None => {
            let built = alias_assigns(model)?;
            model.alias_sync.get_or_init(|| built)
        }
    };
    if assigns.is_empty() {
        return Ok(());
    }
    let mut run = SessionRunArgs::new();
    for a in assigns {
        run.add_target(a);
    }
    model
        .session
        .run(&mut run)
        .tf_ctx(|| "copying trained variables to their aliases".into())
}

/// The assignments `sync_aliases` runs (appended to the graph once per model).
fn alias_assigns(model: &Loaded) -> Result<Vec<tensorflow::Operation>> {
    let groups = model.info.variable_aliases();
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let serving: std::collections::HashSet<String> = model
        .info
        .variables()
        .into_iter()
        .map(|v| v.handle)
        .collect();
    let mut scope = model.scope.new_sub_scope("pretext_export_aliases");
    let mut assigns = Vec::new();
    for g in &groups {
        let src: Vec<&String> = g.iter().filter(|h| serving.contains(*h)).collect();
        let [src] = src[..] else { continue };
        let ctx = || format!("copying {src} to the handles that alias it");
        let dtype = model.op(src)?.get_attr_type("dtype").tf_ctx(ctx)?;
        let value: tensorflow::Output = tensorflow::ops::ReadVariableOp::new()
            .dtype(dtype)
            .build(model.handle(src)?, &mut scope)
            .tf_ctx(ctx)?
            .into();
        for other in g.iter().filter(|h| *h != src) {
            let a = tensorflow::ops::assign_variable_op(
                model.handle(other)?,
                value.clone(),
                &mut scope,
            )
            .tf_ctx(ctx)?;
            assigns.push(a);
        }
    }
    log::debug!(
        "{} aliased variable handle(s) synced before saving",
        assigns.len()
    );
    Ok(assigns)
}

/// fsyncs every file below `dir`, then the folders, so a renamed version survives a crash.
fn sync_tree(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&p, e))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::tree::copy_file;
    use super::*;

    #[test]
    fn a_full_disk_is_blamed_on_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("saved_model.pb");
        std::fs::write(&src, vec![7u8; 100_000]).unwrap();
        let e = copy_file(&src, Path::new("/dev/full")).unwrap_err();
        assert!(
            matches!(&e, Error::Io { path, .. } if path == Path::new("/dev/full")),
            "{e}"
        );
    }

    #[test]
    fn only_temp_folders_of_dead_exports_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join(format!(".tmp-3-{}", i32::MAX));
        let ours = tmp.path().join(format!(".tmp-4-{}", std::process::id()));
        let live = tmp.path().join(".tmp-5-1"); // init never exits
        let other = tmp.path().join(".tmp-notes");
        for d in [&dead, &ours, &live, &other] {
            std::fs::create_dir(d).unwrap();
        }
        remove_stale_temps(tmp.path());
        assert!(!dead.exists() && !ours.exists());
        assert!(live.exists() && other.exists());
    }
}
