//! Signatures whose image input is not float32: a uint8 model (scripts/make_fixtures.py) trains
//! on float pixels 0..255 that pretext rounds, clips and casts in the graph (`graph::inline`), so
//! the model still gets its own dtype; eval feeds it the same way; other ranges are refused.
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
