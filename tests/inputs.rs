//! Signatures whose image input is not float32: a uint8 model (scripts/make_fixtures.py) trains
//! on float pixels 0..255 that pretext rounds, clips and casts in the graph (`graph::inline`), so
//! the model still gets its own dtype; eval feeds it the same way; other ranges are refused.
//! A signature with inputs besides the image batch (`fixed_inputs`: a bool `training` and a
//! float `scale`) is refused naming them, and trains with `model.fixed_inputs` binding them.
mod common;
use common::*;

use pretext::train::{image_spec, Trainer};
use tensorflow::Tensor;

const MODEL: &str = "uint8_images";

#[test]
fn a_uint8_model_trains_and_its_tower_casts_float_pixels() {
    let mut c = cfg(MODEL, 3);
    c.batch = 8;
    let mut t = Trainer::new(&c).unwrap();
    assert_eq!(t.spec().range, (0.0, 255.0), "integer pixels are 0..255");
    let losses = t.run(3).unwrap();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");

    // The tower (float pixels, cast in the graph) and the original signature (fed uint8 by
    // run_signature) compute the same, fractional and out-of-range pixels included (up to the
    // float rounding of differently fused kernels).
    let (m, sig, tower) = load_with_tower(MODEL);
    let n = 2 * 32 * 32 * 3;
    let px: Vec<f32> = (0..n).map(|i| (i % 300) as f32 * 0.93 - 8.2).collect();
    let x = Tensor::new(&[2, 32, 32, 3]).with_values(&px).unwrap();
    let original = m.run_signature(&sig, &x, "logits").unwrap();
    let flat = m
        .run_f32(&[(&tower.inputs[0], &x)], &tower.outputs[0])
        .unwrap();
    let scale = original.iter().fold(1f32, |a, b| a.max(b.abs()));
    let err = max_abs_diff(&original, &flat) / scale;
    assert!(
        err <= 1e-4,
        "tower vs signature: {err:e} of the output scale"
    );
}

#[test]
fn a_range_other_than_pixels_is_refused_for_an_integer_input() {
    let info = pretext::savedmodel::SavedModelInfo::read(&fixture(MODEL)).unwrap();
    let sig = info.signature("serving_default").unwrap();
    assert_eq!(
        image_spec(&sig, None, (0.0, 1.0)).unwrap().range,
        (0.0, 255.0)
    );
    let e = image_spec(&sig, None, (-1.0, 1.0)).unwrap_err().to_string();
    assert!(e.contains("model.range") && e.contains("uint8"), "{e}");
}

const FIXED: &str = "fixed_inputs";

fn fixed_values() -> std::collections::BTreeMap<String, serde_yaml::Value> {
    serde_yaml::from_str("{training: false, scale: 0.5}").unwrap()
}

#[test]
fn extra_signature_inputs_are_refused_by_name_until_given_a_value() {
    let mut c = cfg(FIXED, 2);
    c.batch = 8;
    let e = Trainer::new(&c).err().expect("refused").to_string();
    assert!(
        e.contains("model.fixed_inputs")
            && e.contains("'scale' (float32)")
            && e.contains("'training' (bool)"),
        "{e}"
    );
    c.fixed_inputs = serde_yaml::from_str("{training: 0.5, scale: 0.5}").unwrap();
    let e = Trainer::new(&c).err().expect("refused").to_string();
    assert!(
        e.contains("model.fixed_inputs.training") && e.contains("bool"),
        "{e}"
    );
}

/// With the values bound, the inlined tower (constants) and the original signature (fed them)
/// compute what TF computes for those values, and the model trains.
#[test]
fn fixed_inputs_bind_extra_signature_inputs() {
    let info = pretext::savedmodel::SavedModelInfo::read(&fixture(FIXED)).unwrap();
    let mut m = pretext::savedmodel::Loaded::load_parsed(info, Default::default()).unwrap();
    let sig = m
        .info
        .signature("serving_default")
        .unwrap()
        .with_fixed(&fixed_values())
        .unwrap();
    assert_eq!(sig.inputs.len(), 1);
    let flat = pretext::graph::inline_signature(&m.info, &sig, &m.scope.graph()).unwrap();
    let tower = pretext::graph::Tower::import(&mut m, &flat, "t", None, None).unwrap();
    let idx = index_of(FIXED);
    let x = Tensor::new(&dims(&idx["golden_input_shape"]))
        .with_values(&read_f32(&golden(FIXED).join("input.bin")))
        .unwrap();
    let want = read_f32(&golden(FIXED).join("output.bin"));
    let original = m.run_signature(&sig, &x, "logits").unwrap();
    let flat = m
        .run_f32(&[(&tower.inputs[0], &x)], &tower.outputs[0])
        .unwrap();
    for (what, got) in [("signature", &original[..]), ("tower", &flat[..])] {
        let err = max_abs_diff(got, &want);
        assert!(err <= 1e-5, "{what} vs TF: {err:e}");
    }
    let mut c = cfg(FIXED, 2);
    c.batch = 8;
    c.fixed_inputs = fixed_values();
    let losses = Trainer::new(&c).unwrap().run(2).unwrap();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
}

fn index_of(name: &str) -> serde_json::Value {
    let p = fixtures().join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}
