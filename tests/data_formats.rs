//! The data readers against the real producers: TFRecord files written by `tf.io.TFRecordWriter`,
//! odd image modes written by Pillow and TF, Debian's Fashion-MNIST IDX file; pixels compared
//! with TF's own `decode_image` (fixtures and oracle: scripts/make_data_fixtures.py). And a YAML
//! experiment that trains from TFRecord files, damaged ones included.
mod common;

use std::path::{Path, PathBuf};

use common::cli;
use pretext::data::{DataSources, Dataset};

fn data_fixtures() -> PathBuf {
    let p = common::fixtures().join("data");
    assert!(
        p.join("expected.json").is_file(),
        "{}: run `make fixtures`",
        p.display()
    );
    p
}

fn expected() -> serde_json::Value {
    let p = data_fixtures().join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn sources() -> DataSources {
    DataSources {
        recursive: true,
        extensions: pretext::data::default_extensions(),
        image_key: pretext::data::DEFAULT_IMAGE_KEY.into(),
        ..Default::default()
    }
}

/// Mean absolute difference between our RGB decode and TF's, per channel value.
fn diff_to_tf(img: &image::DynamicImage, name: &str, e: &serde_json::Value) -> f64 {
    let ours = img.to_rgb8();
    let (h, w) = (
        e["height"].as_u64().unwrap() as u32,
        e["width"].as_u64().unwrap() as u32,
    );
    assert_eq!(ours.dimensions(), (w, h), "{name}: size");
    let tf = std::fs::read(data_fixtures().join("expected").join(format!("{name}.rgb"))).unwrap();
    let ours = ours.into_raw();
    assert_eq!(ours.len(), tf.len(), "{name}");
    ours.iter()
        .zip(&tf)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum::<f64>()
        / tf.len() as f64
}

#[test]
fn tfrecords_written_by_tf_decode_like_tf() {
    let mut src = sources();
    src.tfrecords = vec![data_fixtures().join("tfrecords")];
    let ds = Dataset::open(&src).unwrap();
    assert_eq!(ds.len(), 40);
    assert!(ds.scan_skipped.is_empty());
    let exp = expected();
    let mut worst: f64 = 0.0;
    for i in 0..40 {
        let (shard, k) = (i / 20, i % 20);
        let file = format!("train-{shard:05}-of-00002.tfrecord");
        let off = exp["tfrecords"][&file]["offsets"][k].as_u64().unwrap();
        assert!(
            ds.name(i).ends_with(&format!("{file}@{off}")),
            "{}",
            ds.name(i)
        );
        let img = ds.load(i).unwrap();
        let d = diff_to_tf(
            &img,
            &format!("{file}.{k}"),
            &exp["tfrecords"][format!("{file}#{k}")],
        );
        // PNG records are lossless (exact); JPEG decoders may differ in IDCT rounding.
        if k % 2 == 1 {
            assert_eq!(d, 0.0, "PNG record {i}");
        }
        worst = worst.max(d);
    }
    eprintln!("worst JPEG record: mean |ours - TF| = {worst:.4}");
    assert!(worst < 1.5, "mean |ours - TF| per value: {worst}");
}

#[test]
fn damaged_tfrecords_name_file_and_offset_and_the_rest_is_read() {
    let exp = expected();
    let c = &exp["corrupt"];
    let (bad_data, bad_len) = (
        c["bad_data"].as_u64().unwrap(),
        c["bad_length"].as_u64().unwrap(),
    );
    assert!(
        c["tf_reader"]
            .as_str()
            .unwrap()
            .contains("corrupted record"),
        "TF agrees: {c}"
    );
    let dir = data_fixtures().join("corrupt");
    let mut src = sources();
    src.tfrecords = vec![
        dir.join("damaged.tfrecord"),
        dir.join("nokey.tfrecord"),
        data_fixtures().join("tfrecords"),
    ];
    let ds = Dataset::open(&src).unwrap();
    assert_eq!(
        ds.len(),
        7 + 3 + 40,
        "records before the bad length, the key-less ones, the good files"
    );
    let (file, why) = &ds.scan_skipped[0];
    assert!(
        file.ends_with("damaged.tfrecord") && why.contains(&format!("offset {bad_len}")),
        "{file}: {why}"
    );
    let e = ds.load(4).unwrap_err();
    assert!(
        e.contains(&format!("offset {bad_data}")) && e.contains("data CRC"),
        "{e}"
    );
    let e = ds.load(7).unwrap_err();
    assert!(
        e.contains("no feature 'image/encoded'") && e.contains("img"),
        "{e}"
    );
    let ok = (0..ds.len()).filter(|&i| ds.load(i).is_ok()).count();
    assert_eq!(ok, 6 + 40);
}

#[test]
fn odd_image_modes_decode_like_tf() {
    let exp = expected();
    let odd = exp["odd"].as_object().unwrap();
    assert!(odd.len() >= 10);
    for (name, e) in odd {
        let img = pretext::data::load(&data_fixtures().join("odd").join(name))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let d = diff_to_tf(&img, name, e);
        let lossless = name.ends_with(".png") || name.ends_with(".bmp") || name.ends_with(".webp");
        let tol = if lossless { 0.51 } else { 2.0 };
        eprintln!("{name}: mean |ours - TF| = {d:.4} (tolerance {tol})");
        assert!(d <= tol, "{name}: mean |ours - TF| = {d}");
    }
}

#[test]
fn fashion_mnist_idx_file_reads_like_numpy() {
    let exp = expected();
    let Some(idx) = exp.get("idx") else {
        panic!("the Fashion-MNIST package is missing: `make labeled` installs it");
    };
    let mut src = sources();
    src.idx = vec![PathBuf::from(idx["path"].as_str().unwrap())];
    let ds = Dataset::open(&src).unwrap();
    assert_eq!(ds.len() as u64, idx["count"].as_u64().unwrap());
    for (i, sum) in idx["sums"].as_object().unwrap() {
        let img = ds.load(i.parse().unwrap()).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (28, 28));
        let s: u64 = img.into_raw().iter().map(|&v| v as u64).sum();
        assert_eq!(s, sum.as_u64().unwrap(), "image {i}");
    }
}

#[test]
fn an_experiment_trains_from_tfrecords_and_reports_damage() {
    let dir = tempfile::tempdir().unwrap();
    let d = data_fixtures();
    let text = format!(
        "model: {{path: {}}}\ndata:\n  tfrecords: [{}, {}]\n  prefetch: 2\nhead: {{kind: simclr}}\ntrain: {{steps: 3, batch: 8}}\n",
        common::fixture("mobilenet_v2_035").display(),
        d.join("tfrecords").display(),
        d.join("corrupt/damaged.tfrecord").display()
    );
    let exp = cli::write(dir.path(), "tfr.yaml", &text);
    let run = dir.path().join("run");
    cli::run_ok(&exp, &run);
    let r = cli::report(&run);
    assert_eq!(r["steps"], 3);
    let skipped: Vec<String> = r["images_skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s[0].as_str().unwrap(), s[1].as_str().unwrap()))
        .collect();
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("damaged.tfrecord") && s.contains("length")),
        "{skipped:?}"
    );
    assert!(r["images_read"].as_u64().unwrap() >= 24);
    let (code, out, _) = cli::pretext(&["validate", exp.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("images: 47"), "{out}");
}

#[test]
fn a_missing_tfrecord_file_is_a_located_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "model: {{path: {}}}\ndata:\n  tfrecords: [{}]\n",
        common::fixture("mobilenet_v2_035").display(),
        Path::new("/nonexistent/x.tfrecord").display()
    );
    let exp = cli::write(dir.path(), "bad.yaml", &text);
    let (code, _, err) = cli::pretext(&["validate", exp.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let line = cli::error_line(&err);
    assert!(
        line.contains("data.tfrecords") && line.contains("/nonexistent/x.tfrecord"),
        "{line}"
    );
}
