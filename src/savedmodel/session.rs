//! The SavedModel in a TF session: loaded through the C API as TF Serving loads it, its
//! variables checked as restored, and small helpers to run tensors of its graph.
use std::path::Path;

use prost::Message;
use tensorflow::{DataType, Graph, ImportGraphDefOptions, Output, Scope, Session, SessionOptions};

use super::{tf1hub, SavedModelInfo, Saver};
use crate::error::{Error, Result, TfContext};
use crate::proto::{self, TensorRef};

/// A SavedModel loaded into a TF session. The graph lives in `scope`, so pretext appends to it
/// with the crate's op builders; the session sees each appended op (TF extends sessions lazily).
pub struct Loaded {
    pub info: SavedModelInfo,
    pub scope: Scope,
    pub session: Session,
    /// A TF1 Hub module's variables keyed as its checkpoint keys them (restored at load,
    /// written at export: such modules carry no saver of their own).
    pub(crate) module_vars: Option<Saver>,
    /// The ops copying each trained variable into its aliases (`export`), built once.
    pub(crate) alias_sync: std::cell::OnceCell<Vec<tensorflow::Operation>>,
}

/// Where a TF1 Hub module's inference variant is imported beside the variant that trains.
pub const INFERENCE_PREFIX: &str = "pretext_inference";

/// Session options: thread pools from `PRETEXT_INTRA_THREADS` / `PRETEXT_INTER_THREADS` if set;
/// grappler rounds from `PRETEXT_GRAPPLER_ROUNDS` (default 0: TF's own two).
pub fn session_options() -> Result<SessionOptions> {
    session_options_for(&[], None)
}

/// `session_options` for a session that places ops on `devices`: as many CPU devices as the
/// highest `/device:CPU:N` asked needs (`proto::device::cpu_devices`). Soft placement stays
/// on (ops without a kernel on a device, and ops on a variable, run where they can); where
/// each op ran is read back from the run (`graph::placement`). On a `cluster`, the session
/// opens on the chief's own TF server (started here once the workers answer), and a step
/// blocked on a task gives up after the cluster's timeout.
pub fn session_options_for(
    devices: &[String],
    cluster: Option<&crate::cluster::ClusterConfig>,
) -> Result<SessionOptions> {
    let mut opts = SessionOptions::new();
    if let Some(c) = cluster {
        c.wait_for_workers()?;
        let server = crate::cluster::chief_server(c)?;
        opts.set_target(server.target())
            .map_err(|e| Error::internal("setting the session target", e))?;
    }
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0)
    };
    let cpus = proto::device::cpu_devices(devices);
    let cfg = proto::ConfigProto {
        device_count: match cpus {
            0 => Default::default(),
            n => [("CPU".to_string(), n)].into(),
        },
        intra_op_parallelism_threads: env("PRETEXT_INTRA_THREADS"),
        inter_op_parallelism_threads: env("PRETEXT_INTER_THREADS"),
        allow_soft_placement: true,
        operation_timeout_in_ms: cluster.map_or(0, |c| c.timeout_ms()),
        experimental: cluster.map(|_| proto::ConfigExperimental {
            collective_group_leader: crate::cluster::COLLECTIVE_LEADER.into(),
        }),
        device_filters: Vec::new(),
        // Recompute the nodes `graph::recompute` marks; otherwise grappler's defaults.
        graph_options: Some(proto::GraphOptions {
            rewrite_options: Some(proto::RewriterConfig {
                memory_optimization: std::env::var("PRETEXT_MEM_OPT")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(proto::MEM_OPT_MANUAL),
                // TF's own two rounds of grappler passes (0): one round saved ~0.4 s of the
                // first step but fused differently, so an EfficientNetV2's outputs differed
                // from TF Serving's by 1e-5 of their scale (docs/BENCHMARKS.md).
                // `PRETEXT_GRAPPLER_ROUNDS=1` trades that fidelity for the time.
                meta_optimizer_iterations: std::env::var("PRETEXT_GRAPPLER_ROUNDS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            }),
        }),
    };
    opts.set_config(&cfg.encode_to_vec())
        .tf_ctx(|| "setting session config".into())?;
    Ok(opts)
}

/// Whether a model is audited before TF runs any of its ops (`savedmodel::audit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Trust {
    /// Refuse a model whose graph touches files, processes or the network (the default).
    #[default]
    Audit,
    /// The user trusts the model (`--trust-model`, `model.trust: true`): load it as it is.
    Trusted,
}

impl Trust {
    pub fn from_flag(trusted: bool) -> Self {
        if trusted {
            Trust::Trusted
        } else {
            Trust::Audit
        }
    }
}

/// Imports a TF1 Hub module's graph variant (its ref variables already rewritten), and its
/// inference variant under `INFERENCE_PREFIX` when that is another one (same variables by
/// shared name), into a new session.
fn import_variants(
    info: &SavedModelInfo,
    scope: &mut Scope,
    opts: &SessionOptions,
) -> Result<Session> {
    let err = |msg: String| Error::Load {
        path: info.dir.clone(),
        msg,
    };
    let variants = [
        (Some(&info.meta), None),
        (info.inference.as_ref(), Some(INFERENCE_PREFIX)),
    ];
    for (meta, prefix) in variants {
        let Some(m) = meta else { continue };
        let tags = tf1hub::show_tags(&tf1hub::tags_of(m));
        let gd = m
            .graph_def
            .as_ref()
            .ok_or_else(|| err(format!("graph variant {tags} has no graph_def")))?;
        let mut o = ImportGraphDefOptions::new();
        if let Some(p) = prefix {
            o.set_prefix(p).map_err(|e| err(e.to_string()))?;
        }
        scope
            .graph_mut()
            .import_graph_def(&gd.encode_to_vec(), &o)
            .map_err(|e| err(format!("importing graph variant {tags}: {e}")))?;
    }
    Session::new(opts, &scope.graph()).map_err(|e| err(e.to_string()))
}

/// `info`'s audit findings as an error, unless trusted or clean.
pub fn check_audit(info: &SavedModelInfo, trust: Trust) -> Result<()> {
    if trust == Trust::Trusted {
        return Ok(());
    }
    let mut findings = super::audit::audit(info);
    // A TF1 Hub module's inference variant is imported (and evaluated) too.
    if let Some(m) = &info.inference {
        let variant = SavedModelInfo {
            meta: m.clone(),
            inference: None,
            ..info.clone()
        };
        findings.extend(super::audit::audit(&variant));
    }
    if findings.is_empty() {
        return Ok(());
    }
    Err(Error::Untrusted {
        path: info.dir.clone(),
        findings: findings.iter().map(|f| f.to_string()).collect(),
    })
}

impl Loaded {
    /// Parses `dir`, audits it (unless `trust` says the user trusts it), loads it with its
    /// `serve` tags, then checks that every variable the graph declares was restored
    /// (FEASIBILITY §2: some exports load but leave variables missing).
    pub fn load(dir: &Path, trust: Trust) -> Result<Self> {
        Self::load_parsed(SavedModelInfo::read(dir)?, trust)
    }

    /// `load` of a model already parsed (and checked) by `SavedModelInfo::read`.
    pub fn load_parsed(info: SavedModelInfo, trust: Trust) -> Result<Self> {
        Self::load_for(info, trust, &[], None)
    }

    /// `load_parsed` in a session with the devices `devices` name, on `cluster` if given
    /// (`session_options_for`).
    /// The model's variables are created where TF's placer puts them when its loader restores
    /// them (with no device in the model: the first GPU, else `/device:CPU:0`).
    pub fn load_for(
        info: SavedModelInfo,
        trust: Trust,
        devices: &[String],
        cluster: Option<&crate::cluster::ClusterConfig>,
    ) -> Result<Self> {
        let dir = info.dir.clone();
        let dir = dir.as_path();
        check_audit(&info, trust)?;
        let mut scope = Scope::new_root_scope();
        let opts = session_options_for(devices, cluster)?;
        let tags = if info.tags.is_empty() {
            vec!["serve".to_string()]
        } else {
            info.tags.clone()
        };
        let session = match info.tf1_hub {
            true => import_variants(&info, &mut scope, &opts)?,
            false => {
                let mut g = scope.graph_mut();
                let g: &mut Graph = &mut g;
                tensorflow::SavedModelBundle::load(&opts, &tags, g, dir)
                    .map_err(|s| Error::Load {
                        path: dir.into(),
                        msg: s.to_string(),
                    })?
                    .session
            }
        };
        let mut loaded = Loaded {
            info,
            scope,
            session,
            module_vars: None,
            alias_sync: Default::default(),
        };
        if loaded.info.tf1_hub {
            loaded.restore_module_variables()?;
        }
        loaded.check_restored()?;
        Ok(loaded)
    }

    /// Every variable of a TF1 Hub module's graph (the loaded variant's, then those only its
    /// inference variant has) as (checkpoint key, handle, dtype), restored from the module's
    /// `variables/` into a saver kept for export.
    fn restore_module_variables(&mut self) -> Result<()> {
        let mut vars: Vec<(String, Output, DataType)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let variants = [
            (Some(&self.info.meta), ""),
            (self.info.inference.as_ref(), INFERENCE_PREFIX),
        ];
        for (meta, prefix) in variants {
            let Some(gd) = meta.and_then(|m| m.graph_def.as_ref()) else {
                continue;
            };
            for n in gd.node.iter().filter(|n| n.op == "VarHandleOp") {
                if !seen.insert(n.name.clone()) {
                    continue;
                }
                let op = match prefix {
                    "" => self.op(&n.name)?,
                    p => self.op(&format!("{p}/{}", n.name))?,
                };
                let dt = op
                    .get_attr_type("dtype")
                    .tf_ctx(|| format!("dtype of variable {}", n.name))?;
                vars.push((
                    n.name.clone(),
                    Output {
                        operation: op,
                        index: 0,
                    },
                    dt,
                ));
            }
        }
        let saver = Saver::in_scope(self, &vars, "pretext_module_variables")?;
        let prefix = self.info.dir.join("variables").join("variables");
        saver.restore(self, &prefix).map_err(|e| Error::Load {
            path: self.info.dir.clone(),
            msg: format!(
                "restoring the module's variables from {}: {e}",
                prefix.display()
            ),
        })?;
        self.module_vars = Some(saver);
        Ok(())
    }

    fn check_restored(&self) -> Result<()> {
        let vars = self.info.variables();
        if vars.is_empty() {
            return Ok(());
        }
        let mut scope = self.scope.new_sub_scope("pretext_check_restored");
        let mut checks = Vec::new();
        for v in &vars {
            let h = self.op(&v.handle)?;
            checks.push(
                tensorflow::ops::var_is_initialized_op(h, &mut scope)
                    .tf_ctx(|| format!("checking {}", v.handle))?,
            );
        }
        let mut run = tensorflow::SessionRunArgs::new();
        let toks: Vec<_> = checks.iter().map(|c| run.request_fetch(c, 0)).collect();
        self.session
            .run(&mut run)
            .tf_ctx(|| "checking restored variables".into())?;
        let mut missing = Vec::new();
        for (t, v) in toks.into_iter().zip(&vars) {
            let ok: tensorflow::Tensor<bool> = run
                .fetch(t)
                .tf_ctx(|| "fetching VarIsInitializedOp".into())?;
            if !ok[0] {
                missing.push(v.name.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let shown: Vec<_> = missing.iter().take(3).cloned().collect();
        Err(Error::Restore {
            path: self.info.dir.clone(),
            msg: format!(
                "{} of {} variables not found in the checkpoint, e.g. {}",
                missing.len(),
                vars.len(),
                shown.join(", ")
            ),
        })
    }

    /// A graph operation by name, or an error naming it.
    pub fn op(&self, name: &str) -> Result<tensorflow::Operation> {
        self.scope
            .graph()
            .operation_by_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| Error::graph(name, "no such operation in the loaded graph"))
    }

    /// A tensor of the loaded graph.
    pub fn output(&self, t: TensorRef) -> Result<tensorflow::Output> {
        Ok(tensorflow::Output {
            operation: self.op(t.node)?,
            index: t.index.max(0),
        })
    }

    /// A variable's handle: output 0 of its `VarHandleOp` node.
    pub fn handle(&self, node: &str) -> Result<tensorflow::Output> {
        self.output(TensorRef::first(node))
    }

    /// Tensor `t` of a graph imported under `prefix` (a tower's flat tensor).
    pub fn prefixed(&self, prefix: &str, t: TensorRef) -> Result<tensorflow::Output> {
        Ok(tensorflow::Output {
            operation: self.op(&format!("{prefix}/{}", t.node))?,
            index: t.index.max(0),
        })
    }
}
