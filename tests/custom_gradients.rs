//! Custom gradients as TF computes them (`autodiff::custom`): on a model saved with its
//! `tf.custom_gradient` functions (a straight-through round, SiLU, a clipped and a blocked
//! gradient; scripts/make_fixtures.py), pretext's gradients equal tf.GradientTape's on the loaded
//! model, the variable only a blocked gradient reaches never trains, and a model saved without
//! its gradient functions is refused unless `custom_gradients: forward` says otherwise.
mod common;
use common::*;

use pretext::graph::custom::CustomGradients;
use pretext::graph::Tower;
use pretext::savedmodel::Loaded;
use pretext::train::Trainer;
use tensorflow::Tensor;

const BLOCKED: &str = "blocked/kernel";

/// The fixture's tower with the trainer's passes, custom gradients handled as `mode` says.
fn tower(name: &str, mode: CustomGradients) -> pretext::Result<(Loaded, Tower)> {
    let mut m = Loaded::load(&fixture(name), Default::default())?;
    let sig = m.info.signature("serving_default")?;
    let t = prepared_tower(&mut m, &sig, true, mode)?;
    Ok((m, t))
}

/// (variable name, pretext's gradient (None: no gradient), TF's) for every variable, on the
/// golden input and loss.
fn gradients(mode: CustomGradients) -> Vec<(String, Option<Vec<f32>>, Vec<f32>)> {
    let name = "custom_grads";
    let (mut m, tower) = tower(name, mode).unwrap();
    let idx = index(name);
    let w = Tensor::new(&dims(&idx["output_shape"]))
        .with_values(&read_f32(&golden(name).join("weights.bin")))
        .unwrap();
    let loss = weighted_sum_loss(&m.scope, tower.outputs[0].clone(), w);
    let grads = pretext::autodiff::gradients(
        &mut m.scope,
        std::slice::from_ref(&tower),
        loss,
        &tower.reads,
        "g",
    )
    .unwrap();
    let want = read_f32(&golden(name).join("grads.bin"));
    let x = golden_input(name);
    let mut out = Vec::new();
    for v in idx["vars"].as_array().unwrap() {
        let handle =
            pretext::proto::TensorRef::node_of(v["graph_input"].as_str().unwrap()).to_string();
        let (off, size) = (
            v["offset"].as_u64().unwrap() as usize,
            v["size"].as_u64().unwrap() as usize,
        );
        let got = grads.iter().find(|g| g.handle == handle).map(|g| {
            m.run_f32(&[(&tower.inputs[0], &x)], &g.grad)
                .unwrap()
                .to_vec()
        });
        assert_eq!(got.as_ref().map(Vec::len).unwrap_or(size), size);
        out.push((
            v["name"].as_str().unwrap().to_string(),
            got,
            want[off..off + size].to_vec(),
        ));
    }
    out
}

#[test]
fn saved_custom_gradients_equal_gradient_tape() {
    let grads = gradients(CustomGradients::Saved);
    assert_eq!(grads.len(), 5);
    for (name, got, want) in &grads {
        let scale = want.iter().fold(0f32, |a, b| a.max(b.abs()));
        // TF's blocked gradient is a tensor of zeros, not a missing one.
        let got = got
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        if name == BLOCKED {
            assert_eq!(scale, 0.0, "TF blocks {name}'s gradient");
            assert!(got.iter().all(|g| *g == 0.0), "{name}: {got:?}");
            continue;
        }
        assert!(scale > 0.0, "{name}: TF's gradient is zero");
        let rel = max_abs_diff(got, want) / scale;
        println!("{name}: max relative error {rel:e}");
        assert!(rel <= 1e-5, "{name}: max relative error {rel:e}");
    }
}

/// `forward` differentiates the forward ops: the blocked branch gets a gradient, unlike in TF.
#[test]
fn forward_mode_differentiates_the_forward_ops_instead() {
    let grads = gradients(CustomGradients::Forward);
    let blocked = grads.iter().find(|g| g.0 == BLOCKED).unwrap();
    assert!(
        blocked.1.as_ref().unwrap().iter().any(|g| *g != 0.0),
        "the blocked kernel gets a forward gradient"
    );
}

#[test]
fn a_model_saved_without_its_gradient_functions_is_refused_naming_the_node() {
    let e = tower("custom_grads_unsaved", CustomGradients::Saved)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("IdentityN") && e.contains("CustomGradient-"),
        "{e}"
    );
    assert!(
        e.contains("model.custom_gradients: forward") && e.contains("--custom-gradients forward"),
        "{e}"
    );
    tower("custom_grads_unsaved", CustomGradients::Forward).unwrap();
}

/// Three training steps move every variable but the one only a blocked gradient reaches, which
/// stays the same bit for bit.
#[test]
fn the_blocked_variable_never_trains() {
    let mut c = cfg("custom_grads", 3);
    c.batch = 8;
    let mut t = Trainer::new(&c).unwrap();
    let before: Vec<Vec<f32>> = ["conv1/kernel", "conv2/kernel", BLOCKED]
        .iter()
        .map(|v| value_of(&t, v))
        .collect();
    let losses = t.run(3).unwrap();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert_ne!(
        value_of(&t, "conv1/kernel"),
        before[0],
        "the straight-through path trains"
    );
    assert_ne!(
        value_of(&t, "conv2/kernel"),
        before[1],
        "the clipped path trains"
    );
    assert_eq!(
        value_of(&t, BLOCKED),
        before[2],
        "the blocked kernel changed"
    );
}
