//! Functional control flow (`graph::control_flow`, `autodiff::control_flow`) on the fixtures of
//! scripts/control_flow_fixtures.py: an `If` and a `Case` on constant predicates are inlined
//! (forward and gradients equal TF Python's, training runs); TF's C API has no gradient for a
//! kept `If` or `While`; a kept one on the gradient path is refused before training, naming
//! it; loops off the gradient path train.
mod common;
use common::*;

use pretext::graph::control_flow::Handling;
use pretext::graph::custom::CustomGradients;
use pretext::graph::{inline_signature, FlatGraph, Tower};
use pretext::proto::TensorRef;
use pretext::savedmodel::Loaded;
use pretext::train::Trainer;
use pretext::Error;
use tensorflow::{ops, Output, Tensor};

/// The fixture loaded and its signature inlined (no pass run).
fn inlined(name: &str) -> (Loaded, FlatGraph) {
    let m = Loaded::load(&fixture(name), Default::default()).unwrap();
    let sig = m.info.signature("serving_default").unwrap();
    let flat = inline_signature(&m.info, &sig, &m.scope.graph()).unwrap();
    (m, flat)
}

fn ops_of(flat: &FlatGraph, op: &str) -> usize {
    flat.graph_def.node.iter().filter(|n| n.op == op).count()
}

/// The inlined tower's output equals the original signature's and TF Python's (≤ 1e-5), and
/// its gradients of the golden loss equal tf.GradientTape's (≤ 1e-5 relative); (forward
/// error, worst gradient error).
fn equals_tf(name: &str) -> (f32, f32) {
    let (mut m, sig, tower) = load_with_tower(name);
    let x = golden_input(name);
    let original = m.run_signature(&sig, &x, "embedding").unwrap();
    let flat = m
        .run_f32(&[(&tower.inputs[0], &x)], &tower.outputs[0])
        .unwrap();
    let py = read_f32(&golden(name).join("output.bin"));
    let fwd = max_abs_diff(&flat, &original).max(max_abs_diff(&flat, &py));
    assert!(fwd <= 1e-5, "{name}: forward differs from TF's by {fwd:e}");
    let idx = index(name);
    let w = Tensor::new(&dims(&idx["output_shape"]))
        .with_values(&read_f32(&golden(name).join("weights.bin")))
        .unwrap();
    let loss = weighted_sum_loss(&m.scope, tower.outputs[0].clone(), w);
    let tower = std::slice::from_ref(&tower);
    let grads = pretext::autodiff::gradients(&mut m.scope, tower, loss, &tower[0].reads, "g");
    let grads = grads.unwrap();
    let want = read_f32(&golden(name).join("grads.bin"));
    let mut worst = 0f32;
    for v in idx["vars"].as_array().unwrap() {
        let handle = TensorRef::node_of(v["graph_input"].as_str().unwrap()).to_string();
        let off = v["offset"].as_u64().unwrap() as usize;
        let expect = &want[off..off + v["size"].as_u64().unwrap() as usize];
        let scale = expect.iter().fold(0f32, |a, b| a.max(b.abs()));
        let got = grads.iter().find(|g| g.handle == handle).map(|g| {
            let t = m.run_f32(&[(&tower[0].inputs[0], &x)], &g.grad).unwrap();
            t.to_vec()
        });
        let Some(got) = got else {
            // A variable only the branch not taken reads: TF's gradient is zeros.
            assert_eq!(scale, 0.0, "{name}/{handle}: no gradient, TF has one");
            continue;
        };
        assert!(
            scale > 0.0,
            "{name}/{handle}: TF's gradient is zero, pretext's is not"
        );
        let rel = max_abs_diff(&got, expect) / scale;
        println!("{name}/{handle}: gradient max relative error {rel:e}");
        assert!(
            rel <= 1e-5,
            "{name}/{handle}: gradient max relative error {rel:e}"
        );
        worst = worst.max(rel);
    }
    println!("{name}: forward max abs error {fwd:e}, gradients max relative error {worst:e}");
    (fwd, worst)
}

/// The current value of the model variable whose handle is `handle`.
fn value_of(t: &mut Trainer, handle: &str) -> Vec<f32> {
    let h = t.model().handle(handle).unwrap();
    let r: Output = {
        let mut s = t.model().scope.new_sub_scope("test_read");
        ops::ReadVariableOp::new()
            .dtype(tensorflow::DataType::Float)
            .build(h, &mut s)
            .unwrap()
            .into()
    };
    t.model().run_f32(&[], &r).unwrap().to_vec()
}

/// Three training steps with finite losses; the variables `moved` change.
fn trains(name: &str, moved: &[&str]) {
    let mut c = cfg(name, 3);
    c.batch = 8;
    let mut t = Trainer::new(&c).unwrap_or_else(|e| panic!("{name}: {e}"));
    let before: Vec<Vec<f32>> = moved.iter().map(|v| value_of(&mut t, v)).collect();
    let losses = t.run(3).unwrap();
    assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
    for (v, b) in moved.iter().zip(before) {
        assert_ne!(value_of(&mut t, v), b, "{name}: {v} did not train");
    }
}

#[test]
fn a_cond_on_a_constant_predicate_is_inlined_and_computes_what_tf_does() {
    let (_m, flat) = inlined("cf_cond_const");
    let cf = &flat.control_flow;
    assert_eq!(cf.len(), 1, "{cf:?}");
    assert!(cf[0].op.ends_with("If"), "{cf:?}");
    // LogicalNot(Equal(2, 3)) is true: the then branch.
    let then = |f: &str| f.contains("true");
    assert!(
        matches!(&cf[0].handling, Handling::Inlined { index: 0, function } if then(function)),
        "{cf:?}"
    );
    assert_eq!(ops_of(&flat, "If") + ops_of(&flat, "StatelessIf"), 0);
    equals_tf("cf_cond_const");
    trains(
        "cf_cond_const",
        &["stem/kernel", "a/kernel", "dense/kernel"],
    );
}

/// Gradients of sum(output · w) on fixture `name` with the trainer's passes, custom gradients
/// taken as `mode` says: (variable handle, gradient) sorted by handle.
fn gradients_with(name: &str, mode: CustomGradients) -> Vec<(String, Vec<f32>)> {
    let mut m = Loaded::load(&fixture(name), Default::default()).unwrap();
    let sig = m.info.signature("serving_default").unwrap();
    let tower = prepared_tower(&mut m, &sig, true, mode).unwrap();
    // Saved: differentiated in stages, the custom node's by its stored function.
    let staged = !tower.backward.stages.is_empty();
    assert_eq!(staged, mode == CustomGradients::Saved, "{name}: stages");
    let wave = |n: usize| {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect::<Vec<_>>()
    };
    let w = Tensor::new(&[2, 16]).with_values(&wave(32)).unwrap();
    let x = Tensor::new(&[2, 32, 32, 3])
        .with_values(&wave(6144))
        .unwrap();
    let loss = weighted_sum_loss(&m.scope, tower.outputs[0].clone(), w);
    let towers = std::slice::from_ref(&tower);
    let grads = pretext::autodiff::gradients(&mut m.scope, towers, loss, &tower.reads, "g");
    let mut out: Vec<(String, Vec<f32>)> = grads
        .unwrap()
        .iter()
        .map(|g| {
            let v = m.run_f32(&[(&tower.inputs[0], &x)], &g.grad).unwrap();
            (g.handle.clone(), v.to_vec())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The SiLU inside the inlined branch is recorded as a custom gradient with its stored
/// function, which gives the gradient the forward ops give (SiLU's is exact), and it trains.
#[test]
fn custom_gradients_inside_an_inlined_branch_are_recorded_and_taken() {
    let name = "cf_cond_custom";
    let (_m, flat) = inlined(name);
    let cond = &flat.control_flow[0];
    assert!(
        matches!(cond.handling, Handling::Inlined { index: 0, .. }),
        "{cond:?}"
    );
    let custom = &flat.backward.custom;
    assert_eq!(custom.len(), 1, "{custom:?}");
    assert!(
        custom[0].node.starts_with(&format!("{}/", cond.node)),
        "{custom:?}"
    );
    assert!(custom[0].saved.is_some(), "{custom:?}");
    let saved = gradients_with(name, CustomGradients::Saved);
    let forward = gradients_with(name, CustomGradients::Forward);
    assert_eq!(saved.len(), 3, "stem, a, dense: {saved:?}");
    for ((h, s), (h2, f)) in saved.iter().zip(&forward) {
        assert_eq!(h, h2);
        let scale = f.iter().fold(0f32, |a, b| a.max(b.abs()));
        let rel = max_abs_diff(s, f) / scale;
        println!("{name}/{h}: stored vs forward gradient, max relative difference {rel:e}");
        assert!(scale > 0.0 && rel <= 1e-5, "{name}/{h}: {rel:e}");
    }
    trains(name, &["stem/kernel", "a/kernel", "dense/kernel"]);
}

#[test]
fn a_switch_case_on_a_constant_index_is_inlined_with_its_nested_cond() {
    let (_m, flat) = inlined("cf_case_const");
    let cf = &flat.control_flow;
    let case = cf.iter().find(|c| c.op.ends_with("Case")).expect("a Case");
    assert!(
        matches!(case.handling, Handling::Inlined { index: 1, .. }),
        "{cf:?}"
    );
    // The cond inside branch 1, on tf.constant(False): the else branch, inlined too.
    let nested = cf
        .iter()
        .find(|c| c.op.ends_with("If"))
        .expect("the nested If");
    assert!(
        nested.node.starts_with(&format!("{}/", case.node)),
        "{cf:?}"
    );
    assert!(
        matches!(nested.handling, Handling::Inlined { index: 1, .. }),
        "{cf:?}"
    );
    let left: usize = ["If", "StatelessIf", "Case", "StatelessCase"]
        .iter()
        .map(|op| ops_of(&flat, op))
        .sum();
    assert_eq!(left, 0);
    equals_tf("cf_case_const");
    trains(
        "cf_case_const",
        &["stem/kernel", "a/kernel", "b/kernel", "dense/kernel"],
    );
}

/// TF's C API gradients (`TF_AddGradients`) of sum(output) on fixture `name` inlined, no pass
/// run (control flow copied as it is).
fn raw_gradients(name: &str) -> pretext::Result<Vec<pretext::autodiff::VarGrad>> {
    let (mut m, flat) = inlined(name);
    let tower = Tower::import(&mut m, &flat, "raw", None, None).unwrap();
    let mut s = m.scope.new_sub_scope("loss");
    let axes = ops::constant(&[0i32, 1][..], &mut s).unwrap();
    let loss = ops::sum(tower.outputs[0].clone(), axes, &mut s).unwrap();
    let towers = std::slice::from_ref(&tower);
    pretext::autodiff::gradients(&mut m.scope, towers, loss.into(), &tower.reads, "g")
}

/// What TF's C API does with a kept `If` and `While` on the path from a variable read to the
/// loss: it has no gradient for them.
#[test]
fn tf_c_api_has_no_gradient_for_if_nor_while() {
    for (name, op) in [("cf_cond_input", "If"), ("cf_while_grad", "While")] {
        assert_eq!(ops_of(&inlined(name).1, op), 1, "{name} keeps its {op}");
        let e = raw_gradients(name)
            .err()
            .unwrap_or_else(|| panic!("{name}: TF differentiated {op}"));
        println!("{name}: {e}");
        assert!(
            matches!(&e, Error::NoGradient { ops } if ops[0].0 == op),
            "{name}: {e}"
        );
    }
    // A loop whose output reaches the loss only through a comparison (carrying no gradient):
    // TF's builder stops at the comparison itself. (Training still reads such loops through
    // StopGradients: the check's notion of what carries no gradient need not match TF's.)
    let r = raw_gradients("cf_while_free");
    assert!(r.is_ok(), "{:?}", r.err().map(|e| e.to_string()));
}

fn refused(name: &str, op: &str, vars: &[&str]) {
    let e = Trainer::new(&cfg(name, 1)).err().expect("refused");
    assert_eq!(e.exit_code(), pretext::error::EXIT_USAGE, "{e}");
    let e = e.to_string();
    println!("{name}: {e}");
    assert!(
        e.contains(&format!("({op})")) && e.contains("no gradient for"),
        "{e}"
    );
    for v in vars {
        assert!(e.contains(v), "{name}: {e} does not name {v}");
    }
    let (_m, flat) = inlined(name);
    let kept = flat.control_flow.iter().find(|c| c.op == op).unwrap();
    assert!(e.contains(&format!("node '{}'", kept.node)), "{e}");
}

#[test]
fn a_cond_on_the_input_on_the_gradient_path_is_refused_before_training() {
    refused(
        "cf_cond_input",
        "If",
        &["a/kernel", "b/kernel", "stem/kernel"],
    );
    // With only the dense layer training, the If is off every gradient path: it trains.
    let mut c = cfg("cf_cond_input", 2);
    c.train_vars = pretext::train::select::VarSelection::parse("regex:dense").unwrap();
    c.batch = 8;
    let mut t = Trainer::new(&c).unwrap();
    let before = value_of(&mut t, "dense/kernel");
    t.run(2).unwrap();
    assert_ne!(value_of(&mut t, "dense/kernel"), before);
}

#[test]
fn a_loop_on_the_gradient_path_is_refused_before_training() {
    refused("cf_while_grad", "While", &["a/kernel", "stem/kernel"]);
}

/// A loop over the input and one whose output only feeds a comparison: kept, read through
/// StopGradients (the forward unchanged), and the model trains.
#[test]
fn loops_off_the_gradient_path_train() {
    let name = "cf_while_free";
    let (_m, flat) = inlined(name);
    assert_eq!(flat.control_flow.len(), 2, "{:?}", flat.control_flow);
    assert!(flat
        .control_flow
        .iter()
        .all(|c| c.handling == Handling::Kept));
    let (m, sig, tower) = load_with_tower(name);
    // Both loops' float outputs are read through StopGradients in the trainer's tower.
    let stops = m
        .scope
        .graph()
        .operation_iter()
        .filter_map(|o| o.name().ok())
        .filter(|n| n.starts_with("t/") && n.contains("/__stop"))
        .count();
    assert_eq!(stops, 2, "{name}: StopGradients after the loops");
    let x = Tensor::new(&[2, 32, 32, 3])
        .with_values(
            &(0..6144)
                .map(|i| (i % 97) as f32 / 97.0)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let original = m.run_signature(&sig, &x, "embedding").unwrap();
    let flat_out = m
        .run_f32(&[(&tower.inputs[0], &x)], &tower.outputs[0])
        .unwrap();
    let err = max_abs_diff(&original, &flat_out);
    assert!(err <= 1e-5, "{name}: forward differs by {err:e}");
    trains(name, &["stem/kernel", "a/kernel", "dense/kernel"]);
}

#[test]
fn inspect_reports_each_control_flow_node_and_how_it_is_handled() {
    let report = |name: &str| {
        pretext::inspect::inspect(&fixture(name), None, None, Default::default()).unwrap()
    };
    let r = report("cf_case_const");
    println!("{r}");
    assert!(r.contains("control flow: 2 node(s)"), "{r}");
    assert!(r.contains("[Case]: constant predicate, branch 1"), "{r}");
    assert!(r.contains("else branch"), "{r}");
    let r = report("cf_cond_input");
    println!("{r}");
    assert!(r.contains("[If]: kept; on the gradient path"), "{r}");
    assert!(r.contains("not differentiable"), "{r}");
    let r = report("cf_while_free");
    println!("{r}");
    assert!(
        r.contains("[StatelessWhile]: kept; off every gradient path"),
        "{r}"
    );
}
