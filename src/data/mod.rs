//! Unlabeled images in, batches out: scans an image folder, decodes JPEG/PNG/WebP with the
//! `image` crate on worker threads, resizes to the model's input size, and skips (and counts)
//! files that cannot be read.
use std::path::{Path, PathBuf};

pub mod augment;

use image::imageops::FilterType;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// File extensions treated as images.
pub const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// How images become input tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    pub height: u32,
    pub width: u32,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: u32,
    /// Pixel values are mapped linearly from [0, 255] to this range.
    pub range: (f32, f32),
}

/// The image files of a folder, in sorted order.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub files: Vec<PathBuf>,
    /// Files without an image extension, ignored.
    pub ignored: usize,
}

fn has_extension(p: &Path, extensions: &[String]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            let e = e.to_ascii_lowercase();
            extensions.iter().any(|x| x.eq_ignore_ascii_case(&e))
        })
        .unwrap_or(false)
}

/// The default extensions, as owned strings.
pub fn default_extensions() -> Vec<String> {
    EXTENSIONS.iter().map(|e| e.to_string()).collect()
}

impl ImageFolder {
    /// Lists image files under `root` (recursively if asked).
    pub fn scan(root: &Path, recursive: bool) -> Result<Self> {
        Self::scan_all(&[root.to_path_buf()], recursive, &default_extensions())
    }

    /// Lists files with one of `extensions` under every root (recursively if asked); the
    /// union, sorted. The first root names the set in errors.
    pub fn scan_all(roots: &[PathBuf], recursive: bool, extensions: &[String]) -> Result<Self> {
        let mut all = ImageFolder {
            root: roots.first().cloned().unwrap_or_default(),
            files: Vec::new(),
            ignored: 0,
        };
        for r in roots {
            let (files, ignored) = Self::scan_one(r, recursive, extensions)?;
            all.files.extend(files);
            all.ignored += ignored;
        }
        all.files.sort();
        all.files.dedup();
        if all.files.is_empty() {
            return Err(Error::NoImages {
                path: all.root,
                skipped: 0,
            });
        }
        Ok(all)
    }

    fn scan_one(
        root: &Path,
        recursive: bool,
        extensions: &[String],
    ) -> Result<(Vec<PathBuf>, usize)> {
        if !root.is_dir() {
            let why = if root.exists() {
                "is not a directory; pass the folder that holds the images"
            } else {
                "image folder does not exist"
            };
            return Err(Error::io(
                root,
                std::io::Error::new(std::io::ErrorKind::NotFound, why),
            ));
        }
        let mut files = Vec::new();
        let mut ignored = 0;
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            let rd = std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?;
            for e in rd {
                let e = e.map_err(|e| Error::io(&d, e))?;
                let p = e.path();
                if p.is_dir() {
                    if recursive {
                        dirs.push(p);
                    }
                } else if has_extension(&p, extensions) {
                    files.push(p);
                } else {
                    ignored += 1;
                }
            }
        }
        Ok((files, ignored))
    }
}

/// Reads and decodes one image file.
pub fn load(path: &Path) -> std::result::Result<image::DynamicImage, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    image::load_from_memory(&bytes).map_err(|e| e.to_string())
}

/// Maps RGB pixels in [0, 1] (HWC) to `spec`'s channels and value range.
fn to_layout(rgb: Vec<f32>, spec: &ImageSpec) -> Vec<f32> {
    let (lo, hi) = spec.range;
    let map = |v: f32| v * (hi - lo) + lo;
    match spec.channels {
        1 => rgb
            .chunks(3)
            .map(|p| map(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]))
            .collect(),
        _ => rgb.into_iter().map(map).collect(),
    }
}

/// The clean view: resized to fill `spec`'s size and center-cropped (HWC, f32).
pub fn clean_view(img: &image::DynamicImage, spec: &ImageSpec) -> Vec<f32> {
    let img = img.resize_to_fill(spec.width, spec.height, FilterType::Triangle);
    let (lo, hi) = spec.range;
    let scale = (hi - lo) / 255.0;
    let px: Vec<u8> = match spec.channels {
        1 => img.to_luma8().into_raw(),
        _ => img.to_rgb8().into_raw(),
    };
    px.into_iter().map(|v| v as f32 * scale + lo).collect()
}

/// Decodes one file into `spec`'s layout (HWC, f32), resized to fill and center-cropped.
pub fn decode(path: &Path, spec: &ImageSpec) -> std::result::Result<Vec<f32>, String> {
    Ok(clean_view(&load(path)?, spec))
}

/// Which views of each image a step needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewPlan {
    pub clean: bool,
    /// Number of independently augmented views.
    pub augmented: usize,
    pub augment: augment::AugmentConfig,
}

/// One step's images: the clean batch (if planned) and each augmented view's batch.
#[derive(Debug, Clone, Default)]
pub struct ViewBatch {
    pub clean: Option<Vec<f32>>,
    pub views: Vec<Vec<f32>>,
}

/// Where a `Batches` stands: enough to continue the same order after a restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchesState {
    /// Number of files when the state was taken (a changed folder cannot resume exactly).
    pub files: usize,
    pub epoch: u64,
    pub pos: usize,
    pub served: u64,
    pub images_read: u64,
    /// Indices of files found unreadable.
    pub bad: Vec<usize>,
    pub skipped: Vec<(PathBuf, String)>,
}

/// Shuffled, endless batches over an image folder; unreadable files are dropped from the
/// rotation with a warning naming each.
pub struct Batches {
    folder: ImageFolder,
    spec: ImageSpec,
    order: Vec<usize>,
    pos: usize,
    epoch: u64,
    seed: u64,
    bad: Vec<bool>,
    /// (file, reason) of every file skipped so far.
    pub skipped: Vec<(PathBuf, String)>,
    /// Images decoded so far.
    pub images_read: u64,
    /// Samples served so far (seeds each sample's augmentations).
    served: u64,
    shuffled: bool,
}

impl Batches {
    pub fn new(folder: ImageFolder, spec: ImageSpec, seed: u64) -> Self {
        let n = folder.files.len();
        let mut b = Batches {
            folder,
            spec,
            order: (0..n).collect(),
            pos: 0,
            epoch: 0,
            seed,
            bad: vec![false; n],
            skipped: Vec::new(),
            images_read: 0,
            served: 0,
            shuffled: true,
        };
        b.shuffle();
        b
    }

    /// The position to record in a checkpoint.
    pub fn state(&self) -> BatchesState {
        BatchesState {
            files: self.folder.files.len(),
            epoch: self.epoch,
            pos: self.pos,
            served: self.served,
            images_read: self.images_read,
            bad: (0..self.bad.len()).filter(|&i| self.bad[i]).collect(),
            skipped: self.skipped.clone(),
        }
    }

    /// Continues from a recorded position (the same files, in the same order).
    pub fn restore(&mut self, st: &BatchesState) -> Result<()> {
        if st.files != self.folder.files.len() {
            return Err(Error::config(
                "data.folders",
                format!(
                    "the checkpoint was taken over {} image files, the folders now hold {}; resume needs the same data",
                    st.files,
                    self.folder.files.len()
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

    /// Files in sorted order every epoch instead of a seeded shuffle.
    pub fn sequential(mut self) -> Self {
        self.shuffled = false;
        self.shuffle();
        self
    }

    /// Number of files in the rotation (readable or not yet known to be unreadable).
    pub fn len(&self) -> usize {
        self.folder.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.folder.files.is_empty()
    }

    fn shuffle(&mut self) {
        if !self.shuffled {
            self.order = (0..self.folder.files.len()).collect();
            return;
        }
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ self.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.order = (0..self.folder.files.len()).collect();
        self.order.shuffle(&mut rng);
    }

    /// Next `n` file indices in shuffled order, skipping known-bad files.
    fn take(&mut self, n: usize) -> Result<Vec<usize>> {
        let good = self.bad.iter().filter(|b| !**b).count();
        if good == 0 {
            return Err(Error::NoImages {
                path: self.folder.root.clone(),
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
            let i = self.order[self.pos];
            self.pos += 1;
            if !self.bad[i] {
                out.push(i);
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
        Ok(self.next_views(n, &plan)?.clean.unwrap_or_default())
    }

    /// The next `n` images, each decoded once and turned into the views `plan` asks for.
    pub fn next_views(&mut self, n: usize, plan: &ViewPlan) -> Result<ViewBatch> {
        let per = (self.spec.height * self.spec.width * self.spec.channels) as usize;
        let mut out = ViewBatch {
            clean: plan.clean.then(|| Vec::with_capacity(n * per)),
            views: vec![Vec::with_capacity(n * per); plan.augmented],
        };
        let mut got = 0;
        while got < n {
            let idx = self.take(n - got)?;
            let (spec, seed, base) = (self.spec.clone(), self.seed, self.served);
            let files = &self.folder.files;
            type Views = (Option<Vec<f32>>, Vec<Vec<f32>>);
            let decoded: Vec<(usize, std::result::Result<Views, String>)> = idx
                .par_iter()
                .enumerate()
                .map(|(k, &i)| {
                    let r = load(&files[i]).map(|img| {
                        let clean = plan.clean.then(|| clean_view(&img, &spec));
                        let views = (0..plan.augmented)
                            .map(|v| {
                                let mut rng = augment::view_rng(seed, base + k as u64, v as u64);
                                to_layout(
                                    augment::augment(
                                        &img,
                                        spec.width,
                                        spec.height,
                                        &plan.augment,
                                        &mut rng,
                                    ),
                                    &spec,
                                )
                            })
                            .collect();
                        (clean, views)
                    });
                    (i, r)
                })
                .collect();
            self.served += idx.len() as u64;
            for (i, r) in decoded {
                match r {
                    Ok((clean, views)) => {
                        if let (Some(dst), Some(px)) = (out.clean.as_mut(), clean) {
                            dst.extend_from_slice(&px);
                        }
                        for (dst, px) in out.views.iter_mut().zip(views) {
                            dst.extend_from_slice(&px);
                        }
                        self.images_read += 1;
                        got += 1;
                    }
                    Err(reason) => {
                        if !self.bad[i] {
                            log::warn!("skipping {}: {reason}", self.folder.files[i].display());
                            self.bad[i] = true;
                            self.skipped.push((self.folder.files[i].clone(), reason));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
