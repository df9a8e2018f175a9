//! Optimizer parity: three steps must equal Keras 3's optimizers (tests/golden/optim.json,
//! produced by scripts/golden_optim.py).
use super::*;
use tensorflow::{ops, DataType, Scope, Session, SessionOptions, SessionRunArgs, Shape, Tensor};

#[derive(serde::Deserialize)]
struct SchedCase {
    base: f32,
    warmup: u64,
    total: u64,
    alpha: f32,
    lr: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct Golden {
    schedules: Vec<SchedCase>,
    init: Vec<serde_json::Value>,
    shapes: Vec<Vec<u64>>,
    grads: Vec<Vec<serde_json::Value>>,
    cases: Vec<Case>,
}
#[derive(serde::Deserialize)]
struct Case {
    config: serde_json::Value,
    after: Vec<Vec<serde_json::Value>>,
}

fn flat(v: &serde_json::Value, out: &mut Vec<f32>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| flat(x, out)),
        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
        _ => panic!("bad golden value"),
    }
}
fn flatten(v: &serde_json::Value) -> Vec<f32> {
    let mut o = Vec::new();
    flat(v, &mut o);
    o
}

/// The golden case's config: its kind with the keys that kind has (momentum 0 unless given).
fn config_of(c: &serde_json::Value) -> OptimizerConfig {
    let keys: &[&str] = match c["kind"].as_str().unwrap() {
        "sgd" => &["learning_rate", "momentum", "nesterov", "weight_decay"],
        "lars" => &[
            "learning_rate",
            "momentum",
            "weight_decay",
            "trust_coefficient",
        ],
        _ => &["learning_rate", "beta1", "beta2", "epsilon", "weight_decay"],
    };
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), c["kind"].clone());
    if keys.contains(&"momentum") {
        m.insert("momentum".into(), 0.0.into());
    }
    for k in keys {
        if let Some(v) = c.get(*k) {
            m.insert(k.to_string(), v.clone());
        }
    }
    serde_json::from_value(serde_json::Value::Object(m)).unwrap()
}

#[test]
fn three_steps_match_keras_optimizers() {
    let g: Golden = serde_json::from_str(include_str!("../../tests/golden/optim.json")).unwrap();
    for case in &g.cases {
        let cfg = config_of(&case.config);
        let mut scope = Scope::new_root_scope();
        let mut params = Vec::new();
        let mut feeds = Vec::new();
        let mut init_ops = Vec::new();
        for (i, (init, shape)) in g.init.iter().zip(&g.shapes).enumerate() {
            let dims: Vec<Option<i64>> = shape.iter().map(|&d| Some(d as i64)).collect();
            let h: Output = ops::VarHandleOp::new()
                .dtype(DataType::Float)
                .shape(Shape::from(Some(dims)))
                .shared_name(format!("v{i}"))
                .build(&mut scope.with_op_name(&format!("v{i}")))
                .unwrap()
                .into();
            let t = Tensor::new(shape).with_values(&flatten(init)).unwrap();
            let c = ops::constant(t, &mut scope).unwrap();
            init_ops.push(ops::assign_variable_op(h.clone(), c, &mut scope).unwrap());
            let value: Output = ops::ReadVariableOp::new()
                .dtype(DataType::Float)
                .build(h.clone(), &mut scope)
                .unwrap()
                .into();
            let grad: Output = ops::Placeholder::new()
                .dtype(DataType::Float)
                .build(&mut scope.with_op_name(&format!("g{i}")))
                .unwrap()
                .into();
            feeds.push(grad.clone());
            params.push(Param {
                name: format!("v{i}"),
                handle: h,
                value,
                grad,
            });
        }
        let opt = cfg.init(&mut scope, &params, &[]).unwrap();
        let session = Session::new(&SessionOptions::new(), &scope.graph()).unwrap();
        let mut run = SessionRunArgs::new();
        for o in init_ops.iter().chain([&opt.init_op]) {
            run.add_target(o);
        }
        session.run(&mut run).unwrap();
        for (step, (grads, expect)) in g.grads.iter().zip(&case.after).enumerate() {
            let tensors: Vec<Tensor<f32>> = grads
                .iter()
                .zip(&g.shapes)
                .map(|(gv, s)| Tensor::new(s).with_values(&flatten(gv)).unwrap())
                .collect();
            let mut run = SessionRunArgs::new();
            for (f, t) in feeds.iter().zip(&tensors) {
                run.add_feed(&f.operation, 0, t);
            }
            run.add_target(&opt.train_op);
            session.run(&mut run).unwrap();
            for (p, e) in params.iter().zip(expect) {
                let mut r = SessionRunArgs::new();
                let tok = r.request_fetch(&p.value.operation, 0);
                session.run(&mut r).unwrap();
                let got: Tensor<f32> = r.fetch(tok).unwrap();
                for (a, b) in got.iter().zip(flatten(e)) {
                    let rel = (a - b).abs() / b.abs().max(1e-3);
                    assert!(
                        rel < 1e-5,
                        "{:?} step {} {}: got {a}, Keras {b}",
                        case.config,
                        step + 1,
                        p.name
                    );
                }
            }
        }
    }
}

#[test]
fn bad_settings_name_their_key() {
    let mut c = OptimizerConfig::default();
    c.set_learning_rate(-0.1);
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("optimizer.learning_rate"));
    let c = OptimizerConfig::Adam(AdamConfig {
        beta2: 1.0,
        ..Default::default()
    });
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("optimizer.beta2"));
}

#[test]
fn warmup_cosine_matches_keras_cosine_decay() {
    let g: Golden = serde_json::from_str(include_str!("../../tests/golden/optim.json")).unwrap();
    for case in &g.schedules {
        let sched = Schedule::WarmupCosine {
            warmup_steps: case.warmup,
            total_steps: case.total,
            alpha: case.alpha,
        };
        sched.validate().unwrap();
        let mut scope = Scope::new_root_scope();
        let step: Output = ops::Placeholder::new()
            .dtype(DataType::Float)
            .build(&mut scope.with_op_name("t"))
            .unwrap()
            .into();
        let lr = sched.build(&mut scope, case.base, step.clone()).unwrap();
        let session = Session::new(&SessionOptions::new(), &scope.graph()).unwrap();
        for (t, want) in case.lr.iter().enumerate() {
            let x = Tensor::from(t as f32);
            let mut run = SessionRunArgs::new();
            run.add_feed(&step.operation, 0, &x);
            let tok = run.request_fetch(&lr.operation, lr.index);
            session.run(&mut run).unwrap();
            let got: Tensor<f32> = run.fetch(tok).unwrap();
            assert!(
                (got[0] - want).abs() <= 1e-6 + 1e-5 * want.abs(),
                "step {t}: {} vs Keras {want}",
                got[0]
            );
        }
    }
    let bad = Schedule::WarmupCosine {
        warmup_steps: 10,
        total_steps: 10,
        alpha: 0.0,
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("warmup_steps"));
}
