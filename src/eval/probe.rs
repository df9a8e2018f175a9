//! The linear probe: multinomial logistic regression on standardised embeddings, fitted by
//! full-batch gradient descent with L2 regularisation (deterministic: zero initialisation).
use ndarray::{Array1, Array2, Axis};

/// Fits on (train, train_y) and returns top-1 accuracy on (test, test_y).
pub fn linear_probe_accuracy(
    train: &Array2<f32>,
    train_y: &[usize],
    test: &Array2<f32>,
    test_y: &[usize],
    classes: usize,
) -> f32 {
    let mean = train
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(train.ncols()));
    let std = train
        .std_axis(Axis(0), 0.0)
        .mapv(|s| if s > 1e-6 { s } else { 1.0 });
    let norm = |x: &Array2<f32>| (x - &mean) / &std;
    let (xt, xe) = (norm(train), norm(test));
    let (n, d) = xt.dim();
    let mut w = Array2::<f32>::zeros((d, classes));
    let mut b = Array1::<f32>::zeros(classes);
    let mut onehot = Array2::<f32>::zeros((n, classes));
    for (i, &y) in train_y.iter().enumerate() {
        onehot[[i, y]] = 1.0;
    }
    let (lr, l2) = (0.5f32, 1e-4f32);
    for _ in 0..300 {
        let mut p = xt.dot(&w) + &b;
        for mut r in p.axis_iter_mut(Axis(0)) {
            let m = r.fold(f32::MIN, |a, v| a.max(*v));
            r.mapv_inplace(|v| (v - m).exp());
            let s = r.sum();
            r.mapv_inplace(|v| v / s);
        }
        let g = (p - &onehot) / n as f32;
        let gw = xt.t().dot(&g) + &(&w * l2);
        let gb = g.sum_axis(Axis(0));
        w = w - gw * lr;
        b = b - gb * lr;
    }
    let scores = xe.dot(&w) + &b;
    let correct = scores
        .axis_iter(Axis(0))
        .zip(test_y)
        .filter(|(r, &y)| {
            (0..classes).max_by(|a, c| r[*a].total_cmp(&r[*c]).then(c.cmp(a))) == Some(y)
        })
        .count();
    correct as f32 / test_y.len().max(1) as f32
}
