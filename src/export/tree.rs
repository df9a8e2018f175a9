//! The model folder's copy: everything but `variables/`, byte for byte, refusing symlinks that
//! lead out of the model, to folders, or nowhere.
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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
pub(super) fn copy_file(from: &Path, to: &Path) -> Result<()> {
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
