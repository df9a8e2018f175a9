//! Training behaviour of every head end to end: losses fall on the MobileNetV2 fixtures, only
//! the selected / online variables learn, momentum targets and queues move, batch-norm modes
//! behave, multi-task heads share backbone passes.
mod common;
use common::*;

use pretext::train::Trainer;

/// `min_drop`: required fall of the last-10 mean below the first-10 mean.
fn falls(model: &str, min_drop: f32) {
    let mut t = Trainer::new(&cfg(model, 100)).unwrap();
    let l = t.run(100).unwrap();
    let first: f32 = l[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = l[90..].iter().sum::<f32>() / 10.0;
    println!(
        "{model}: DAE loss first-10 mean {first:.5}, last-10 mean {last:.5} ({:+.1}%)",
        (last / first - 1.0) * 100.0
    );
    assert!(
        last <= (1.0 - min_drop) * first,
        "{model}: loss fell only from {first} to {last}"
    );
}

#[test]
fn dae_loss_falls_on_mobilenet_v2_035() {
    falls("mobilenet_v2_035", 0.20);
}

#[test]
fn dae_loss_falls_on_pretrained_nsfwjs_mobilenet_v2() {
    falls("nsfwjs_mobilenet_v2", 0.20);
}

/// Mean loss of the first and the last 10 of `steps` steps of `head` on `model`.
fn first_last(
    model: &str,
    head: pretext::heads::HeadConfig,
    batch: usize,
    steps: u64,
) -> (f32, f32) {
    let mut c = cfg(model, steps);
    c.batch = batch;
    c.head = head;
    let mut t = Trainer::new(&c).unwrap();
    let l = t.run(steps).unwrap();
    let n = l.len();
    (
        l[..10].iter().sum::<f32>() / 10.0,
        l[n - 10..].iter().sum::<f32>() / 10.0,
    )
}

#[test]
fn simclr_loss_falls_on_mobilenet_v2_035() {
    let (first, last) = first_last(
        "mobilenet_v2_035",
        pretext::heads::HeadConfig::Simclr(Default::default()),
        32,
        50,
    );
    println!("mobilenet_v2_035: SimCLR loss first-10 mean {first:.4}, last-10 mean {last:.4}");
    // ln(2·32 − 1) ≈ 4.14 is chance level for NT-Xent at batch 32.
    assert!(
        first < 4.3 && last < first,
        "SimCLR loss did not fall: {first} → {last}"
    );
}

#[test]
fn rotation_loss_falls_on_mobilenet_v2_035() {
    let (first, last) = first_last(
        "mobilenet_v2_035",
        pretext::heads::HeadConfig::Rotation(Default::default()),
        16,
        50,
    );
    println!("mobilenet_v2_035: rotation loss first-10 mean {first:.4}, last-10 mean {last:.4}");
    assert!(last < first, "rotation loss did not fall: {first} → {last}");
}

#[test]
fn byol_loss_falls_and_only_the_online_network_learns() {
    let mut c = cfg("mobilenet_v2_035", 1);
    c.head = pretext::heads::HeadConfig::Byol(Default::default());
    let t = Trainer::new(&c).unwrap();
    assert!(t.param_names().iter().all(|n| !n.contains("momentum")));
    assert_eq!(t.trained_vars(), 156);
    let (first, last) = first_last(
        "mobilenet_v2_035",
        pretext::heads::HeadConfig::Byol(Default::default()),
        16,
        50,
    );
    println!("mobilenet_v2_035: BYOL loss first-10 mean {first:.4}, last-10 mean {last:.4}");
    assert!(last < first, "BYOL loss did not fall: {first} → {last}");
}

#[test]
fn moco_loss_falls_on_mobilenet_v2_035() {
    // Queue of 128 keys at batch 16: its first 8 steps score against random unit rows the
    // queue starts with (far easier negatives than real keys: loss ≈ 1 at step 1, then rising),
    // so the 50 measured steps follow those 8. Momentum 0.99: at 0.9 the loss rises instead
    // (the key encoder follows the online one so fast that the queue's keys go stale).
    let (queue, batch) = (128, 16);
    let mut c = cfg("mobilenet_v2_035", queue as u64 / batch as u64 + 50);
    c.batch = batch;
    c.optimizer.set_learning_rate(1e-3);
    c.head = pretext::heads::HeadConfig::Moco(pretext::heads::MocoConfig {
        queue_size: queue,
        momentum: 0.99,
        ..Default::default()
    });
    let mut t = Trainer::new(&c).unwrap();
    let warm = t.run(queue as u64 / batch as u64).unwrap();
    let l = t.run(50).unwrap();
    let first: f32 = l[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = l[40..].iter().sum::<f32>() / 10.0;
    let chance = ((queue + 1) as f32).ln();
    println!(
        "mobilenet_v2_035: MoCo loss (queue {queue}, momentum 0.99, Adam 1e-3) after {} queue-filling steps {warm:?}: first-10 mean {first:.4}, last-10 mean {last:.4} (chance {chance:.3})",
        warm.len()
    );
    assert!(
        last < 0.98 * first && last < chance,
        "MoCo loss did not fall: {first} → {last} (chance {chance})"
    );
}

#[test]
fn multi_task_feeds_the_union_of_views_and_its_loss_falls() {
    let mut c = cfg("tiny_cnn", 1);
    c.head = pretext::heads::HeadConfig::Multi(
        pretext::heads::MultiConfig::parse("dae=1,simclr=0.5").unwrap(),
    );
    assert_eq!(
        Trainer::new(&c).unwrap().feeds().len(),
        3,
        "clean batch + two augmented views"
    );
    // Online backbone passes are shared where the inputs are the same: SimCLR and BYOL embed
    // one stack of both views once (BYOL's momentum tower is its own); DAE's noisy input is not
    // shared.
    let towers = |spec: &str| {
        let mut c = cfg("tiny_cnn", 1);
        c.head =
            pretext::heads::HeadConfig::Multi(pretext::heads::MultiConfig::parse(spec).unwrap());
        Trainer::new(&c).unwrap().towers()
    };
    assert_eq!(towers("simclr=1"), 1);
    assert_eq!(towers("byol=1"), 1);
    assert_eq!(towers("simclr=1,byol=1"), 1, "one shared online pass");
    assert_eq!(towers("dae=1,simclr=1"), 2);
    let multi = pretext::heads::HeadConfig::Multi(
        pretext::heads::MultiConfig::parse("dae=1,rotation=0.5").unwrap(),
    );
    let (first, last) = first_last("mobilenet_v2_035", multi, 16, 30);
    assert!(
        last < first,
        "multi-task loss did not fall: {first} → {last}"
    );
    assert!(pretext::heads::MultiConfig::parse("dae=1,jigsaw=2")
        .unwrap_err()
        .to_string()
        .contains("unknown head kind 'jigsaw'"));
}

#[test]
fn inpainting_loss_falls_on_mobilenet_v2_035() {
    let (first, last) = first_last(
        "mobilenet_v2_035",
        pretext::heads::HeadConfig::Inpaint(Default::default()),
        16,
        50,
    );
    println!("mobilenet_v2_035: inpainting loss first-10 mean {first:.4}, last-10 mean {last:.4}");
    assert!(
        last < 0.9 * first,
        "inpainting loss did not fall: {first} → {last}"
    );
}

#[test]
fn simclr_is_fed_two_views_and_no_clean_batch() {
    let mut c = cfg("tiny_cnn", 1);
    c.head = pretext::heads::HeadConfig::Simclr(Default::default());
    assert_eq!(Trainer::new(&c).unwrap().feeds().len(), 2);
}

#[test]
fn only_selected_variables_change() {
    let mut c = cfg("tiny_cnn", 3);
    c.train_vars = pretext::train::select::VarSelection::parse("regex:^conv2d_1/").unwrap();
    let mut t = Trainer::new(&c).unwrap();
    assert_eq!(t.trained_vars(), 2, "conv2d_1/kernel and conv2d_1/bias");
    let (frozen0, trained0) = (
        value_of(&t, "conv2d/kernel"),
        value_of(&t, "conv2d_1/kernel"),
    );
    t.run(3).unwrap();
    assert_eq!(
        value_of(&t, "conv2d/kernel"),
        frozen0,
        "an unselected variable changed"
    );
    assert_ne!(
        value_of(&t, "conv2d_1/kernel"),
        trained0,
        "the selected variable did not change"
    );
    c.train_vars = pretext::train::select::VarSelection::parse("last:1").unwrap();
    assert_eq!(
        Trainer::new(&c).unwrap().trained_vars(),
        2,
        "last layer: dense kernel and bias"
    );
}

#[test]
fn bn_train_updates_moving_statistics_and_frozen_does_not() {
    use pretext::graph::bn::BnMode;
    for (mode, should_change) in [(BnMode::Frozen, false), (BnMode::Train, true)] {
        let mut c = cfg("mobilenet_v2_035", 2);
        c.bn = mode;
        let mut t = Trainer::new(&c).unwrap();
        assert_eq!(t.bn_updates().is_empty(), !should_change);
        let name = "Conv_1_bn/moving_mean";
        let before = value_of(&t, name);
        t.run(2).unwrap();
        let after = value_of(&t, name);
        assert_eq!(
            before != after,
            should_change,
            "{mode:?}: moving mean changed = {}",
            before != after
        );
    }
    // Only some layers train: `train` switches their batch norms alone (the frozen layers keep
    // inference mode and their moving statistics); `train_all` switches every batch norm.
    let (trained_bn, frozen_bn) = ("Conv_1_bn/moving_mean", "block_1_expand_BN/moving_mean");
    for (mode, switched, frozen_changes) in
        [(BnMode::Train, 4, false), (BnMode::TrainAll, 52, true)]
    {
        let mut c = cfg("mobilenet_v2_035", 2);
        c.bn = mode;
        c.train_vars =
            pretext::train::select::VarSelection::parse("regex:block_16_|Conv_1").unwrap();
        let mut t = Trainer::new(&c).unwrap();
        assert_eq!(t.bn_updates().len(), 2 * switched, "{mode:?}");
        let before = (value_of(&t, trained_bn), value_of(&t, frozen_bn));
        t.run(2).unwrap();
        let after = (value_of(&t, trained_bn), value_of(&t, frozen_bn));
        assert_ne!(before.0, after.0, "{mode:?}: a trained layer's moving mean");
        assert_eq!(
            before.1 != after.1,
            frozen_changes,
            "{mode:?}: a frozen layer's moving mean"
        );
    }
    // Keras 3 exports decompose batch norm: train mode is refused, naming a node.
    let mut c = cfg("keras3_export", 1);
    c.bn = BnMode::Train;
    let e = Trainer::new(&c)
        .err()
        .expect("keras3 bn train must fail")
        .to_string();
    assert!(e.contains("decomposed") && e.contains("frozen"), "{e}");
}

#[test]
fn moco_queue_and_momentum_encoder_move_and_only_the_online_encoder_learns() {
    let mut c = cfg("tiny_cnn", 1);
    c.head = pretext::heads::HeadConfig::Moco(pretext::heads::MocoConfig {
        queue_size: 32,
        momentum: 0.9,
        ..Default::default()
    });
    let mut t = Trainer::new(&c).unwrap();
    assert!(
        t.param_names().iter().all(|n| !n.contains("momentum")),
        "{:?}",
        t.param_names()
    );
    assert_eq!(
        t.trained_vars(),
        10,
        "the online backbone's trainable variables"
    );
    let queue = "pretext/head/moco/queue/var";
    let target = "pretext/head/momentum/conv2d/kernel_0/var";
    for step in 0..2 {
        let (q0, k0, o0) = (
            value_of(&t, queue),
            value_of(&t, target),
            value_of(&t, "conv2d/kernel"),
        );
        t.run(1).unwrap();
        let (q1, k1, o1) = (
            value_of(&t, queue),
            value_of(&t, target),
            value_of(&t, "conv2d/kernel"),
        );
        assert_ne!(q0, q1, "step {step}: the queue did not change");
        assert_ne!(k0, k1, "step {step}: the momentum encoder did not change");
        assert_ne!(o0, o1, "step {step}: the online encoder did not change");
        // EMA: target_new = 0.9 target_old + 0.1 online_new.
        for i in 0..k0.len() {
            let want = 0.9 * k0[i] + 0.1 * o1[i];
            assert!(
                (k1[i] - want).abs() < 1e-5,
                "EMA off at {i}: {} vs {want}",
                k1[i]
            );
        }
        // Enqueue: the newest 16 keys first, the oldest 16 dropped.
        assert_eq!(&q1[16 * 128..], &q0[..16 * 128]);
    }
    // Queue size not a multiple of the batch: refused before any graph is built.
    c.head = pretext::heads::HeadConfig::Moco(pretext::heads::MocoConfig {
        queue_size: 40,
        ..Default::default()
    });
    let e = Trainer::new(&c).err().expect("bad queue size").to_string();
    assert!(
        e.contains("head.queue_size") && e.contains("multiple"),
        "{e}"
    );
}

#[test]
fn decoder_choice_decides_which_layers_train() {
    // tiny_cnn ends in GAP → Dense: `auto` keeps the dense decoder so all 10 trainable variables
    // train; an explicit conv decoder sits on the last feature map, before the Dense layer, whose
    // two variables then get no gradient (and are left out rather than failing the build).
    let mut c = cfg("tiny_cnn", 2);
    let t = Trainer::new(&c).unwrap();
    assert_eq!(t.trained_vars(), 10);
    c.head = pretext::heads::HeadConfig::Dae(pretext::heads::DaeConfig {
        decoder: pretext::heads::dae::Decoder::Conv,
        ..Default::default()
    });
    let mut t = Trainer::new(&c).unwrap();
    assert_eq!(t.trained_vars(), 8);
    let l = t.run(2).unwrap();
    assert!(l.iter().all(|v| v.is_finite()));
}

#[test]
fn head_warmup_trains_the_head_alone_then_the_model() {
    let mut c = cfg("tiny_cnn", 4);
    c.head = pretext::heads::HeadConfig::Simclr(Default::default());
    c.head_warmup_steps = 2;
    let mut t = Trainer::new(&c).unwrap();
    let head_value = |t: &mut Trainer| -> Vec<f32> {
        let h = t.head_vars()[0].handle.clone();
        read_value(t, h)
    };
    let (model0, head0) = (value_of(&t, "conv2d/kernel"), head_value(&mut t));
    t.run(2).unwrap();
    let head1 = head_value(&mut t);
    assert_eq!(
        value_of(&t, "conv2d/kernel"),
        model0,
        "a model variable changed during the head warm-up"
    );
    assert_ne!(head1, head0, "the head did not train during its warm-up");
    t.run(1).unwrap();
    assert_ne!(
        value_of(&t, "conv2d/kernel"),
        model0,
        "the model did not train after the warm-up"
    );
    assert_ne!(head_value(&mut t), head1, "the head stopped training");

    c.head_warmup_steps = 4;
    match Trainer::new(&c) {
        Err(pretext::Error::Config { key, msg }) => {
            assert_eq!(key, "train.head_warmup_steps");
            assert!(msg.contains("4 step"), "{msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a warm-up as long as the run was accepted"),
    }
}
