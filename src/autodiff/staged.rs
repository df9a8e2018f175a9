//! The backward pass of towers with custom gradients (`custom` planned its stages): one gradient
//! call from the loss to every cut and variable read, then, consumers first, one call per stage,
//! seeded with the gradient that arrived at its cuts (a join) or with what its stored gradient
//! function makes of it (a custom node). Every op is under `prefix`, as one call's would be.
use std::collections::{HashMap, HashSet};

use prost::Message;
use tensorflow::{ops, ImportGraphDefOptions, Operation, Output, Scope};

use super::{call, custom::is_float};
use crate::error::{Error, Result, TfContext};
use crate::graph::custom::{Backward, StageKind};
use crate::graph::Tower;
use crate::proto::{dtype_code, TensorRef};

fn name_of(o: &Output) -> String {
    format!("{}:{}", o.operation.name().unwrap_or_default(), o.index)
}

fn float(o: &Output) -> bool {
    is_float(dtype_code(o.operation.output_type(o.index as usize)))
}

fn lookup(scope: &Scope, t: &str) -> Result<Output> {
    let TensorRef { node, index } = TensorRef::parse(t);
    let op = scope
        .graph()
        .operation_by_name_required(node)
        .map_err(|e| Error::graph(node, e.to_string()))?;
    Ok(Output {
        operation: op,
        index: index.max(0),
    })
}

/// Gradients gathered so far: per requested read, and per cut tensor (a later stage's seed).
struct Gathered {
    read_of: HashMap<String, usize>,
    per_read: Vec<Vec<Output>>,
    at_cut: HashMap<String, Vec<Output>>,
}

impl Gathered {
    fn take(&mut self, xs: &[Output], gs: Vec<Option<Output>>) {
        for (x, g) in xs.iter().zip(gs) {
            let Some(g) = g else { continue };
            let n = name_of(x);
            match self.read_of.get(&n) {
                Some(&i) => self.per_read[i].push(g),
                None => self.at_cut.entry(n).or_default().push(g),
            }
        }
    }
}

/// The sum of `gs` (one of them as is).
fn sum(scope: &mut Scope, gs: Vec<Output>) -> Result<Output> {
    let mut it = gs.into_iter();
    let mut acc = it
        .next()
        .ok_or_else(|| Error::internal("custom gradients", "summing no gradient"))?;
    for g in it {
        acc = ops::add(acc, g, scope)
            .tf_ctx(|| "summing gradients".into())?
            .into();
    }
    Ok(acc)
}

/// Per read in `reads`, the gradients of `loss` reaching it (to be summed).
pub(super) fn backward(
    scope: &mut Scope,
    towers: &[Tower],
    loss: Output,
    reads: &[&(String, Output)],
    prefix: &str,
) -> Result<Vec<Vec<Output>>> {
    let mut got = Gathered {
        read_of: reads
            .iter()
            .enumerate()
            .map(|(i, (_, o))| (name_of(o), i))
            .collect(),
        per_read: vec![Vec::new(); reads.len()],
        at_cut: HashMap::new(),
    };
    // Only towers the asked-for reads are in (a head warm-up asks for none of them).
    let towers: Vec<&Tower> = towers
        .iter()
        .filter(|t| {
            t.reads
                .iter()
                .any(|(_, o)| got.read_of.contains_key(&name_of(o)))
        })
        .collect();
    let mut xs: Vec<Output> = reads.iter().map(|(_, o)| o.clone()).collect();
    for t in &towers {
        for st in &t.backward.stages {
            for (_, c) in &st.cuts {
                xs.push(t.tensor(scope, c)?);
            }
        }
    }
    let needed = super::ancestors(scope, &loss);
    xs.retain(|x| float(x) && needed.contains(&x.operation.name().unwrap_or_default()));
    let gs = call(scope, &[], &[loss], None, &xs, &format!("{prefix}/s0"))?;
    got.take(&xs, gs);
    let mut n = 0;
    for t in towers {
        for st in &t.backward.stages {
            n += 1;
            let p = format!("{prefix}/s{n}");
            let Some((ys, dxs)) = seeds(scope, t, st, &mut got, &p)? else {
                continue;
            };
            let mut xs = st
                .xs
                .iter()
                .map(|x| t.tensor(scope, x))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .filter(|x| float(x) && (got.read_of.contains_key(&name_of(x)) || !x_is_read(x)))
                .collect::<Vec<_>>();
            // A seed on a cut or a read is that tensor's gradient already (TF cannot take
            // d y / d y); the rest start a gradient call.
            let (mut ys2, mut dxs2) = (Vec::new(), Vec::new());
            for (y, dx) in ys.into_iter().zip(dxs) {
                match xs.iter().any(|x| name_of(x) == name_of(&y)) {
                    true => got.take(&[y], vec![Some(dx)]),
                    false => {
                        ys2.push(y);
                        dxs2.push(dx);
                    }
                }
            }
            // TF refuses an x its ys do not reach through data edges.
            let reach = data_reach(&ys2);
            xs.retain(|x| reach.contains(&x.operation.name().unwrap_or_default()));
            if xs.is_empty() || ys2.is_empty() {
                continue;
            }
            let terms = seeded(scope, &ys2, dxs2, &p)?;
            let gs = call(scope, std::slice::from_ref(t), &terms, None, &xs, &p)?;
            got.take(&xs, gs);
        }
    }
    if let Some((cut, _)) = got.at_cut.iter().find(|(_, g)| !g.is_empty()) {
        return Err(Error::internal(
            "custom gradients",
            format!("a gradient reached {cut} after its stage ran"),
        ));
    }
    Ok(got.per_read)
}

/// ⟨StopGradient(dx), y⟩ per seed, each a [1, n]·[n, 1] MatMul: the gradient of their sum (TF
/// sums over several ys) is that of the `ys` seeded with `dxs` (what `TF_AddGradients`' own `dx`
/// argument does, which the `tensorflow` crate 0.21 passes as a dangling pointer), and costs one
/// pass over each seed (a dot product's gradient needs no forward value).
fn seeded(scope: &mut Scope, ys: &[Output], dxs: Vec<Output>, p: &str) -> Result<Vec<Output>> {
    let mut s = scope.new_sub_scope(&format!("{p}_seeded"));
    let ctx = || "seeding a backward stage".to_string();
    let row = ops::constant(&[1i32, -1][..], &mut s).tf_ctx(ctx)?;
    let col = ops::constant(&[-1i32, 1][..], &mut s).tf_ctx(ctx)?;
    let mut terms = Vec::new();
    for (y, dx) in ys.iter().zip(dxs) {
        let dx = ops::stop_gradient(dx, &mut s).tf_ctx(ctx)?;
        let a = ops::reshape(dx, row.clone(), &mut s).tf_ctx(ctx)?;
        let b = ops::reshape(y.clone(), col.clone(), &mut s).tf_ctx(ctx)?;
        terms.push(ops::mat_mul(a, b, &mut s).tf_ctx(ctx)?.into());
    }
    Ok(terms)
}

/// Names of the ops `ys` depend on through data edges; the walk stops at cuts and reads (the
/// xs a stage may ask for).
fn data_reach(ys: &[Output]) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Operation> = ys.iter().map(|y| y.operation.clone()).collect();
    while let Some(op) = stack.pop() {
        let Ok(name) = op.name() else { continue };
        if !seen.insert(name.clone()) {
            continue;
        }
        let t = op.op_type().unwrap_or_default();
        if t == "ReadVariableOp" || (t == "StopGradient" && name.contains("/__cut/")) {
            continue;
        }
        stack.extend((0..op.num_inputs()).map(|i| op.input(i).0));
    }
    seen
}

fn x_is_read(x: &Output) -> bool {
    x.operation
        .op_type()
        .map(|t| t == "ReadVariableOp")
        .unwrap_or(false)
}

/// A stage's seed: the tensors to start from and the gradient each gets. None: no gradient
/// arrived at its cuts.
fn seeds(
    scope: &mut Scope,
    t: &Tower,
    st: &crate::graph::custom::Stage,
    got: &mut Gathered,
    p: &str,
) -> Result<Option<(Vec<Output>, Vec<Output>)>> {
    let mut arrived = Vec::new();
    for (k, c) in &st.cuts {
        let cut = t.tensor(scope, c)?;
        let gs = got.at_cut.remove(&name_of(&cut)).unwrap_or_default();
        arrived.push((*k, cut, gs));
    }
    if arrived.iter().all(|(_, _, gs)| gs.is_empty()) {
        return Ok(None);
    }
    let mut s = scope.new_sub_scope(&format!("{p}_seed"));
    match &st.kind {
        StageKind::Join(node) => {
            let op = t.tensor(scope, node)?.operation;
            let (mut ys, mut dxs) = (Vec::new(), Vec::new());
            for (k, _, gs) in arrived.into_iter().filter(|a| !a.2.is_empty()) {
                ys.push(Output {
                    operation: op.clone(),
                    index: k as i32,
                });
                dxs.push(sum(&mut s, gs)?);
            }
            Ok(Some((ys, dxs)))
        }
        StageKind::Custom(i) => {
            custom_seed(scope, &mut s, t, &t.backward, *i, arrived, p).map(Some)
        }
    }
}

/// A custom node's seed: its stored gradient function applied to the gradients of its outputs
/// (zeros where none arrived) and its captures; one gradient per input it returns one for.
fn custom_seed(
    scope: &mut Scope,
    s: &mut Scope,
    t: &Tower,
    bw: &Backward,
    i: usize,
    arrived: Vec<(usize, Output, Vec<Output>)>,
    p: &str,
) -> Result<(Vec<Output>, Vec<Output>)> {
    let c = &bw.custom[i];
    let saved = c.saved.as_ref().ok_or_else(|| {
        Error::internal(
            "custom gradients",
            format!("{} has no saved gradient", c.node),
        )
    })?;
    let mut inputs = Vec::new();
    for (_, cut, gs) in arrived {
        inputs.push(match gs.is_empty() {
            true => ops::zeros_like(cut, s)
                .tf_ctx(|| "zero output gradient".into())?
                .into(),
            false => sum(s, gs)?,
        });
    }
    for cap in &saved.captures {
        inputs.push(t.tensor(scope, cap)?);
    }
    let f = bw.grad_fn(&saved.function)?;
    if f.inputs.len() != inputs.len() || !f.external.is_empty() {
        return Err(Error::graph(
            &c.node,
            format!(
                "its gradient function {} takes {} inputs; pretext has {} output gradients and captures",
                saved.function,
                f.inputs.len(),
                inputs.len()
            ),
        ));
    }
    let at = format!("{p}_fn");
    let mut opts = ImportGraphDefOptions::new();
    opts.set_prefix(&at)
        .map_err(|e| Error::graph(&at, e.to_string()))?;
    for (ph, o) in f.inputs.iter().zip(&inputs) {
        let TensorRef { node, index } = TensorRef::parse(ph);
        opts.add_input_mapping(node, index.max(0) as usize, o)
            .map_err(|e| Error::graph(ph, e.to_string()))?;
        // The body may wait on an argument (`^result_grads_0`): then on what stands for it.
        opts.remap_control_dependency(node, &o.operation)
            .map_err(|e| Error::graph(ph, e.to_string()))?;
    }
    scope
        .graph_mut()
        .import_graph_def(&f.graph_def.encode_to_vec(), &opts)
        .tf_ctx(|| {
            format!(
                "importing gradient function {} for {}",
                saved.function, c.node
            )
        })?;
    // A result may be one of the function's own arguments: then what was bound to it.
    let results = f
        .outputs
        .iter()
        .map(|o| match f.inputs.iter().position(|i| i == o) {
            Some(k) => Ok(inputs[k].clone()),
            None => lookup(scope, &format!("{at}/{o}")),
        })
        .collect::<Result<Vec<_>>>()?;
    let op = t.tensor(scope, &c.node)?.operation;
    let (mut ys, mut dxs) = (Vec::new(), Vec::new());
    let map = saved
        .result_map(c.inputs, results.len())
        .map_err(|e| Error::graph(&c.node, e.to_string()))?;
    for (k, r) in map.into_iter().enumerate() {
        let Some(r) = r else { continue };
        let (src, idx) = op.input(k);
        let y = Output {
            operation: src,
            index: idx as i32,
        };
        // A source's gradient goes nowhere (tf.nn.silu's constant `beta`): not worth computing.
        let source = y.operation.num_inputs() == 0;
        if float(&y) && !source {
            ys.push(y);
            dxs.push(results[r].clone());
        }
    }
    Ok((ys, dxs))
}
