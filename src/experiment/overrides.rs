//! Keys set on top of an experiment file: `--set KEY.PATH=VALUE` and the flags of `pretext
//! train`, each remembered as the user gave it so errors name it; default kinds of tagged
//! sections.
use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};

/// One key set on top of the file (`--set KEY=VALUE`, or a flag of `pretext train`).
#[derive(Debug, Clone)]
pub struct Override {
    pub key: String,
    pub value: Value,
    /// How the user gave it, for errors: `--set train.steps=0`, `--steps`.
    pub shown: String,
}

impl Override {
    /// `KEY.PATH=VALUE` of `--set`, the value read as YAML.
    pub fn parse(spec: &str) -> Result<Override> {
        let at = format!("--set {spec}");
        let bad = |key: &str, msg: String| Error::Experiment {
            at: at.clone(),
            key: key.to_string(),
            msg,
        };
        let (key, raw) = spec
            .split_once('=')
            .ok_or_else(|| bad(spec, "expected KEY.PATH=VALUE".into()))?;
        if raw.trim().is_empty() {
            return Err(bad(
                key.trim(),
                "empty value; give one, or KEY=null for the default".into(),
            ));
        }
        let value: Value =
            serde_yaml::from_str(raw).map_err(|e| bad(key, format!("value is not YAML: {e}")))?;
        Ok(Override {
            key: key.trim().to_string(),
            value,
            shown: at.clone(),
        })
    }

    /// The error `msg` about this override (`key`: the key path it concerns).
    pub(super) fn error(&self, key: String, msg: String) -> Error {
        match self.shown.starts_with("--set ") {
            true => Error::Experiment {
                at: self.shown.clone(),
                key,
                msg,
            },
            false => Error::Flag {
                flag: self.shown.clone(),
                msg,
            },
        }
    }
}

pub(super) fn set(root: &mut Value, o: &Override) -> Result<()> {
    let key = o.key.as_str();
    let bad = |msg: String| o.error(key.to_string(), msg);
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key in the path".into()));
    }
    let mut cur = root;
    for (i, p) in parts.iter().enumerate() {
        if cur.is_null() {
            *cur = Value::Mapping(Mapping::new());
        }
        let map = cur.as_mapping_mut().ok_or_else(|| {
            bad(format!(
                "'{}' is not a section, cannot set a key inside it",
                parts[..i].join(".")
            ))
        })?;
        let k = Value::String(p.to_string());
        if i + 1 == parts.len() {
            map.insert(k, o.value.clone());
            return Ok(());
        }
        cur = map.entry(k).or_insert(Value::Null);
    }
    Ok(())
}

/// Sections tagged by `kind` (head, optimizer) given without one get the default kind; true
/// when one was filled in.
pub(super) fn default_kinds(root: &mut Value) -> bool {
    let defaults = [
        ("head", crate::heads::HeadConfig::default().head().kind()),
        ("optimizer", crate::optim::OptimizerConfig::default().kind()),
    ];
    let mut filled = false;
    for (section, kind) in defaults {
        if let Some(m) = root.get_mut(section).and_then(Value::as_mapping_mut) {
            if !m.contains_key("kind") {
                m.insert("kind".into(), kind.into());
                filled = true;
            }
        }
    }
    filled
}

/// The override an error about `key` concerns: the last one that sets it or a section above
/// it, or (for an unknown field) the one that set that field.
pub(super) fn given<'o>(overrides: &'o [Override], key: &str, msg: &str) -> Option<&'o Override> {
    let field = msg
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
        .map(|f| {
            if key.is_empty() {
                f.to_string()
            } else {
                format!("{key}.{f}")
            }
        });
    if let Some(o) = overrides
        .iter()
        .rev()
        .find(|o| field.as_deref() == Some(o.key.as_str()))
    {
        return Some(o);
    }
    // Serde names a tagged section (head, optimizer) for errors inside it: a key set below
    // the one named is the likelier culprit than the section itself.
    let below = |o: &&Override| o.key.starts_with(&format!("{key}."));
    let at_or_above = |o: &&Override| {
        key == o.key
            || key.starts_with(&format!("{}.", o.key))
            || key.starts_with(&format!("{}[", o.key))
    };
    let above = overrides
        .iter()
        .rev()
        .filter(at_or_above)
        .max_by_key(|o| o.key.len());
    overrides.iter().rev().find(below).or(above)
}

/// Optimizer keys of another kind dropped from a run directory's own config.yaml: pretext
/// before 0.2 wrote every optimizer setting whatever the kind (`nesterov` for Adam), which the
/// per-kind schema refuses; those runs still resume and export. True when any was dropped.
pub(super) fn drop_foreign_optimizer_keys(root: &mut Value) -> bool {
    let Some(opt) = root.get_mut("optimizer").and_then(Value::as_mapping_mut) else {
        return false;
    };
    let default = crate::optim::OptimizerConfig::default();
    let kind = opt
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(default.kind())
        .to_string();
    let Ok(own) = serde_yaml::from_str::<crate::optim::OptimizerConfig>(&format!("kind: {kind}"))
        .and_then(serde_yaml::to_value)
    else {
        return false;
    };
    let foreign: Vec<Value> = opt
        .keys()
        .filter(|k| own.get(*k).is_none())
        .cloned()
        .collect();
    for k in &foreign {
        opt.remove(k);
    }
    if !foreign.is_empty() {
        log::warn!(
            "optimizer settings of other kinds than {kind} ignored in this run's config: {}",
            foreign
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    !foreign.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_create_and_replace_keys() {
        let mut v: Value = serde_yaml::from_str("train:\n  steps: 5\n").unwrap();
        let o = |spec: &str| Override::parse(spec).unwrap();
        set(&mut v, &o("train.steps=7")).unwrap();
        set(&mut v, &o("eval.labeled=d")).unwrap();
        assert_eq!(v["train"]["steps"], Value::from(7));
        assert_eq!(v["eval"]["labeled"], Value::from("d"));
        assert!(set(&mut v, &o("train.steps.x=1")).is_err());
    }

    #[test]
    fn errors_inside_a_tagged_section_blame_the_key_set_below_it() {
        let o = |spec: &str| Override::parse(spec).unwrap();
        let given_ = [
            o("head={kind: simclr}"),
            o("head.temperature=abc"),
            o("train.steps=3"),
        ];
        let at = |key: &str, msg: &str| given(&given_, key, msg).map(|o| o.shown.clone());
        assert_eq!(
            at("head", "invalid type").as_deref(),
            Some("--set head.temperature=abc")
        );
        assert_eq!(
            at("train.steps", "x").as_deref(),
            Some("--set train.steps=3")
        );
        let only_head = [o("head={kind: simclr}")];
        assert_eq!(
            given(&only_head, "head.heads[0]", "x").map(|o| o.shown.as_str()),
            Some("--set head={kind: simclr}")
        );
        assert!(given(&only_head, "model.size", "x").is_none());
    }
}
