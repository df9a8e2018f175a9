//! Checking an experiment against the world before a run: the model, its signature, the
//! images, the labeled set and the export directory (`pretext validate`, and every run).
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Experiment, Source};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::LabeledSet;
use crate::savedmodel::SavedModelInfo;
use crate::train::image_spec;

/// A labeled set's classes, train and test images.
pub type Sizes = (usize, usize, usize);

fn sizes(s: &LabeledSet) -> Sizes {
    (s.classes.len(), s.train.len(), s.test.len())
}

/// What `validate` found: the things a run would use.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub signature: String,
    pub input: String,
    pub images: usize,
    /// `eval.labeled`'s classes, train and test images.
    pub labeled: Option<Sizes>,
    /// Each `eval.retain` set: its folder and sizes.
    pub retain_sets: Vec<(PathBuf, Sizes)>,
    pub steps: u64,
    /// The model as parsed and the images as indexed, for the run's trainer.
    #[serde(skip)]
    pub opened: Option<crate::train::Opened>,
}

/// Checks the experiment against the world: the model and its signature, the images, the
/// labeled set and the export directory — everything short of building the graph.
pub fn check(exp: &Experiment, src: &Source) -> Result<Checked> {
    // A setting's error keeps its own key; any other is put at `key`.
    let at = |key: &str, e: Error| match e {
        Error::Config { key, msg } => src.error(key.as_str(), msg),
        e => src.error(key, e.to_string()),
    };
    let m = &exp.model;
    if m.path.is_file() {
        return Err(src.error(
            "model.path",
            format!(
                "{} is a file; pass the SavedModel directory (the one holding saved_model.pb)",
                m.path.display()
            ),
        ));
    }
    let info = SavedModelInfo::read_tagged(&m.path, m.tags.as_deref()).map_err(|e| match e {
        Error::Config { .. } => at("model.tags", e),
        e => at("model.path", e),
    })?;
    crate::savedmodel::check_audit(&info, crate::savedmodel::Trust::from_flag(m.trust))
        .map_err(|e| at("model.path", e))?;
    let sig = info
        .signature(&m.signature)
        .map_err(|e| at("model.signature", e))?
        .with_fixed(&m.fixed_inputs)
        .map_err(|e| at("model.fixed_inputs", e))?;
    let spec = image_spec(&sig, m.size, m.range).map_err(|e| at("model.size", e))?;
    let data = Dataset::open(&exp.train_config(1).data).map_err(|e| {
        let d = &exp.data;
        let key = match &e {
            Error::Io { path, .. } if d.tfrecords.iter().any(|t| path.starts_with(t)) => {
                "data.tfrecords"
            }
            Error::Io { path, .. } if d.idx.contains(path) => "data.idx",
            _ => "data.folders",
        };
        at(key, e)
    })?;
    let mut retain_sets = Vec::new();
    let labeled = match &exp.eval {
        Some(ev) => {
            let set = LabeledSet::scan(&ev.labeled).map_err(|e| at("eval.labeled", e))?;
            for r in &ev.retain {
                let rs =
                    LabeledSet::scan_for(r, "eval.retain").map_err(|e| at("eval.retain", e))?;
                retain_sets.push((r.clone(), sizes(&rs)));
            }
            Some(sizes(&set))
        }
        None => None,
    };
    check_export(exp, src)?;
    let steps = exp.steps(data.len());
    if steps > Experiment::MAX_STEPS {
        return Err(src.error(
            "train.epochs",
            format!(
                "{steps} steps over {} images is over {} (use train.max_minutes to stop by time)",
                data.len(),
                Experiment::MAX_STEPS
            ),
        ));
    }
    Ok(Checked {
        signature: sig.name.clone(),
        input: format!("{}×{}×{}", spec.height, spec.width, spec.channels),
        images: data.len(),
        labeled,
        retain_sets,
        steps,
        opened: Some(crate::train::Opened {
            info,
            data: std::sync::Arc::new(data),
        }),
    })
}

/// What an export will need, checked before training is spent: a model folder it can copy, a
/// directory it can write, and a version that is not there yet.
fn check_export(exp: &Experiment, src: &Source) -> Result<()> {
    if exp.export.is_some() {
        crate::export::check_model_tree(&exp.model.path)
            .map_err(|e| src.error("model.path", e.to_string()))?;
    }
    if let Some(dir) = exp.export.as_ref().and_then(|x| x.dir.as_ref()) {
        if dir.exists() && !dir.is_dir() {
            return Err(src.error(
                "export.dir",
                format!("{} exists and is not a directory", dir.display()),
            ));
        }
        if let Some(v) = exp.export.as_ref().and_then(|x| x.version) {
            if dir.join(v.to_string()).exists() {
                return Err(src.error(
                    "export.version",
                    format!(
                        "{} already exists; pick another version (or none: the next free one)",
                        dir.join(v.to_string()).display()
                    ),
                ));
            }
        }
        let probe = dir
            .ancestors()
            .find(|a| a.exists())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if let Err(e) = writable(&probe) {
            return Err(src.error(
                "export.dir",
                format!("{} is not writable ({e})", probe.display()),
            ));
        }
    }
    Ok(())
}

/// Loads the model in a TF session the way a run will (after the audit passed): missing,
/// truncated or corrupt variables are found here, not after the data was scanned. Returns the
/// number of variables restored.
pub fn check_variables(exp: &Experiment, src: &Source) -> Result<usize> {
    let trust = crate::savedmodel::Trust::from_flag(exp.model.trust);
    let m = SavedModelInfo::read_tagged(&exp.model.path, exp.model.tags.as_deref())
        .and_then(|info| crate::savedmodel::Loaded::load_parsed(info, trust))
        .map_err(|e| src.error("model.path", e.to_string()))?;
    Ok(m.info.variables().len())
}

/// Whether a file can be created (and removed) in `dir`: the honest test, whatever the user.
/// The probe's name is unguessable and it is created with `O_CREAT | O_EXCL` (`create_new`),
/// which fails on any existing path, a planted symlink included: nothing is ever followed.
fn writable(dir: &Path) -> std::io::Result<()> {
    let nonce: u64 = rand::random();
    let p = dir.join(format!(
        ".pretext-write-test-{}-{nonce:016x}",
        std::process::id()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)?;
    std::fs::remove_file(&p)
}

/// Creates and returns the next free `<root>/<stem>-<n>` directory (created atomically, so two
/// runs started at once get two directories).
pub fn new_run_dir(root: &Path, stem: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    for n in 1u64.. {
        let p = root.join(format!("{stem}-{n}"));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    unreachable!("u64 run numbers exhausted")
}
