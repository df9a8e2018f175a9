//! Placement that is true: with `model.device`, every op of a training step asks for that
//! device, and what TF actually did is read back from the run (`graph::placement`). Checked on
//! two CPU devices (`device_count {"CPU": 2}`, made when `/device:CPU:1` is asked): the model's
//! variables live on `/device:CPU:0`, where its loader created them, everything else asked for
//! `/device:CPU:1` must run there.
mod common;
use common::*;

use pretext::graph::bn::BnMode;
use pretext::graph::placement::Placement;
use pretext::heads::HeadConfig;
use pretext::train::{TrainConfig, Trainer};

const ASKED: &str = "/device:CPU:1";

fn losses_and_placement(c: &TrainConfig, steps: u64) -> (Vec<f32>, Option<Placement>) {
    let mut t = Trainer::new(c).unwrap();
    let l = t.run(steps).unwrap();
    (l, t.placement().cloned())
}

/// Everything off the asked device is a model variable, an op on one (TF runs resource ops
/// where the variable lives), or a constant beside such an op — no op ran elsewhere for want of
/// a kernel; the head, the gradients and the optimizer's own state are on the asked device.
fn check(head: HeadConfig, bn: BnMode) {
    let name = head.head().kind();
    let mut c = cfg("tiny_cnn", 3);
    c.batch = 8;
    c.head = head;
    c.bn = bn;
    if let HeadConfig::Moco(m) = &mut c.head {
        m.queue_size = 16;
    }
    let (free, none) = losses_and_placement(&c, 3);
    assert!(none.is_none(), "{name}: no device asked, no placement read");
    c.device = Some(ASKED.into());
    let (placed, p) = losses_and_placement(&c, 3);
    let p = p.expect("placement read back");
    println!(
        "{name} ({bn:?}): {}",
        p.markdown().lines().nth(3).unwrap_or("")
    );
    for e in &p.elsewhere {
        assert!(
            e.device == "/device:CPU:0"
                && (e.op == "VarHandleOp"
                    || e.op == "Const"
                    || e.why.starts_with("uses variable")
                    || (["NoOp", "Identity"].contains(&e.op.as_str())
                        && e.why.starts_with("made by TF"))),
            "{name}: {} ({}) ran on {}: {}",
            e.node,
            e.op,
            e.device,
            e.why
        );
        // Only the model's variables and what must sit with them (their optimizer slots).
        if e.op == "VarHandleOp" {
            assert!(
                !e.node.starts_with("pretext/head/") && !e.node.starts_with("pretext/momentum"),
                "{name}: pretext's own variable {} is on {}",
                e.node,
                e.device
            );
        }
    }
    // Gradients (TF_AddGradients builds them without a device), the head's layers and loss,
    // and the optimizer's updates of the head's variables ran on the asked device.
    for part in [
        "pretext/mask_from_output/",
        "pretext/head/",
        "/optimizer/head/",
    ] {
        let ops: Vec<_> = p
            .assigned
            .iter()
            .filter(|(n, _)| n.starts_with(part) || (part.starts_with('/') && n.contains(part)))
            .collect();
        assert!(!ops.is_empty(), "{name}: no {part} op ran");
        let elsewhere: Vec<_> = ops
            .iter()
            .filter(|(_, d)| d.as_str() != ASKED)
            .filter(|(n, _)| !p.elsewhere.iter().any(|e| &e.node == *n && e.op == "Const"))
            .collect();
        assert!(elsewhere.is_empty(), "{name}: {elsewhere:?}");
    }
    for (a, b) in free.iter().zip(&placed) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "{name}: losses {free:?} (TF's placement) vs {placed:?} ({ASKED})"
        );
    }
}

#[test]
fn every_op_of_a_dae_step_with_bn_train_runs_on_the_asked_cpu() {
    check(HeadConfig::Dae(Default::default()), BnMode::Train);
}

#[test]
fn every_op_of_a_moco_step_runs_on_the_asked_cpu() {
    check(HeadConfig::Moco(Default::default()), BnMode::Frozen);
}

#[test]
fn every_op_of_a_simclr_step_runs_on_the_asked_cpu() {
    check(HeadConfig::Simclr(Default::default()), BnMode::Frozen);
}

/// `inspect --device D` runs the model's forward and backward ops once on D and lists every op
/// TF put elsewhere: on `/device:CPU:0` (where the variables are) none; on `/device:CPU:1` only
/// the variables and the ops on them, never one for want of a kernel.
#[test]
fn inspect_device_lists_every_op_that_ran_elsewhere() {
    let on = |d: &str| {
        pretext::inspect::inspect_on(
            &fixture("tiny_cnn"),
            None,
            None,
            Default::default(),
            Some(d),
        )
        .unwrap()
    };
    let r0 = on("/device:CPU:0");
    assert!(r0.contains("0 not on an asked device"), "{r0}");
    let r1 = on(ASKED);
    let head = "placement of the model's forward and backward ops (asked: /device:CPU:1)";
    let section = &r1[r1.find(head).unwrap_or_else(|| panic!("{r1}"))..];
    let listed: Vec<&str> = section.lines().filter(|l| l.starts_with("- ")).collect();
    assert!(listed
        .iter()
        .any(|l| l.contains("(ReadVariableOp) on /device:CPU:0")));
    for l in &listed {
        assert!(!l.contains("soft placement"), "{l}");
    }
    let e = pretext::inspect::inspect_on(
        &fixture("tiny_cnn"),
        None,
        None,
        Default::default(),
        Some("GPU"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("--device"), "{e}");
}
