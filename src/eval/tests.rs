//! kNN and linear probe on small constructed sets whose accuracies are known by hand.
use super::*;
use ndarray::array;

#[test]
fn knn_on_a_hand_checked_set() {
    // Two classes on the unit circle: class 0 near angle 0, class 1 near angle π/2.
    let train = array![
        [1.0, 0.0],
        [0.9, 0.1],
        [0.95, -0.05],
        [0.0, 1.0],
        [0.1, 0.9],
        [-0.05, 1.0]
    ];
    let ty = [0, 0, 0, 1, 1, 1];
    // Test points: clearly class 0, clearly class 1, and one at 60° labelled 0 (its nearest
    // neighbours are class 1, so it must be counted wrong).
    let test = array![[2.0, 0.1], [0.0, 3.0], [0.5, 0.866]];
    let acc = knn_accuracy(&train, &ty, &test, &[0, 1, 0], 3, 2);
    assert!((acc - 2.0 / 3.0).abs() < 1e-6, "{acc}");
    // With k = all six, the similarity weights still decide for the nearer class.
    let acc = knn_accuracy(&train, &ty, &test, &[0, 1, 1], 6, 2);
    assert!((acc - 1.0).abs() < 1e-6, "{acc}");
}

#[test]
fn linear_probe_separates_a_linear_rule_and_not_noise() {
    // Labels = which of three directions the point leans to; plus noise dimensions.
    let n = 300;
    let mut x = Array2::<f32>::zeros((n, 5));
    let mut y = Vec::new();
    for i in 0..n {
        let c = i % 3;
        let t = i as f32 * 0.37;
        x[[i, c]] = 2.0 + t.sin();
        x[[i, 3]] = (t * 1.7).cos();
        x[[i, 4]] = (t * 2.3).sin();
        y.push(c);
    }
    let (tr, te) = (
        x.slice(ndarray::s![..200, ..]).to_owned(),
        x.slice(ndarray::s![200.., ..]).to_owned(),
    );
    let acc = probe::linear_probe_accuracy(&tr, &y[..200], &te, &y[200..], 3);
    assert_eq!(acc, 1.0);
    // Labels unrelated to the features: held-out accuracy stays near chance (1/3).
    let noise_y: Vec<usize> = (0..n).map(|i| (i * 7 / 3 + i / 5) % 3).collect();
    let acc = probe::linear_probe_accuracy(&tr, &noise_y[..200], &te, &noise_y[200..], 3);
    assert!(acc < 0.6, "{acc}");
}

#[test]
fn labeled_set_splits_and_rejects_bad_layouts() {
    let d = tempfile::tempdir().unwrap();
    for c in ["cat", "dog"] {
        std::fs::create_dir(d.path().join(c)).unwrap();
        for i in 0..10 {
            image::RgbImage::from_pixel(4, 4, image::Rgb([i * 20, 0, 0]))
                .save(d.path().join(c).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let s = LabeledSet::scan(d.path()).unwrap();
    assert_eq!(s.classes, vec!["cat", "dog"]);
    assert_eq!((s.train.len(), s.test.len()), (16, 4));
    let one = tempfile::tempdir().unwrap();
    std::fs::create_dir(one.path().join("only")).unwrap();
    image::RgbImage::from_pixel(4, 4, image::Rgb([0, 0, 0]))
        .save(one.path().join("only/a.png"))
        .unwrap();
    let e = LabeledSet::scan(one.path()).unwrap_err().to_string();
    assert!(
        e.contains("eval.labeled") && e.contains("two class folders"),
        "{e}"
    );
}
