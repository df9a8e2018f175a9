//! `pretext inspect`: what a SavedModel offers pretext — tags, signatures, variables, the op
//! histogram of the inlined serving path, and whether every op on it can be differentiated.
use std::fmt::Write;
use std::path::Path;

use tensorflow::ops;

use crate::autodiff;
use crate::error::{Error, Result, TfContext};
use crate::graph::{inline_signature, op_histogram, FlatGraph, Tower};
use crate::proto::{dtype_name, GraphDef, NodeDef, TensorRef};
use crate::savedmodel::{Loaded, SavedModelInfo, TensorSpec};

fn shape_str(s: &Option<Vec<Option<i64>>>) -> String {
    match s {
        None => "unknown rank".into(),
        Some(d) => format!(
            "[{}]",
            d.iter()
                .map(|x| x.map(|v| v.to_string()).unwrap_or("?".into()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn spec_line(t: &TensorSpec) -> String {
    format!(
        "{} ({}): {} {}",
        t.key,
        t.tensor,
        dtype_name(t.dtype),
        shape_str(&t.shape)
    )
}

/// The signature `inspect`/`train` default to: the only one, else `serving_default` (a TF1
/// Hub module's `default`).
pub fn default_signature(info: &SavedModelInfo) -> String {
    let names = info.signature_names();
    if names.len() == 1 {
        names[0].clone()
    } else {
        info.default_signature().into()
    }
}

/// Replaces every node of op type `op` by placeholders, so differentiation can look past it.
fn cut_op(gd: &mut GraphDef, op: &str, types: &dyn Fn(&str, usize) -> i32) {
    let cut: Vec<NodeDef> = gd.node.iter().filter(|n| n.op == op).cloned().collect();
    for n in cut {
        for i in gd.node.iter_mut().flat_map(|m| m.input.iter_mut()) {
            let TensorRef {
                node: src,
                index: k,
            } = TensorRef::parse(i);
            if src == n.name && k >= 0 && !i.starts_with('^') {
                *i = format!("{}/__cut{k}:0", n.name);
            }
        }
        for k in 0..16 {
            let dt = types(&n.name, k);
            if dt == 0 {
                break;
            }
            let mut attr = std::collections::HashMap::new();
            attr.insert("dtype".to_string(), crate::graph::attr_type(dt));
            gd.node.push(NodeDef {
                name: format!("{}/__cut{k}", n.name),
                op: "Placeholder".into(),
                attr,
                ..Default::default()
            });
        }
    }
}

/// Gradient coverage of the graph training differentiates (fallback rules and the strided 1×1
/// rewrite applied): Ok(list of fallback-rewritten nodes) or the missing (op, nodes) list.
fn coverage(
    model: &mut Loaded,
    flat: &FlatGraph,
) -> Result<(Vec<String>, Vec<(String, Vec<String>)>)> {
    let mut flat = flat.clone();
    // As training differentiates by default: saved custom gradients when the model has them all.
    let saved = flat.backward.custom.iter().all(|c| c.saved.is_some());
    let rewritten = autodiff::fallback::apply_but(&mut flat.graph_def, |n| {
        saved && crate::graph::custom::gradient_op_type(n).is_some()
    });
    crate::graph::unstride::apply(&mut flat, &model.info);
    let trainable = model.info.trainable_handles();
    // Kept control flow off every gradient path is read through StopGradients, as in training.
    let verdicts = autodiff::control_flow::check(&flat, &trainable)?;
    autodiff::control_flow::stop_gradients(&mut flat, &verdicts)?;
    let mut missing: Vec<(String, Vec<String>)> = Vec::new();
    for attempt in 0..12 {
        let prefix = format!("pretext_inspect/tower{attempt}");
        // Planned anew each attempt: cutting an op without a gradient changes the graph.
        let mut planned = flat.clone();
        if saved && !planned.backward.custom.is_empty() {
            autodiff::custom::plan(&mut planned)?;
        }
        let tower = Tower::import(model, &planned, &prefix, None, None)?;
        let reads: Vec<_> = tower
            .reads
            .iter()
            .filter(|(h, _)| trainable.contains(h))
            .cloned()
            .collect();
        let mut s = model
            .scope
            .new_sub_scope(&format!("pretext_inspect/loss{attempt}"));
        let mut total: Option<tensorflow::Output> = None;
        for o in &tower.outputs {
            if o.operation.output_type(o.index as usize) != tensorflow::DataType::Float {
                continue;
            }
            let r = ops::rank(o.clone(), &mut s).tf_ctx(|| "rank".into())?;
            let axes = ops::range(
                ops::constant(0i32, &mut s).tf_ctx(|| "c".into())?,
                r,
                ops::constant(1i32, &mut s).tf_ctx(|| "c".into())?,
                &mut s,
            )
            .tf_ctx(|| "range".into())?;
            let sum: tensorflow::Output = ops::sum(o.clone(), axes, &mut s)
                .tf_ctx(|| "sum".into())?
                .into();
            total = Some(match total {
                None => sum,
                Some(t) => ops::add(t, sum, &mut s).tf_ctx(|| "add".into())?.into(),
            });
        }
        let Some(loss) = total else {
            return Ok((rewritten, missing));
        };
        match autodiff::gradients(
            &mut model.scope,
            std::slice::from_ref(&tower),
            loss,
            &reads,
            &format!("pretext_inspect/grad{attempt}"),
        ) {
            Ok(_) => return Ok((rewritten, missing)),
            Err(Error::NoGradient { ops }) => {
                let op = ops[0].0.clone();
                let nodes: Vec<String> = flat
                    .graph_def
                    .node
                    .iter()
                    .filter(|n| n.op == op)
                    .map(|n| n.name.clone())
                    .collect();
                let g = model.scope.graph();
                let types = |n: &str, k: usize| -> i32 {
                    g.operation_by_name(&format!("{prefix}/{n}"))
                        .ok()
                        .flatten()
                        .filter(|o| k < o.num_outputs())
                        .map(|o| crate::graph::dtype_code(o.output_type(k)))
                        .unwrap_or(0)
                };
                cut_op(&mut flat.graph_def, &op, &types);
                drop(g);
                missing.push((op, nodes));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((rewritten, missing))
}

/// The custom gradients (`tf.custom_gradient`) on the serving path and how training takes each.
fn custom_gradients(o: &mut String, flat: &FlatGraph) {
    let custom = &flat.backward.custom;
    if custom.is_empty() {
        return;
    }
    let unsaved = custom.iter().filter(|c| c.saved.is_none()).count();
    let how = match unsaved {
        0 => "each differentiated by the gradient function the model stores, as TF does".into(),
        n => format!(
            "{n} without a usable gradient function: training refuses them unless \
             --custom-gradients forward (model.custom_gradients: forward) differentiates their \
             forward ops"
        ),
    };
    let _ = writeln!(o, "custom gradients: {} node(s); {how}", custom.len());
    for c in custom.iter().take(8) {
        let f = match (&c.saved, &c.unusable) {
            (Some(s), _) => format!("{} ({} capture(s))", s.function, s.captures.len()),
            (None, Some(why)) => format!("unusable: {why}"),
            (None, None) => "not saved".into(),
        };
        let _ = writeln!(o, "  {} {} [{}]: {f}", c.op, c.node, c.op_type);
    }
    if custom.len() > 8 {
        let _ = writeln!(o, "  … {} more", custom.len() - 8);
    }
}

/// The functional control flow (`If`, `Case`, `While`) on the serving path and how each node is
/// handled: a constant predicate's branch inlined, or kept — off every gradient path (trains), or
/// on one (not differentiable: training refuses it unless the variables behind it are frozen).
fn control_flow(o: &mut String, model: &Loaded, flat: &FlatGraph) -> Result<()> {
    if flat.control_flow.is_empty() {
        return Ok(());
    }
    let verdicts = autodiff::control_flow::check(flat, &model.info.trainable_handles())?;
    let _ = writeln!(o, "control flow: {} node(s)", flat.control_flow.len());
    for c in &flat.control_flow {
        let line = match verdicts.iter().find(|v| v.node == c.node) {
            None => c.describe(),
            Some(v) if v.on_path() => format!(
                "{}; on the gradient path from {} to {}: not differentiable (TF's C API has no \
                 gradient for {}): training refuses it unless those variables are frozen",
                c.describe(),
                v.vars.join(", "),
                v.output.as_deref().unwrap_or("?"),
                c.op
            ),
            Some(_) => format!(
                "{}; off every gradient path (read through StopGradient): trains",
                c.describe()
            ),
        };
        let _ = writeln!(o, "  {line}");
    }
    Ok(())
}

/// The full inspection report as text. The model is audited first (`savedmodel::audit`); with
/// findings and without `Trust::Trusted`, nothing of it runs and the error lists them.
pub fn inspect(
    dir: &Path,
    signature: Option<&str>,
    tags: Option<&[String]>,
    trust: crate::savedmodel::Trust,
) -> Result<String> {
    inspect_on(dir, signature, tags, trust, None)
}

/// `inspect`, and with a `device` (`inspect --device D`) where TF runs the model's forward and
/// backward ops on it, every op that could not go there listed (`train::probe`).
pub fn inspect_on(
    dir: &Path,
    signature: Option<&str>,
    tags: Option<&[String]>,
    trust: crate::savedmodel::Trust,
    device: Option<&str>,
) -> Result<String> {
    let info = SavedModelInfo::read_tagged(dir, tags)?;
    let sig_name = signature
        .map(String::from)
        .unwrap_or_else(|| default_signature(&info));
    let sig = info.signature(&sig_name)?;
    let mut o = String::new();
    let w = |o: &mut String, s: String| {
        let _ = writeln!(o, "{s}");
    };
    match info.tf1_hub {
        true => {
            w(&mut o, format!("TF1 Hub module {}", dir.display()));
            w(
                &mut o,
                "graph variants (model.tags / --tags picks one):".into(),
            );
            for (tags, sigs) in &info.variants {
                let mark = match *tags == crate::savedmodel::tf1hub::tags_of(&info.meta) {
                    true => "  (loaded)",
                    false => "",
                };
                let shown = crate::savedmodel::tf1hub::show_tags(tags);
                w(&mut o, format!("  {shown}: {}{mark}", sigs.join(", ")));
            }
            let updates = info.update_ops();
            if !updates.is_empty() {
                let more = match updates.len() {
                    n if n > 4 => format!(", … ({n} in all)"),
                    _ => String::new(),
                };
                let shown = updates[..updates.len().min(4)].join(", ");
                w(
                    &mut o,
                    format!("update ops (run after each step): {shown}{more}"),
                );
            }
        }
        false => {
            w(&mut o, format!("SavedModel {}", dir.display()));
            w(&mut o, format!("tags: {}", info.tags.join(", ")));
        }
    }
    for name in info.signature_names() {
        let s = info.signature(&name)?;
        w(
            &mut o,
            format!(
                "signature {name}{}",
                if name == sig_name {
                    "  (inspected)"
                } else {
                    ""
                }
            ),
        );
        for t in &s.inputs {
            w(&mut o, format!("  input  {}", spec_line(t)));
        }
        for t in &s.outputs {
            w(&mut o, format!("  output {}", spec_line(t)));
        }
    }
    let vars = info.variables();
    let count = |f: &dyn Fn(&crate::savedmodel::Variable) -> bool| -> (usize, i64) {
        vars.iter().filter(|v| f(v)).fold((0, 0), |(n, p), v| {
            (n + 1, p + v.shape.iter().product::<i64>().max(0))
        })
    };
    let (nv, np) = count(&|_| true);
    let (nt, pt) = count(&|v| v.trainable);
    w(
        &mut o,
        format!("variables: {nv} ({np} parameters); trainable: {nt} ({pt} parameters)"),
    );
    let findings = crate::savedmodel::audit::audit(&info);
    if findings.is_empty() {
        w(
            &mut o,
            "audit: no op touches files, processes or the network".into(),
        );
    } else {
        crate::savedmodel::check_audit(&info, trust)?;
        w(
            &mut o,
            format!(
                "audit: {} op(s) touch files, processes or the network (loaded: --trust-model):",
                findings.len()
            ),
        );
        for f in &findings {
            w(&mut o, format!("  {f}"));
        }
    }
    let mut model = Loaded::load_parsed(info.clone(), crate::savedmodel::Trust::Trusted)?;
    let flat = inline_signature(&model.info, &sig, &model.scope.graph())?;
    let body: Vec<NodeDef> = flat
        .graph_def
        .node
        .iter()
        .filter(|n| !n.name.ends_with("/__done") && !n.name.starts_with("pretext_external/"))
        .cloned()
        .collect();
    w(
        &mut o,
        format!("serving path of '{sig_name}', inlined: {} ops", body.len()),
    );
    for (op, n) in op_histogram(&body) {
        w(&mut o, format!("  {n:6}  {op}"));
    }
    let unstrided = crate::graph::unstride::apply(&mut flat.clone(), &model.info);
    if !unstrided.is_empty() {
        w(
            &mut o,
            format!(
                "strided 1x1 convolutions trained at unit stride (oneDNN-safe rewrite): {} ({})",
                unstrided.len(),
                unstrided.join(", ")
            ),
        );
    }
    custom_gradients(&mut o, &flat);
    control_flow(&mut o, &model, &flat)?;
    let (rewritten, missing) = coverage(&mut model, &flat)?;
    if missing.is_empty() {
        let extra = if rewritten.is_empty() {
            String::new()
        } else {
            format!(" ({} node(s) through Rust fallback rules)", rewritten.len())
        };
        w(
            &mut o,
            format!("gradient coverage: all differentiable{extra}"),
        );
    } else {
        w(
            &mut o,
            "gradient coverage: NOT differentiable — no gradient for:".into(),
        );
        for (op, nodes) in &missing {
            let shown: Vec<_> = nodes.iter().take(5).cloned().collect();
            w(
                &mut o,
                format!(
                    "  {op} ({} node(s)): {}{}",
                    nodes.len(),
                    shown.join(", "),
                    if nodes.len() > 5 { ", …" } else { "" }
                ),
            );
        }
    }
    if let Some(d) = device {
        let p = crate::train::probe::placement(dir, &info, &sig_name, d)?;
        o += &p
            .markdown()
            .replacen(
                "## Placement",
                "placement of the model's forward and backward ops",
                1,
            )
            .trim_start()
            .replace("\n\n", "\n");
    }
    Ok(o)
}
