//! Retraining in place: the new model written beside the original, swapped in atomically, the
//! original kept as a backup, and an interrupted swap recovered by the next export.
use std::path::{Path, PathBuf};

use super::{sync_tree, write_version};
use crate::error::{Error, Result};
use crate::savedmodel::Loaded;

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
