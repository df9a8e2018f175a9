//! SimCLR: two augmented views through the backbone (one batched tower pass), a projection MLP
//! (batch-normalised hidden layers), and the NT-Xent loss with temperature.
use serde::{Deserialize, Serialize};
use tensorflow::{ops, Output, Scope};

use super::{batch_dims, concat, xent_mean, Activation, Head, HeadBuilder, HeadOutput};
use crate::error::{Error, Result, TfContext};

/// SimCLR settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimclrConfig {
    pub temperature: f32,
    /// Layers of the projection MLP (≥ 1; the last is linear).
    pub proj_depth: usize,
    /// Width of the hidden projection layers.
    pub proj_width: i64,
    /// Output dimension of the projection.
    pub proj_dim: i64,
}

impl Default for SimclrConfig {
    fn default() -> Self {
        SimclrConfig {
            temperature: 0.2,
            proj_depth: 2,
            proj_width: 512,
            proj_dim: 128,
        }
    }
}

impl SimclrConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::config(
                "head.temperature",
                format!("{} must be > 0", self.temperature),
            ));
        }
        if !(1..=8).contains(&self.proj_depth) {
            return Err(Error::config(
                "head.proj_depth",
                format!("{} is outside [1, 8]", self.proj_depth),
            ));
        }
        if self.proj_width < 1 || self.proj_dim < 1 {
            return Err(Error::config(
                "head.proj_width",
                "proj_width and proj_dim must be ≥ 1",
            ));
        }
        Ok(())
    }
}

fn scalar<T: tensorflow::TensorType>(v: T, s: &mut Scope) -> Result<Output> {
    Ok(ops::constant(v, s).tf_ctx(|| "constant".into())?.into())
}

fn ints(v: &[i32], s: &mut Scope) -> Result<Output> {
    Ok(ops::constant(v, s).tf_ctx(|| "constant".into())?.into())
}

/// Rows of `z` scaled to unit L2 norm.
pub fn l2_normalize(s: &mut Scope, z: Output) -> Result<Output> {
    let ctx = || "L2 normalisation".to_string();
    let sq = ops::square(z.clone(), s).tf_ctx(ctx)?;
    let axis = ints(&[1], s)?;
    let n = ops::Sum::new()
        .keep_dims(true)
        .build(sq, axis, s)
        .tf_ctx(ctx)?;
    let n = ops::maximum(n, scalar(1e-12f32, s)?, s).tf_ctx(ctx)?;
    let r = ops::rsqrt(n, s).tf_ctx(ctx)?;
    Ok(ops::mul(z, r, s).tf_ctx(ctx)?.into())
}

/// NT-Xent (normalised temperature-scaled cross entropy) of paired embeddings `z1[i]` ↔ `z2[i]`:
/// each of the 2N embeddings must pick its partner among the other 2N − 1.
pub fn nt_xent(s: &mut Scope, z1: Output, z2: Output, temperature: f32) -> Result<Output> {
    let ctx = || "building the NT-Xent loss".to_string();
    let zero = scalar(0i32, s)?;
    let one = scalar(1i32, s)?;
    let n_dims = batch_dims(s, z1.clone())?;
    let z = concat(s, &[z1, z2], 0)?;
    let z = l2_normalize(s, z)?;
    let sim = ops::MatMul::new()
        .transpose_b(true)
        .build(z.clone(), z, s)
        .tf_ctx(ctx)?;
    let sim = ops::mul(sim, scalar(1.0 / temperature, s)?, s).tf_ctx(ctx)?;
    let scalar_shape = ints(&[], s)?;
    let n: Output = ops::reshape(n_dims, scalar_shape, s).tf_ctx(ctx)?.into();
    let two_n: Output = ops::mul(n.clone(), scalar(2i32, s)?, s).tf_ctx(ctx)?.into();
    let one_dim = ints(&[1], s)?;
    let dims = ops::reshape(two_n.clone(), one_dim, s).tf_ctx(ctx)?;
    let big = ops::fill(dims, scalar(1e9f32, s)?, s).tf_ctx(ctx)?;
    let mask = ops::MatrixDiag::new().build(big, s).tf_ctx(ctx)?;
    let logits = ops::sub(sim, mask, s).tf_ctx(ctx)?;
    let partners_of_first = ops::range(n.clone(), two_n.clone(), one.clone(), s).tf_ctx(ctx)?;
    let partners_of_second = ops::range(zero.clone(), n, one, s).tf_ctx(ctx)?;
    let labels = concat(s, &[partners_of_first.into(), partners_of_second.into()], 0)?;
    xent_mean(s, logits.into(), labels, two_n)
}

impl Head for SimclrConfig {
    fn kind(&self) -> &'static str {
        "simclr"
    }

    fn views(&self) -> (bool, usize) {
        (false, 2)
    }

    fn build(&self, b: &mut HeadBuilder) -> Result<HeadOutput> {
        self.validate()?;
        let ctx = || "building the SimCLR head".to_string();
        let x = b.stacked_views(&[0, 1])?;
        let h = b.tower(x)?;
        let mut h = b.pooled(h)?;
        let mut d = b.static_dim(&h, 1)?;
        for i in 0..self.proj_depth - 1 {
            h = b.dense(
                &format!("simclr/proj{i}"),
                h,
                d,
                self.proj_width,
                Activation::Linear,
            )?;
            h = b.batch_norm(&format!("simclr/proj{i}_bn"), h, self.proj_width)?;
            h = ops::relu(h, &mut b.scope).tf_ctx(ctx)?.into();
            d = self.proj_width;
        }
        let z = b.dense(
            &format!("simclr/proj{}", self.proj_depth - 1),
            h,
            d,
            self.proj_dim,
            Activation::Linear,
        )?;
        let s = &mut b.scope;
        let axis = scalar(0i32, s)?;
        let tensors = vec![("simclr/projection".to_string(), z.clone())];
        let halves = ops::Split::new()
            .num_split(2)
            .build(axis, z, s)
            .tf_ctx(ctx)?;
        let loss = nt_xent(
            s,
            Output {
                operation: halves.clone(),
                index: 0,
            },
            Output {
                operation: halves,
                index: 1,
            },
            self.temperature,
        )?;
        Ok(HeadOutput {
            loss: loss.clone(),
            summaries: vec![("loss/simclr".into(), loss)],
            tensors,
            ema: Vec::new(),
            post_assign: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorflow::{Session, SessionOptions, SessionRunArgs, Tensor};

    fn matrix(v: &serde_json::Value) -> Tensor<f32> {
        let rows = v.as_array().unwrap();
        let flat: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        Tensor::new(&[rows.len() as u64, (flat.len() / rows.len()) as u64])
            .with_values(&flat)
            .unwrap()
    }

    /// NT-Xent equals the TF Python reference (scripts/reference/ntxent.py).
    #[test]
    fn nt_xent_matches_python_reference() {
        let g: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/golden/ntxent.json")).unwrap();
        for case in g["cases"].as_array().unwrap() {
            let mut s = Scope::new_root_scope();
            let z1: Output = ops::constant(matrix(&case["z1"]), &mut s).unwrap().into();
            let z2: Output = ops::constant(matrix(&case["z2"]), &mut s).unwrap().into();
            let tau = case["temperature"].as_f64().unwrap() as f32;
            let loss = nt_xent(&mut s, z1, z2, tau).unwrap();
            let sess = Session::new(&SessionOptions::new(), &s.graph()).unwrap();
            let mut run = SessionRunArgs::new();
            let tok = run.request_fetch(&loss.operation, loss.index);
            sess.run(&mut run).unwrap();
            let got: Tensor<f32> = run.fetch(tok).unwrap();
            let want = case["loss"].as_f64().unwrap() as f32;
            assert!(
                ((got[0] - want) / want).abs() <= 1e-5,
                "tau {tau}: pretext {} vs TF Python {want}",
                got[0]
            );
        }
    }

    #[test]
    fn temperature_must_be_positive() {
        let c = SimclrConfig {
            temperature: 0.0,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("head.temperature") && e.contains("> 0"), "{e}");
    }
}
