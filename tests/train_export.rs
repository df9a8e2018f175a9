//! End to end through the flag-driven CLI and the library: the export is what TensorFlow itself
//! loads and computes, versions are never overwritten, bad input gives one clear line,
//! unreadable files are skipped, inspect and eval work on every fixture.
mod common;
use common::cli::{error_line, pretext};
use common::*;

use pretext::train::Trainer;

#[test]
fn export_round_trip_through_tf_python() {
    let name = "mobilenet_v2_035";
    let mut c = cfg(name, 5);
    c.optimizer.set_learning_rate(1e-2);
    let mut t = Trainer::new(&c).unwrap();
    t.run(5).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = export_and_check(
        &t,
        out.path(),
        &fixture(name),
        &golden(name),
        &output_key(name),
    )
    .unwrap();
    assert_eq!(dir, out.path().join("1"));
    // Next export gets the next version; an explicit existing version is refused.
    let dir2 = pretext::export::export(t.model(), out.path(), None).unwrap();
    assert_eq!(dir2, out.path().join("2"));
    let e = pretext::export::export(t.model(), out.path(), Some(1))
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

/// A Keras 3 export holds each variable under two handles: the graph's serving function reads
/// one, TF2 loaders (`tf.saved_model.load`, `hub.load`) bind the other. Both must carry the
/// trained values, or TF Python serves the untrained model.
#[test]
fn a_trained_keras3_export_round_trips_through_tf_python() {
    let name = "keras3_export";
    let info = pretext::savedmodel::SavedModelInfo::read(&fixture(name)).unwrap();
    let aliases = info.variable_aliases();
    assert_eq!(
        aliases.len(),
        8,
        "each of the 8 variables has two handles: {aliases:?}"
    );
    let mut c = cfg(name, 3);
    c.optimizer.set_learning_rate(1e-2);
    let mut t = Trainer::new(&c).unwrap();
    t.run(3).unwrap();
    let out = tempfile::tempdir().unwrap();
    export_and_check(
        &t,
        out.path(),
        &fixture(name),
        &golden(name),
        &output_key(name),
    )
    .unwrap();
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
        out.contains("skipped: 1") && out.contains("broken.jpg"),
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

#[test]
fn a_timed_run_after_training_times_its_own_steps() {
    let mut c = cfg("tiny_cnn", 10);
    c.batch = 4;
    let mut t = Trainer::new(&c).unwrap();
    t.run(2).unwrap();
    let tm = t.timed_run(4, 1, pretext::train::Feed::Memory).unwrap();
    assert_eq!((tm.steps, tm.untimed_steps, t.step()), (4, 1, 6));
    assert!(
        tm.images_per_second > 0.0 && tm.first_step_unix > 0.0,
        "{tm:?}"
    );
    assert!(
        tm.loss_first.is_finite() && tm.loss_last.is_finite(),
        "{tm:?}"
    );
}
