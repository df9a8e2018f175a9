//! Bounded fuzzing of everything pretext parses from outside: YAML experiments, saved_model.pb
//! (decoding, audit, inlining, rewrites), TFRecord framing and Example parsing, IDX files and
//! image headers. Each target mutates its committed seeds (tests/fuzz/corpus/<target>/: byte
//! flips, interesting values, inserts, deletes, splices, truncation; saved models also get
//! structural mutations: rewired inputs, recursive calls, dropped nodes, changed ops) and
//! asserts that pretext answers with an error, never a panic. Inputs that once crashed it are
//! kept in tests/fuzz/crashes/<target>/ and replayed first.
//!
//! CI runs a few hundred cases per target (seeded, so a run is reproducible);
//! `make fuzz` runs longer: PRETEXT_FUZZ_CASES (cases per target) or PRETEXT_FUZZ_SECONDS, and
//! PRETEXT_FUZZ_SEED. The input in flight is kept in target/fuzz/<target>.current, so even a
//! crash that kills the process (stack overflow, abort) leaves it behind.
mod common;
mod fuzz_support;

use std::path::Path;

use fuzz_support::{Fuzz, Input};
use pretext::proto;

#[test]
fn yaml_experiments() {
    Fuzz::new("yaml").run(|input: &Input| {
        let text = String::from_utf8_lossy(&input.bytes).into_owned();
        let src = pretext::experiment::Source::new("fuzz.yaml".into(), text);
        let _ = src.parse(&[]);
        // The same text as one --set value.
        let first = String::from_utf8_lossy(&input.bytes[..input.bytes.len().min(64)]).into_owned();
        let _ = src.parse(&[format!("train.{first}")]);
    });
}

/// The model's top-level graph imported by TF (what loading does before pretext inlines).
fn loaded_graph(info: &pretext::savedmodel::SavedModelInfo) -> Option<tensorflow::Graph> {
    let gd = info.meta.graph_def.as_ref()?;
    let mut g = tensorflow::Graph::new();
    let bytes = prost::Message::encode_to_vec(gd);
    g.import_graph_def(&bytes, &tensorflow::ImportGraphDefOptions::new())
        .ok()?;
    Some(g)
}

#[test]
fn saved_model_decoding_audit_and_inlining() {
    Fuzz::new("savedmodel")
        .structured(fuzz_support::mutate_saved_model)
        .run(|input: &Input| {
            let dir = input.dir();
            std::fs::write(dir.join("saved_model.pb"), &input.bytes).unwrap();
            let Ok(info) = pretext::savedmodel::SavedModelInfo::read(dir) else {
                return;
            };
            let _ = pretext::savedmodel::audit::audit(&info);
            let _ = info.variables();
            let _ = info.trainable_handles();
            let Some(graph) = loaded_graph(&info) else {
                return;
            };
            for name in info.signature_names() {
                let Ok(sig) = info.signature(&name) else {
                    continue;
                };
                if let Ok(mut flat) = pretext::graph::inline_signature(&info, &sig, &graph) {
                    let trainable = info.trainable_handles();
                    if let Ok(v) = pretext::autodiff::control_flow::check(&flat, &trainable) {
                        let _ = pretext::autodiff::control_flow::stop_gradients(&mut flat, &v);
                    }
                    pretext::graph::unstride::apply(&mut flat, &info);
                    pretext::graph::fold::fold_frozen(&mut flat.graph_def);
                }
            }
        });
}

#[test]
fn tfrecord_framing_and_examples() {
    Fuzz::new("tfrecord").run(|input: &Input| {
        let p = input.file("data.tfrecord");
        let Ok((records, _)) = pretext::data::tfrecord::index(&p) else {
            return;
        };
        for r in records.into_iter().take(16) {
            if let Ok(rec) = pretext::data::tfrecord::read(&p, r) {
                if let Ok(img) = pretext::data::tfrecord::example_image(&rec, "image/encoded") {
                    let _ = pretext::data::decode_bytes(&img, 1 << 20);
                }
            }
        }
    });
}

#[test]
fn idx_files() {
    Fuzz::new("idx").run(|input: &Input| {
        let gz = input.bytes.starts_with(&[0x1f, 0x8b]);
        let p = input.file(if gz {
            "x-idx3-ubyte.gz"
        } else {
            "x-idx3-ubyte"
        });
        if let Ok((f, _)) = pretext::data::idx::IdxFile::open(&p, 1 << 20) {
            for i in 0..f.count.min(4) {
                let _ = f.image(i);
            }
        }
    });
}

#[test]
fn image_headers_and_decoding() {
    let need = pretext::data::Need::new(16, 16, None);
    Fuzz::new("image").run(|input: &Input| {
        let _ = pretext::data::decode_bytes(&input.bytes, 1 << 20);
        let _ = pretext::data::decode_scaled(&input.bytes, &need, 1 << 20);
    });
}

/// Seeds must themselves be valid (or the fuzzer explores nothing past the first check).
#[test]
fn seeds_are_accepted() {
    let dir = fuzz_support::corpus_dir("savedmodel");
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        let sm: proto::SavedModel = prost::Message::decode(bytes.as_slice()).unwrap();
        assert!(!sm.meta_graphs.is_empty(), "{}", e.path().display());
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("saved_model.pb"), &bytes).unwrap();
        let info = pretext::savedmodel::SavedModelInfo::read(tmp.path()).unwrap();
        let sig = info.signature("serving_default").unwrap();
        let graph = loaded_graph(&info).unwrap();
        let flat = pretext::graph::inline_signature(&info, &sig, &graph);
        assert!(
            flat.is_ok(),
            "{}: {}",
            e.path().display(),
            flat.err().unwrap()
        );
    }
    let p: &Path = &fuzz_support::corpus_dir("tfrecord").join("two.tfrecord");
    let (records, damage) = pretext::data::tfrecord::index(p).unwrap();
    assert_eq!((records.len(), damage), (2, None));
}
