//! Experiment files: every bad input gives FILE:LINE:COLUMN, the key path and the valid choices.
use super::*;

fn parse(text: &str) -> Result<Experiment> {
    Source::new("exp.yaml".into(), text.into()).parse(&[])
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const OK: &str = "model:\n  path: m\ndata:\n  folders: [imgs]\n";

#[test]
fn minimal_file_gets_defaults() {
    let e = parse(OK).unwrap();
    assert_eq!(e.model.signature, "serving_default");
    assert_eq!(e.train.batch, 32);
    assert_eq!(e.steps(1000), 100);
    assert!(e.data.shuffle && e.data.recursive);
    assert_eq!(e.head.head().kind(), "dae");
}

#[test]
fn unknown_key_names_place_path_and_choices() {
    let e = err("model:\n  path: m\n  sise: 96\ndata:\n  folders: [imgs]\n");
    assert!(
        e.starts_with("exp.yaml:3:3: model: unknown field `sise`"),
        "{e}"
    );
    assert!(e.contains("`size`"), "{e}");
}

#[test]
fn unknown_head_kind_lists_the_kinds() {
    let e = err(&format!("{OK}head:\n  kind: simclrr\n"));
    assert!(e.contains("exp.yaml:") && e.contains("simclrr"), "{e}");
    assert!(e.contains("`simclr`") && e.contains("`moco`"), "{e}");
}

#[test]
fn wrong_type_and_bad_values_are_located() {
    let e = err(&format!("{OK}train:\n  batch: many\n"));
    assert!(
        e.starts_with("exp.yaml:6:10: train.batch: invalid type"),
        "{e}"
    );
    let e = err(&format!("{OK}optimizer:\n  learning_rate: -0.1\n"));
    assert_eq!(
        e,
        "exp.yaml:6:3: optimizer.learning_rate: -0.1 must be a positive number"
    );
    let e = err(&format!("{OK}head:\n  kind: simclr\n  temperature: 0\n"));
    assert!(
        e.starts_with("exp.yaml:7:3: head.temperature: 0 must be > 0"),
        "{e}"
    );
    let e = err(&format!("{OK}train:\n  steps: 5\n  epochs: 2\n"));
    assert!(e.contains("train.epochs") && e.contains("not both"), "{e}");
}

#[test]
fn empty_and_non_mapping_files_are_refused() {
    assert!(err("").contains("empty"));
    assert!(err("# only a comment\n").contains("empty"));
    assert!(err("- a\n- b\n").contains("expected a YAML mapping"));
    let e = err("model: [unclosed\n");
    assert!(e.starts_with("exp.yaml:"), "{e}");
}

#[test]
fn overrides_apply_and_bad_overrides_name_themselves() {
    let s = Source::new("exp.yaml".into(), OK.into());
    let e = s
        .parse(&["train.steps=7".into(), "head.kind=rotation".into()])
        .unwrap();
    assert_eq!(e.train.steps, Some(7));
    assert_eq!(e.head.head().kind(), "rotation");
    let bad = s.parse(&["train.batch=-3".into()]).unwrap_err().to_string();
    assert!(
        bad.starts_with("--set train.batch=-3: train.batch"),
        "{bad}"
    );
    let bad = s.parse(&["train.steps".into()]).unwrap_err().to_string();
    assert!(bad.contains("KEY.PATH=VALUE"), "{bad}");
}

#[test]
fn warmup_cosine_ends_at_the_run_length_by_default() {
    let e = parse(&format!(
        "{OK}optimizer:\n  schedule:\n    kind: warmup_cosine\n    warmup_steps: 10\n"
    ))
    .unwrap();
    match e.train_config(500).optimizer.schedule() {
        Schedule::WarmupCosine { total_steps, .. } => assert_eq!(*total_steps, 500),
        s => panic!("{s:?}"),
    }
}

#[test]
fn steps_from_epochs() {
    let e = parse(&format!("{OK}train:\n  epochs: 2.5\n  batch: 64\n")).unwrap();
    assert_eq!(e.steps(1000), 40);
}

#[test]
fn train_vars_take_the_documented_forms_and_name_the_key_when_bad() {
    let with =
        |v: &str| format!("model:\n  path: m\n  train_vars: {v}\ndata:\n  folders: [imgs]\n");
    let e = parse(&with("{regex: \"block_1[0-6]_\"}")).unwrap();
    assert_eq!(
        e.model.train_vars,
        crate::train::select::VarSelection::Regex("block_1[0-6]_".into())
    );
    let e = parse(&with("{last_layers: 3}")).unwrap();
    assert_eq!(
        e.model.train_vars,
        crate::train::select::VarSelection::LastLayers(3)
    );
    let e = err(&with("{last_layers: 0}"));
    assert!(
        e.starts_with("exp.yaml:3:3: model.train_vars: last_layers must be an integer ≥ 1"),
        "{e}"
    );
}

#[test]
fn optimizer_settings_belong_to_their_kind_and_kinds_default() {
    let e = err(&format!("{OK}optimizer:\n  kind: adam\n  nesterov: true\n"));
    assert!(e.contains("unknown field `nesterov`"), "{e}");
    assert!(e.starts_with("exp.yaml:"), "located in the file: {e}");
    let x = parse(&format!("{OK}optimizer:\n  learning_rate: 0.01\n")).unwrap();
    assert_eq!(x.optimizer.kind(), "adam");
    assert_eq!(x.optimizer.learning_rate(), 0.01);
    let x = parse(&format!("{OK}optimizer:\n  kind: sgd\n  nesterov: true\n")).unwrap();
    assert!(matches!(
        x.optimizer,
        crate::optim::OptimizerConfig::Sgd(crate::optim::SgdConfig { nesterov: true, .. })
    ));
    let x = parse(&format!("{OK}head:\n  noise_level: 0.2\n")).unwrap();
    assert_eq!(x.head.head().kind(), "dae");
}

#[test]
fn the_library_defaults_are_the_schema_defaults() {
    let e = Experiment::new("m".into(), vec!["imgs".into()]);
    assert_eq!(e, parse(OK).unwrap());
    let c = crate::train::TrainConfig::new("m".into(), "imgs".into());
    assert_eq!(c.batch, e.train.batch);
    assert_eq!(c.steps, TrainSection::DEFAULT_STEPS);
    assert_eq!(c.bn_momentum, e.model.bn_momentum);
    assert_eq!(c.signature, crate::savedmodel::DEFAULT_SIGNATURE);
    assert_eq!(c.optimizer, e.optimizer);
}

#[test]
fn a_run_config_of_an_older_pretext_still_loads() {
    // Before per-kind optimizer configs, run directories stored every optimizer setting.
    let old = format!(
        "{OK}optimizer:\n  kind: adam\n  learning_rate: 0.001\n  momentum: 0.9\n  nesterov: false\n  \
         beta1: 0.9\n  beta2: 0.999\n  epsilon: 1.0e-7\n  weight_decay: 0.0\n  trust_coefficient: 0.001\n  \
         schedule: {{kind: constant}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.yaml");
    std::fs::write(&p, &old).unwrap();
    let e = Source::read(&p)
        .unwrap()
        .parse(&[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown field `momentum`"),
        "a user's file is checked: {e}"
    );
    let x = Source::read_run_config(&p).unwrap().parse(&[]).unwrap();
    assert_eq!(x.optimizer.kind(), "adam");
    assert_eq!(x.optimizer.learning_rate(), 0.001);
}
