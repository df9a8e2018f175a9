//! Reads a SavedModel: saved_model.pb (signatures, graph, function library, object graph) parsed
//! with our own prost structs, and the model loaded into a TF session the way TF Serving loads it.

/// The signature TF Serving and `hub.load` call when none is named.
pub const DEFAULT_SIGNATURE: &str = "serving_default";

mod aliases;
pub mod audit;
pub mod fixed;
mod gradients;
mod refs;
mod run;
mod saver;
mod session;
pub mod tf1hub;
mod variables;

pub use gradients::{Capture, SavedGradient};
pub use saver::Saver;
pub use session::{check_audit, session_options, Loaded, Trust, INFERENCE_PREFIX};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::{self, shape_of, MetaGraphDef, NodeDef, TensorRef};

/// One input or output of a signature.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Key in the signature map (e.g. `x`, `images`).
    pub key: String,
    /// Graph tensor (`node:index`).
    pub tensor: String,
    pub dtype: i32,
    /// `None` for unknown rank; `None` entries for free dimensions.
    pub shape: Option<Vec<Option<i64>>>,
}

/// A serving signature, inputs and outputs sorted by key.
#[derive(Debug, Clone)]
pub struct Signature {
    pub name: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Inputs bound to a fixed value (`model.fixed_inputs`; `Signature::with_fixed`), no longer
    /// in `inputs`.
    pub fixed: Vec<fixed::FixedInput>,
}

/// A model variable as the serving graph holds it.
#[derive(Debug, Clone)]
pub struct Variable {
    /// The `VarHandleOp` node in the top-level graph.
    pub handle: String,
    /// The variable's own name from the object graph (falls back to the handle name).
    pub name: String,
    pub trainable: bool,
    pub dtype: i32,
    pub shape: Vec<i64>,
}

/// What pretext knows about a SavedModel on disk, before any session exists.
#[derive(Debug, Clone)]
pub struct SavedModelInfo {
    pub dir: PathBuf,
    /// The tag set of the graph variant loaded.
    pub tags: Vec<String>,
    /// That variant; for a TF1 Hub module with its ref variables rewritten (`tf1hub`).
    pub meta: MetaGraphDef,
    /// A module in the TF1 Hub format (`tfhub_module.pb`).
    pub tf1_hub: bool,
    /// Every graph variant in saved_model.pb: (tag set, signature names).
    pub variants: Vec<(Vec<String>, Vec<String>)>,
    /// A TF1 Hub module's inference variant (rewritten too) when `meta` is another one (the
    /// `train` variant): loaded beside it, sharing its variables, for evaluation.
    pub inference: Option<MetaGraphDef>,
}

impl SavedModelInfo {
    /// Reads and parses `dir/saved_model.pb`; picks the default graph variant (`tf1hub::pick`).
    pub fn read(dir: &Path) -> Result<Self> {
        Self::read_tagged(dir, None)
    }

    /// Reads and parses `dir/saved_model.pb`; picks the graph variant tagged `tags` (all of
    /// them, in any order), or the default one (`tf1hub::pick`).
    pub fn read_tagged(dir: &Path, tags: Option<&[String]>) -> Result<Self> {
        if !dir.exists() {
            return Err(Error::NotSavedModel {
                path: dir.into(),
                reason: "no such directory".into(),
            });
        }
        if !dir.is_dir() {
            return Err(Error::NotSavedModel {
                path: dir.into(),
                reason: "it is a file; pass the directory that holds saved_model.pb".into(),
            });
        }
        let pb = dir.join("saved_model.pb");
        if !pb.is_file() {
            return Err(Error::NotSavedModel {
                path: dir.into(),
                reason: "no saved_model.pb in it".into(),
            });
        }
        let bytes = std::fs::read(&pb).map_err(|e| Error::io(&pb, e))?;
        let sm = proto::SavedModel::decode(bytes.as_slice()).map_err(|e| Error::Parse {
            path: pb.clone(),
            what: "SavedModel proto",
            msg: e.to_string(),
        })?;
        for m in &sm.meta_graphs {
            if let Some(gd) = &m.graph_def {
                audit::check_call_graph(gd)
                    .and_then(|_| refs::check_refs(gd))
                    .map_err(|msg| Error::ModelRefused {
                        path: pb.clone(),
                        msg,
                    })?;
            }
        }
        let tf1_hub = tf1hub::is_tf1_hub(dir);
        let mut meta = tf1hub::pick(&sm.meta_graphs, tags, tf1_hub, dir)?.clone();
        let chosen = tf1hub::tags_of(&meta);
        let variants = sm
            .meta_graphs
            .iter()
            .map(|m| {
                let mut sigs: Vec<String> = m.signature_def.keys().cloned().collect();
                sigs.sort();
                (tf1hub::tags_of(m), sigs)
            })
            .collect();
        let mut inference = None;
        if tf1_hub {
            let rewrite = |m: &mut MetaGraphDef| -> Result<()> {
                let vars = tf1hub::variable_defs(m, "variables")?;
                if let Some(gd) = m.graph_def.as_mut() {
                    tf1hub::to_resource(gd, &vars).map_err(|e| Error::ModelRefused {
                        path: pb.clone(),
                        msg: e.to_string(),
                    })?;
                }
                Ok(())
            };
            rewrite(&mut meta)?;
            if let Some(m) = tf1hub::inference_variant(&sm.meta_graphs, &chosen) {
                let mut m = m.clone();
                rewrite(&mut m)?;
                inference = Some(m);
            }
        }
        Ok(SavedModelInfo {
            dir: dir.into(),
            tags: meta
                .meta_info_def
                .as_ref()
                .map(|i| i.tags.clone())
                .unwrap_or_default(),
            meta,
            tf1_hub,
            variants,
            inference,
        })
    }

    /// The signature used when none is named: `default` for a TF1 Hub module (as hub.Module),
    /// else `serving_default` (as TF Serving and hub.load).
    pub fn default_signature(&self) -> &'static str {
        match self.tf1_hub {
            true => tf1hub::DEFAULT_SIGNATURE,
            false => DEFAULT_SIGNATURE,
        }
    }

    /// The nodes of the loaded variant's UPDATE_OPS collection (a TF1 graph's batch-norm
    /// moving averages), run after each step.
    pub fn update_ops(&self) -> Vec<String> {
        tf1hub::node_collection(&self.meta, "update_ops")
    }

    /// The top-level graph's nodes.
    pub fn nodes(&self) -> &[NodeDef] {
        self.meta
            .graph_def
            .as_ref()
            .map(|g| g.node.as_slice())
            .unwrap_or(&[])
    }

    /// Signature names, sorted (internal ones such as `__saved_model_init_op` left out).
    pub fn signature_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .meta
            .signature_def
            .keys()
            .filter(|k| !k.starts_with("__"))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The named signature, or an error listing the ones that exist. `serving_default` (the
    /// default of `model.signature`) names a TF1 Hub module's `default` one.
    pub fn signature(&self, name: &str) -> Result<Signature> {
        let missing = !self.meta.signature_def.contains_key(name);
        let name = match name == DEFAULT_SIGNATURE && self.tf1_hub && missing {
            true => self.default_signature(),
            false => name,
        };
        let sd = self
            .meta
            .signature_def
            .get(name)
            .ok_or_else(|| Error::UnknownSignature {
                path: self.dir.clone(),
                name: name.into(),
                available: self.signature_names().join(", "),
            })?;
        let specs = |m: &HashMap<String, proto::TensorInfo>| {
            let mut v: Vec<TensorSpec> = m
                .iter()
                .map(|(k, t)| TensorSpec {
                    key: k.clone(),
                    tensor: t.name.clone(),
                    dtype: t.dtype,
                    shape: shape_of(&t.tensor_shape),
                })
                .collect();
            v.sort_by(|a, b| a.key.cmp(&b.key));
            v
        };
        Ok(Signature {
            name: name.into(),
            inputs: specs(&sd.inputs),
            outputs: specs(&sd.outputs),
            fixed: Vec::new(),
        })
    }

    /// Handle names of the trainable variables (what training updates).
    pub fn trainable_handles(&self) -> std::collections::HashSet<String> {
        self.variables()
            .into_iter()
            .filter(|v| v.trainable)
            .map(|v| v.handle)
            .collect()
    }

    /// Top-level nodes the signatures' outputs depend on (through data inputs).
    pub fn serving_nodes(&self) -> std::collections::HashSet<String> {
        let by_name: HashMap<&str, &NodeDef> =
            self.nodes().iter().map(|n| (n.name.as_str(), n)).collect();
        let mut stack: Vec<&str> = self
            .meta
            .signature_def
            .values()
            .flat_map(|s| s.outputs.values())
            .map(|t| TensorRef::node_of(&t.name))
            .collect();
        let updates = self.update_ops();
        stack.extend(updates.iter().map(|s| s.as_str()));
        let mut seen = std::collections::HashSet::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n.to_string()) {
                continue;
            }
            if let Some(nd) = by_name.get(n) {
                stack.extend(
                    nd.input
                        .iter()
                        .filter(|i| !i.starts_with('^'))
                        .map(|i| TensorRef::node_of(i)),
                );
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_wrong_paths_are_named() {
        let e = SavedModelInfo::read(Path::new("/nonexistent/model"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/model") && e.contains("no such directory"),
            "{e}"
        );
        let d = tempfile::tempdir().unwrap();
        let e = SavedModelInfo::read(d.path()).unwrap_err().to_string();
        assert!(e.contains("no saved_model.pb"), "{e}");
        std::fs::write(d.path().join("saved_model.pb"), b"\xff\xff garbage").unwrap();
        let e = SavedModelInfo::read(d.path()).unwrap_err().to_string();
        assert!(e.contains("cannot parse SavedModel proto"), "{e}");
    }
}
