//! Which model variables train: all trainable ones, those whose names match a regex, or those of
//! the last N layers of the serving path. The rest stay fixed and get no optimizer slots.
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::savedmodel::Variable;

/// The selection, as written in experiments (`--train-vars`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarSelection {
    #[default]
    All,
    /// Variables whose names match this regular expression.
    Regex(String),
    /// Variables of the last N layers (a layer: the name up to its last `/`), in the order the
    /// serving path reads them.
    LastLayers(usize),
}

impl VarSelection {
    /// Parses `all`, `regex:PATTERN` or `last:N`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "--train-vars",
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
            .contains("--train-vars"));
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
