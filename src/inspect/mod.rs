//! `pretext inspect`: what a SavedModel offers pretext — tags, signatures, variables, the op
//! histogram of the inlined serving path, and whether every op on it can be differentiated.
mod gradients;

use std::fmt::Write;
use std::path::Path;

use crate::error::Result;
use crate::graph::{inline_signature, op_histogram, FlatGraph};
use crate::proto::{dtype_name, NodeDef};
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
    header(&mut o, dir, &info);
    signatures(&mut o, &info, &sig_name)?;
    variables(&mut o, &info);
    audit(&mut o, &info, trust)?;
    let mut model = Loaded::load_parsed(info.clone(), crate::savedmodel::Trust::Trusted)?;
    let flat = inline_signature(&model.info, &sig, &model.scope.graph())?;
    serving_path(&mut o, &model, &flat, &sig_name);
    gradients::custom_gradients(&mut o, &flat);
    gradients::control_flow(&mut o, &model, &flat)?;
    gradients::coverage_lines(&mut o, &mut model, &flat)?;
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

/// What was loaded: a TF1 Hub module's graph variants and update ops, or a SavedModel's tags.
fn header(o: &mut String, dir: &Path, info: &SavedModelInfo) {
    if !info.tf1_hub {
        let _ = writeln!(o, "SavedModel {}", dir.display());
        let _ = writeln!(o, "tags: {}", info.tags.join(", "));
        return;
    }
    let _ = writeln!(o, "TF1 Hub module {}", dir.display());
    let _ = writeln!(o, "graph variants (model.tags / --tags picks one):");
    for (tags, sigs) in &info.variants {
        let mark = match *tags == crate::savedmodel::tf1hub::tags_of(&info.meta) {
            true => "  (loaded)",
            false => "",
        };
        let shown = crate::savedmodel::tf1hub::show_tags(tags);
        let _ = writeln!(o, "  {shown}: {}{mark}", sigs.join(", "));
    }
    let updates = info.update_ops();
    if !updates.is_empty() {
        let more = match updates.len() {
            n if n > 4 => format!(", … ({n} in all)"),
            _ => String::new(),
        };
        let shown = updates[..updates.len().min(4)].join(", ");
        let _ = writeln!(o, "update ops (run after each step): {shown}{more}");
    }
}

/// Every signature with its inputs and outputs; the inspected one marked.
fn signatures(o: &mut String, info: &SavedModelInfo, inspected: &str) -> Result<()> {
    for name in info.signature_names() {
        let s = info.signature(&name)?;
        let mark = if name == inspected {
            "  (inspected)"
        } else {
            ""
        };
        let _ = writeln!(o, "signature {name}{mark}");
        for t in &s.inputs {
            let _ = writeln!(o, "  input  {}", spec_line(t));
        }
        for t in &s.outputs {
            let _ = writeln!(o, "  output {}", spec_line(t));
        }
    }
    Ok(())
}

/// How many variables and parameters, and how many of them are trainable.
fn variables(o: &mut String, info: &SavedModelInfo) {
    let vars = info.variables();
    let count = |f: &dyn Fn(&crate::savedmodel::Variable) -> bool| -> (usize, i64) {
        vars.iter().filter(|v| f(v)).fold((0, 0), |(n, p), v| {
            (n + 1, p + v.shape.iter().product::<i64>().max(0))
        })
    };
    let (nv, np) = count(&|_| true);
    let (nt, pt) = count(&|v| v.trainable);
    let _ = writeln!(
        o,
        "variables: {nv} ({np} parameters); trainable: {nt} ({pt} parameters)"
    );
}

/// The audit's findings (ops that touch files, processes or the network); with findings and
/// without `Trust::Trusted`, the error that lists them.
fn audit(o: &mut String, info: &SavedModelInfo, trust: crate::savedmodel::Trust) -> Result<()> {
    let findings = crate::savedmodel::audit::audit(info);
    if findings.is_empty() {
        let _ = writeln!(o, "audit: no op touches files, processes or the network");
        return Ok(());
    }
    crate::savedmodel::check_audit(info, trust)?;
    let _ = writeln!(
        o,
        "audit: {} op(s) touch files, processes or the network (loaded: --trust-model):",
        findings.len()
    );
    for f in &findings {
        let _ = writeln!(o, "  {f}");
    }
    Ok(())
}

/// The inlined serving path's op histogram, and the strided 1×1 convolutions it rewrites.
fn serving_path(o: &mut String, model: &Loaded, flat: &FlatGraph, sig_name: &str) {
    let body: Vec<NodeDef> = flat
        .graph_def
        .node
        .iter()
        .filter(|n| !n.name.ends_with("/__done") && !n.name.starts_with("pretext_external/"))
        .cloned()
        .collect();
    let _ = writeln!(
        o,
        "serving path of '{sig_name}', inlined: {} ops",
        body.len()
    );
    for (op, n) in op_histogram(&body) {
        let _ = writeln!(o, "  {n:6}  {op}");
    }
    let unstrided = crate::graph::unstride::apply(&mut flat.clone(), &model.info);
    if !unstrided.is_empty() {
        let _ = writeln!(
            o,
            "strided 1x1 convolutions trained at unit stride (oneDNN-safe rewrite): {} ({})",
            unstrided.len(),
            unstrided.join(", ")
        );
    }
}
