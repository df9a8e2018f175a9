//! Export: `OUT/<version>/` with the original saved_model.pb, fingerprint and assets copied
//! byte-for-byte (a TF1 Hub module's tfhub_module.pb too) and new `variables/` written by the
//! model's own saver from the live session (a TF1 Hub module, which has none: SaveV2 under the
//! keys hub.Module reads).
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

/// What copying `src` (a file or folder of the model at `root`, canonical) would read: Ok, or
/// the reason it must not. A symlink is followed only to a regular file inside the model
/// folder (then copied as a regular file); a link out of it, to a folder, or dangling is refused,
/// so an export never copies anything from outside the model and never loops.
fn resolve(root: &Path, src: &Path) -> Result<PathBuf> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| Error::io(src, e))?;
    if !meta.file_type().is_symlink() {
        return Ok(src.to_path_buf());
    }
    let refuse = |why: String| Error::ModelRefused {
        path: src.to_path_buf(),
        msg: format!("{why}; only links to files inside the model folder are copied"),
    };
    let target =
        std::fs::canonicalize(src).map_err(|e| refuse(format!("dangling symlink ({e})")))?;
    if !target.starts_with(root) {
        return Err(refuse(format!(
            "symlink to {} (outside the model)",
            target.display()
        )));
    }
    if !target.is_file() {
        return Err(refuse(format!(
            "symlink to {} (not a regular file)",
            target.display()
        )));
    }
    Ok(target)
}

/// Copies the model folder `src` (not its variables) into `dst`, refusing what `resolve` refuses.
pub fn copy_model_tree(src: &Path, dst: &Path) -> Result<()> {
    let root = std::fs::canonicalize(src).map_err(|e| Error::io(src, e))?;
    copy_tree(&root, &root, dst, true)
}

/// Checks the copy `copy_model_tree` will make, without writing (run before training, so a
/// model an export would refuse is refused before its training is spent).
pub fn check_model_tree(src: &Path) -> Result<()> {
    let root = std::fs::canonicalize(src).map_err(|e| Error::io(src, e))?;
    walk(&root, &root, true, &mut |_, _| Ok(()))
}

fn copy_tree(root: &Path, src: &Path, dst: &Path, top: bool) -> Result<()> {
    walk(root, src, top, &mut |rel, from| {
        let to = dst.join(rel);
        if from.is_dir() {
            std::fs::create_dir_all(&to).map_err(|e| Error::io(&to, e))
        } else {
            copy_file(from, &to)
        }
    })
}

/// Copies one file; a failure names the side that failed (a full disk is the destination's).
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    use std::io::{Read, Write};
    let mut r = std::fs::File::open(from).map_err(|e| Error::io(from, e))?;
    let mut w = std::fs::File::create(to).map_err(|e| Error::io(to, e))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io(from, e))?;
        if n == 0 {
            return w.flush().map_err(|e| Error::io(to, e));
        }
        w.write_all(&buf[..n]).map_err(|e| Error::io(to, e))?;
    }
}

/// Visits every entry below `dir` (parents before children) as (path relative to `dir`'s top,
/// what to read); at the top level the `variables` folder is left out (written afresh).
fn walk(
    root: &Path,
    dir: &Path,
    top: bool,
    visit: &mut dyn FnMut(&Path, &Path) -> Result<()>,
) -> Result<()> {
    fn go(
        root: &Path,
        dir: &Path,
        rel: &Path,
        top: bool,
        visit: &mut dyn FnMut(&Path, &Path) -> Result<()>,
    ) -> Result<()> {
        for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let e = e.map_err(|e| Error::io(dir, e))?;
            if top && e.file_name() == "variables" {
                continue;
            }
            let from = resolve(root, &e.path())?;
            let r = rel.join(e.file_name());
            visit(&r, &from)?;
            if from.is_dir() {
                go(root, &from, &r, false, visit)?;
            }
        }
        Ok(())
    }
    go(root, dir, Path::new(""), top, visit)
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
            .build(model.output(src)?, &mut scope)
            .tf_ctx(ctx)?
            .into();
        for other in g.iter().filter(|h| *h != src) {
            let a = tensorflow::ops::assign_variable_op(
                model.output(other)?,
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

/// Swaps two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`), so that at every moment
/// each path holds one complete directory.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The first `<name>.orig`, `<name>.orig-2`, … beside `target` that does not exist.
pub fn backup_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let parent = target.parent().unwrap_or(Path::new("."));
    (1..)
        .map(|i| match i {
            1 => parent.join(format!("{name}.orig")),
            i => parent.join(format!("{name}.orig-{i}")),
        })
        .find(|p| !p.exists())
        .expect("a free backup name")
}

/// In-place retraining: writes the retrained model beside `target` (the directory the model
/// was loaded from), swaps it in atomically and keeps the original as `<target>.orig[-n]`.
/// At every moment `target` is either the complete original or the complete new model; if the
/// process dies after the swap but before the final rename, the original is in
/// `.<name>.pretext-swap` beside it, and the next in-place export (e.g. by `resume`) moves it to
/// the backup name (a journal records the original's inode). Returns (target, backup).
pub fn export_in_place(model: &Loaded, target: &Path) -> Result<(PathBuf, PathBuf)> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Export {
            path: target.into(),
            msg: "in-place export needs a model directory with a name".into(),
        })?;
    let parent = target.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".{name}.pretext-swap"));
    let journal = parent.join(format!(".{name}.pretext-swap.json"));
    recover(target, &tmp, &journal)?;
    // The journal names the original by inode: after the exchange the original directory is
    // at `tmp`, and a crash at any point can be told apart from a half-written new model.
    let ino = inode(target)?;
    let j = format!("{{\"original_inode\": {ino}}}");
    let jt = journal.with_extension("json.tmp");
    std::fs::write(&jt, j).map_err(|e| Error::io(&jt, e))?;
    std::fs::rename(&jt, &journal).map_err(|e| Error::io(&journal, e))?;
    if let Err(e) = write_version(model, &tmp).and_then(|_| sync_tree(&tmp)) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let backup = backup_path(target);
    match exchange(&tmp, target) {
        Ok(()) => {
            // `tmp` now holds the original.
            std::fs::rename(&tmp, &backup).map_err(|e| Error::io(&backup, e))?;
        }
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) =>
        {
            // No RENAME_EXCHANGE on this filesystem: two renames (the original is moved, never
            // modified).
            std::fs::rename(target, &backup).map_err(|e| Error::io(target, e))?;
            std::fs::rename(&tmp, target).map_err(|e| Error::io(target, e))?;
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::io(target, e));
        }
    }
    std::fs::remove_file(&journal).map_err(|e| Error::io(&journal, e))?;
    Ok((target.to_path_buf(), backup))
}

fn inode(p: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(p).map_err(|e| Error::io(p, e))?.ino())
}

/// Cleans up after an in-place export cut short: if `tmp` is the original (by the journal's
/// inode: the process died between the exchange and the rename) it becomes the backup; else it
/// is a new model that never replaced anything, and is removed.
fn recover(target: &Path, tmp: &Path, journal: &Path) -> Result<()> {
    let original = std::fs::read_to_string(journal)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["original_inode"].as_u64());
    if tmp.exists() {
        if original.is_some() && original == inode(tmp).ok() {
            let backup = backup_path(target);
            log::warn!(
                "an earlier in-place export was interrupted after the swap: keeping the original in {}",
                backup.display()
            );
            std::fs::rename(tmp, &backup).map_err(|e| Error::io(&backup, e))?;
        } else {
            log::warn!(
                "removing {} (a new model from an interrupted in-place export; the original was never replaced)",
                tmp.display()
            );
            std::fs::remove_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
        }
    }
    if journal.exists() {
        std::fs::remove_file(journal).map_err(|e| Error::io(journal, e))?;
    }
    Ok(())
}

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
