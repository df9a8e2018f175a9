//! `pretext train --help`: each flag's default read from the experiment schema (the only place
//! it is written) and shown as the flag takes it.
use pretext::experiment::Experiment;
use serde_yaml::Value;

use crate::cli_train::FLAGS;

/// `--help` shows each flag's default, read from the experiment schema (the only place it is
/// written).
pub fn with_defaults(cmd: clap::Command) -> clap::Command {
    let exp = Experiment::new("MODEL".into(), vec!["IMAGES".into()]);
    let mut sources = vec![serde_yaml::to_value(&exp).expect("an experiment")];
    for kind in ["simclr", "moco", "inpaint"] {
        let head: pretext::heads::HeadConfig =
            serde_yaml::from_str(&format!("kind: {kind}")).expect("a head with defaults");
        let mut v = serde_yaml::Mapping::new();
        v.insert(
            "head".into(),
            serde_yaml::to_value(head).expect("a head config"),
        );
        sources.push(Value::Mapping(v));
    }
    let lookup = |key: &str| {
        if key == "train.steps" {
            return Some(pretext::experiment::TrainSection::DEFAULT_STEPS.to_string());
        }
        sources.iter().find_map(|root| {
            let v = key.split('.').try_fold(root, |v, k| v.get(k))?;
            match v {
                Value::Null | Value::Mapping(_) => None,
                Value::Sequence(s) if s.is_empty() => None,
                v => Some(shown(key, v)),
            }
        })
    };
    let mut cmd = cmd;
    for (flag, key) in FLAGS
        .iter()
        .filter(|(f, _)| !matches!(*f, "model" | "images"))
    {
        let id = flag.replace('-', "_");
        let Some(d) = lookup(key) else { continue };
        cmd = cmd.mut_arg(id, |a| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            a.help(format!("{help} [default: {d}]").trim().to_string())
        });
    }
    cmd
}

/// A default as a flag takes it: floats as f32, `[0, 1]` as `0,1`, enum words with `-`.
fn shown(key: &str, v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => format!("{}", n.as_f64().unwrap_or(0.0) as f32),
        Value::Sequence(s) => s
            .iter()
            .map(|x| shown(key, x))
            .collect::<Vec<_>>()
            .join(","),
        Value::String(s) if matches!(key, "model.bn" | "head.noise") => s.replace('_', "-"),
        v => serde_yaml::to_string(v)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}
