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

/// Decodes one file into `spec`'s layout (HWC, f32), resized to fill and center-cropped.
pub fn decode(path: &Path, spec: &ImageSpec) -> std::result::Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let img = image::load_from_memory(&bytes).map_err(|e| e.to_string())?;
    let img = img.resize_to_fill(spec.width, spec.height, FilterType::Triangle);
    let (lo, hi) = spec.range;
    let scale = (hi - lo) / 255.0;
    let px: Vec<u8> = match spec.channels {
        1 => img.to_luma8().into_raw(),
        _ => img.to_rgb8().into_raw(),
    };
    Ok(px.into_iter().map(|v| v as f32 * scale + lo).collect())
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

    /// The next batch as a flat NHWC buffer of `n` images.
    pub fn next_batch(&mut self, n: usize) -> Result<Vec<f32>> {
        let per = (self.spec.height * self.spec.width * self.spec.channels) as usize;
        let mut out: Vec<f32> = Vec::with_capacity(n * per);
        while out.len() < n * per {
            let want = n - out.len() / per;
            let idx = self.take(want)?;
            let spec = self.spec.clone();
            let files = &self.folder.files;
            let decoded: Vec<(usize, std::result::Result<Vec<f32>, String>)> = idx
                .par_iter()
                .map(|&i| (i, decode(&files[i], &spec)))
                .collect();
            for (i, r) in decoded {
                match r {
                    Ok(px) => {
                        out.extend_from_slice(&px);
                        self.images_read += 1;
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
