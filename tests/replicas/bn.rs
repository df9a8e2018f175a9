//! Batch norm on batch statistics across replicas: synchronised (`model.bn_sync`) equals one
//! tower; per replica, each normalises its own share and the moving averages are averaged.
use pretext::heads::HeadConfig;
use pretext::train::Trainer;

use super::{config, diff, max_rel, read_variables, variables, STEPS, TWO};

/// Batch norm on batch statistics in every layer: one tower on batch 8 against two replicas
/// on 4 images each. (losses 1, losses 2, variables 1, variables 2, moving statistics 1, 2.)
fn bn_runs(head: HeadConfig, sync: bool) -> [Vec<(String, Vec<f32>)>; 4] {
    let mut one = config(head, false);
    one.bn = pretext::graph::bn::BnMode::TrainAll;
    let mut two = one.clone();
    two.devices = TWO.iter().map(|d| d.to_string()).collect();
    two.bn_sync = sync;
    let moving = |v: &pretext::savedmodel::Variable| v.name.contains("moving_");
    let mut out = Vec::new();
    for c in [one, two] {
        let mut t = Trainer::new(&c).unwrap();
        let losses = t.run(STEPS).unwrap();
        out.push(vec![("losses".to_string(), losses)]);
        let mut vars = variables(&t);
        vars.extend(
            read_variables(&t, moving)
                .into_iter()
                .filter(|(n, _)| n.contains("moving_")),
        );
        out.push(vars);
    }
    out.try_into().unwrap()
}

/// DAE's losses and variables match one tower's to rounding. The contrastive heads amplify the
/// rounding of a decomposed batch norm against TF's fused kernel (oneDNN's by default) over
/// the steps: their first loss must match as closely (the statistics are the whole batch's),
/// the later ones and the variables are held to looser bounds, printed as measured.
#[test]
fn synchronised_batch_norm_on_two_devices_equals_one_tower() {
    // MoCo: its key encoder (a copy of the replicated graph) normalises across replicas too.
    let heads = [
        HeadConfig::Dae(Default::default()),
        HeadConfig::Simclr(Default::default()),
        serde_yaml::from_str("kind: moco").unwrap(),
    ];
    for head in heads {
        let kind = head.head().kind();
        let [l1, v1, l2, v2] = bn_runs(head, true);
        let (lr, vr) = (max_rel(&l1, &l2), max_rel(&v1, &v2));
        let va = v1
            .iter()
            .zip(&v2)
            .map(|((_, x), (_, y))| diff(x, y).0)
            .fold(0f32, f32::max);
        let moving = v1.iter().filter(|(n, _)| n.contains("moving_")).count();
        println!(
            "{kind}, bn train_all, bn_sync: {STEPS} steps, batch 8, 1 vs 2 devices: losses max \
             rel {lr:.2e}; {} variables ({moving} moving statistics) max abs {va:.2e} rel \
             {vr:.2e}; losses {:?} vs {:?}",
            v1.len(),
            l1[0].1,
            l2[0].1
        );
        assert!(moving > 0, "{kind}: the fixture has batch norms");
        let first = diff(&l1[0].1[..1], &l2[0].1[..1]).1;
        assert!(
            first <= 1e-6,
            "{kind}: first losses differ by {first} (relative)"
        );
        let (lb, vb) = if kind == "dae" {
            (1e-5, 1e-5)
        } else {
            (1e-4, 1e-3)
        };
        assert!(lr <= lb, "{kind}: losses differ by {lr} (relative)");
        assert!(va <= vb, "{kind}: variables differ by {va} (relative {vr})");
    }
}

#[test]
fn per_replica_batch_norm_averages_the_moving_statistics() {
    let [l1, v1, l2, v2] = bn_runs(HeadConfig::Dae(Default::default()), false);
    // Each replica normalises its own 4 images, so the losses differ from one tower's 8 …
    let lr = max_rel(&l1, &l2);
    // … but after one step the average of two equal shares' means is the batch mean, so the
    // moving means agree while the moving variances (average of the shares') do not.
    let one_step = |replicated| {
        let mut c = config(HeadConfig::Dae(Default::default()), false);
        c.bn = pretext::graph::bn::BnMode::TrainAll;
        if replicated {
            c.devices = TWO.iter().map(|d| d.to_string()).collect();
        }
        let mut t = Trainer::new(&c).unwrap();
        t.run(1).unwrap();
        read_variables(&t, |v| v.name.contains("moving_"))
    };
    let (a, b) = (one_step(false), one_step(true));
    // The first batch norm reads the same activations either way (deeper ones do not).
    let first = |v: &[(String, Vec<f32>)], what: &str| -> Vec<f32> {
        let name = format!("batch_normalization/{what}");
        v.iter()
            .find(|(n, _)| *n == name)
            .expect("the fixture's first batch norm")
            .1
            .clone()
    };
    let mean = diff(&first(&a, "moving_mean"), &first(&b, "moving_mean")).1;
    let var = diff(&first(&a, "moving_variance"), &first(&b, "moving_variance")).1;
    println!(
        "dae, bn train_all, per replica: losses max rel {lr:.2e} vs one tower; after one step \
         the first batch norm's moving mean max rel {mean:.2e}, moving variance {var:.2e}; {} \
         variables",
        v1.len().max(v2.len())
    );
    assert!(
        lr > 1e-5,
        "per-replica statistics differ from the whole batch's: {lr}"
    );
    assert!(mean <= 1e-6, "moving means: {mean}");
    assert!(var > 1e-6, "moving variances average the shares': {var}");
}
