//! TensorFlow's environment as users get it (src/runtime.rs): no TF log on `--help`, oneDNN on
//! unless `TF_ENABLE_ONEDNN_OPTS=0` says otherwise, TF's lines back with `TF_CPP_MIN_LOG_LEVEL=0`.
mod common;
use common::cli::*;

#[test]
fn help_prints_no_tensorflow_log() {
    for args in [&["--help"][..], &["train", "--help"], &["run", "--help"]] {
        let (code, stdout, err) = pretext(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(stdout.contains("Usage: pretext"), "{args:?}: {stdout}");
        assert_eq!(err, "", "{args:?} printed on standard error");
    }
}

/// TF prints its oneDNN banner while loading when oneDNN is on; shown at log level 0.
fn banner_with(onednn: Option<&str>) -> bool {
    let mut c = pretext_cmd();
    c.env("TF_CPP_MIN_LOG_LEVEL", "0").arg("--help");
    if let Some(v) = onednn {
        c.env("TF_ENABLE_ONEDNN_OPTS", v);
    }
    let (code, _, err) = out(c.output().unwrap());
    assert_eq!(code, 0, "{err}");
    err.contains("oneDNN custom operations are on")
}

#[test]
fn onednn_is_on_by_default_and_off_when_asked() {
    assert!(banner_with(None), "oneDNN is not on by default");
    assert!(banner_with(Some("1")));
    assert!(
        !banner_with(Some("0")),
        "TF_ENABLE_ONEDNN_OPTS=0 did not turn oneDNN off"
    );
}
