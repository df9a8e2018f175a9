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

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

impl ImageFolder {
    /// Lists image files under `root` (recursively if asked).
    pub fn scan(root: &Path, recursive: bool) -> Result<Self> {
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
                } else if is_image(&p) {
                    files.push(p);
                } else {
                    ignored += 1;
                }
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(Error::NoImages {
                path: root.into(),
                skipped: 0,
            });
        }
        Ok(ImageFolder {
            root: root.into(),
            files,
            ignored,
        })
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
        };
        b.shuffle();
        b
    }

    fn shuffle(&mut self) {
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
