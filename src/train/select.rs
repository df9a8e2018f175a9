//! Which model variables train: all trainable ones, those whose names match a regex, or those of
//! the last N layers of the serving path. The rest stay fixed and get no optimizer slots.
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::savedmodel::Variable;

/// The selection, as written in experiments: `all`, `{regex: PATTERN}` or `{last_layers: N}`
/// (the command line's `regex:PATTERN` and `last:N` are accepted too).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "serde_yaml::Value", into = "serde_yaml::Value")]
pub enum VarSelection {
    #[default]
    All,
    /// Variables whose names match this regular expression.
    Regex(String),
    /// Variables of the last N layers (a layer: the name up to its last `/`), in the order the
    /// serving path reads them.
    LastLayers(usize),
}

impl TryFrom<serde_yaml::Value> for VarSelection {
    type Error = String;

    fn try_from(v: serde_yaml::Value) -> std::result::Result<Self, String> {
        use serde_yaml::Value;
        let expected = "one of: all, {regex: PATTERN}, {last_layers: N} (N ≥ 1)";
        match v {
            Value::String(s) => {
                VarSelection::parse(&s).map_err(|_| format!("'{s}' is not {expected}"))
            }
            Value::Mapping(m) if m.len() == 1 => {
                let (k, val) = m.into_iter().next().expect("one entry");
                match (k.as_str(), val) {
                    (Some("regex"), Value::String(p)) => Ok(VarSelection::Regex(p)),
                    (Some("last_layers"), Value::Number(n)) => n
                        .as_u64()
                        .filter(|n| *n > 0)
                        .map(|n| VarSelection::LastLayers(n as usize))
                        .ok_or_else(|| format!("last_layers must be an integer ≥ 1, not {n}")),
                    (Some(key @ ("regex" | "last_layers")), other) => Err(format!(
                        "{key}: unexpected value {other:?}; expected {expected}"
                    )),
                    (key, _) => Err(format!("unknown selection {key:?}; expected {expected}")),
                }
            }
            other => Err(format!("unexpected {other:?}; expected {expected}")),
        }
    }
}

impl From<VarSelection> for serde_yaml::Value {
    fn from(s: VarSelection) -> Self {
        use serde_yaml::{Mapping, Value};
        let one = |k: &str, v: Value| {
            let mut m = Mapping::new();
            m.insert(Value::String(k.into()), v);
            Value::Mapping(m)
        };
        match s {
            VarSelection::All => Value::String("all".into()),
            VarSelection::Regex(p) => one("regex", Value::String(p)),
            VarSelection::LastLayers(n) => one("last_layers", Value::Number((n as u64).into())),
        }
    }
}

impl VarSelection {
    /// Parses `all`, `regex:PATTERN` or `last:N`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "model.train_vars",
                format!("'{s}' is not one of: all, regex:PATTERN, last:N"),
            )
        };
        if s == "all" {
            return Ok(VarSelection::All);
        }
        if let Some(p) = s.strip_prefix("regex:") {
            return Ok(VarSelection::Regex(p.to_string()));
        }
        if let Some(n) = s.strip_prefix("last:") {
            return n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .map(VarSelection::LastLayers)
                .ok_or_else(bad);
        }
        Err(bad())
    }

    /// Handles of the selected trainable variables. `read_order` lists variable handles in the
    /// order the serving path reads them.
    pub fn select(&self, vars: &[Variable], read_order: &[String]) -> Result<HashSet<String>> {
        let trainable: Vec<&Variable> = vars.iter().filter(|v| v.trainable).collect();
        let chosen: HashSet<String> = match self {
            VarSelection::All => trainable.iter().map(|v| v.handle.clone()).collect(),
            VarSelection::Regex(p) => {
                let re = regex::Regex::new(p).map_err(|e| {
                    Error::config("model.train_vars", format!("bad regex '{p}': {e}"))
                })?;
                trainable
                    .iter()
                    .filter(|v| re.is_match(&v.name))
                    .map(|v| v.handle.clone())
                    .collect()
            }
            VarSelection::LastLayers(n) => {
                let layer = |v: &Variable| {
                    v.name
                        .rsplit_once('/')
                        .map(|(l, _)| l.to_string())
                        .unwrap_or_else(|| v.name.clone())
                };
                let mut layers: Vec<String> = Vec::new();
                for h in read_order {
                    if let Some(v) = trainable.iter().find(|v| &v.handle == h) {
                        let l = layer(v);
                        if !layers.contains(&l) {
                            layers.push(l);
                        }
                    }
                }
                let keep: Vec<String> = layers.iter().rev().take(*n).cloned().collect();
                trainable
                    .iter()
                    .filter(|v| keep.contains(&layer(v)))
                    .map(|v| v.handle.clone())
                    .collect()
            }
        };
        if chosen.is_empty() {
            return Err(Error::config(
                "model.train_vars",
                format!("{self:?} selects no trainable variable"),
            ));
        }
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, trainable: bool) -> Variable {
        Variable {
            handle: format!("h/{name}"),
            name: name.into(),
            trainable,
            dtype: 1,
            shape: vec![1],
        }
    }

    #[test]
    fn yaml_forms_round_trip_and_bad_ones_are_named() {
        for (text, want) in [
            ("all", VarSelection::All),
            (
                "{regex: \"block_1[0-6]_|Conv_1\"}",
                VarSelection::Regex("block_1[0-6]_|Conv_1".into()),
            ),
            ("{last_layers: 3}", VarSelection::LastLayers(3)),
            ("\"regex:^conv\"", VarSelection::Regex("^conv".into())),
            ("last:2", VarSelection::LastLayers(2)),
        ] {
            let got: VarSelection = serde_yaml::from_str(text).unwrap();
            assert_eq!(got, want, "{text}");
            let back: VarSelection =
                serde_yaml::from_value(serde_yaml::to_value(&got).unwrap()).unwrap();
            assert_eq!(back, want, "{text} round trip");
        }
        for (text, says) in [
            ("{last_layers: 0}", "last_layers must be an integer"),
            ("{last_layers: x}", "last_layers: unexpected value"),
            ("{layers: 3}", "unknown selection"),
            ("some", "'some' is not one of"),
            ("[1]", "expected one of"),
        ] {
            let e = serde_yaml::from_str::<VarSelection>(text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn selections() {
        let vars = vec![
            var("conv/kernel", true),
            var("conv/bias", true),
            var("bn/gamma", true),
            var("bn/moving_mean", false),
            var("dense/kernel", true),
        ];
        let order: Vec<String> = vars.iter().map(|v| v.handle.clone()).collect();
        assert_eq!(VarSelection::All.select(&vars, &order).unwrap().len(), 4);
        let r = VarSelection::parse("regex:^conv/")
            .unwrap()
            .select(&vars, &order)
            .unwrap();
        assert_eq!(
            r,
            ["h/conv/kernel", "h/conv/bias"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        let l = VarSelection::parse("last:2")
            .unwrap()
            .select(&vars, &order)
            .unwrap();
        assert_eq!(
            l,
            ["h/bn/gamma", "h/dense/kernel"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        assert!(VarSelection::parse("last:0").is_err());
        assert!(VarSelection::parse("some")
            .unwrap_err()
            .to_string()
            .contains("model.train_vars"));
        let e = VarSelection::parse("regex:nomatch")
            .unwrap()
            .select(&vars, &order)
            .unwrap_err()
            .to_string();
        assert!(e.contains("selects no trainable variable"), "{e}");
        assert!(VarSelection::Regex("(".into())
            .select(&vars, &order)
            .is_err());
    }
}
