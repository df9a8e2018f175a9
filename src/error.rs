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
    #[error(
        "{path}: no readable image ({skipped} file(s) skipped); put JPEG/PNG/WebP files there"
    )]
    NoImages { path: PathBuf, skipped: usize },
    #[error("{path}: {msg}")]
    Export { path: PathBuf, msg: String },
    #[error("setting '{key}': {msg}")]
    Config { key: String, msg: String },
    /// A bad experiment file: `at` is `FILE:LINE:COLUMN` (or `FILE`, or the `--set` given).
    #[error("{at}: {key}: {msg}")]
    Experiment {
        at: String,
        key: String,
        msg: String,
    },
}

impl Error {
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
            msg: status.to_string(),
        }
    }

    /// A graph construction problem at a named node.
    pub fn graph(node: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Graph {
            node: node.into(),
            msg: msg.into(),
        }
    }

    /// A bad setting, named by its key path.
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            msg: msg.into(),
        }
    }
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
