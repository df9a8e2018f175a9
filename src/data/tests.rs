//! Image folders: scanning, skipped files, symlink loops, batches and the reuse of their tensors.
use super::*;

fn write_png(p: &Path, w: u32, h: u32, v: u8) {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]));
    img.save(p).unwrap();
}

fn ds(f: &ImageFolder) -> std::sync::Arc<Dataset> {
    std::sync::Arc::new(Dataset::from_folder(f.clone()))
}

fn spec() -> ImageSpec {
    ImageSpec {
        height: 8,
        width: 8,
        channels: 3,
        range: (0.0, 1.0),
    }
}

#[test]
fn corrupt_files_are_skipped_and_counted() {
    let d = tempfile::tempdir().unwrap();
    write_png(&d.path().join("a.png"), 20, 10, 10);
    write_png(&d.path().join("b.png"), 10, 20, 200);
    std::fs::write(d.path().join("c.jpg"), b"not a jpeg").unwrap();
    std::fs::write(d.path().join("notes.txt"), b"hello").unwrap();
    let f = ImageFolder::scan(d.path(), false).unwrap();
    assert_eq!(f.files.len(), 3);
    assert_eq!(f.ignored, 1);
    let mut b = Batches::new(ds(&f), spec(), 1);
    let x = b.next_batch(5).unwrap();
    assert_eq!(x.len(), 5 * 8 * 8 * 3);
    assert_eq!(b.skipped.len(), 1);
    assert!(b.skipped[0].0.ends_with("c.jpg"));
    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn folder_without_readable_images_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("x.png"), b"garbage").unwrap();
    let f = ImageFolder::scan(d.path(), false).unwrap();
    let mut b = Batches::new(ds(&f), spec(), 1);
    let e = b.next_batch(2).unwrap_err().to_string();
    assert!(
        e.contains(&d.path().display().to_string()) && e.contains("no readable image"),
        "{e}"
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(ImageFolder::scan(empty.path(), false).is_err());
}

#[test]
fn order_is_deterministic_under_a_seed() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..10u8 {
        write_png(&d.path().join(format!("{i}.png")), 8, 8, i * 20);
    }
    let f = ImageFolder::scan(d.path(), false).unwrap();
    let a = Batches::new(ds(&f), spec(), 42).next_batch(7).unwrap();
    let b = Batches::new(ds(&f), spec(), 42).next_batch(7).unwrap();
    let c = Batches::new(ds(&f), spec(), 43).next_batch(7).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn grayscale_and_value_range() {
    let d = tempfile::tempdir().unwrap();
    write_png(&d.path().join("a.png"), 8, 8, 255);
    let f = ImageFolder::scan(d.path(), false).unwrap();
    let s = ImageSpec {
        height: 4,
        width: 4,
        channels: 1,
        range: (-1.0, 1.0),
    };
    let x = Batches::new(ds(&f), s, 0).next_batch(1).unwrap();
    assert_eq!(x.len(), 16);
    assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)));
}

#[test]
fn views_are_deterministic_and_differ_from_each_other() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..4u8 {
        let img = image::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([x as u8 * 6, y as u8 * 8, i * 60])
        });
        img.save(d.path().join(format!("{i}.png"))).unwrap();
    }
    let f = ImageFolder::scan(d.path(), false).unwrap();
    let plan = ViewPlan {
        clean: true,
        augmented: 2,
        augment: augment::AugmentConfig::default(),
    };
    let a = Batches::new(ds(&f), spec(), 5)
        .next_views(3, &plan)
        .unwrap();
    let b = Batches::new(ds(&f), spec(), 5)
        .next_views(3, &plan)
        .unwrap();
    assert_eq!(a.views, b.views);
    assert_eq!(a.clean.as_ref().unwrap().len(), 3 * 8 * 8 * 3);
    assert_eq!(a.views.len(), 2);
    assert_ne!(a.views[0], a.views[1]);
}

#[test]
fn reused_tensors_are_overwritten_whole_and_reused() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..6u8 {
        write_png(&d.path().join(format!("{i}.png")), 12, 9, i * 40);
    }
    std::fs::write(d.path().join("2b.png"), b"broken").unwrap();
    let f = ImageFolder::scan(d.path(), false).unwrap();
    let plan = ViewPlan {
        clean: true,
        augmented: 2,
        augment: augment::AugmentConfig::default(),
    };
    let mut fresh = Batches::new(ds(&f), spec(), 3);
    let mut reusing = Batches::new(ds(&f), spec(), 3);
    let dims = [4u64, 8, 8, 3];
    for round in 0..3 {
        let want = fresh.next_views(4, &plan).unwrap();
        // Stale contents (NaN), one tensor of another shape, one short: the NaN ones are
        // taken and must come back fully overwritten; the wrong shape is dropped.
        let mut spare: Vec<tensorflow::Tensor<f32>> = (0..2)
            .map(|_| {
                tensorflow::Tensor::new(&dims)
                    .with_values(&[f32::NAN; 768])
                    .unwrap()
            })
            .collect();
        spare.insert(0, tensorflow::Tensor::new(&[3, 8, 8, 3]));
        let ptrs: Vec<*const f32> = spare[1..].iter().map(|t| t.as_ptr()).collect();
        let got = reusing.next_views_reusing(4, &plan, &mut spare).unwrap();
        assert!(spare.is_empty(), "round {round}: {} left", spare.len());
        let out: Vec<*const f32> = std::iter::once(got.clean.as_ref().unwrap())
            .chain(&got.views)
            .map(|t| t.as_ptr())
            .collect();
        assert!(
            ptrs.iter().all(|p| out.contains(p)),
            "round {round}: spares not reused"
        );
        assert_eq!(got.clean, want.clean, "round {round}");
        assert_eq!(got.views, want.views, "round {round}");
        assert!(got
            .into_tensors()
            .iter()
            .all(|t| t.dims() == dims && t.iter().all(|v| v.is_finite())));
    }
    assert_eq!(reusing.skipped.len(), 1, "the broken file, once");
}

#[test]
fn symlink_loops_and_second_paths_add_nothing() {
    let d = tempfile::tempdir().unwrap();
    let sub = d.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    write_png(&d.path().join("a.png"), 8, 8, 10);
    write_png(&sub.join("b.png"), 8, 8, 20);
    // Two loops (the case that made `validate` hang), a link to a file already listed, and a
    // link to a folder holding one more image, which is listed once.
    std::os::unix::fs::symlink(".", d.path().join("loop")).unwrap();
    std::os::unix::fs::symlink("..", sub.join("up")).unwrap();
    std::os::unix::fs::symlink("a.png", d.path().join("same.png")).unwrap();
    let other = tempfile::tempdir().unwrap();
    write_png(&other.path().join("c.png"), 8, 8, 30);
    std::os::unix::fs::symlink(other.path(), d.path().join("elsewhere")).unwrap();
    let f = ImageFolder::scan(d.path(), true).unwrap();
    let names: Vec<String> = f
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(f.files.len(), 3, "{names:?}");
    for n in ["b.png", "c.png"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    assert!(names.contains(&"a.png".into()) || names.contains(&"same.png".into()));
}

#[test]
fn shards_together_serve_the_unsharded_batches_across_epochs_and_a_restore() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..7u8 {
        write_png(&d.path().join(format!("{i}.png")), 12, 9, i * 30);
    }
    let f = ImageFolder::scan(d.path(), false).unwrap();
    let plan = ViewPlan {
        clean: true,
        augmented: 2,
        augment: augment::AugmentConfig::default(),
    };
    // 3 replicas of 2 images: batches of 6 over 7 images cross epochs.
    let (n, share) = (3, 2);
    let mut whole = Batches::new(ds(&f), spec(), 5);
    let mut parts: Vec<Batches> = (0..n)
        .map(|k| {
            let s = Shard {
                index: k,
                replicas: n,
                share,
            };
            Batches::new(ds(&f), spec(), 5).sharded(s).unwrap()
        })
        .collect();
    let rows = 8 * 8 * 3;
    for step in 0..5 {
        if step == 3 {
            // A checkpoint's positions taken and restored into fresh shards.
            let states: Vec<BatchesState> = parts.iter().map(|p| p.state()).collect();
            for (k, (p, st)) in parts.iter_mut().zip(&states).enumerate() {
                let s = Shard {
                    index: k,
                    replicas: n,
                    share,
                };
                *p = Batches::new(ds(&f), spec(), 5).sharded(s).unwrap();
                p.restore(st).unwrap();
            }
        }
        let all = whole.next_views(n * share, &plan).unwrap().into_tensors();
        for (k, p) in parts.iter_mut().enumerate() {
            let mine = p.next_views(share, &plan).unwrap().into_tensors();
            for (a, m) in all.iter().zip(&mine) {
                let want = &a[k * share * rows..(k + 1) * share * rows];
                assert_eq!(&m[..], want, "step {step}, replica {k}");
            }
        }
    }
    let bad = Shard {
        index: 3,
        replicas: 3,
        share: 2,
    };
    assert!(Batches::new(ds(&f), spec(), 5).sharded(bad).is_err());
}
