//! Signature inputs that take a fixed value (`model.fixed_inputs`): a signature with inputs
//! besides its image batch (a `training` flag, a dropout rate, a threshold) trains and
//! evaluates with each of those bound to a constant of the input's own dtype and shape.
use std::collections::BTreeMap;

use super::{Signature, TensorSpec};
use crate::error::{Error, Result};
use crate::proto::{dtype_name, Dim, TensorProto, TensorShapeProto};

/// A fixed input's value, typed as the signature input.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

/// One signature input bound to a value.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedInput {
    pub spec: TensorSpec,
    pub dims: Vec<u64>,
    pub values: Values,
}

const KEY: &str = "model.fixed_inputs";

/// The value's shape (nested lists: rectangular) and its leaves, in row-major order.
fn flatten<'v>(
    key: &str,
    v: &'v serde_yaml::Value,
    dims: &mut Vec<u64>,
    depth: usize,
    leaves: &mut Vec<&'v serde_yaml::Value>,
) -> Result<()> {
    let bad = |m: &str| Error::config(format!("{KEY}.{key}"), m.to_string());
    match v {
        serde_yaml::Value::Sequence(items) => {
            match dims.get(depth) {
                None => dims.push(items.len() as u64),
                Some(&d) if d == items.len() as u64 => {}
                Some(_) => return Err(bad("nested lists of unequal lengths (not a tensor)")),
            }
            for it in items {
                flatten(key, it, dims, depth + 1, leaves)?;
            }
            Ok(())
        }
        serde_yaml::Value::Number(_) | serde_yaml::Value::Bool(_) => {
            if depth != dims.len() {
                return Err(bad("a number where a list was expected (not a tensor)"));
            }
            leaves.push(v);
            Ok(())
        }
        _ => Err(bad("a number, a boolean or nested lists of them")),
    }
}

impl FixedInput {
    /// `v` as the value of signature input `spec`: its dtype (float32/64, int32/64, bool) and a
    /// shape its declared shape admits.
    pub fn new(spec: &TensorSpec, v: &serde_yaml::Value) -> Result<Self> {
        let key = format!("{KEY}.{}", spec.key);
        let (mut dims, mut leaves) = (Vec::new(), Vec::new());
        flatten(&spec.key, v, &mut dims, 0, &mut leaves)?;
        if leaves.len() as u64 != dims.iter().product::<u64>() {
            return Err(Error::config(
                key,
                "nested lists of unequal depths (not a tensor)",
            ));
        }
        if let Some(want) = &spec.shape {
            let fits = want.len() == dims.len()
                && want
                    .iter()
                    .zip(&dims)
                    .all(|(w, d)| w.is_none_or(|w| w as u64 == *d));
            if !fits {
                return Err(Error::config(
                    key,
                    format!(
                        "a value of shape {dims:?} for input '{}' of shape {}",
                        spec.key,
                        shape_text(want)
                    ),
                ));
            }
        }
        let wrong = |what: &str| {
            Error::config(
                &key,
                format!("input '{}' is {}; {what}", spec.key, dtype_name(spec.dtype)),
            )
        };
        let f = |x: &serde_yaml::Value| x.as_f64().ok_or_else(|| wrong("give numbers"));
        let i = |x: &serde_yaml::Value| x.as_i64().ok_or_else(|| wrong("give integers"));
        let values = match spec.dtype {
            1 => Values::F32(
                leaves
                    .iter()
                    .map(|x| f(x).map(|v| v as f32))
                    .collect::<Result<_>>()?,
            ),
            2 => Values::F64(leaves.iter().map(|x| f(x)).collect::<Result<_>>()?),
            3 => Values::I32(
                leaves
                    .iter()
                    .map(|x| i(x).and_then(|v| i32::try_from(v).map_err(|_| wrong("out of range"))))
                    .collect::<Result<_>>()?,
            ),
            9 => Values::I64(leaves.iter().map(|x| i(x)).collect::<Result<_>>()?),
            10 => Values::Bool(
                leaves
                    .iter()
                    .map(|x| x.as_bool().ok_or_else(|| wrong("give true or false")))
                    .collect::<Result<_>>()?,
            ),
            _ => {
                return Err(wrong(
                    "pretext fixes float, integer and boolean inputs only",
                ))
            }
        };
        Ok(FixedInput {
            spec: spec.clone(),
            dims,
            values,
        })
    }

    /// The value as a TensorProto (for a Const node standing for the input).
    pub fn proto(&self) -> TensorProto {
        let mut t = TensorProto {
            dtype: self.spec.dtype,
            tensor_shape: Some(TensorShapeProto {
                dim: self
                    .dims
                    .iter()
                    .map(|d| Dim {
                        size: *d as i64,
                        name: String::new(),
                    })
                    .collect(),
                unknown_rank: false,
            }),
            ..Default::default()
        };
        match &self.values {
            Values::F32(v) => t.float_val = v.clone(),
            Values::F64(v) => t.double_val = v.clone(),
            Values::I32(v) => t.int_val = v.clone(),
            Values::I64(v) => t.int64_val = v.clone(),
            Values::Bool(v) => t.bool_val = v.clone(),
        }
        t
    }
}

/// A fixed input's value as a typed tensor, to feed.
pub enum Held {
    F32(tensorflow::Tensor<f32>),
    F64(tensorflow::Tensor<f64>),
    I32(tensorflow::Tensor<i32>),
    I64(tensorflow::Tensor<i64>),
    Bool(tensorflow::Tensor<bool>),
}

impl Held {
    /// Feeds the value to `o` in `run`.
    pub fn add_feed<'a>(
        &'a self,
        run: &mut tensorflow::SessionRunArgs<'a>,
        o: &tensorflow::Output,
    ) {
        let (op, i) = (&o.operation, o.index);
        match self {
            Held::F32(t) => run.add_feed(op, i, t),
            Held::F64(t) => run.add_feed(op, i, t),
            Held::I32(t) => run.add_feed(op, i, t),
            Held::I64(t) => run.add_feed(op, i, t),
            Held::Bool(t) => run.add_feed(op, i, t),
        }
    }
}

impl FixedInput {
    /// The value as a tensor to feed the original signature.
    pub fn tensor(&self) -> Result<Held> {
        use crate::error::TfContext;
        let ctx = || format!("{KEY}.{}", self.spec.key);
        let d = &self.dims;
        Ok(match &self.values {
            Values::F32(v) => Held::F32(tensorflow::Tensor::new(d).with_values(v).tf_ctx(ctx)?),
            Values::F64(v) => Held::F64(tensorflow::Tensor::new(d).with_values(v).tf_ctx(ctx)?),
            Values::I32(v) => Held::I32(tensorflow::Tensor::new(d).with_values(v).tf_ctx(ctx)?),
            Values::I64(v) => Held::I64(tensorflow::Tensor::new(d).with_values(v).tf_ctx(ctx)?),
            Values::Bool(v) => Held::Bool(tensorflow::Tensor::new(d).with_values(v).tf_ctx(ctx)?),
        })
    }
}

fn shape_text(s: &[Option<i64>]) -> String {
    let d: Vec<String> = s
        .iter()
        .map(|d| d.map(|v| v.to_string()).unwrap_or("?".into()))
        .collect();
    format!("[{}]", d.join(", "))
}

impl Signature {
    /// This signature with the inputs `values` names bound to them (moved from `inputs` to
    /// `fixed`). Every key must name an input; the image batch must stay unbound.
    pub fn with_fixed(mut self, values: &BTreeMap<String, serde_yaml::Value>) -> Result<Self> {
        for (k, v) in values {
            let Some(pos) = self.inputs.iter().position(|s| &s.key == k) else {
                let keys: Vec<&str> = self.inputs.iter().map(|s| s.key.as_str()).collect();
                return Err(Error::config(
                    format!("{KEY}.{k}"),
                    format!(
                        "signature '{}' has no input '{k}' (its inputs: {})",
                        self.name,
                        keys.join(", ")
                    ),
                ));
            };
            let spec = self.inputs.remove(pos);
            self.fixed.push(FixedInput::new(&spec, v)?);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: &str, dtype: i32, shape: Option<Vec<Option<i64>>>) -> TensorSpec {
        TensorSpec {
            key: key.into(),
            tensor: format!("{key}:0"),
            dtype,
            shape,
        }
    }

    fn yaml(s: &str) -> serde_yaml::Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn values_take_the_inputs_dtype_and_shape() {
        let f = FixedInput::new(&spec("training", 10, Some(vec![])), &yaml("false")).unwrap();
        assert_eq!(f.values, Values::Bool(vec![false]));
        assert!(f.dims.is_empty());
        let f = FixedInput::new(
            &spec("w", 1, Some(vec![None, Some(2)])),
            &yaml("[[1, 2.5]]"),
        )
        .unwrap();
        assert_eq!(
            (f.dims.clone(), f.values.clone()),
            (vec![1, 2], Values::F32(vec![1.0, 2.5]))
        );
        assert_eq!(f.proto().float_val, vec![1.0, 2.5]);
    }

    #[test]
    fn mismatches_name_the_input_and_the_key() {
        let e = |s: TensorSpec, v: &str| FixedInput::new(&s, &yaml(v)).unwrap_err().to_string();
        let m = e(spec("k", 3, Some(vec![])), "0.5");
        assert!(
            m.contains("model.fixed_inputs.k") && m.contains("int32") && m.contains("integers"),
            "{m}"
        );
        let m = e(spec("k", 1, Some(vec![Some(3)])), "[1, 2]");
        assert!(m.contains("shape [2]") && m.contains("[3]"), "{m}");
        let m = e(spec("k", 1, None), "[[1], [2, 3]]");
        assert!(m.contains("unequal"), "{m}");
        let m = e(spec("k", 1, None), "[1, [2, 3]]");
        assert!(m.contains("unequal"), "{m}");
        let m = e(spec("k", 7, Some(vec![])), "1");
        assert!(m.contains("string") && m.contains("only"), "{m}");
        let sig = Signature {
            name: "s".into(),
            inputs: vec![spec("images", 1, None), spec("training", 10, Some(vec![]))],
            outputs: vec![],
            fixed: vec![],
        };
        let mut values = BTreeMap::new();
        values.insert("nope".to_string(), yaml("1"));
        let m = sig.with_fixed(&values).unwrap_err().to_string();
        assert!(
            m.contains("no input 'nope'") && m.contains("images, training"),
            "{m}"
        );
    }
}
