//! Running the loaded graph: a signature as its inference variant, float tensors in and out,
//! and the original signature through its function calls (the oracle `eval` and the tests
//! compare against).
use super::{tf1hub, Loaded, Signature, INFERENCE_PREFIX};
use crate::error::{Error, Result, TfContext};
use crate::proto::TensorRef;

impl Loaded {
    /// The signature to evaluate with: for a TF1 Hub module loaded in its `train` variant, the
    /// same signature of its inference variant (imported beside it, reading the same
    /// variables), so embeddings use the moving statistics; otherwise `sig` itself.
    pub fn inference_signature(&self, sig: &Signature) -> Signature {
        let Some(inference) = self.info.inference.as_ref() else {
            return sig.clone();
        };
        let Some(sd) = inference.signature_def.get(&sig.name) else {
            log::warn!(
                "the inference variant has no signature '{}': evaluating with the {} variant (batch statistics)",
                sig.name,
                tf1hub::show_tags(&self.info.tags)
            );
            return sig.clone();
        };
        let mut s = sig.clone();
        type Infos = std::collections::HashMap<String, crate::proto::TensorInfo>;
        let remap = |t: &mut super::TensorSpec, map: &Infos| {
            if let Some(i) = map.get(&t.key) {
                t.tensor = format!("{INFERENCE_PREFIX}/{}", i.name);
            }
        };
        for t in s.inputs.iter_mut() {
            remap(t, &sd.inputs);
        }
        for f in s.fixed.iter_mut() {
            remap(&mut f.spec, &sd.inputs);
        }
        for t in s.outputs.iter_mut() {
            remap(t, &sd.outputs);
        }
        s
    }

    /// Runs the session: feeds float tensors, fetches one float tensor.
    pub fn run_f32(
        &self,
        feeds: &[(&tensorflow::Output, &tensorflow::Tensor<f32>)],
        fetch: &tensorflow::Output,
    ) -> Result<tensorflow::Tensor<f32>> {
        let mut run = tensorflow::SessionRunArgs::new();
        for (o, t) in feeds {
            run.add_feed(&o.operation, o.index, t);
        }
        let tok = run.request_fetch(&fetch.operation, fetch.index);
        let name = fetch.operation.name().unwrap_or_default();
        self.session
            .run(&mut run)
            .tf_ctx(|| format!("running the graph up to '{name}'"))?;
        run.fetch(tok).tf_ctx(|| format!("fetching '{name}'"))
    }

    /// Runs the original signature (through its function calls) on `x`, fetching output `key`.
    pub fn run_signature(
        &self,
        sig: &Signature,
        x: &tensorflow::Tensor<f32>,
        key: &str,
    ) -> Result<tensorflow::Tensor<f32>> {
        let inp = self.output(TensorRef::parse(&sig.inputs[0].tensor))?;
        let out = sig
            .outputs
            .iter()
            .find(|o| o.key == key)
            .ok_or_else(|| Error::graph(key, "no such signature output"))?;
        let out = self.output(TensorRef::parse(&out.tensor))?;
        // Inputs with a fixed value are fed it.
        let fixed = sig
            .fixed
            .iter()
            .map(|f| Ok((self.output(TensorRef::parse(&f.spec.tensor))?, f.tensor()?)))
            .collect::<Result<Vec<_>>>()?;
        // Integer pixel inputs take the float pixels rounded and clipped to 0..255.
        let px = |v: &f32| v.round_ties_even().clamp(0.0, 255.0);
        let (u8s, i32s);
        let mut run = tensorflow::SessionRunArgs::new();
        for (o, t) in &fixed {
            t.add_feed(&mut run, o);
        }
        match sig.inputs[0].dtype {
            4 => {
                let v: Vec<u8> = x.iter().map(|v| px(v) as u8).collect();
                u8s = tensorflow::Tensor::new(x.dims())
                    .with_values(&v)
                    .tf_ctx(|| "pixels".into())?;
                run.add_feed(&inp.operation, inp.index, &u8s);
            }
            3 => {
                let v: Vec<i32> = x.iter().map(|v| px(v) as i32).collect();
                i32s = tensorflow::Tensor::new(x.dims())
                    .with_values(&v)
                    .tf_ctx(|| "pixels".into())?;
                run.add_feed(&inp.operation, inp.index, &i32s);
            }
            _ => run.add_feed(&inp.operation, inp.index, x),
        }
        let tok = run.request_fetch(&out.operation, out.index);
        self.session
            .run(&mut run)
            .tf_ctx(|| format!("running signature {}", sig.name))?;
        run.fetch(tok).tf_ctx(|| format!("fetching '{key}'"))
    }
}
