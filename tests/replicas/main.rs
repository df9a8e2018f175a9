//! Towers on several devices (`train.devices`): N steps with the tower replicated on two CPU
//! devices (each on half the batch) equal N steps of one tower on the whole batch — losses and
//! every variable after the steps — for every head (SimCLR and MoCo: global negatives; MoCo's
//! and BYOL's frozen encoders replicated too) and both retain terms, with frozen batch norm;
//! the replicas and their backward passes run on their own devices. With batch norm on batch
//! statistics, `model.bn_sync` equals one tower too (moving statistics included); without it,
//! each replica normalises its own share and the moving averages are averaged. Settings that
//! cannot replicate are refused, naming the key.
mod bn;
#[path = "../common/mod.rs"]
mod common;
use common::*;

use pretext::heads::HeadConfig;
use pretext::train::{TrainConfig, Trainer};
use tensorflow::{ops, DataType, SessionRunArgs};

const TWO: [&str; 2] = ["/device:CPU:0", "/device:CPU:1"];
const STEPS: u64 = 4;
const MODEL: &str = "tiny_cnn";

/// SGD with momentum by default: its update is the gradient itself, so the comparison sees
/// every gradient difference. (Adam's first steps are about lr · sign(gradient): they amplify
/// the rounding noise of gradients that are about 0 to ± lr, whatever the device count; its
/// figures are printed, not asserted.)
fn config(head: HeadConfig, adam: bool) -> TrainConfig {
    let mut c = cfg(MODEL, STEPS);
    c.batch = 8;
    c.head = head;
    if !adam {
        c.optimizer = pretext::optim::OptimizerConfig::Sgd(pretext::optim::SgdConfig {
            learning_rate: 0.01,
            momentum: 0.9,
            ..Default::default()
        });
    }
    c
}

/// Every variable the run trains (the model's and the head's), by name, after the steps.
fn variables(t: &Trainer) -> Vec<(String, Vec<f32>)> {
    read_variables(t, |v| v.trainable)
}

/// The model's variables `which` selects and the head's, by name.
fn read_variables(
    t: &Trainer,
    which: impl Fn(&pretext::savedmodel::Variable) -> bool,
) -> Vec<(String, Vec<f32>)> {
    let m = t.model();
    let mut s = m.scope.new_sub_scope("test_read");
    let mut reads = Vec::new();
    for v in m.info.variables().iter().filter(|v| which(v)) {
        let h = m.op(&v.handle).unwrap();
        let r = ops::ReadVariableOp::new()
            .dtype(DataType::Float)
            .build(h, &mut s)
            .unwrap();
        reads.push((v.name.clone(), r.output(0)));
    }
    for h in t.head_vars() {
        reads.push((h.name.clone(), h.value.clone()));
    }
    let mut run = SessionRunArgs::new();
    let toks: Vec<_> = reads
        .iter()
        .map(|(_, o)| run.request_fetch(&o.operation, o.index))
        .collect();
    m.session.run(&mut run).unwrap();
    reads
        .iter()
        .zip(toks)
        .map(|((n, _), tok)| (n.clone(), run.fetch::<f32>(tok).unwrap().to_vec()))
        .collect()
}

/// (max absolute, max relative) difference; relative to max(|a|, 1e-3).
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0f32, 0f32), |(ma, mr), (x, y)| {
        let d = (x - y).abs();
        (ma.max(d), mr.max(d / x.abs().max(1e-3)))
    })
}

/// Trains `head` on one tower and on two replicas: [losses max abs, rel, variables max abs,
/// max difference relative to the variable's own change] and the two-replica trainer.
///
/// The variables are held to their change: a convolution bias's gradient sums every position
/// of the batch, nearly cancelling, so where the CPU's kernels sum in another order (AVX2 vs
/// AVX-512) its rounding shows. SimCLR after 4 steps: conv2d/bias 7.97e-5 apart on an AMD EPYC,
/// 9.5e-4 of the 8.4e-2 it moved; under 1e-5 on a Xeon.
fn compare(head: &HeadConfig, adam: bool) -> ([f32; 4], Trainer) {
    let kind = head.head().kind();
    let mut one = Trainer::new(&config(head.clone(), adam)).unwrap();
    let v0 = variables(&one);
    let l1 = one.run(STEPS).unwrap();
    let v1 = variables(&one);
    let mut c = config(head.clone(), adam);
    c.devices = TWO.iter().map(|d| d.to_string()).collect();
    let mut two = Trainer::new(&c).unwrap();
    let towers = two.towers();
    assert!(
        towers >= 2 && towers % 2 == 0,
        "{kind}: one replica per device and pass: {towers}"
    );
    let l2 = two.run(STEPS).unwrap();
    let v2 = variables(&two);
    let (la, lr) = diff(&l1, &l2);
    let (mut va, mut vr, mut vu) = (0f32, 0f32, 0f32);
    assert_eq!(v1.len(), v2.len());
    for (((n1, a), (n2, b)), (_, z)) in v1.iter().zip(&v2).zip(&v0) {
        assert_eq!(n1, n2);
        let (x, y) = diff(a, b);
        // Relative to how far training moved the variable (at least 1e-3).
        let (moved, _) = diff(z, a);
        va = va.max(x);
        vr = vr.max(y);
        vu = vu.max(x / moved.max(1e-3));
    }
    println!(
        "{kind} ({}): {STEPS} steps, batch 8, 1 vs 2 devices: losses max abs {la:.2e} rel \
         {lr:.2e}; {} variables max abs {va:.2e} rel {vr:.2e}, of their change {vu:.2e}; \
         losses {l1:?} vs {l2:?}",
        if adam { "adam" } else { "sgd" },
        v1.len()
    );
    ([la, lr, va, vu], two)
}

fn equal_on_one_and_two_devices(head: HeadConfig) {
    let kind = head.head().kind();
    let ([_, lr, va, vu], two) = compare(&head, false);
    assert!(lr <= 1e-5, "{kind}: losses differ by {lr} (relative)");
    assert!(
        vu <= 1e-2,
        "{kind}: variables differ by {va}, {vu} of their change"
    );
    compare(&head, true);
    // Each replica, and its backward pass, on its own device.
    let p = two.placement().expect("placement read back");
    for (k, d) in TWO.iter().enumerate() {
        let tower = format!("pretext/tower0/replica{k}/");
        let ops: Vec<_> = p
            .assigned
            .iter()
            .filter(|(n, _)| n.starts_with(&tower) && !n.contains("ReadVariableOp"))
            .collect();
        assert!(!ops.is_empty(), "{kind}: no op of {tower}");
        let off: Vec<_> = ops.iter().filter(|(_, dev)| dev.as_str() != *d).collect();
        assert!(off.is_empty(), "{kind}: {off:?}");
    }
    // A replica's backward pass: the convolution gradients reading its forward tensors.
    let g = two.model().scope.graph();
    let mut per_replica = [0usize; 2];
    for (n, dev) in &p.assigned {
        let Some(op) = g.operation_by_name(n).ok().flatten() else {
            continue;
        };
        let t = op.op_type().unwrap_or_default();
        if !t.starts_with("Conv2DBackprop") && !t.starts_with("DepthwiseConv2dNativeBackprop") {
            continue;
        }
        for k in 0..2 {
            let tower = format!("pretext/tower0/replica{k}/");
            let reads_tower =
                (0..op.num_inputs()).any(|i| op.input(i).0.name().unwrap().starts_with(&tower));
            if reads_tower {
                assert_eq!(dev, TWO[k], "{kind}: {n} ({t}) reads {tower}");
                per_replica[k] += 1;
            }
        }
    }
    println!("{kind}: convolution gradients per replica {per_replica:?}");
    assert!(
        per_replica[0] > 0 && per_replica[0] == per_replica[1],
        "{kind}"
    );
}

#[test]
fn dae_on_two_devices_equals_one_tower() {
    equal_on_one_and_two_devices(HeadConfig::Dae(Default::default()));
}

#[test]
fn simclr_on_two_devices_equals_one_tower_with_global_negatives() {
    equal_on_one_and_two_devices(HeadConfig::Simclr(Default::default()));
}

#[test]
fn what_cannot_replicate_is_refused_naming_the_key() {
    let two: Vec<String> = TWO.iter().map(|d| d.to_string()).collect();
    let refused = |c: TrainConfig| match Trainer::new(&c) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    let mut c = config(HeadConfig::Dae(Default::default()), false);
    c.devices = two.clone();
    c.batch = 7;
    assert!(refused(c).contains("train.batch"));
    let mut c = config(HeadConfig::Dae(Default::default()), false);
    c.devices = vec![two[0].clone(), two[0].clone()];
    assert!(refused(c).contains("listed twice"));
    let mut c = config(HeadConfig::Dae(Default::default()), false);
    c.devices = two;
    c.bn_sync = true;
    assert!(refused(c).contains("model.bn_sync"));
}

#[test]
fn every_other_head_on_two_devices_equals_one_tower() {
    let heads = ["moco", "byol", "rotation", "inpaint"]
        .map(|h| serde_yaml::from_str::<HeadConfig>(&format!("kind: {h}")).unwrap());
    let multi = ["simclr=1,rotation=0.5", "dae=1,inpaint=1"]
        .map(|m| HeadConfig::Multi(pretext::heads::MultiConfig::parse(m).unwrap()));
    for head in heads.iter().chain(&multi) {
        let kind = head.head().kind();
        let ([_, lr, va, vu], two) = compare(head, false);
        assert!(lr <= 1e-5, "{kind}: losses differ by {lr} (relative)");
        assert!(
            vu <= 1e-2,
            "{kind}: variables differ by {va}, {vu} of their change"
        );
        // The key / target encoders (MoCo, BYOL) are replicated too, each on its device.
        let p = two.placement().expect("placement read back");
        for (k, d) in TWO.iter().enumerate() {
            let replica = format!("/replica{k}/");
            let off: Vec<_> = p
                .assigned
                .iter()
                .filter(|(n, _)| n.starts_with("pretext/momentum_tower") && n.contains(&replica))
                .filter(|(n, dev)| dev.as_str() != *d && !n.contains("ReadVariableOp"))
                .collect();
            assert!(off.is_empty(), "{kind}: {off:?}");
        }
    }
}

#[test]
fn retain_terms_on_two_devices_equal_one_tower() {
    // Batch 6: each replica's share (3) does not split over the devices again.
    let cases = [
        ("{kind: l2sp, weight: 0.01}", 8),
        ("{kind: distill, weight: 1.0}", 8),
    ];
    for (retain, batch) in cases
        .into_iter()
        .chain([("{kind: distill, weight: 1.0}", 6)])
    {
        let mut one = config(HeadConfig::Dae(Default::default()), false);
        one.batch = batch;
        one.retain = serde_yaml::from_str(retain).unwrap();
        let mut two = one.clone();
        two.devices = TWO.iter().map(|d| d.to_string()).collect();
        let l1 = Trainer::new(&one).unwrap().run(STEPS).unwrap();
        let l2 = Trainer::new(&two).unwrap().run(STEPS).unwrap();
        let (la, lr) = diff(&l1, &l2);
        println!(
            "retain {retain}, batch {batch}: 1 vs 2 devices, losses max abs {la:.2e} rel {lr:.2e}"
        );
        assert!(lr <= 1e-5, "{retain}: {lr}");
    }
}

/// Max relative difference over named variable lists (relative to max(|a|, 1e-3)).
fn max_rel(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((_, x), (_, y))| diff(x, y).1)
        .fold(0f32, f32::max)
}

/// `train.gradient_reduce: collective` (TF's all-reduce across the devices) against the sum
/// beside each variable: the same losses and variables, with one all-reduce of every gradient,
/// packed, on each device.
#[test]
fn collective_all_reduce_equals_the_sum_beside_the_variable() {
    for head in [
        HeadConfig::Dae(Default::default()),
        HeadConfig::Simclr(Default::default()),
    ] {
        let kind = head.head().kind();
        let mut beside = config(head, false);
        beside.devices = TWO.iter().map(|d| d.to_string()).collect();
        let mut ring = beside.clone();
        ring.gradient_reduce = pretext::autodiff::reduce::GradientReduce::Collective;
        let mut a = Trainer::new(&beside).unwrap();
        let mut b = Trainer::new(&ring).unwrap();
        let (l1, l2) = (a.run(STEPS).unwrap(), b.run(STEPS).unwrap());
        let (lr, vr) = (diff(&l1, &l2).1, max_rel(&variables(&a), &variables(&b)));
        let p = b.placement().expect("placement read back");
        let on = |d: &str| {
            p.assigned
                .iter()
                .filter(|(_, dev)| dev.as_str() == d)
                .filter(|(n, _)| {
                    n.rsplit('/')
                        .next()
                        .unwrap()
                        .starts_with("CollectiveReduceV2")
                })
                .count()
        };
        let (c0, c1) = (on(TWO[0]), on(TWO[1]));
        let vars = b
            .model()
            .info
            .variables()
            .iter()
            .filter(|v| v.trainable)
            .count();
        println!(
            "{kind}: collective vs beside the variable, 2 devices, {STEPS} steps: losses max rel \
             {lr:.2e}, variables max rel {vr:.2e}; packed all-reduces per device {c0} / {c1} \
             for {vars} model variables"
        );
        assert!(lr <= 1e-5, "{kind}: losses differ by {lr}");
        assert!(vr <= 1e-4, "{kind}: variables differ by {vr}");
        assert!(
            c0 == 1 && c1 == 1,
            "{kind}: {c0} / {c1} all-reduces for {vars}"
        );
    }
}

/// One device in `train.devices` (or a one-worker cluster): the tower is placed there, not
/// wherever TF would put it.
#[test]
fn one_listed_device_gets_the_tower() {
    let mut c = config(HeadConfig::Dae(Default::default()), false);
    c.devices = vec![TWO[1].to_string()];
    let mut t = Trainer::new(&c).unwrap();
    t.run(1).unwrap();
    let p = t.placement().expect("placement read back");
    let tower: Vec<_> = p
        .assigned
        .iter()
        .filter(|(n, _)| n.starts_with("pretext/tower0/") && !n.contains("ReadVariableOp"))
        .collect();
    assert!(!tower.is_empty());
    let off: Vec<_> = tower.iter().filter(|(_, d)| d.as_str() != TWO[1]).collect();
    assert!(off.is_empty(), "{off:?}");
}

/// A model with custom gradients (their backward planned in stages on the replicated graph)
/// trains on two devices as on one.
#[test]
fn custom_gradients_replicate() {
    let mut one = cfg("custom_grads", STEPS);
    one.batch = 8;
    let mut two = one.clone();
    two.devices = TWO.iter().map(|d| d.to_string()).collect();
    let l1 = Trainer::new(&one).unwrap().run(STEPS).unwrap();
    let l2 = Trainer::new(&two).unwrap().run(STEPS).unwrap();
    let (_, lr) = diff(&l1, &l2);
    println!("custom_grads, dae: 1 vs 2 devices, losses max rel {lr:.2e}; {l1:?} vs {l2:?}");
    assert!(lr <= 1e-5, "{lr}");
}
