//! Formats (TFRecord, IDX), corruption, odd image modes, determinism and resumable position.
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::*;

fn spec(side: u32) -> ImageSpec {
    ImageSpec {
        height: side,
        width: side,
        channels: 3,
        range: (0.0, 1.0),
    }
}

fn png(v: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(12, 10, |x, y| image::Rgb([v, x as u8 * 20, y as u8 * 20]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn sources() -> DataSources {
    DataSources {
        recursive: true,
        extensions: default_extensions(),
        image_key: DEFAULT_IMAGE_KEY.into(),
        ..Default::default()
    }
}

fn write_records(p: &Path, payloads: &[Vec<u8>]) -> Vec<u64> {
    let mut buf = Vec::new();
    let mut offsets = Vec::new();
    for d in payloads {
        offsets.push(buf.len() as u64);
        tfrecord::frame(d, &mut buf);
    }
    std::fs::write(p, buf).unwrap();
    offsets
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    assert_eq!(tfrecord::crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(tfrecord::crc32c(b""), 0);
}

#[test]
fn tfrecord_examples_are_read_and_decoded() {
    let d = tempfile::tempdir().unwrap();
    let recs: Vec<_> = (0..5)
        .map(|i| tfrecord::example_with("image/encoded", png(i * 40)))
        .collect();
    write_records(&d.path().join("a.tfrecord"), &recs);
    let mut src = sources();
    src.tfrecords = vec![d.path().to_path_buf()]; // a folder of TFRecord files
    let ds = Dataset::open(&src).unwrap();
    assert_eq!(ds.len(), 5);
    for i in 0..5 {
        let img = ds.load(i).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (12, 10));
        assert_eq!(img.get_pixel(0, 0)[0], i as u8 * 40);
    }
}

#[test]
fn corrupt_tfrecord_length_names_file_and_offset_and_the_rest_continues() {
    let d = tempfile::tempdir().unwrap();
    let recs: Vec<_> = (0..4)
        .map(|i| tfrecord::example_with("image/encoded", png(i)))
        .collect();
    let bad = d.path().join("bad.tfrecord");
    let offs = write_records(&bad, &recs);
    let mut bytes = std::fs::read(&bad).unwrap();
    bytes[offs[2] as usize] ^= 0x40; // record 2's length
    std::fs::write(&bad, bytes).unwrap();
    write_records(&d.path().join("good.tfrecord"), &recs);
    let mut src = sources();
    src.tfrecords = vec![bad.clone(), d.path().join("good.tfrecord")];
    let ds = Dataset::open(&src).unwrap();
    assert_eq!(
        ds.len(),
        2 + 4,
        "records before the corrupt length, and the other file"
    );
    assert_eq!(ds.scan_skipped.len(), 1);
    let (file, why) = &ds.scan_skipped[0];
    assert!(file.ends_with("bad.tfrecord"), "{file}");
    assert!(
        why.contains(&format!("offset {}", offs[2])) && why.contains("length"),
        "{why}"
    );
}

#[test]
fn corrupt_record_data_and_missing_key_are_skipped_with_reasons() {
    let d = tempfile::tempdir().unwrap();
    let mut recs: Vec<_> = (0..4)
        .map(|i| tfrecord::example_with("image/encoded", png(i)))
        .collect();
    recs[3] = tfrecord::example_with("label", b"7".to_vec());
    let p = d.path().join("x.tfrecord");
    let offs = write_records(&p, &recs);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[offs[1] as usize + 12 + 20] ^= 0xFF; // inside record 1's data
    std::fs::write(&p, bytes).unwrap();
    let mut src = sources();
    src.tfrecords = vec![p];
    let ds = Arc::new(Dataset::open(&src).unwrap());
    assert_eq!(ds.len(), 4);
    let e1 = ds.load(1).unwrap_err();
    assert!(
        e1.contains(&format!("offset {}", offs[1])) && e1.contains("CRC"),
        "{e1}"
    );
    let e3 = ds.load(3).unwrap_err();
    assert!(
        e3.contains("no feature 'image/encoded'") && e3.contains("label"),
        "{e3}"
    );
    let mut b = Batches::new(ds.clone(), spec(8), 0).sequential();
    b.next_batch(4).unwrap();
    let names: Vec<_> = b.skipped.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names
        .iter()
        .any(|n| n.ends_with(&format!("x.tfrecord@{}", offs[1]))));
    assert_eq!(
        b.images_read, 4,
        "good records served again to fill the batch"
    );
}

#[test]
fn gzip_tfrecord_is_refused_with_a_clear_reason() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("z.tfrecord.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b"whatever").unwrap();
    std::fs::write(&p, enc.finish().unwrap()).unwrap();
    let mut src = sources();
    src.tfrecords = vec![p];
    src.folders = vec![];
    let e = Dataset::open(&src)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("no readable image"), "{e}");
}

fn idx_images(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| (0..20).map(|p| (i * 30 + p) as u8).collect())
        .collect()
}

#[test]
fn idx_plain_and_gzip_give_the_same_pixels() {
    let d = tempfile::tempdir().unwrap();
    let raw = idx::encode(4, 5, &idx_images(6));
    std::fs::write(d.path().join("a-idx3-ubyte"), &raw).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&raw).unwrap();
    std::fs::write(d.path().join("a-idx3-ubyte.gz"), enc.finish().unwrap()).unwrap();
    for name in ["a-idx3-ubyte", "a-idx3-ubyte.gz"] {
        let mut src = sources();
        src.idx = vec![d.path().join(name)];
        let ds = Dataset::open(&src).unwrap();
        assert_eq!(ds.len(), 6, "{name}");
        let img = ds.load(2).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (5, 4));
        assert_eq!(img.into_raw(), idx_images(6)[2]);
        assert!(ds.name(2).ends_with(&format!("{name}[#2]")));
    }
}

#[test]
fn idx_labels_and_truncation_are_reported() {
    let d = tempfile::tempdir().unwrap();
    let labels = d.path().join("labels-idx1-ubyte");
    std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 2, 3, 4]).unwrap();
    let mut src = sources();
    src.idx = vec![labels.clone()];
    let e = Dataset::open(&src).err().unwrap().to_string();
    assert!(
        e.contains("labels-idx1-ubyte") && e.contains("labels, not images"),
        "{e}"
    );
    let mut raw = idx::encode(4, 5, &idx_images(3));
    raw.truncate(raw.len() - 7);
    let t = d.path().join("t-idx3-ubyte");
    std::fs::write(&t, raw).unwrap();
    src.idx = vec![t];
    let ds = Dataset::open(&src).unwrap();
    assert_eq!(ds.len(), 2);
    assert!(
        ds.scan_skipped[0].1.contains("declares 3 images"),
        "{:?}",
        ds.scan_skipped
    );
}

#[test]
fn odd_modes_decode_to_rgb() {
    let d = tempfile::tempdir().unwrap();
    let p16 = d.path().join("a16.png");
    image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(6, 6, image::Rgb([65535u16, 32896, 0]))
        .save(&p16)
        .unwrap();
    let pla = d.path().join("la.png");
    image::ImageBuffer::<image::LumaA<u8>, _>::from_pixel(6, 6, image::LumaA([200u8, 10]))
        .save(&pla)
        .unwrap();
    let prgba = d.path().join("rgba.png");
    image::RgbaImage::from_pixel(6, 6, image::Rgba([10, 20, 30, 0]))
        .save(&prgba)
        .unwrap();
    let expect = [
        (p16, [255, 128, 0]),
        (pla, [200, 200, 200]),
        (prgba, [10, 20, 30]),
    ];
    for (p, rgb) in expect {
        let img = load(&p).unwrap().to_rgb8();
        assert_eq!(img.get_pixel(3, 3).0, rgb, "{}", p.display());
    }
}

fn collect(l: &mut Loader, n: usize) -> Vec<Vec<Vec<f32>>> {
    (0..n)
        .map(|_| {
            let b = l.next().unwrap();
            let views = b.views.iter().map(|v| v.to_vec()).collect();
            // Handed back, as the trainer does: later batches are written into these tensors.
            l.recycle(b.into_tensors());
            views
        })
        .collect()
}

#[test]
fn prefetching_serves_the_same_stream_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..13u8 {
        std::fs::write(d.path().join(format!("{i:02}.png")), png(i * 15)).unwrap();
    }
    std::fs::write(d.path().join("07b.png"), b"broken").unwrap();
    let ds = Arc::new(Dataset::from_folder(
        ImageFolder::scan(d.path(), false).unwrap(),
    ));
    let plan = ViewPlan {
        clean: false,
        augmented: 2,
        augment: augment::AugmentConfig::default(),
    };
    let make = |prefetch, workers| {
        let b = Batches::new(ds.clone(), spec(8), 9);
        Loader::new(
            b,
            plan.clone(),
            5,
            LoaderOptions {
                prefetch,
                workers,
                nice: 19,
            },
        )
        .unwrap()
    };
    let mut sync = make(0, 0);
    let mut ahead = make(3, 2);
    let a = collect(&mut sync, 8);
    let b = collect(&mut ahead, 8);
    assert_eq!(a, b, "prefetching changes nothing but timing");
    assert_eq!(ahead.skipped().len(), 1);
    // Stop after 3 batches (the producer has run ahead), resume from the recorded position.
    let mut first = make(2, 0);
    collect(&mut first, 3);
    let st = first.state().clone();
    assert_eq!(st.served, 15 + 1, "3 batches of 5 plus the broken file");
    let mut resumed = make(2, 0);
    resumed.restore(&st).unwrap();
    assert_eq!(collect(&mut resumed, 5), a[3..].to_vec());
    first.restore(&st).unwrap();
    assert_eq!(
        collect(&mut first, 5),
        a[3..].to_vec(),
        "restoring a running loader"
    );
}

#[test]
fn resume_refuses_changed_data() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..3u8 {
        std::fs::write(d.path().join(format!("{i}.png")), png(i)).unwrap();
    }
    let ds = Arc::new(Dataset::from_folder(
        ImageFolder::scan(d.path(), false).unwrap(),
    ));
    let mut st = Batches::new(ds.clone(), spec(4), 0).state();
    st.files = 4;
    let e = Batches::new(ds, spec(4), 0)
        .restore(&st)
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 images") && e.contains("3"), "{e}");
}
