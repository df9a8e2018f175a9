//! Reading an experiment file: YAML syntax and schema errors with FILE:LINE:COLUMN and the key
//! path, `--set key.path=value` overrides, and the location of a key for later errors.
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::overrides::{default_kinds, drop_foreign_optimizer_keys, given, set, Override};
use super::Experiment;
use crate::error::{Error, Result};

/// Where an experiment came from, kept to name keys in later errors in the words of the
/// front end: `FILE:LINE:COLUMN` for a YAML file, the flag for `pretext train`.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    /// For an experiment made of flags: (key path, flag) of every flag that sets a key.
    flags: Option<Vec<(String, String)>>,
    /// A run directory's own config.yaml (written by pretext, perhaps an older one).
    run_config: bool,
}

/// Line and column (1-based) of the key at `path` (`a.b.c`; list indices like `heads[0]` are
/// matched by their key) in block-style YAML `text`.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let want: Vec<String> = path
        .split('.')
        .map(|k| k.split('[').next().unwrap_or(k).to_string())
        .collect();
    // (indent, key) of the open mappings above the current line.
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let body = line.split(" #").next().unwrap_or(line);
        let trimmed = body.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = body.len() - trimmed.len();
        let mut rest = trimmed;
        while let Some(r) = rest.strip_prefix("- ") {
            indent += 2;
            rest = r.trim_start();
        }
        let Some((key, _)) = rest.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if key.is_empty() || key.contains(' ') {
            continue;
        }
        while stack.last().map(|(d, _)| *d >= indent).unwrap_or(false) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        if stack.len() == want.len() && stack.iter().zip(&want).all(|((_, k), w)| k == w) {
            return Some((i + 1, indent + 1));
        }
    }
    None
}

/// The largest experiment file read, and the deepest flow nesting parsed (YAML's parser is
/// quadratic in nesting: 100,000 `[` took over a minute to refuse).
const MAX_FILE_BYTES: u64 = 1 << 20;
const MAX_DEPTH: usize = 64;

/// Line and column (1-based) where flow brackets (`[`, `{`, outside quotes and comments) first
/// nest deeper than `max`.
fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        let mut quote: Option<char> = None;
        for (j, ch) in line.chars().enumerate() {
            match (quote, ch) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(ch),
                (None, '#') => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > max {
                        return Some((i + 1, j + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// Splits serde_yaml's "path: message at line L column C" into (key path, message).
fn split_message(msg: &str) -> (String, String) {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.split_once(": ") {
        Some((k, m)) if !k.is_empty() && !k.contains(' ') => (k.to_string(), m.to_string()),
        _ => ("(top level)".to_string(), msg.to_string()),
    }
}

impl Source {
    /// Reads an experiment file.
    pub fn read(path: &Path) -> Result<Source> {
        if path.is_dir() {
            return Err(Error::Experiment {
                at: path.display().to_string(),
                key: "(file)".into(),
                msg: "is a directory; pass a YAML experiment file".into(),
            });
        }
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > MAX_FILE_BYTES {
            return Err(Error::Experiment {
                at: path.display().to_string(),
                key: "(file)".into(),
                msg: format!(
                    "{len} bytes; an experiment file is at most {} KB",
                    MAX_FILE_BYTES >> 10
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Ok(Source::new(path.to_path_buf(), text))
    }

    /// An experiment file's `text`, as read from `path`.
    pub fn new(path: PathBuf, text: String) -> Source {
        Source {
            path,
            text,
            flags: None,
            run_config: false,
        }
    }

    /// The source of an experiment made of command-line flags: every key comes from an
    /// `Override`; `flags` lists (key path, flag) for each flag that sets a key, so errors
    /// about a key name its flag.
    pub fn flags(flags: Vec<(String, String)>) -> Source {
        Source {
            path: PathBuf::from("(command line)"),
            text: "{}".into(),
            flags: Some(flags),
            run_config: false,
        }
    }

    /// Reads the config.yaml a run directory holds (see `drop_foreign_optimizer_keys`).
    pub fn read_run_config(path: &Path) -> Result<Source> {
        let mut s = Source::read(path)?;
        s.run_config = true;
        Ok(s)
    }

    /// The flag that sets `key` (or a section above it), for an experiment made of flags.
    fn flag_for(&self, key: &str) -> Option<&str> {
        let flags = self.flags.as_ref()?;
        let mut k = key.split('[').next().unwrap_or(key);
        loop {
            if let Some((_, f)) = flags.iter().find(|(fk, _)| fk == k) {
                return Some(f);
            }
            k = k.rsplit_once('.')?.0;
        }
    }

    /// An error at the key `key` (located in the file when it is there).
    pub fn error(&self, key: &str, msg: impl Into<String>) -> Error {
        if self.flags.is_some() {
            return match self.flag_for(key) {
                Some(flag) => Error::Flag {
                    flag: flag.to_string(),
                    msg: msg.into(),
                },
                None => Error::Experiment {
                    at: "--set".into(),
                    key: key.to_string(),
                    msg: msg.into(),
                },
            };
        }
        let at = match locate(&self.text, key) {
            Some((l, c)) => format!("{}:{l}:{c}", self.path.display()),
            None => self.path.display().to_string(),
        };
        Error::Experiment {
            at,
            key: key.to_string(),
            msg: msg.into(),
        }
    }

    /// Parses and checks the experiment, after applying `--set` overrides (`key.path=value`,
    /// the value read as YAML).
    pub fn parse(&self, overrides: &[String]) -> Result<Experiment> {
        let overrides = overrides
            .iter()
            .map(|o| Override::parse(o))
            .collect::<Result<Vec<_>>>()?;
        self.parse_with(&overrides)
    }

    /// Parses and checks the experiment after setting each override's key, in order.
    pub fn parse_with(&self, overrides: &[Override]) -> Result<Experiment> {
        let file = self.path.display().to_string();
        let at_file = |msg: String| Error::Experiment {
            at: file.clone(),
            key: "(file)".into(),
            msg,
        };
        let yaml_error = |e: serde_yaml::Error| {
            let (key, msg) = split_message(&e.to_string());
            match e.location() {
                Some(l) => Error::Experiment {
                    at: format!("{file}:{}:{}", l.line(), l.column()),
                    key,
                    msg,
                },
                None => self.error(&key, msg),
            }
        };
        if let Some((l, c)) = too_deep(&self.text, MAX_DEPTH) {
            return Err(Error::Experiment {
                at: format!("{file}:{l}:{c}"),
                key: "(top level)".into(),
                msg: format!("brackets nested deeper than {MAX_DEPTH} levels; an experiment is a few sections of settings"),
            });
        }
        let mut value: Value = serde_yaml::from_str(&self.text).map_err(yaml_error)?;
        if value.is_null() {
            return Err(at_file(
                "the experiment file is empty; it needs at least `model:` and `data:` (see docs/EXPERIMENTS.md)".into(),
            ));
        }
        if !value.is_mapping() {
            return Err(at_file(
                "not an experiment: expected a YAML mapping of sections (model, data, head, …)"
                    .into(),
            ));
        }
        for o in overrides {
            set(&mut value, o)?;
        }
        // A chief's cluster from TF_CONFIG, when the experiment names none (a run directory's
        // config keeps the cluster it ran on).
        let from_env = !self.run_config && value.get("cluster").is_none() && {
            match crate::cluster::chief_cluster()? {
                Some(c) => {
                    let v = serde_yaml::to_value(&c)
                        .map_err(|e| Error::internal("the cluster of TF_CONFIG", e))?;
                    value["cluster"] = v;
                    true
                }
                None => false,
            }
        };
        let legacy = self.run_config && drop_foreign_optimizer_keys(&mut value);
        let filled = default_kinds(&mut value) || legacy || from_env;
        let exp: Experiment = if overrides.is_empty() && !filled {
            serde_yaml::from_str::<Experiment>(&self.text).map_err(|e| {
                // A value refused by a conversion (e.g. `model.train_vars`) is reported by
                // serde_yaml at its enclosing section; the path tracker names the key itself.
                let deeper = serde_path_to_error::deserialize::<_, Experiment>(value.clone())
                    .err()
                    .map(|p| p.path().to_string());
                let (key, msg) = split_message(&e.to_string());
                match deeper {
                    Some(path)
                        if path.starts_with(&format!("{key}."))
                            && !msg.starts_with("unknown field") =>
                    {
                        self.error(&path, msg)
                    }
                    _ => yaml_error(e),
                }
            })?
        } else {
            serde_path_to_error::deserialize(value).map_err(|e| {
                let key = e.path().to_string();
                let (_, msg) = split_message(&e.inner().to_string());
                match given(overrides, &key, &msg) {
                    Some(o) => o.error(key, msg),
                    None => self.error(&key, msg),
                }
            })?
        };
        exp.check_settings().map_err(|e| match e {
            Error::Config { key, msg } if from_env && key.as_str().starts_with("cluster") => {
                Error::config(crate::cluster::TF_CONFIG, msg)
            }
            Error::Config { key, msg } => match given(overrides, key.as_str(), &msg) {
                Some(o) => o.error(key.to_string(), msg),
                None => self.error(key.as_str(), msg),
            },
            e => e,
        })?;
        Ok(exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys_and_list_items() {
        let t = "model:\n  path: m\n  size: 96\n# c\nhead:\n  kind: multi\n  heads:\n    - weight: 1\n      head:\n        kind: dae\noptimizer:\n  learning_rate: -1\n";
        assert_eq!(locate(t, "model.size"), Some((3, 3)));
        assert_eq!(locate(t, "optimizer.learning_rate"), Some((12, 3)));
        assert_eq!(locate(t, "head.heads[0].weight"), Some((8, 7)));
        assert_eq!(locate(t, "head.heads[0].head.kind"), Some((10, 9)));
        assert_eq!(locate(t, "model.nothing"), None);
    }
}
