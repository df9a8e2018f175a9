//! Where TF put the ops of a step, read back from the run itself (`RunOptions` asking for the
//! partition graphs, each node carrying the device TF assigned), not from what pretext asked:
//! the asked devices parsed, the CPU devices a session needs for them, and every op that ran
//! somewhere else, with the reason.
use std::collections::{BTreeMap, HashMap};

use prost::Message;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::proto::{RunMetadata, RunOptions, TensorRef};

pub use crate::proto::device::{check_devices, cpu_devices, DeviceName};

/// `RunOptions` asking TF for the partition graphs of the run.
pub fn run_options() -> Vec<u8> {
    RunOptions {
        output_partition_graphs: true,
        ..Default::default()
    }
    .encode_to_vec()
}

/// Ops TF adds to move tensors between devices and in and out of a run: not the step's own.
const TRANSPORT: &[&str] = &[
    "_Send",
    "_Recv",
    "_HostSend",
    "_HostRecv",
    "_Arg",
    "_Retval",
    "_DeviceArg",
    "_DeviceRetval",
];

/// An op of the step that did not run on an asked device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Elsewhere {
    pub node: String,
    pub op: String,
    /// Where TF ran it.
    pub device: String,
    pub why: String,
}

/// Where TF placed the ops of a step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Placement {
    /// The devices asked for.
    pub asked: Vec<String>,
    /// Ops of the step per device they ran on (transfers between devices not counted).
    pub per_device: BTreeMap<String, usize>,
    /// Every op that ran on none of the asked devices.
    pub elsewhere: Vec<Elsewhere>,
    /// Every op of the step → the device it ran on (not in the report: the counts and the
    /// list above are).
    #[serde(skip)]
    pub assigned: BTreeMap<String, String>,
}

impl Placement {
    /// Reads a run's `RunMetadata` (asked with `run_options`); `built` says whether a node is
    /// one of the graph the session runs (else TF's graph optimizer or partitioner made it).
    pub fn read(
        metadata: &[u8],
        asked: &[String],
        built: &dyn Fn(&str) -> bool,
    ) -> Result<Placement> {
        let md = RunMetadata::decode(metadata)
            .map_err(|e| Error::internal("decoding a run's metadata", e))?;
        if md.partition_graphs.is_empty() {
            return Err(Error::graph(
                "RunMetadata",
                "the run returned no partition graphs",
            ));
        }
        let wanted: Vec<DeviceName> = asked.iter().filter_map(|d| DeviceName::parse(d)).collect();
        let nodes: Vec<_> = md
            .partition_graphs
            .iter()
            .flat_map(|g| &g.node)
            .filter(|n| !TRANSPORT.contains(&n.op.as_str()))
            .collect();
        let variables: HashMap<&str, &str> = nodes
            .iter()
            .filter(|n| n.op == "VarHandleOp")
            .map(|n| (n.name.as_str(), n.device.as_str()))
            .collect();
        let mut p = Placement {
            asked: asked.to_vec(),
            ..Default::default()
        };
        for n in nodes {
            *p.per_device.entry(short(&n.device)).or_default() += 1;
            p.assigned.insert(n.name.clone(), short(&n.device));
            if wanted.iter().any(|d| d.is(&n.device)) {
                continue;
            }
            let used = n
                .input
                .iter()
                .filter(|i| !i.starts_with('^'))
                .map(|i| TensorRef::node_of(i))
                .chain(colocated_with(n))
                .find_map(|v| variables.get_key_value(v));
            let why = match (n.op.as_str(), used) {
                ("VarHandleOp", _) => {
                    "a variable: it and the ops reading or writing it run where TF created it"
                        .to_string()
                }
                (_, Some((v, d))) => format!("uses variable {v}, which lives on {}", short(d)),
                _ if !built(&n.name) => {
                    "made by TF's graph optimizer or partitioner beside the ops it serves"
                        .to_string()
                }
                ("Const", _) => {
                    "a constant: TF's placer and graph optimizer put constants beside the op \
                     reading them"
                        .to_string()
                }
                _ => "soft placement: no kernel for the asked device (or for this op's types)"
                    .to_string(),
            };
            p.elsewhere.push(Elsewhere {
                node: n.name.clone(),
                op: n.op.clone(),
                device: short(&n.device),
                why,
            });
        }
        p.elsewhere.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(p)
    }

    /// Ops counted over every device.
    pub fn ops(&self) -> usize {
        self.per_device.values().sum()
    }

    /// The report's placement section.
    pub fn markdown(&self) -> String {
        let per: Vec<String> = self
            .per_device
            .iter()
            .map(|(d, n)| format!("{d}: {n}"))
            .collect();
        let mut s = format!(
            "\n## Placement (asked: {})\n\n{} ops in a step ({}); {} not on an asked device{}\n",
            self.asked.join(", "),
            self.ops(),
            per.join(", "),
            self.elsewhere.len(),
            if self.elsewhere.is_empty() { "" } else { ":" }
        );
        for e in &self.elsewhere {
            s += &format!("- {} ({}) on {}: {}\n", e.node, e.op, e.device, e.why);
        }
        s
    }
}

/// The nodes `n` is colocated with (`_class: ["loc:@NODE"]`, e.g. a sum of a variable's
/// gradients built beside it).
fn colocated_with(n: &crate::proto::NodeDef) -> Vec<&str> {
    use crate::proto::attr_value::Value;
    match n.attr.get("_class").and_then(|a| a.value.as_ref()) {
        Some(Value::List(l)) => {
            l.s.iter()
                .filter_map(|b| std::str::from_utf8(b).ok()?.strip_prefix("loc:@"))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// `/device:TYPE:N` of a full device name (as given when it has no type and index).
fn short(device: &str) -> String {
    match DeviceName::parse(device) {
        Some(d) => d.to_string(),
        None => device.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GraphDef, NodeDef};

    use crate::proto::nodes::test_node as node;

    fn colocated(name: &str, device: &str, with: &str) -> NodeDef {
        use crate::proto::{attr_value::Value, AttrValue, ListValue};
        let mut n = node(name, "AddN", device, &["mul", "mul"]);
        let list = ListValue {
            s: vec![format!("loc:@{with}").into_bytes()],
            ..Default::default()
        };
        let value = Some(Value::List(list));
        n.attr.insert("_class".into(), AttrValue { value });
        n
    }

    #[test]
    fn ops_elsewhere_are_listed_with_why_and_transfers_are_not() {
        let (c0, c1) = (
            "/job:localhost/replica:0/task:0/device:CPU:0",
            "/job:localhost/replica:0/task:0/device:CPU:1",
        );
        let g0 = GraphDef {
            node: vec![
                node("w", "VarHandleOp", c0, &[]),
                node("read", "ReadVariableOp", c0, &["w"]),
                node("send", "_Send", c0, &["read"]),
            ],
            ..Default::default()
        };
        let g1 = GraphDef {
            node: vec![
                node("recv", "_Recv", c1, &[]),
                node("mul", "Mul", c1, &["recv", "recv"]),
                node("odd", "Print", c0, &["mul", "^w"]),
                node("GroupCrossDeviceControlEdges_0/odd", "NoOp", c0, &[]),
                colocated("sum", c0, "w"),
            ],
            ..Default::default()
        };
        let md = RunMetadata {
            partition_graphs: vec![g0, g1],
        };
        let built = |n: &str| !n.starts_with("Group");
        let p = Placement::read(&md.encode_to_vec(), &["/device:CPU:1".into()], &built).unwrap();
        assert_eq!(p.ops(), 6);
        assert_eq!(p.per_device["/device:CPU:0"], 5);
        assert_eq!(p.assigned["mul"], "/device:CPU:1");
        let got: Vec<_> = p.elsewhere.iter().map(|e| e.node.as_str()).collect();
        assert_eq!(
            got,
            [
                "GroupCrossDeviceControlEdges_0/odd",
                "odd",
                "read",
                "sum",
                "w"
            ]
        );
        assert_eq!(p.elsewhere[3].why, p.elsewhere[2].why);
        assert!(p.elsewhere[0].why.starts_with("made by TF"));
        assert!(p.elsewhere[1].why.starts_with("soft placement"));
        assert_eq!(
            p.elsewhere[2].why,
            "uses variable w, which lives on /device:CPU:0"
        );
        assert!(p
            .markdown()
            .contains("- read (ReadVariableOp) on /device:CPU:0"));
        let none = RunMetadata::default().encode_to_vec();
        assert!(Placement::read(&none, &[], &built).is_err());
    }
}
