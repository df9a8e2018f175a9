//! Evaluation without training labels into the model: embed a labeled image set with the
//! model's current weights, then score the embeddings with a kNN classifier (cosine, k = 20,
//! similarity-weighted votes) and a linear probe (multinomial logistic regression).
pub mod probe;

use std::path::{Path, PathBuf};

use ndarray::{Array2, Axis};
use tensorflow::Tensor;

use crate::data::{decode, ImageSpec};
use crate::error::{Error, Result, TfContext};
use crate::savedmodel::{Loaded, Signature};

/// A labeled image set: `DIR/<class>/*` (split 80/20 by file order) or `DIR/{train,test}/<class>/*`.
#[derive(Debug, Clone)]
pub struct LabeledSet {
    pub classes: Vec<String>,
    pub train: Vec<(PathBuf, usize)>,
    pub test: Vec<(PathBuf, usize)>,
    /// The setting that named it (`eval.labeled`, `eval.retain`), for errors.
    pub key: &'static str,
}

fn class_files(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let folder = crate::data::ImageFolder::scan(&d, true)?;
        out.push((
            d.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string(),
            folder.files,
        ));
    }
    Ok(out)
}

impl LabeledSet {
    /// Reads the class folders of `dir` (named by `eval.labeled`).
    pub fn scan(dir: &Path) -> Result<Self> {
        Self::scan_for(dir, "eval.labeled")
    }

    /// Reads the class folders of `dir`, which the setting `key` named (errors name it).
    pub fn scan_for(dir: &Path, key: &'static str) -> Result<Self> {
        let bad = |msg: &str| Error::config(key, format!("{}: {msg}", dir.display()));
        if !dir.is_dir() {
            return Err(bad("not a directory of class folders"));
        }
        let (train, test) = (dir.join("train"), dir.join("test"));
        let set = if train.is_dir() && test.is_dir() {
            let (tr, te) = (class_files(&train)?, class_files(&test)?);
            let classes: Vec<String> = tr.iter().map(|(c, _)| c.clone()).collect();
            let label = |c: &str| classes.iter().position(|k| k == c);
            let mut s = LabeledSet {
                classes: classes.clone(),
                train: vec![],
                test: vec![],
                key,
            };
            for (c, fs) in tr {
                s.train
                    .extend(fs.into_iter().map(|f| (f, label(&c).unwrap())));
            }
            for (c, fs) in te {
                let l = label(&c)
                    .ok_or_else(|| bad(&format!("test class '{c}' has no train folder")))?;
                s.test.extend(fs.into_iter().map(|f| (f, l)));
            }
            s
        } else {
            let all = class_files(dir)?;
            let mut s = LabeledSet {
                classes: all.iter().map(|(c, _)| c.clone()).collect(),
                train: vec![],
                test: vec![],
                key,
            };
            for (l, (_, fs)) in all.into_iter().enumerate() {
                for (i, f) in fs.into_iter().enumerate() {
                    if i % 5 == 4 {
                        s.test.push((f, l))
                    } else {
                        s.train.push((f, l))
                    }
                }
            }
            s
        };
        if set.classes.len() < 2 {
            return Err(bad("needs at least two class folders"));
        }
        if set.train.is_empty() || set.test.is_empty() {
            return Err(bad("needs images in both the train and the test split"));
        }
        Ok(set)
    }
}

/// Embeds `files` with the signature's first output (rank-4 outputs average-pooled), in batches.
pub fn embed(
    model: &Loaded,
    sig: &Signature,
    spec: &ImageSpec,
    files: &[PathBuf],
    batch: usize,
) -> Result<(Array2<f32>, Vec<usize>)> {
    // A TF1 Hub module trained in its `train` variant embeds through its inference variant.
    let sig = &model.inference_signature(sig);
    let key = &sig.outputs[0].key;
    let mut rows: Vec<f32> = Vec::new();
    let mut kept = Vec::new();
    let mut dim = 0;
    for (ci, chunk) in files.chunks(batch.max(1)).enumerate() {
        let mut px = Vec::new();
        let mut n = 0;
        for (j, f) in chunk.iter().enumerate() {
            match decode(f, spec) {
                Ok(p) => {
                    px.extend(p);
                    kept.push(ci * batch + j);
                    n += 1;
                }
                Err(e) => log::warn!("skipping {}: {e}", f.display()),
            }
        }
        if n == 0 {
            continue;
        }
        let x = Tensor::new(&[
            n as u64,
            spec.height as u64,
            spec.width as u64,
            spec.channels as u64,
        ])
        .with_values(&px)
        .tf_ctx(|| "eval batch".into())?;
        let y = model.run_signature(sig, &x, key)?;
        let d = y.dims().to_vec();
        let per: usize = d[1..].iter().product::<u64>() as usize;
        let (feat, spatial) = if d.len() == 4 {
            (d[3] as usize, (d[1] * d[2]) as usize)
        } else {
            (per, 1)
        };
        dim = feat;
        for i in 0..n {
            let row = &y[i * per..(i + 1) * per];
            for c in 0..feat {
                rows.push((0..spatial).map(|p| row[p * feat + c]).sum::<f32>() / spatial as f32);
            }
        }
    }
    let n = rows.len() / dim.max(1);
    let a =
        Array2::from_shape_vec((n, dim), rows).map_err(|e| Error::graph("eval", e.to_string()))?;
    Ok((a, kept))
}

/// Rows scaled to unit L2 norm.
pub fn l2_rows(x: &Array2<f32>) -> Array2<f32> {
    let mut y = x.clone();
    for mut r in y.axis_iter_mut(Axis(0)) {
        let n = r.dot(&r).sqrt().max(1e-12);
        r.mapv_inplace(|v| v / n);
    }
    y
}

/// kNN top-1 accuracy: cosine similarity, the `k` nearest training embeddings vote with weight
/// exp(sim / 0.07) (the weighting of Wu et al. 2018).
pub fn knn_accuracy(
    train: &Array2<f32>,
    train_y: &[usize],
    test: &Array2<f32>,
    test_y: &[usize],
    k: usize,
    classes: usize,
) -> f32 {
    let (tr, te) = (l2_rows(train), l2_rows(test));
    let sims = te.dot(&tr.t());
    let mut correct = 0;
    for (i, row) in sims.axis_iter(Axis(0)).enumerate() {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        let k = k.min(idx.len());
        idx.select_nth_unstable_by(k.saturating_sub(1), |a, b| row[*b].total_cmp(&row[*a]));
        let mut votes = vec![0f32; classes];
        for &j in &idx[..k] {
            votes[train_y[j]] += (row[j] / 0.07).exp();
        }
        let pred = (0..classes)
            .max_by(|a, b| votes[*a].total_cmp(&votes[*b]).then(b.cmp(a)))
            .unwrap_or(0);
        if pred == test_y[i] {
            correct += 1;
        }
    }
    correct as f32 / test_y.len().max(1) as f32
}

/// Both scores of one model on one labeled set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    pub knn_top1: f32,
    pub linear_probe: f32,
}

/// Embeds both splits with the model's current weights and scores them.
pub fn evaluate(
    model: &Loaded,
    sig: &Signature,
    spec: &ImageSpec,
    set: &LabeledSet,
    batch: usize,
) -> Result<Scores> {
    if batch == 0 {
        return Err(Error::config("eval.batch", "must be at least 1"));
    }
    let files = |v: &[(PathBuf, usize)]| v.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
    let (tr, tr_kept) = embed(model, sig, spec, &files(&set.train), batch)?;
    let (te, te_kept) = embed(model, sig, spec, &files(&set.test), batch)?;
    for (split, kept, all) in [
        ("train", &tr_kept, &set.train),
        ("test", &te_kept, &set.test),
    ] {
        if kept.is_empty() {
            let at = all.first().map(|(p, _)| p.clone()).unwrap_or_default();
            return Err(Error::config(
                set.key,
                format!(
                    "no decodable image in the {split} split ({} file(s), e.g. {})",
                    all.len(),
                    at.display()
                ),
            ));
        }
    }
    let tr_y: Vec<usize> = tr_kept.iter().map(|&i| set.train[i].1).collect();
    let te_y: Vec<usize> = te_kept.iter().map(|&i| set.test[i].1).collect();
    let c = set.classes.len();
    Ok(Scores {
        knn_top1: knn_accuracy(&tr, &tr_y, &te, &te_y, 20, c),
        linear_probe: probe::linear_probe_accuracy(&tr, &tr_y, &te, &te_y, c),
    })
}

#[cfg(test)]
mod tests;
