//! End to end: the denoising-AE loss falls, the export is what TensorFlow itself loads and
//! computes, versions are never overwritten, and bad input gives one clear line.
mod common;
use common::*;

use std::path::Path;
use std::process::Command;

use pretext::train::{TrainConfig, Trainer};

fn cfg(model: &str, steps: u64) -> TrainConfig {
    let mut c = TrainConfig::new(fixture(model), images());
    c.steps = steps;
    c.batch = 16;
    c.size = if model == "nsfwjs_mobilenet_v2" {
        Some(96)
    } else {
        None
    };
    c
}

/// `min_drop`: required fall of the last-10 mean below the first-10 mean.
fn falls(model: &str, min_drop: f32) {
    let mut t = Trainer::new(&cfg(model, 100)).unwrap();
    let l = t.run(100).unwrap();
    let first: f32 = l[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = l[90..].iter().sum::<f32>() / 10.0;
    println!(
        "{model}: DAE loss first-10 mean {first:.5}, last-10 mean {last:.5} ({:+.1}%)",
        (last / first - 1.0) * 100.0
    );
    assert!(
        last <= (1.0 - min_drop) * first,
        "{model}: loss fell only from {first} to {last}"
    );
}

#[test]
fn dae_loss_falls_on_mobilenet_v2_035() {
    falls("mobilenet_v2_035", 0.20);
}

#[test]
fn dae_loss_falls_on_pretrained_nsfwjs_mobilenet_v2() {
    falls("nsfwjs_mobilenet_v2", 0.20);
}

/// Mean loss of the first and the last 10 of `steps` steps of `head` on `model`.
fn first_last(
    model: &str,
    head: pretext::heads::HeadConfig,
    batch: usize,
    steps: u64,
) -> (f32, f32) {
    let mut c = cfg(model, steps);
    c.batch = batch;
    c.head = head;
    let mut t = Trainer::new(&c).unwrap();
    let l = t.run(steps).unwrap();
    let n = l.len();
    (
        l[..10].iter().sum::<f32>() / 10.0,
        l[n - 10..].iter().sum::<f32>() / 10.0,
    )
}

#[test]
fn simclr_loss_falls_on_mobilenet_v2_035() {
    let (first, last) = first_last(
        "mobilenet_v2_035",
        pretext::heads::HeadConfig::Simclr(Default::default()),
        32,
        50,
    );
    println!("mobilenet_v2_035: SimCLR loss first-10 mean {first:.4}, last-10 mean {last:.4}");
    // ln(2·32 − 1) ≈ 4.14 is chance level for NT-Xent at batch 32.
    assert!(
        first < 4.3 && last < first,
        "SimCLR loss did not fall: {first} → {last}"
    );
}

#[test]
fn rotation_loss_falls_on_mobilenet_v2_035() {
    let (first, last) = first_last(
        "mobilenet_v2_035",
        pretext::heads::HeadConfig::Rotation(Default::default()),
        16,
        50,
    );
    println!("mobilenet_v2_035: rotation loss first-10 mean {first:.4}, last-10 mean {last:.4}");
    assert!(last < first, "rotation loss did not fall: {first} → {last}");
}

#[test]
fn byol_loss_falls_and_only_the_online_network_learns() {
    let mut c = cfg("mobilenet_v2_035", 1);
    c.head = pretext::heads::HeadConfig::Byol(Default::default());
    let t = Trainer::new(&c).unwrap();
    assert!(t.param_names.iter().all(|n| !n.contains("momentum")));
    assert_eq!(t.trained_vars, 156);
    let (first, last) = first_last(
        "mobilenet_v2_035",
        pretext::heads::HeadConfig::Byol(Default::default()),
        16,
        50,
    );
    println!("mobilenet_v2_035: BYOL loss first-10 mean {first:.4}, last-10 mean {last:.4}");
    assert!(last < first, "BYOL loss did not fall: {first} → {last}");
}

#[test]
fn moco_loss_falls_on_mobilenet_v2_035() {
    // Queue of 128 keys at batch 16: its first 8 steps score against random unit rows the
    // queue starts with (far easier negatives than real keys: loss ≈ 1 at step 1, then rising),
    // so the 50 measured steps follow those 8. Momentum 0.99: at 0.9 the loss rises instead
    // (the key encoder follows the online one so fast that the queue's keys go stale).
    let (queue, batch) = (128, 16);
    let mut c = cfg("mobilenet_v2_035", 0);
    c.batch = batch;
    c.optimizer.learning_rate = 1e-3;
    c.head = pretext::heads::HeadConfig::Moco(pretext::heads::MocoConfig {
        queue_size: queue,
        momentum: 0.99,
        ..Default::default()
    });
    let mut t = Trainer::new(&c).unwrap();
    let warm = t.run(queue as u64 / batch as u64).unwrap();
    let l = t.run(50).unwrap();
    let first: f32 = l[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = l[40..].iter().sum::<f32>() / 10.0;
    let chance = ((queue + 1) as f32).ln();
    println!(
        "mobilenet_v2_035: MoCo loss (queue {queue}, momentum 0.99, Adam 1e-3) after {} queue-filling steps {warm:?}: first-10 mean {first:.4}, last-10 mean {last:.4} (chance {chance:.3})",
        warm.len()
    );
    assert!(
        last < 0.98 * first && last < chance,
        "MoCo loss did not fall: {first} → {last} (chance {chance})"
    );
}

#[test]
fn multi_task_feeds_the_union_of_views_and_its_loss_falls() {
    let mut c = cfg("tiny_cnn", 1);
    c.head = pretext::heads::HeadConfig::Multi(
        pretext::heads::MultiConfig::parse("dae=1,simclr=0.5").unwrap(),
    );
    assert_eq!(
        Trainer::new(&c).unwrap().feeds.len(),
        3,
        "clean batch + two augmented views"
    );
    // Online backbone passes are shared where the inputs are the same: SimCLR and BYOL embed
    // one stack of both views once (BYOL's momentum tower is its own); DAE's noisy input is not
    // shared.
    let towers = |spec: &str| {
        let mut c = cfg("tiny_cnn", 1);
        c.head =
            pretext::heads::HeadConfig::Multi(pretext::heads::MultiConfig::parse(spec).unwrap());
        Trainer::new(&c).unwrap().towers
    };
    assert_eq!(towers("simclr=1"), 1);
    assert_eq!(towers("byol=1"), 1);
    assert_eq!(towers("simclr=1,byol=1"), 1, "one shared online pass");
    assert_eq!(towers("dae=1,simclr=1"), 2);
    let multi = pretext::heads::HeadConfig::Multi(
        pretext::heads::MultiConfig::parse("dae=1,rotation=0.5").unwrap(),
    );
    let (first, last) = first_last("mobilenet_v2_035", multi, 16, 30);
    assert!(
        last < first,
        "multi-task loss did not fall: {first} → {last}"
    );
    assert!(pretext::heads::MultiConfig::parse("dae=1,jigsaw=2")
        .unwrap_err()
        .to_string()
        .contains("unknown head kind 'jigsaw'"));
}

#[test]
fn inpainting_loss_falls_on_mobilenet_v2_035() {
    let (first, last) = first_last(
        "mobilenet_v2_035",
        pretext::heads::HeadConfig::Inpaint(Default::default()),
        16,
        50,
    );
    println!("mobilenet_v2_035: inpainting loss first-10 mean {first:.4}, last-10 mean {last:.4}");
    assert!(
        last < 0.9 * first,
        "inpainting loss did not fall: {first} → {last}"
    );
}

#[test]
fn simclr_is_fed_two_views_and_no_clean_batch() {
    let mut c = cfg("tiny_cnn", 1);
    c.head = pretext::heads::HeadConfig::Simclr(Default::default());
    assert_eq!(Trainer::new(&c).unwrap().feeds.len(), 2);
}

/// The current value of a model variable, read through a new ReadVariableOp.
fn value_of(t: &mut Trainer, handle: &str) -> Vec<f32> {
    let h = t.model.output(handle).unwrap();
    let r: tensorflow::Output = {
        let mut s = t.model.scope.new_sub_scope("test_read");
        tensorflow::ops::ReadVariableOp::new()
            .dtype(tensorflow::DataType::Float)
            .build(h, &mut s)
            .unwrap()
            .into()
    };
    t.model.run_f32(&[], &r).unwrap().to_vec()
}

#[test]
fn only_selected_variables_change() {
    let mut c = cfg("tiny_cnn", 3);
    c.train_vars = pretext::train::select::VarSelection::parse("regex:^conv2d_1/").unwrap();
    let mut t = Trainer::new(&c).unwrap();
    assert_eq!(t.trained_vars, 2, "conv2d_1/kernel and conv2d_1/bias");
    let (frozen0, trained0) = (
        value_of(&mut t, "conv2d/kernel"),
        value_of(&mut t, "conv2d_1/kernel"),
    );
    t.run(3).unwrap();
    assert_eq!(
        value_of(&mut t, "conv2d/kernel"),
        frozen0,
        "an unselected variable changed"
    );
    assert_ne!(
        value_of(&mut t, "conv2d_1/kernel"),
        trained0,
        "the selected variable did not change"
    );
    c.train_vars = pretext::train::select::VarSelection::parse("last:1").unwrap();
    assert_eq!(
        Trainer::new(&c).unwrap().trained_vars,
        2,
        "last layer: dense kernel and bias"
    );
}

#[test]
fn bn_train_updates_moving_statistics_and_frozen_does_not() {
    use pretext::graph::bn::BnMode;
    for (mode, should_change) in [(BnMode::Frozen, false), (BnMode::Train, true)] {
        let mut c = cfg("mobilenet_v2_035", 2);
        c.bn = mode;
        let mut t = Trainer::new(&c).unwrap();
        assert_eq!(t.bn_updates.is_empty(), !should_change);
        let name = "Conv_1_bn/moving_mean";
        let before = value_of(&mut t, name);
        t.run(2).unwrap();
        let after = value_of(&mut t, name);
        assert_eq!(
            before != after,
            should_change,
            "{mode:?}: moving mean changed = {}",
            before != after
        );
    }
    // Keras 3 exports decompose batch norm: train mode is refused, naming a node.
    let mut c = cfg("keras3_export", 1);
    c.bn = BnMode::Train;
    let e = Trainer::new(&c)
        .err()
        .expect("keras3 bn train must fail")
        .to_string();
    assert!(e.contains("decomposed") && e.contains("frozen"), "{e}");
}

#[test]
fn moco_queue_and_momentum_encoder_move_and_only_the_online_encoder_learns() {
    let mut c = cfg("tiny_cnn", 1);
    c.head = pretext::heads::HeadConfig::Moco(pretext::heads::MocoConfig {
        queue_size: 32,
        momentum: 0.9,
        ..Default::default()
    });
    let mut t = Trainer::new(&c).unwrap();
    assert!(
        t.param_names.iter().all(|n| !n.contains("momentum")),
        "{:?}",
        t.param_names
    );
    assert_eq!(
        t.trained_vars, 10,
        "the online backbone's trainable variables"
    );
    let queue = "pretext/head/moco/queue/var";
    let target = "pretext/head/momentum/conv2d/kernel_0/var";
    for step in 0..2 {
        let (q0, k0, o0) = (
            value_of(&mut t, queue),
            value_of(&mut t, target),
            value_of(&mut t, "conv2d/kernel"),
        );
        t.run(1).unwrap();
        let (q1, k1, o1) = (
            value_of(&mut t, queue),
            value_of(&mut t, target),
            value_of(&mut t, "conv2d/kernel"),
        );
        assert_ne!(q0, q1, "step {step}: the queue did not change");
        assert_ne!(k0, k1, "step {step}: the momentum encoder did not change");
        assert_ne!(o0, o1, "step {step}: the online encoder did not change");
        // EMA: target_new = 0.9 target_old + 0.1 online_new.
        for i in 0..k0.len() {
            let want = 0.9 * k0[i] + 0.1 * o1[i];
            assert!(
                (k1[i] - want).abs() < 1e-5,
                "EMA off at {i}: {} vs {want}",
                k1[i]
            );
        }
        // Enqueue: the newest 16 keys first, the oldest 16 dropped.
        assert_eq!(&q1[16 * 128..], &q0[..16 * 128]);
    }
    // Queue size not a multiple of the batch: refused before any graph is built.
    c.head = pretext::heads::HeadConfig::Moco(pretext::heads::MocoConfig {
        queue_size: 40,
        ..Default::default()
    });
    let e = Trainer::new(&c).err().expect("bad queue size").to_string();
    assert!(
        e.contains("head.queue_size") && e.contains("multiple"),
        "{e}"
    );
}

#[test]
fn decoder_choice_decides_which_layers_train() {
    // tiny_cnn ends in GAP → Dense: `auto` keeps the dense decoder so all 10 trainable variables
    // train; an explicit conv decoder sits on the last feature map, before the Dense layer, whose
    // two variables then get no gradient (and are left out rather than failing the build).
    let mut c = cfg("tiny_cnn", 2);
    let t = Trainer::new(&c).unwrap();
    assert_eq!(t.trained_vars, 10);
    c.head = pretext::heads::HeadConfig::Dae(pretext::heads::DaeConfig {
        decoder: pretext::heads::dae::Decoder::Conv,
        ..Default::default()
    });
    let mut t = Trainer::new(&c).unwrap();
    assert_eq!(t.trained_vars, 8);
    let l = t.run(2).unwrap();
    assert!(l.iter().all(|v| v.is_finite()));
}

fn write_f32(p: &Path, v: &[f32]) {
    let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(p, b).unwrap();
}

#[test]
fn export_round_trip_through_tf_python() {
    let name = "mobilenet_v2_035";
    let mut c = cfg(name, 5);
    c.optimizer.learning_rate = 1e-2;
    let mut t = Trainer::new(&c).unwrap();
    t.run(5).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = pretext::export::export(&t.model, out.path(), None).unwrap();
    assert_eq!(dir, out.path().join("1"));
    let x = golden_input(name);
    let y = t
        .model
        .run_signature(&t.signature, &x, &output_key(name))
        .unwrap();
    write_f32(&out.path().join("expected.bin"), &y);
    let shape: Vec<String> = x.dims().iter().map(|d| d.to_string()).collect();
    let st = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_export.py"))
        .args([
            "--export",
            dir.to_str().unwrap(),
            "--original",
            fixture(name).to_str().unwrap(),
        ])
        .args([
            "--input",
            golden(name).join("input.bin").to_str().unwrap(),
            "--shape",
            &shape.join(","),
        ])
        .args([
            "--expected",
            out.path().join("expected.bin").to_str().unwrap(),
            "--key",
            &output_key(name),
        ])
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .status()
        .unwrap();
    assert!(
        st.success(),
        "TF Python rejected the export (see output above)"
    );
    // Next export gets the next version; an explicit existing version is refused.
    let dir2 = pretext::export::export(&t.model, out.path(), None).unwrap();
    assert_eq!(dir2, out.path().join("2"));
    let e = pretext::export::export(&t.model, out.path(), Some(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

fn pretext(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    lines[0].to_string()
}

/// Runs a one-step training that must fail; returns its one error line.
fn train_fails(model: &str, images: &str, export: &str) -> String {
    let (code, _, err) = pretext(&[
        "train", "--model", model, "--images", images, "--steps", "1", "--export", export,
    ]);
    assert!(code != 0, "expected a failure: {err}");
    error_line(&err)
}

#[test]
fn bad_input_gives_one_clear_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("out");
    let ex = export.to_str().unwrap();
    let imgs = images();
    let imgs = imgs.to_str().unwrap();
    let tiny = fixture("tiny_cnn");
    let tiny = tiny.to_str().unwrap();
    // Not a SavedModel.
    let (code, _, err) = pretext(&[
        "train", "--model", imgs, "--images", imgs, "--steps", "1", "--export", ex,
    ]);
    let l = error_line(&err);
    assert!(
        code != 0 && l.contains(imgs) && l.contains("not a SavedModel"),
        "{l}"
    );
    // Unknown signature.
    let (code, _, err) = pretext(&[
        "train",
        "--model",
        tiny,
        "--images",
        imgs,
        "--signature",
        "nope",
        "--steps",
        "1",
        "--export",
        ex,
    ]);
    let l = error_line(&err);
    assert!(
        code != 0 && l.contains("'nope'") && l.contains("serving_default"),
        "{l}"
    );
    // No readable image.
    let empty = tmp.path().join("junk");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("a.jpg"), b"not an image").unwrap();
    let l = train_fails(tiny, empty.to_str().unwrap(), ex);
    assert!(
        l.contains("no readable image") && l.contains(empty.to_str().unwrap()),
        "{l}"
    );
    // A SavedModel whose variables cannot be restored (Keras 3 model in a tf.Module).
    let bad = fixture("keras3_module_unrestorable");
    let l = train_fails(bad.to_str().unwrap(), imgs, ex);
    assert!(
        l.contains("could not be restored") && l.contains(bad.to_str().unwrap()),
        "{l}"
    );
    // An export path that is a file.
    let file_out = tmp.path().join("taken");
    std::fs::write(&file_out, b"x").unwrap();
    let l = train_fails(tiny, imgs, file_out.to_str().unwrap());
    assert!(
        l.contains("--export") && l.contains("not a directory"),
        "{l}"
    );
    // Inspect of a file.
    let f = tmp.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    let (code, _, err) = pretext(&["inspect", f.to_str().unwrap()]);
    let l = error_line(&err);
    assert!(code != 0 && l.contains("is a file"), "{l}");
    assert!(!export.exists(), "nothing may be written on bad input");
}

#[test]
fn unreadable_files_are_skipped_and_training_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let src = images();
    for (i, e) in std::fs::read_dir(&src)
        .unwrap()
        .filter_map(|e| e.ok())
        .take(6)
        .enumerate()
    {
        std::fs::copy(
            e.path(),
            tmp.path()
                .join(format!("{i}_{}", e.file_name().to_string_lossy())),
        )
        .unwrap();
    }
    std::fs::write(tmp.path().join("broken.jpg"), b"\xff\xd8\xff garbage").unwrap();
    let tiny = fixture("tiny_cnn");
    let (code, out, err) = pretext(&[
        "train",
        "--model",
        tiny.to_str().unwrap(),
        "--images",
        tmp.path().to_str().unwrap(),
        "--steps",
        "3",
        "--batch",
        "4",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("skipped 1") && out.contains("broken.jpg"),
        "{out}"
    );
    assert!(
        err.contains("broken.jpg"),
        "a warning names the file: {err}"
    );
}

#[test]
fn inspect_reports_coverage_on_every_fixture() {
    for name in ALL {
        let p = fixture(name);
        let (code, out, err) = pretext(&["inspect", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.contains("signature serving_default"), "{out}");
        assert!(
            out.contains("gradient coverage: all differentiable")
                || out.contains("NOT differentiable"),
            "{out}"
        );
        println!(
            "{name}: {}",
            out.lines()
                .find(|l| l.starts_with("gradient coverage"))
                .unwrap()
        );
    }
}

#[test]
fn eval_scores_the_pretrained_model_well_above_chance() {
    let m = fixture("nsfwjs_mobilenet_v2");
    let l = labeled();
    let (code, out, err) = pretext(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--labeled",
        l.to_str().unwrap(),
        "--size",
        "96",
    ]);
    assert_eq!(code, 0, "{err}");
    let score = |label: &str| -> f32 {
        out.lines()
            .find(|x| x.starts_with(label))
            .and_then(|x| x.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let (knn, probe) = (score("kNN top-1"), score("linear probe"));
    println!("nsfwjs on 500/200 Fashion-MNIST at 96 px: kNN {knn}, linear probe {probe}");
    // Ten balanced classes: chance is 0.1; pretrained ImageNet-style features do far better.
    assert!(
        knn > 0.5 && knn <= 1.0 && probe > 0.5 && probe <= 1.0,
        "{out}"
    );
    let (code, _, err) = pretext(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--labeled",
        images().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "an unlabeled folder is a usage error: {err}");
    assert!(error_line(&err).contains("--labeled"));
}
