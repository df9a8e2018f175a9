//! Limits instead of crashes: numbers `validate` accepts are numbers the engine can run, and
//! inputs that claim enormous sizes are refused from their headers before anything is decoded
//! or unpacked.
mod common;
use common::cli::*;
use common::*;

fn validate_with(set: &str) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(
        tmp.path(),
        "exp.yaml",
        &experiment(&fixture("tiny_cnn"), &images(), "dae", 2, ""),
    );
    let (code, _, err) = pretext(&["validate", exp.to_str().unwrap(), "--set", set]);
    (code, err)
}

#[test]
fn batch_and_prefetch_beyond_what_runs_are_refused_with_their_key() {
    for (set, key) in [
        ("train.batch=1000000000000", "train.batch"),
        ("data.prefetch=1000000000000", "data.prefetch"),
        ("data.prefetch=18446744073709551615", "data.prefetch"),
        ("data.workers=100000", "data.workers"),
        ("data.max_pixels=0", "data.max_pixels"),
        ("train.steps=10000000000", "train.steps"),
        (
            "eval={labeled: /nonexistent, batch: 1000000000000}",
            "eval.batch",
        ),
    ] {
        let (code, err) = validate_with(set);
        assert_eq!(code, 2, "{set}: {err}");
        assert!(error_line(&err).contains(key), "{set}: {err}");
    }
    let (code, _, err) = train_tiny(&["--batch", "1000000000000"]);
    assert_eq!(code, 2, "{err}");
    assert!(error_line(&err).contains("batch"), "{err}");
}

/// One PNG chunk: length, type, data, CRC over type and data.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut body = kind.to_vec();
    body.extend(data);
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend(&body);
    out.extend(crc.sum().to_be_bytes());
    out
}

/// A well-formed PNG of a few hundred bytes whose header claims `w` × `h` (its one IDAT
/// holds a few rows of zeros; decoding it in full would allocate w*h*3 bytes).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    use std::io::Write;
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&vec![0u8; 3 * w as usize + 1]).unwrap();
    let idat = z.finish().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &idat));
    png.extend(chunk(b"IEND", &[]));
    assert!(png.len() < 2000, "{}", png.len());
    png
}

#[test]
fn images_claiming_huge_sizes_are_skipped_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imgs");
    std::fs::create_dir(&dir).unwrap();
    for (i, e) in std::fs::read_dir(images()).unwrap().take(8).enumerate() {
        let p = e.unwrap().path();
        let ext = p.extension().unwrap().to_str().unwrap().to_string();
        std::fs::copy(&p, dir.join(format!("ok{i}.{ext}"))).unwrap();
    }
    std::fs::write(dir.join("huge.png"), png_claiming(65000, 65000)).unwrap();
    let exp = write(
        tmp.path(),
        "exp.yaml",
        &experiment(&fixture("tiny_cnn"), &dir, "dae", 3, ""),
    );
    let run = tmp.path().join("run");
    let (code, stdout, err) = run_in(&exp, &run);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("huge.png") && report.contains("65000×65000"),
        "{report}"
    );
}

#[test]
fn idx_files_of_huge_images_are_refused_before_unpacking() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("huge-idx3-ubyte.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&p).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&[0, 0, 8, 3]).unwrap();
    for d in [1u32, 40000, 40000] {
        gz.write_all(&d.to_be_bytes()).unwrap();
    }
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    gz.finish().unwrap();
    let exp = write(
        tmp.path(),
        "exp.yaml",
        &format!(
            "model:\n  path: {}\ndata:\n  idx: [{}]\n",
            fixture("tiny_cnn").display(),
            p.display()
        ),
    );
    let (code, _, err) = pretext(&["validate", exp.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let line = error_line(&err);
    assert!(
        line.contains("40000×40000") && line.contains("max_pixels"),
        "{line}"
    );
    // Images within the limit, but 100,000 of them: 40 GB declared in a file of some 64 KB.
    let bomb = tmp.path().join("bomb-idx3-ubyte.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&bomb).unwrap(),
        flate2::Compression::best(),
    );
    gz.write_all(&[0, 0, 8, 3]).unwrap();
    for d in [100_000u32, 632, 632] {
        gz.write_all(&d.to_be_bytes()).unwrap();
    }
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    gz.finish().unwrap();
    let text = std::fs::read_to_string(&exp).unwrap();
    std::fs::write(
        &exp,
        text.replace(p.to_str().unwrap(), bomb.to_str().unwrap()),
    )
    .unwrap();
    let (code, _, err) = pretext(&["validate", exp.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let line = error_line(&err);
    assert!(
        line.contains("expansion") && line.contains("nothing was unpacked"),
        "{line}"
    );
}

#[test]
fn eval_with_no_decodable_image_in_a_split_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        for class in ["a", "b"] {
            let d = tmp.path().join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            let src = std::fs::read_dir(images())
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            if split == "train" {
                std::fs::write(d.join("broken.png"), b"not a png").unwrap();
            } else {
                std::fs::copy(&src, d.join(src.file_name().unwrap())).unwrap();
            }
        }
    }
    let (code, _, err) = pretext(&[
        "eval",
        "--model",
        fixture("tiny_cnn").to_str().unwrap(),
        "--labeled",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        error_line(&err).contains("no decodable image in the train split"),
        "{err}"
    );
}
