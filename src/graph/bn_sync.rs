//! Batch-norm statistics across replicas (`graph::replicate`): averaged moving statistics for
//! per-replica batch norms, and synchronised batch norm (`model.bn_sync`), a training-mode
//! FusedBatchNormV3 rewritten into ops that sum over every replica (on the first device) and
//! normalise each replica's share with the whole batch's mean and variance, in two passes as
//! TF's fused kernel computes them; the moving statistics follow the fused op's outputs 1 and
//! 2 (exponential average, variance with Bessel's correction).
use super::replicate::{replica_name, Moving, Renamer};
use super::{attr_type, const_node, node_def};
use crate::error::{Error, Result};
use crate::proto::nodes::float_op;
use crate::proto::{attr_value::Value, AttrValue, Dim, NodeDef};
use crate::proto::{TensorProto, TensorRef, TensorShapeProto};

const DT_FLOAT: i32 = 1;
const DT_INT32: i32 = 3;
const DT_INT64: i32 = 9;

fn add_n(name: String, inputs: Vec<String>) -> NodeDef {
    let n = inputs.len() as i64;
    let mut d = float_op(name, "AddN", inputs);
    let count = AttrValue {
        value: Some(Value::I(n)),
    };
    d.attr.insert("N".into(), count);
    d
}

fn scalar(name: String, v: f32) -> NodeDef {
    let t = TensorProto {
        dtype: DT_FLOAT,
        float_val: vec![v],
        ..Default::default()
    };
    const_node(name, t)
}

fn on(mut n: NodeDef, device: &str) -> NodeDef {
    n.device = device.to_string();
    n
}

fn attr<'a>(n: &'a NodeDef, k: &str) -> Option<&'a Value> {
    n.attr.get(k).and_then(|a| a.value.as_ref())
}

fn float_attr(n: &NodeDef, k: &str, default: f32) -> f32 {
    match attr(n, k) {
        Some(Value::F(f)) => *f,
        _ => default,
    }
}

/// Per-replica statistics: the moving averages each replica's batch norm computes, averaged.
pub(super) fn averaged(out: &mut Vec<NodeDef>, b: &NodeDef, n: usize, device: &str) -> Moving {
    let p = format!("replicas/{}/average", b.name);
    out.push(on(scalar(format!("{p}/inv_n"), 1.0 / n as f32), device));
    let mut values = [String::new(), String::new()];
    for (slot, (i, what)) in [(1, "mean"), (2, "var")].into_iter().enumerate() {
        let each = (0..n).map(|k| format!("{}:{i}", replica_name(k, &b.name)));
        out.push(on(add_n(format!("{p}/{what}_sum"), each.collect()), device));
        let ins = vec![format!("{p}/{what}_sum:0"), format!("{p}/inv_n:0")];
        out.push(on(float_op(format!("{p}/{what}"), "Mul", ins), device));
        values[slot] = format!("{p}/{what}:0");
    }
    Moving {
        reads: stat_reads(b),
        values,
    }
}

/// Replica 0's reads of `b`'s moving mean and variance (its inputs 3 and 4).
fn stat_reads(b: &NodeDef) -> [String; 2] {
    let ins = super::data_inputs(b);
    [3, 4].map(|i| {
        let t = ins.get(i).map(|s| s.as_str()).unwrap_or_default();
        let r = TensorRef::parse(t);
        format!("{}:{}", replica_name(0, r.node), r.index.max(0))
    })
}

/// `b` (a training-mode FusedBatchNormV3) normalised with the whole batch's statistics; appends
/// the nodes to `out` and returns its moving statistics. Float32 NHWC only (else an error
/// naming the node).
pub(super) fn synchronised(
    out: &mut Vec<NodeDef>,
    r: &Renamer,
    b: &NodeDef,
    devices: &[String],
) -> Result<Moving> {
    let format = match attr(b, "data_format") {
        Some(Value::S(s)) => String::from_utf8_lossy(s).into_owned(),
        _ => "NHWC".into(),
    };
    let t = match attr(b, "T") {
        Some(Value::Type(t)) => *t,
        _ => DT_FLOAT,
    };
    if format != "NHWC" || t != DT_FLOAT {
        let dtype = crate::proto::dtype_name(t);
        let msg = format!("model.bn_sync supports float32 NHWC batch norms, not {format} {dtype}");
        return Err(Error::graph(&b.name, msg));
    }
    let mut s = Sync {
        out,
        r,
        b,
        ins: super::data_inputs(b).into_iter().cloned().collect(),
        devices,
        g: format!("replicas/{}/sync", b.name),
    };
    s.sums();
    s.variance();
    s.normalised();
    s.moving(float_attr(b, "exponential_avg_factor", 1.0));
    Ok(Moving {
        reads: stat_reads(b),
        values: [s.total("mean_out"), s.total("var_out")],
    })
}

/// One batch norm being rewritten: per-replica nodes `replica{k}/{bn}/sync/…` on device k,
/// totals `replicas/{bn}/sync/…` on the first device.
struct Sync<'a> {
    out: &'a mut Vec<NodeDef>,
    r: &'a Renamer<'a>,
    b: &'a NodeDef,
    /// The batch norm's data inputs: x, γ, β, moving mean, moving variance.
    ins: Vec<String>,
    devices: &'a [String],
    g: String,
}

impl Sync<'_> {
    fn local(&self, k: usize, what: &str) -> String {
        replica_name(k, &format!("{}/sync/{what}", self.b.name))
    }
    fn local_t(&self, k: usize, what: &str) -> String {
        format!("{}:0", self.local(k, what))
    }
    fn total(&self, what: &str) -> String {
        format!("{}/{what}:0", self.g)
    }
    /// Replica k's op `what` on its device.
    fn at(&mut self, k: usize, what: &str, op: &str, inputs: Vec<String>) {
        let n = float_op(self.local(k, what), op, inputs);
        self.out.push(on(n, &self.devices[k]));
    }
    /// A total's op `what` on the first device.
    fn main(&mut self, what: &str, op: &str, inputs: Vec<String>) {
        let n = float_op(format!("{}/{what}", self.g), op, inputs);
        self.out.push(on(n, &self.devices[0]));
    }
    fn sum_over_replicas(&mut self, what: &str) {
        let each = (0..self.devices.len()).map(|k| self.local_t(k, what));
        let n = add_n(format!("{}/{what}", self.g), each.collect());
        self.out.push(on(n, &self.devices[0]));
    }
    /// Replica k's reduction of `x` over N, H, W.
    fn reduce(&mut self, k: usize, what: &str, x: String) {
        let keep = AttrValue {
            value: Some(Value::B(false)),
        };
        let attrs = vec![
            ("T", attr_type(DT_FLOAT)),
            ("Tidx", attr_type(DT_INT32)),
            ("keep_dims", keep),
        ];
        let n = node_def(
            self.local(k, what),
            "Sum",
            vec![x, self.local_t(k, "axes")],
            attrs,
        );
        self.out.push(on(n, &self.devices[k]));
    }

    /// Per replica Σx and the elements per channel (a constant to the gradient); the mean.
    fn sums(&mut self) {
        for k in 0..self.devices.len() {
            let x = self.r.tensor(k, &self.ins[0]);
            let axes = TensorProto {
                dtype: DT_INT32,
                tensor_shape: Some(TensorShapeProto {
                    dim: vec![Dim {
                        size: 3,
                        name: String::new(),
                    }],
                    unknown_rank: false,
                }),
                int_val: vec![0, 1, 2],
                ..Default::default()
            };
            // The batch norm's control inputs hold its replacement: every node of it reads
            // `axes` (directly or through the totals).
            let mut axes = const_node(self.local(k, "axes"), axes);
            let controls = self.b.input.iter().filter(|t| t.starts_with('^'));
            axes.input.extend(controls.map(|t| self.r.tensor(k, t)));
            self.out.push(on(axes, &self.devices[k]));
            self.reduce(k, "sum", x.clone());
            for (what, of) in [("size_x", x), ("size_c", self.local_t(k, "sum"))] {
                let attrs = vec![
                    ("T", attr_type(DT_FLOAT)),
                    ("out_type", attr_type(DT_INT64)),
                ];
                let size = node_def(self.local(k, what), "Size", vec![of], attrs);
                self.out.push(on(size, &self.devices[k]));
                let attrs = vec![("SrcT", attr_type(DT_INT64)), ("DstT", attr_type(DT_FLOAT))];
                let cast = node_def(
                    self.local(k, &format!("{what}_f")),
                    "Cast",
                    vec![self.local_t(k, what)],
                    attrs,
                );
                self.out.push(on(cast, &self.devices[k]));
            }
            let ratio = vec![self.local_t(k, "size_x_f"), self.local_t(k, "size_c_f")];
            self.at(k, "count_raw", "RealDiv", ratio);
            self.at(
                k,
                "count",
                "StopGradient",
                vec![self.local_t(k, "count_raw")],
            );
        }
        self.sum_over_replicas("sum");
        self.sum_over_replicas("count");
        self.main(
            "mean",
            "RealDiv",
            vec![self.total("sum"), self.total("count")],
        );
    }

    /// Per replica Σ(x − μ)²; the variance and 1/√(σ² + ε).
    fn variance(&mut self) {
        for k in 0..self.devices.len() {
            let x = self.r.tensor(k, &self.ins[0]);
            self.at(k, "centered", "Sub", vec![x, self.total("mean")]);
            self.at(k, "squared", "Square", vec![self.local_t(k, "centered")]);
            self.reduce(k, "sq_sum", self.local_t(k, "squared"));
        }
        self.sum_over_replicas("sq_sum");
        self.main(
            "var",
            "RealDiv",
            vec![self.total("sq_sum"), self.total("count")],
        );
        let eps = scalar(
            format!("{}/eps", self.g),
            // FusedBatchNormV3's own default.
            float_attr(self.b, "epsilon", 1e-4),
        );
        self.out.push(on(eps, &self.devices[0]));
        self.main(
            "var_eps",
            "AddV2",
            vec![self.total("var"), self.total("eps")],
        );
        self.main("rsqrt", "Rsqrt", vec![self.total("var_eps")]);
    }

    /// Per replica y = (x − μ)·(γ/√(σ² + ε)) + β.
    fn normalised(&mut self) {
        for k in 0..self.devices.len() {
            let (gamma, beta) = (
                self.r.tensor(k, &self.ins[1]),
                self.r.tensor(k, &self.ins[2]),
            );
            self.at(k, "scale", "Mul", vec![self.total("rsqrt"), gamma]);
            let scaled = vec![self.local_t(k, "centered"), self.local_t(k, "scale")];
            self.at(k, "scaled", "Mul", scaled);
            self.at(k, "y", "AddV2", vec![self.local_t(k, "scaled"), beta]);
        }
    }

    /// The new moving mean and variance, as FusedBatchNormV3's outputs 1 and 2 with
    /// exponential average factor `f`: (1 − f)·old + f·batch, the variance unbiased.
    fn moving(&mut self, f: f32) {
        let one = scalar(format!("{}/one", self.g), 1.0);
        self.out.push(on(one, &self.devices[0]));
        // N/(N − 1), N − 1 at least 1, as the fused kernel's Bessel correction.
        let steps = [
            ("count_1", "Sub", "count", "one"),
            ("count_1_pos", "Maximum", "count_1", "one"),
            ("bessel", "RealDiv", "count", "count_1_pos"),
            ("var_unbiased", "Mul", "var", "bessel"),
        ];
        for (what, op, a, b) in steps {
            self.main(what, op, vec![self.total(a), self.total(b)]);
        }
        for (k, (what, batch)) in [("mean", "mean"), ("var", "var_unbiased")]
            .into_iter()
            .enumerate()
        {
            let name = format!("{what}_out");
            if f == 1.0 {
                self.main(&name, "Identity", vec![self.total(batch)]);
                continue;
            }
            let old = self.r.tensor(0, &self.ins[3 + k]);
            for (c, v) in [("keep", 1.0 - f), ("take", f)] {
                let n = scalar(format!("{}/{what}_{c}", self.g), v);
                self.out.push(on(n, &self.devices[0]));
            }
            self.main(
                &format!("{what}_old"),
                "Mul",
                vec![old, self.total(&format!("{what}_keep"))],
            );
            let new = vec![self.total(batch), self.total(&format!("{what}_take"))];
            self.main(&format!("{what}_new"), "Mul", new);
            let both = vec![
                self.total(&format!("{what}_old")),
                self.total(&format!("{what}_new")),
            ];
            self.main(&name, "AddV2", both);
        }
    }
}
