//! The one error type of pretext: every variant names the file, node, op or setting involved.
use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each with the context a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a SavedModel: {reason}")]
    NotSavedModel { path: PathBuf, reason: String },
    #[error("{path}: cannot parse {what}: {msg}")]
    Parse {
        path: PathBuf,
        what: &'static str,
        msg: String,
    },
    #[error("{path}: no signature named '{name}' (available: {available})")]
    UnknownSignature {
        path: PathBuf,
        name: String,
        available: String,
    },
    #[error("{path}: the SavedModel could not be loaded in a TF session: {msg}")]
    Load { path: PathBuf, msg: String },
    #[error("{path}: variables could not be restored ({msg}); this SavedModel cannot be loaded the way TF Serving loads it — re-export it with tf.saved_model.save of a tf_keras model or Keras 3 model.export()")]
    Restore { path: PathBuf, msg: String },
    /// The audit (`savedmodel::audit`) found ops a model should not run unless trusted.
    #[error("{path}: refused before loading: {} op(s) would touch files, processes or the network when TensorFlow runs this model:{}\n  load it anyway only if you trust it: --trust-model (YAML: model.trust: true)", .findings.len(), .findings.iter().map(|f| format!("\n  {f}")).collect::<String>())]
    Untrusted {
        path: PathBuf,
        findings: Vec<String>,
    },
    /// A file of the model pretext will not read (a symlink out of the model folder, …).
    #[error("{path}: refused: {msg}")]
    ModelRefused { path: PathBuf, msg: String },
    #[error("graph: node '{node}': {msg}")]
    Graph { node: String, msg: String },
    #[error("TensorFlow error while {context}: {msg}")]
    Tf { context: String, msg: String },
    #[error("no gradient for {}: register one in autodiff::fallback or freeze the variables behind it", .ops.iter().map(|(op, node)| format!("{op} (node {node})")).collect::<Vec<_>>().join(", "))]
    NoGradient { ops: Vec<(String, String)> },
    /// Functional control flow (`If`, `Case`, `While`) kept on a gradient path: TF's C API
    /// cannot differentiate it (`autodiff::control_flow`).
    #[error("graph: node '{node}' ({op}): {why}; it lies on the gradient path from trainable variable(s) {} to the output {output}, and TensorFlow's C API has no gradient for {op} (nor has pretext a rule for it): freeze those variables (model.train_vars, --train-vars) or re-export the model without the {op}", .vars.join(", "))]
    ControlFlow {
        node: String,
        op: String,
        why: String,
        vars: Vec<String>,
        output: String,
    },
    #[error(
        "{path}: no readable image ({skipped} file(s) skipped); put JPEG/PNG/WebP files there"
    )]
    NoImages { path: PathBuf, skipped: usize },
    #[error("{path}: {msg}")]
    Export { path: PathBuf, msg: String },
    /// A bad setting, named by its place in the experiment schema; front ends render the key
    /// in their own words (`FILE:LINE:COL`, the flag).
    #[error("setting '{key}': {msg}")]
    Config { key: Key, msg: String },
    /// Another pretext process works on this run directory.
    #[error("{path} is in use by {}; wait for it to finish or stop it (lock: {path}/.lock)", .pid.map(|p| format!("pretext process {p}")).unwrap_or_else(|| "another pretext process".into()))]
    Locked { path: PathBuf, pid: Option<u32> },
    /// The loss stopped being a finite number at `step`.
    #[error("{msg}")]
    Diverged { step: u64, msg: String },
    /// A flag of the command line (`pretext train`), named as typed.
    #[error("{flag}: {msg}")]
    Flag { flag: String, msg: String },
    /// A task of the cluster (`cluster`) failed or stopped answering: which one, and what next.
    #[error("cluster: {task}: {msg}")]
    Cluster { task: String, msg: String },
    /// A bug in pretext, not in the input: what it was doing.
    #[error("internal error while {context}: {msg} (please report it)")]
    Internal { context: String, msg: String },
    /// A bad experiment file: `at` is `FILE:LINE:COLUMN` (or `FILE`, or the `--set` given).
    #[error("{at}: {key}: {msg}")]
    Experiment {
        at: String,
        key: String,
        msg: String,
    },
}

/// A setting's place in the experiment schema (`train.batch`, `head.heads[0].weight`): the
/// library's one name for a setting, whichever front end it came through.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    pub fn new(path: impl Into<String>) -> Key {
        Key(path.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// How the command line ends for an error (docs/ERRORS.md): 2 when the input must change (a
/// setting, an experiment file, a model or data pretext refuses, a locked run), 1 when the work
/// failed while running (I/O, TensorFlow, export, divergence). 130 is an interrupted run.
pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTERRUPTED: u8 = 130;

impl Error {
    /// The exit code of this error's class.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. }
            | Error::Experiment { .. }
            | Error::Flag { .. }
            | Error::UnknownSignature { .. }
            | Error::NotSavedModel { .. }
            | Error::Parse { .. }
            | Error::Load { .. }
            | Error::Restore { .. }
            | Error::Untrusted { .. }
            | Error::ModelRefused { .. }
            | Error::NoImages { .. }
            | Error::NoGradient { .. }
            | Error::ControlFlow { .. }
            | Error::Locked { .. } => EXIT_USAGE,
            Error::Io { .. }
            | Error::Graph { .. }
            | Error::Tf { .. }
            | Error::Export { .. }
            | Error::Diverged { .. }
            | Error::Cluster { .. }
            | Error::Internal { .. } => EXIT_RUNTIME,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a TensorFlow status with what pretext was doing.
    pub fn tf(context: impl Into<String>, status: tensorflow::Status) -> Self {
        Error::Tf {
            context: context.into(),
            msg: without_tf_hints(&status.to_string()),
        }
    }

    /// A graph construction problem at a named node.
    pub fn graph(node: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Graph {
            node: node.into(),
            msg: msg.into(),
        }
    }

    /// A bug in pretext: `context` is what it was doing.
    pub fn internal(context: impl Into<String>, msg: impl ToString) -> Self {
        Error::Internal {
            context: context.into(),
            msg: msg.to_string(),
        }
    }

    /// A bad setting, named by its key path.
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            key: Key::new(key),
            msg: msg.into(),
        }
    }
}

/// TF's status text without its advice for TF programmers (the "report_tensor_allocations_upon_oom"
/// hint it appends to every resource error, a full disk included).
fn without_tf_hints(msg: &str) -> String {
    msg.lines()
        .filter(|l| {
            !l.trim_start()
                .starts_with("Hint: If you want to see a list of allocated tensors")
        })
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

/// Adds a context string to TensorFlow results.
pub trait TfContext<T> {
    fn tf_ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> TfContext<T> for std::result::Result<T, tensorflow::Status> {
    fn tf_ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|s| Error::tf(context(), s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_hints_for_programmers_are_dropped() {
        let m = "RESOURCE_EXHAUSTED: save/x.tmp; No space left on device\n\t [[{{node save/SaveV2}}]]\n\
                 Hint: If you want to see a list of allocated tensors when OOM happens, add report_tensor_allocations_upon_oom to RunOptions for current allocation info.\n";
        assert_eq!(
            without_tf_hints(m),
            "RESOURCE_EXHAUSTED: save/x.tmp; No space left on device\n\t [[{{node save/SaveV2}}]]"
        );
    }

    #[test]
    fn exit_codes_by_class() {
        assert_eq!(Error::config("train.batch", "x").exit_code(), EXIT_USAGE);
        let locked = Error::Locked {
            path: "r".into(),
            pid: Some(7),
        };
        assert_eq!(locked.exit_code(), EXIT_USAGE);
        assert!(locked.to_string().contains("pretext process 7"));
        assert_eq!(Error::graph("n", "x").exit_code(), EXIT_RUNTIME);
        assert_eq!(
            Error::Diverged {
                step: 1,
                msg: "x".into()
            }
            .exit_code(),
            EXIT_RUNTIME
        );
    }
}
