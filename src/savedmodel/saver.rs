//! TF's own SaveV2/RestoreV2 over a list of resource variables, keyed by name: the run
//! checkpoints (`train::checkpoint`) and a TF1 Hub module's variables (restored at load,
//! written at export) both go through it.
use std::path::Path;

use tensorflow::{ops, DataType, Operation, Output, Scope, SessionRunArgs, Tensor};

use super::Loaded;
use crate::error::{Error, Result, TfContext};

/// SaveV2 / RestoreV2 ops over a fixed list of variables.
pub struct Saver {
    prefix: Output,
    save: Operation,
    restore: Vec<Operation>,
    pub names: Vec<String>,
}

fn strings(s: &mut Scope, v: &[String], what: &str) -> Result<Output> {
    let t = Tensor::new(&[v.len() as u64])
        .with_values(v)
        .tf_ctx(|| format!("{what} tensor"))?;
    Ok(ops::constant(t, s).tf_ctx(|| what.to_string())?.into())
}

impl Saver {
    /// Ops saving and restoring `vars`: (checkpoint key, VarHandleOp output, dtype).
    pub fn new(model: &Loaded, vars: &[(String, Output, DataType)]) -> Result<Saver> {
        Self::in_scope(model, vars, "pretext/checkpoint")
    }

    /// `new` with its ops under `scope`.
    pub fn in_scope(
        model: &Loaded,
        vars: &[(String, Output, DataType)],
        scope: &str,
    ) -> Result<Saver> {
        let ctx = || "building the checkpoint ops".to_string();
        let mut s = model.scope.new_sub_scope(scope);
        let prefix: Output = ops::Placeholder::new()
            .dtype(DataType::String)
            .build(&mut s.with_op_name("prefix"))
            .tf_ctx(ctx)?
            .into();
        let names: Vec<String> = vars.iter().map(|v| v.0.clone()).collect();
        let slices = vec![String::new(); vars.len()];
        let names_t = strings(&mut s, &names, "checkpoint keys")?;
        let slices_t = strings(&mut s, &slices, "checkpoint slices")?;
        let mut reads = Vec::new();
        for (name, h, dt) in vars {
            reads.push(Output::from(
                ops::ReadVariableOp::new()
                    .dtype(*dt)
                    .build(h.clone(), &mut s)
                    .tf_ctx(|| format!("reading {name} for a checkpoint"))?,
            ));
        }
        let dtypes: Vec<DataType> = vars.iter().map(|v| v.2).collect();
        let save = {
            let name = s.get_unique_name_for_op("save");
            let mut g = s.graph_mut();
            let mut d = g
                .new_operation("SaveV2", &name)
                .map_err(|e| Error::graph(&name, e.to_string()))?;
            d.add_input(prefix.clone());
            d.add_input(names_t.clone());
            d.add_input(slices_t.clone());
            d.add_input_list(&reads);
            d.set_attr_type_list("dtypes", &dtypes)
                .map_err(|e| Error::graph(&name, e.to_string()))?;
            d.finish().tf_ctx(ctx)?
        };
        let restored = {
            let name = s.get_unique_name_for_op("restore");
            let mut g = s.graph_mut();
            let mut d = g
                .new_operation("RestoreV2", &name)
                .map_err(|e| Error::graph(&name, e.to_string()))?;
            d.add_input(prefix.clone());
            d.add_input(names_t);
            d.add_input(slices_t);
            d.set_attr_type_list("dtypes", &dtypes)
                .map_err(|e| Error::graph(&name, e.to_string()))?;
            d.finish().tf_ctx(ctx)?
        };
        let mut restore = Vec::new();
        for (i, (_, h, _)) in vars.iter().enumerate() {
            let v = Output {
                operation: restored.clone(),
                index: i as i32,
            };
            restore.push(ops::assign_variable_op(h.clone(), v, &mut s).tf_ctx(ctx)?);
        }
        Ok(Saver {
            prefix,
            save,
            restore,
            names,
        })
    }

    /// Writes the variables to `prefix` (`prefix.index`, `prefix.data-*`).
    pub fn save(&self, model: &Loaded, prefix: &Path) -> Result<()> {
        let p = Tensor::from(prefix.to_string_lossy().into_owned());
        let mut run = SessionRunArgs::new();
        run.add_feed(&self.prefix.operation, self.prefix.index, &p);
        run.add_target(&self.save);
        model
            .session
            .run(&mut run)
            .tf_ctx(|| format!("writing checkpoint {}", prefix.display()))
    }

    /// Reads the variables back from `prefix`.
    pub fn restore(&self, model: &Loaded, prefix: &Path) -> Result<()> {
        let p = Tensor::from(prefix.to_string_lossy().into_owned());
        let mut run = SessionRunArgs::new();
        run.add_feed(&self.prefix.operation, self.prefix.index, &p);
        for op in &self.restore {
            run.add_target(op);
        }
        model
            .session
            .run(&mut run)
            .tf_ctx(|| format!("restoring checkpoint {}", prefix.display()))
    }
}
