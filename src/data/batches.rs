//! The order images are served in: a seeded shuffle per epoch over a `Dataset`, decoded and
//! augmented in parallel batch by batch, unreadable images dropped from the rotation (counted,
//! each named once), and a position (`BatchesState`) that a checkpoint records and a resume
//! restores exactly.
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use tensorflow::Tensor;

use super::decode::Need;
use super::source::Dataset;
use super::{augment, clean_view_into, to_layout_into, ImageSpec, ViewBatch, ViewPlan};
use crate::error::{Error, Result};

/// Where a `Batches` stands: enough to continue the same order after a restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchesState {
    /// Number of images when the state was taken (a changed dataset cannot resume exactly).
    pub files: usize,
    pub epoch: u64,
    pub pos: usize,
    pub served: u64,
    pub images_read: u64,
    /// Indices of images found unreadable.
    pub bad: Vec<usize>,
    /// (image, reason) of every image skipped so far.
    pub skipped: Vec<(String, String)>,
}

/// Shuffled, endless batches over a dataset.
pub struct Batches {
    data: Arc<Dataset>,
    spec: ImageSpec,
    order: Vec<u32>,
    pos: usize,
    epoch: u64,
    seed: u64,
    bad: Vec<bool>,
    /// (image, reason) of every image skipped so far.
    pub skipped: Vec<(String, String)>,
    /// Images decoded so far.
    pub images_read: u64,
    /// Samples served so far (seeds each sample's augmentations).
    served: u64,
    shuffled: bool,
    /// Decode large JPEGs at a reduced IDCT scale (see `decode`).
    jpeg_scaling: bool,
    /// Serve only one replica's share of every global batch (`shard`).
    shard: Option<Shard>,
}

/// One replica's part of the order: of every `replicas * share` consecutive positions of the
/// (epoch after epoch) order, the `share` starting at `index * share`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: usize,
    pub replicas: usize,
    pub share: usize,
}

impl Shard {
    /// Whether global position `p` of the order is this replica's.
    fn owns(&self, p: u64) -> bool {
        (p / self.share as u64) % self.replicas as u64 == self.index as u64
    }
}

impl Batches {
    pub fn new(data: Arc<Dataset>, spec: ImageSpec, seed: u64) -> Self {
        let n = data.len();
        let mut b = Batches {
            data,
            spec,
            order: Vec::new(),
            pos: 0,
            epoch: 0,
            seed,
            bad: vec![false; n],
            skipped: Vec::new(),
            images_read: 0,
            served: 0,
            shuffled: true,
            jpeg_scaling: true,
            shard: None,
        };
        b.shuffle();
        b
    }

    /// `new`, served in index order when `shuffle` is false (`sequential`).
    pub fn ordered(data: Arc<Dataset>, spec: ImageSpec, seed: u64, shuffle: bool) -> Self {
        let b = Batches::new(data, spec, seed);
        if shuffle {
            b
        } else {
            b.sequential()
        }
    }

    /// The dataset served.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.data
    }

    /// The image layout served.
    pub fn spec(&self) -> &ImageSpec {
        &self.spec
    }

    /// The position to record in a checkpoint.
    pub fn state(&self) -> BatchesState {
        BatchesState {
            files: self.data.len(),
            epoch: self.epoch,
            pos: self.pos,
            served: self.served,
            images_read: self.images_read,
            bad: (0..self.bad.len()).filter(|&i| self.bad[i]).collect(),
            skipped: self.skipped.clone(),
        }
    }

    /// Continues from a recorded position (the same images, in the same order).
    pub fn restore(&mut self, st: &BatchesState) -> Result<()> {
        if st.files != self.data.len() {
            return Err(Error::config(
                "data",
                format!(
                    "the checkpoint was taken over {} images, the data now holds {}; resume needs the same data",
                    st.files,
                    self.data.len()
                ),
            ));
        }
        self.epoch = st.epoch;
        self.shuffle();
        self.pos = st.pos;
        self.served = st.served;
        self.images_read = st.images_read;
        self.bad = vec![false; st.files];
        for &i in &st.bad {
            if let Some(b) = self.bad.get_mut(i) {
                *b = true;
            }
        }
        self.skipped = st.skipped.clone();
        Ok(())
    }

    /// Decode every image at full size (no reduced-scale JPEG decoding).
    pub fn full_size_decoding(mut self) -> Self {
        self.jpeg_scaling = false;
        self
    }

    /// Images in index order every epoch instead of a seeded shuffle.
    pub fn sequential(mut self) -> Self {
        self.shuffled = false;
        self.shuffle();
        self
    }

    /// Serves replica `shard.index`'s share of every global batch: what that replica gets when
    /// one process splits the batch, read by the replica's own process. Each image's
    /// augmentations are drawn from its global position, so without unreadable images the
    /// replicas together serve exactly the unsharded batches (an unreadable image is replaced
    /// from the replica's own part of the order).
    pub fn sharded(mut self, shard: Shard) -> Result<Self> {
        if shard.replicas == 0 || shard.share == 0 || shard.index >= shard.replicas {
            return Err(Error::internal(
                "sharding the input",
                format!("{shard:?} is not a replica's share"),
            ));
        }
        self.shard = Some(shard);
        Ok(self)
    }

    /// Number of images in the rotation (readable or not yet known to be unreadable).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn shuffle(&mut self) {
        self.order = (0..self.data.len() as u32).collect();
        if self.shuffled {
            let s = self.seed ^ self.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            self.order.shuffle(&mut ChaCha8Rng::seed_from_u64(s));
        }
    }

    /// Next `n` image indices in shuffled order, skipping known-bad images (and positions of
    /// other replicas' shares), each with the number its augmentations are drawn from: the
    /// samples served before it, or its global position when sharded.
    fn take(&mut self, n: usize) -> Result<Vec<(usize, u64)>> {
        if self.bad.iter().all(|b| *b) {
            return Err(Error::NoImages {
                path: self.data.root.clone(),
                skipped: self.skipped.len(),
            });
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pos >= self.order.len() {
                self.pos = 0;
                self.epoch += 1;
                self.shuffle();
            }
            let i = self.order[self.pos] as usize;
            let global = self.epoch * self.order.len() as u64 + self.pos as u64;
            self.pos += 1;
            let sample = match &self.shard {
                Some(sh) if !sh.owns(global) => continue,
                Some(_) => global,
                None => self.served + out.len() as u64,
            };
            if !self.bad[i] {
                out.push((i, sample));
            }
        }
        Ok(out)
    }

    /// The next batch as a flat NHWC buffer of `n` clean images.
    pub fn next_batch(&mut self, n: usize) -> Result<Vec<f32>> {
        let plan = ViewPlan {
            clean: true,
            augmented: 0,
            augment: augment::AugmentConfig::default(),
        };
        let clean = self.next_views(n, &plan)?.clean;
        Ok(clean.map(|t| t.to_vec()).unwrap_or_default())
    }

    /// The next `n` images, each decoded once and turned into the views `plan` asks for; each
    /// view's batch is one NHWC tensor that the decoding threads write in place.
    pub fn next_views(&mut self, n: usize, plan: &ViewPlan) -> Result<ViewBatch> {
        self.next_views_reusing(n, plan, &mut Vec::new())
    }

    /// `next_views` writing into tensors taken from `spare` (those of earlier batches, handed
    /// back after their step) where their shape fits, allocating only what `spare` lacks: a
    /// fresh allocation per batch costs page faults, and its release TLB shootdowns that
    /// interrupt the session's threads on the other cores.
    pub fn next_views_reusing(
        &mut self,
        n: usize,
        plan: &ViewPlan,
        spare: &mut Vec<Tensor<f32>>,
    ) -> Result<ViewBatch> {
        let s = &self.spec;
        let per = (s.height * s.width * s.channels) as usize;
        let dims = [n as u64, s.height as u64, s.width as u64, s.channels as u64];
        let bufs = plan.clean as usize + plan.augmented;
        spare.retain(|t| t.dims() == dims);
        // Every slot is overwritten below, so a reused tensor's old contents never show.
        let mut outs: Vec<Tensor<f32>> = (0..bufs)
            .map(|_| spare.pop().unwrap_or_else(|| Tensor::new(&dims)))
            .collect();
        let mut got = 0;
        while got < n {
            let idx = self.take(n - got)?;
            let (spec, seed, data) = (&self.spec, self.seed, &self.data);
            // The clean view never needs more resolution than the smallest crop does.
            let need = self.jpeg_scaling.then(|| {
                let aug = (plan.augmented > 0).then_some(&plan.augment);
                Need::new(spec.width, spec.height, aug)
            });
            // Image k of this round writes its views into slot got + k of every buffer.
            let mut slots: Vec<Vec<&mut [f32]>> =
                idx.iter().map(|_| Vec::with_capacity(bufs)).collect();
            for o in outs.iter_mut() {
                for (s, c) in slots.iter_mut().zip(o[got * per..].chunks_mut(per)) {
                    s.push(c);
                }
            }
            let results: Vec<std::result::Result<(), String>> = idx
                .par_iter()
                .zip(slots.into_par_iter())
                .map(|(&(i, sample), mut dst)| {
                    let img = data.load_scaled(i, need.as_ref())?;
                    let mut dst = dst.iter_mut();
                    if plan.clean {
                        clean_view_into(&img, spec, dst.next().expect("clean slot"));
                    }
                    for (v, d) in dst.enumerate() {
                        let mut rng = augment::view_rng(seed, sample, v as u64);
                        let px = augment::augment(
                            &img,
                            spec.width,
                            spec.height,
                            &plan.augment,
                            &mut rng,
                        );
                        to_layout_into(&px, spec, d);
                    }
                    Ok(())
                })
                .collect();
            self.served += idx.len() as u64;
            // Good images move down over the slots of failed ones.
            let start = got;
            for (k, (&(i, _), r)) in idx.iter().zip(results).enumerate() {
                match r {
                    Ok(()) => {
                        if got != start + k {
                            for o in outs.iter_mut() {
                                o.copy_within((start + k) * per..(start + k + 1) * per, got * per);
                            }
                        }
                        self.images_read += 1;
                        got += 1;
                    }
                    Err(reason) => {
                        if !self.bad[i] {
                            let name = self.data.name(i);
                            log::warn!("skipping {name}: {reason}");
                            self.bad[i] = true;
                            self.skipped.push((name, reason));
                        }
                    }
                }
            }
        }
        let mut outs = outs.into_iter();
        Ok(ViewBatch {
            clean: if plan.clean { outs.next() } else { None },
            views: outs.collect(),
        })
    }
}
