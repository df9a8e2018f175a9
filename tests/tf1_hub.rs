//! TF1 Hub format modules (`savedmodel::tf1hub`): a module built by tensorflow_hub's own TF1
//! builder (scripts/make_tf1_hub.py: ref variables, fused batch norm, variants `{}` and
//! `{train}` with UPDATE_OPS) is inspected, computes what hub.Module computes, differentiates as
//! tf.compat.v1.gradients does, trains in its `train` variant with its update ops, resumes
//! exactly, and exports a module hub.Module reloads with each tag set.
mod common;
use common::*;

use pretext::graph::Tower;
use pretext::savedmodel::{Loaded, SavedModelInfo};
use pretext::train::Trainer;
use tensorflow::Tensor;

const NAME: &str = "tf1_hub";

fn input() -> Tensor<f32> {
    golden_input_of(&golden(NAME))
}

/// The module loaded in variant `tags` (None: the default, `train`) with its signature
/// `default` imported as a tower after the trainer's passes.
fn tower(tags: Option<&[String]>) -> (Loaded, pretext::savedmodel::Signature, Tower) {
    let info = SavedModelInfo::read_tagged(&fixture(NAME), tags).unwrap();
    let mut m = Loaded::load_parsed(info, Default::default()).unwrap();
    let sig = m.info.signature("serving_default").unwrap();
    assert_eq!(
        sig.name, "default",
        "the default signature of a TF1 Hub module"
    );
    let t = prepared_tower(&mut m, &sig, true, Default::default()).unwrap();
    (m, sig, t)
}

fn key_index(sig: &pretext::savedmodel::Signature, key: &str) -> usize {
    sig.outputs.iter().position(|o| o.key == key).unwrap()
}

#[test]
fn inspect_lists_the_graph_variants_and_update_ops() {
    let r = pretext::inspect::inspect(&fixture(NAME), None, None, Default::default()).unwrap();
    assert!(r.contains("TF1 Hub module"), "{r}");
    assert!(
        r.contains("{}: default, image_feature_vector")
            && r.contains("{train}: default, image_feature_vector  (loaded)"),
        "{r}"
    );
    assert!(
        r.contains("update ops (run after each step): bn1/AssignSub"),
        "{r}"
    );
    assert!(r.contains("gradient coverage: all differentiable"), "{r}");
    let e = SavedModelInfo::read_tagged(&fixture(NAME), Some(&["serve".to_string()]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.tags") && e.contains("{serve}") && e.contains("{}, {train}"),
        "{e}"
    );
    // The CLI names its flag: `pretext eval --tags`.
    let m = fixture(NAME);
    let l = labeled();
    let args = [
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--labeled",
        l.to_str().unwrap(),
    ];
    let (code, _, err) = common::cli::pretext(&[&args[..], &["--tags", "serve"]].concat());
    assert!(
        code == 2 && err.contains("--tags") && err.contains("{serve}"),
        "{err}"
    );
}

/// Both variants, inlined, compute what hub.Module computes; the `train` variant's gradients
/// equal tf.compat.v1.gradients' on hub.Module's graph.
#[test]
fn forward_and_gradients_equal_hub_module() {
    let x = input();
    for (tags, label) in [(None, "train"), (Some(vec![]), "serve")] {
        let (m, sig, t) = tower(tags.as_deref());
        for key in ["default", "spatial"] {
            let got = m
                .run_f32(&[(&t.inputs[0], &x)], &t.outputs[key_index(&sig, key)])
                .unwrap();
            let want = read_f32(&golden(NAME).join(format!("{label}_{key}.bin")));
            let err = max_abs_diff(&got, &want);
            println!("{label} {key}: max |pretext - hub.Module| = {err:e}");
            assert!(err <= 1e-5, "{label} {key}: {err}");
        }
    }
    // Evaluation of the `train` variant goes through its inference variant.
    let (m, sig, _) = tower(None);
    let got = m
        .run_signature(&m.inference_signature(&sig), &x, "default")
        .unwrap();
    let err = max_abs_diff(&got, &read_f32(&golden(NAME).join("serve_default.bin")));
    assert!(err <= 1e-5, "inference variant beside the train one: {err}");

    let (mut m, sig, t) = tower(None);
    let idx = index(NAME);
    let w = Tensor::new(&dims(&idx["output_shape"]))
        .with_values(&read_f32(&golden(NAME).join("weights.bin")))
        .unwrap();
    let loss = weighted_sum_loss(&m.scope, t.outputs[key_index(&sig, "default")].clone(), w);
    let grads =
        pretext::autodiff::gradients(&mut m.scope, std::slice::from_ref(&t), loss, &t.reads, "g")
            .unwrap();
    let want = read_f32(&golden(NAME).join("grads.bin"));
    let largest = want.iter().fold(0f32, |a, b| a.max(b.abs()));
    let entries = idx["vars"].as_array().unwrap();
    assert_eq!(entries.len(), 7);
    for v in entries {
        let name = v["name"].as_str().unwrap();
        let (off, size) = (
            v["offset"].as_u64().unwrap() as usize,
            v["size"].as_u64().unwrap() as usize,
        );
        let g = grads
            .iter()
            .find(|g| g.handle == name)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let got = m.run_f32(&[(&t.inputs[0], &x)], &g.grad).unwrap();
        let want = &want[off..off + size];
        // conv2's bias feeds a batch norm on batch statistics: its gradient is zero but for
        // rounding, in TF as in pretext (both far below the largest gradient).
        if name == "conv2/biases" {
            let most = got.iter().chain(want).fold(0f32, |a, b| a.max(b.abs()));
            println!("{name}: zero but for rounding: {most:e} of {largest:e}");
            assert!(most <= 1e-5 * largest, "{name}: {most:e}");
            continue;
        }
        let scale = want.iter().fold(0f32, |a, b| a.max(b.abs()));
        let rel = max_abs_diff(&got, want) / scale;
        println!("{name}: max relative error {rel:e}");
        assert!(scale > 0.0 && rel <= 1e-5, "{name}: {rel:e}");
    }
}

/// Three steps in the `train` variant move the weights and, through the module's UPDATE_OPS,
/// the moving statistics; the export is the original module byte for byte but for its
/// variables, and hub.Module loads it with each tag set and computes what pretext computes.
#[test]
fn trains_with_its_update_ops_and_exports_a_module_hub_reloads() {
    let mut c = cfg(NAME, 3);
    c.batch = 8;
    let mut t = Trainer::new(&c).unwrap();
    assert_eq!(t.model().info.tags, vec!["train".to_string()]);
    let vars = [
        "conv1/weights",
        "bn1/gamma",
        "bn1/moving_mean",
        "bn2/moving_variance",
    ];
    let before: Vec<Vec<f32>> = vars.iter().map(|v| value_of(&t, v)).collect();
    let losses = t.run(3).unwrap();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    for (v, b) in vars.iter().zip(&before) {
        assert_ne!(&value_of(&t, v), b, "{v} did not change");
    }
    let base = tempfile::tempdir().unwrap();
    let out = export_and_check(&t, base.path(), &fixture(NAME), &golden(NAME), "default").unwrap();
    println!("{out:?}");
}

/// A run resumed from a checkpoint takes the steps an uninterrupted run takes (the moving
/// statistics the update ops change are in the checkpoint); the inference variant trains too.
#[test]
fn resumes_exactly_and_trains_in_either_variant() {
    let mut c = cfg(NAME, 4);
    c.batch = 8;
    let straight = Trainer::new(&c).unwrap().run(4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Trainer::new(&c).unwrap();
    let first = a.run(2).unwrap();
    let ckpt = a.checkpoint(dir.path(), &first, 0.0, 1).unwrap();
    drop(a);
    let mut b = Trainer::new(&c).unwrap();
    b.restore(&ckpt).unwrap();
    assert_eq!(value_of(&b, "bn1/moving_mean").len(), 8);
    let rest = b.run(2).unwrap();
    assert_eq!([first, rest].concat(), straight);

    c.tags = Some(vec![]);
    let mut t = Trainer::new(&c).unwrap();
    assert!(t.model().info.tags.is_empty());
    let mean = value_of(&t, "bn1/moving_mean");
    let losses = t.run(2).unwrap();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert_eq!(value_of(&t, "bn1/moving_mean"), mean, "frozen batch norm");
}
