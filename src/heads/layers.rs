//! Graph building blocks shared by the heads: trainable variables, dense and convolution
//! layers, batch normalisation, cross entropy, list-input ops the crate's generated builders
//! cannot express, activations.
use tensorflow::{ops, DataType, Output, Scope, Shape};

use super::{HeadBuilder, HeadVar};
use crate::error::{Result, TfContext};

/// Batch normalisation of `x` over axis 0 with batch statistics, scale `1 + gamma` and offset
/// `beta` (gamma is stored as an offset from 1 so that zero-initialised variables start at 1).
pub fn normalize(s: &mut Scope, x: Output, gamma: Output, beta: Output) -> Result<Output> {
    let ctx = || "batch normalisation".to_string();
    let axis = ops::constant(&[0i32][..], s).tf_ctx(ctx)?;
    let m = ops::Mean::new()
        .keep_dims(true)
        .build(x.clone(), axis.clone(), s)
        .tf_ctx(ctx)?;
    let d = ops::sub(x, m, s).tf_ctx(ctx)?;
    let sq = ops::square(d.clone(), s).tf_ctx(ctx)?;
    let v = ops::Mean::new()
        .keep_dims(true)
        .build(sq, axis, s)
        .tf_ctx(ctx)?;
    let v = ops::add(v, ops::constant(1e-3f32, s).tf_ctx(ctx)?, s).tf_ctx(ctx)?;
    let r = ops::rsqrt(v, s).tf_ctx(ctx)?;
    let y = ops::mul(d, r, s).tf_ctx(ctx)?;
    let g = ops::add(gamma, ops::constant(1.0f32, s).tf_ctx(ctx)?, s).tf_ctx(ctx)?;
    let y = ops::mul(y, g, s).tf_ctx(ctx)?;
    Ok(ops::add(y, beta, s).tf_ctx(ctx)?.into())
}

/// The batch size of `x` as a shape-[1] int32 tensor (`shape(x)[:1]`).
pub fn batch_dims(s: &mut Scope, x: Output) -> Result<Output> {
    let ctx = || "batch size".to_string();
    let shape = ops::shape(x, s).tf_ctx(ctx)?;
    let (b0, b1) = (
        ops::constant(&[0i32][..], s).tf_ctx(ctx)?,
        ops::constant(&[1i32][..], s).tf_ctx(ctx)?,
    );
    Ok(ops::StridedSlice::new()
        .build(shape, b0, b1.clone(), b1, s)
        .tf_ctx(ctx)?
        .into())
}

/// Mean softmax cross entropy of `logits` against int32 class `labels` among `depth` classes
/// (dense on one-hot labels: TF's C++ gradient registry has none for the sparse op).
pub fn xent_mean(s: &mut Scope, logits: Output, labels: Output, depth: Output) -> Result<Output> {
    let ctx = || "cross entropy".to_string();
    let (on, off) = (
        ops::constant(1.0f32, s).tf_ctx(ctx)?,
        ops::constant(0.0f32, s).tf_ctx(ctx)?,
    );
    let onehot = ops::OneHot::new()
        .build(labels, depth, on, off, s)
        .tf_ctx(ctx)?;
    let xent = ops::SoftmaxCrossEntropyWithLogits::new()
        .build(logits, onehot, s)
        .tf_ctx(ctx)?;
    let axes = ops::constant(&[0i32][..], s).tf_ctx(ctx)?;
    Ok(ops::mean(
        Output {
            operation: xent,
            index: 0,
        },
        axes,
        s,
    )
    .tf_ctx(ctx)?
    .into())
}

pub(crate) fn activate(
    y: Output,
    act: Activation,
    s: &mut Scope,
    ctx: &dyn Fn() -> String,
) -> Result<Output> {
    Ok(match act {
        Activation::Linear => y,
        Activation::Relu => ops::relu(y, s).tf_ctx(ctx)?.into(),
        Activation::Sigmoid => ops::sigmoid(y, s).tf_ctx(ctx)?.into(),
    })
}

/// Stateless uniform [0, 1) (`normal`: standard normal) draws of `shape` from an int64[2] seed
/// tensor: the same seed gives the same draw in any session, so a resumed run repeats them.
pub fn random(s: &mut Scope, shape: Output, seed: Output, normal: bool) -> Result<Output> {
    let ctx = || "stateless random draw".to_string();
    Ok(if normal {
        ops::StatelessRandomNormal::new()
            .dtype(tensorflow::DataType::Float)
            .build(shape, seed, s)
            .tf_ctx(ctx)?
            .into()
    } else {
        ops::StatelessRandomUniform::new()
            .dtype(tensorflow::DataType::Float)
            .build(shape, seed, s)
            .tf_ctx(ctx)?
            .into()
    })
}

/// Layer activations heads use.
#[derive(Debug, Clone, Copy)]
pub enum Activation {
    Linear,
    Relu,
    Sigmoid,
}

/// Parameters and the layers built from them: what a head's decoder or projector is made of.
impl HeadBuilder<'_> {
    /// A new float variable initialised Glorot-uniform (or zeros when `fan` is None).
    pub fn variable(
        &mut self,
        name: &str,
        shape: &[i64],
        fan: Option<(i64, i64)>,
    ) -> Result<Output> {
        let ctx = || format!("head variable {name}");
        let mut s = self.scope.new_sub_scope(name);
        let sh = Shape::from(Some(shape.iter().map(|&d| Some(d)).collect::<Vec<_>>()));
        let h: Output = ops::VarHandleOp::new()
            .dtype(DataType::Float)
            .shape(sh)
            .shared_name(self.scope.get_unique_name_for_op(name))
            .build(&mut s.with_op_name("var"))
            .tf_ctx(ctx)?
            .into();
        let dims = ops::constant(&shape.to_vec()[..], &mut s).tf_ctx(ctx)?;
        let init: Output = match fan {
            Some((fi, fo)) => {
                let limit = (6.0 / (fi + fo) as f32).sqrt();
                let seed = self.next_seed();
                let u = ops::RandomUniform::new()
                    .dtype(DataType::Float)
                    .seed(self.seed)
                    .seed2(seed)
                    .build(dims, &mut s)
                    .tf_ctx(ctx)?;
                let a = ops::mul(u, ops::constant(2.0 * limit, &mut s).tf_ctx(ctx)?, &mut s)
                    .tf_ctx(ctx)?;
                ops::sub(a, ops::constant(limit, &mut s).tf_ctx(ctx)?, &mut s)
                    .tf_ctx(ctx)?
                    .into()
            }
            None => ops::fill(dims, ops::constant(0.0f32, &mut s).tf_ctx(ctx)?, &mut s)
                .tf_ctx(ctx)?
                .into(),
        };
        self.init_ops
            .push(ops::assign_variable_op(h.clone(), init, &mut s).tf_ctx(ctx)?);
        let value: Output = ops::ReadVariableOp::new()
            .dtype(DataType::Float)
            .build(h.clone(), &mut s)
            .tf_ctx(ctx)?
            .into();
        self.vars.push(HeadVar {
            name: format!("head/{name}"),
            handle: h,
            value: value.clone(),
        });
        Ok(value)
    }

    /// A dense layer `act(x W + b)` from `fan_in` to `fan_out` units.
    pub fn dense(
        &mut self,
        name: &str,
        x: Output,
        fan_in: i64,
        fan_out: i64,
        act: Activation,
    ) -> Result<Output> {
        let kernel = [fan_in, fan_out];
        self.layer(name, "dense", &kernel, (fan_in, fan_out), act, |w, s| {
            Ok(ops::mat_mul(x, w, s)?.into())
        })
    }

    /// A `k`×`k` stride-1 SAME convolution with bias and activation.
    pub fn conv2d(
        &mut self,
        name: &str,
        x: Output,
        k: i64,
        cin: i64,
        cout: i64,
        act: Activation,
    ) -> Result<Output> {
        let kernel = [k, k, cin, cout];
        self.layer(
            name,
            "conv",
            &kernel,
            (k * k * cin, k * k * cout),
            act,
            |w, s| {
                let conv = ops::Conv2D::new().strides(vec![1, 1, 1, 1]).padding("SAME");
                Ok(conv.build(x, w, s)?.into())
            },
        )
    }

    /// `act(op(x, kernel) + bias)`: a Glorot-initialised kernel of `shape` (`fan` in and out)
    /// and a zero bias as wide as its last dimension, created in that order.
    fn layer(
        &mut self,
        name: &str,
        what: &str,
        shape: &[i64],
        fan: (i64, i64),
        act: Activation,
        op: impl FnOnce(Output, &mut Scope) -> std::result::Result<Output, tensorflow::Status>,
    ) -> Result<Output> {
        let w = self.variable(&format!("{name}/kernel"), shape, Some(fan))?;
        let units = shape[shape.len() - 1];
        let b = self.variable(&format!("{name}/bias"), &[units], None)?;
        let ctx = || format!("{what} layer {name}");
        let s = &mut self.scope;
        let y = op(w, s).tf_ctx(ctx)?;
        let y = ops::bias_add(y, b, s).tf_ctx(ctx)?;
        activate(y.into(), act, s, &ctx)
    }
}
