//! Per-head loss parity: each head's loss on one batch, without a step, equals an independent
//! TF Python reference (scripts/reference/heads.py) computed on the same inputs and weights,
//! within 1e-5 relative. Head variables are perturbed first (biases, batch-norm offsets and
//! momentum copies would otherwise all be zeros or equal to the online ones).
mod common;
use common::*;

use std::path::Path;
use std::process::Command;

use pretext::heads::dae::{Decoder, Noise};
use pretext::heads::inpaint::MaskKind;
use pretext::heads::{
    ByolConfig, DaeConfig, HeadConfig, InpaintConfig, MocoConfig, RotationConfig,
};
use pretext::train::{TrainConfig, Trainer};
use serde_json::json;
use tensorflow::Tensor;

/// Relative error allowed between pretext's loss and the reference's.
const TOL: f64 = 1e-5;

struct Case {
    label: &'static str,
    model: &'static str,
    head: HeadConfig,
}

/// Deterministic values in [-1, 1) (splitmix64).
struct Noise01(u64);

impl Noise01 {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `v` plus noise of a tenth of its scale (0.1 for all-zero variables).
    fn perturb(&mut self, v: &Tensor<f32>) -> Tensor<f32> {
        let scale = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let a = if scale == 0.0 { 0.1 } else { 0.1 * scale };
        let vals: Vec<f32> = v.iter().map(|x| x + a * self.next()).collect();
        Tensor::new(v.dims()).with_values(&vals).unwrap()
    }
}

/// Writes `v` as raw little-endian f32 under `dir` and records it in `arrays`.
fn put(
    dir: &Path,
    arrays: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    v: &Tensor<f32>,
) {
    let file = format!("{}.bin", name.replace('/', "__"));
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(dir.join(&file), bytes).unwrap();
    arrays.insert(name.into(), json!({"file": file, "shape": v.dims()}));
}

/// Builds the trainer for `case`, perturbs the head's variables, evaluates one batch and dumps
/// inputs, named tensors and variables to `dir`; returns pretext's loss.
fn dump(case: &Case, dir: &Path) -> f32 {
    let mut c = TrainConfig::new(fixture(case.model), images());
    c.batch = 8;
    c.head = case.head.clone();
    c.seed = 7;
    // The heads are compared on the backbone exactly as saved: folding the frozen batch norms
    // changes the feature map's rounding by ~2e-5 (its own tests: tests/inline_and_gradients.rs).
    c.bn_fold = false;
    let mut t = Trainer::new(&c).unwrap();
    let momentum = match &case.head {
        HeadConfig::Moco(m) => Some(m.momentum),
        HeadConfig::Byol(b) => Some(b.momentum),
        _ => None,
    };
    let mut noise = Noise01(11);
    let mut arrays = serde_json::Map::new();
    for v in t.head_vars().to_vec() {
        let new = noise.perturb(&t.read_variable(&v.handle).unwrap());
        t.assign_variable(&v.handle, &new).unwrap();
        let name = v.name.trim_start_matches("head/");
        put(dir, &mut arrays, &format!("var/{name}"), &new);
        let copy = t
            .momentum_pairs()
            .into_iter()
            .find(|(_, online)| online.operation.name() == v.handle.operation.name())
            .map(|(copy, _)| copy.clone());
        if let Some(copy) = copy {
            // A copy moved away from its online variable, as after training steps; at momentum
            // 0 (SimSiam) each step leaves it equal to the online one.
            let value = if momentum == Some(0.0) {
                new
            } else {
                noise.perturb(&new)
            };
            t.assign_variable(&copy, &value).unwrap();
            put(dir, &mut arrays, &format!("momentum/{name}"), &value);
        }
    }
    if let HeadConfig::Moco(_) = case.head {
        let q = t.model().handle("pretext/head/moco/queue/var").unwrap();
        let q = t.read_variable(&q).unwrap();
        put(dir, &mut arrays, "var/moco/queue", &q);
    }
    let xs = t.next_batch().unwrap();
    // Feeds in `Trainer::feeds` order: the clean batch if the head uses it, then the views.
    let (clean, views) = case.head.head().views();
    let feeds = clean
        .then(|| "feed/images".to_string())
        .into_iter()
        .chain((0..views).map(|i| format!("feed/view{i}")));
    for (name, x) in feeds.zip(&xs) {
        put(dir, &mut arrays, &name, x);
    }
    let names: Vec<String> = t.tensors().iter().map(|(n, _)| n.clone()).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let (loss, values) = t.evaluate(&xs, &refs).unwrap();
    for (n, v) in names.iter().zip(&values) {
        put(dir, &mut arrays, &format!("tensor/{n}"), v);
    }
    let manifest = json!({
        "label": case.label,
        "model": fixture(case.model),
        "output_key": output_key(case.model),
        "range": [c.range.0, c.range.1],
        "head": case.head,
        "pretext_loss": loss,
        "arrays": arrays,
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    loss
}

/// Dumps every case, runs the reference once on all of them, and compares the losses.
fn parity(cases: &[Case]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    let mut ours = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let d = tmp.path().join(format!("{i}"));
        std::fs::create_dir(&d).unwrap();
        ours.push(dump(case, &d));
        dirs.push(d);
    }
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference/heads.py"))
        .args(&dirs)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the reference failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refs: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(refs.len(), cases.len(), "{stdout}");
    let mut bad = Vec::new();
    for ((case, ours), r) in cases.iter().zip(&ours).zip(&refs) {
        let theirs = r["loss"].as_f64().unwrap();
        let rel = ((*ours as f64 - theirs) / theirs).abs();
        println!(
            "{:<28} pretext {:<12.8} python {:<12.8} rel {rel:.2e}  checks {}",
            case.label, ours, theirs, r["checks"]
        );
        if rel.is_nan() || rel > TOL {
            bad.push(format!(
                "{}: {ours} vs {theirs} (rel {rel:.2e})",
                case.label
            ));
        }
    }
    assert!(bad.is_empty(), "loss parity failed: {bad:?}");
}

fn dae(noise: Noise, decoder: Decoder) -> HeadConfig {
    HeadConfig::Dae(DaeConfig {
        noise,
        noise_level: if noise == Noise::Gaussian { 0.1 } else { 0.3 },
        hidden: 64,
        target_size: 24,
        decoder,
    })
}

#[test]
fn dae_losses_match_the_tf_python_reference() {
    parity(&[
        Case {
            label: "dae dense gaussian",
            model: "tiny_cnn",
            head: dae(Noise::Gaussian, Decoder::Dense),
        },
        Case {
            label: "dae dense masking",
            model: "tiny_cnn",
            head: dae(Noise::Masking, Decoder::Dense),
        },
        Case {
            label: "dae dense salt_pepper",
            model: "tiny_cnn",
            head: dae(Noise::SaltPepper, Decoder::Dense),
        },
        Case {
            label: "dae conv gaussian",
            model: "mobilenet_v2_035",
            head: dae(Noise::Gaussian, Decoder::Conv),
        },
        Case {
            label: "dae conv salt_pepper",
            model: "mobilenet_v2_035",
            head: dae(Noise::SaltPepper, Decoder::Conv),
        },
    ]);
}

#[test]
fn inpainting_losses_match_the_tf_python_reference() {
    let inpaint = |mask, decoder| {
        HeadConfig::Inpaint(InpaintConfig {
            mask,
            mask_ratio: 0.3,
            patch: 16,
            decoder,
            hidden: 64,
            target_size: 24,
        })
    };
    parity(&[
        Case {
            label: "inpaint block conv",
            model: "mobilenet_v2_035",
            head: inpaint(MaskKind::Block, Decoder::Auto),
        },
        Case {
            label: "inpaint patches dense",
            model: "mobilenet_v2_035",
            head: inpaint(MaskKind::Patches, Decoder::Dense),
        },
    ]);
}

#[test]
fn rotation_loss_matches_the_tf_python_reference() {
    parity(&[Case {
        label: "rotation",
        model: "tiny_cnn",
        head: HeadConfig::Rotation(RotationConfig::default()),
    }]);
}

#[test]
fn moco_loss_matches_the_tf_python_reference() {
    parity(&[Case {
        label: "moco",
        model: "tiny_cnn",
        head: HeadConfig::Moco(MocoConfig {
            temperature: 0.2,
            queue_size: 32,
            momentum: 0.99,
            proj_width: 64,
            proj_dim: 32,
        }),
    }]);
}

#[test]
fn byol_and_simsiam_losses_match_the_tf_python_reference() {
    let byol = |momentum| {
        HeadConfig::Byol(ByolConfig {
            momentum,
            hidden: 64,
            proj_dim: 32,
        })
    };
    parity(&[
        Case {
            label: "byol",
            model: "tiny_cnn",
            head: byol(0.99),
        },
        Case {
            label: "simsiam (byol momentum 0)",
            model: "tiny_cnn",
            head: byol(0.0),
        },
    ]);
}
