//! Unlabeled images in, batches out. `source` indexes image folders, TFRecord files and IDX
//! files; `batches` serves them in a seeded, resumable order, decoded and augmented on worker
//! threads; `prefetch` overlaps that with the session's step. Unreadable images are skipped and
//! counted, never fatal.
use std::path::Path;

pub mod augment;
mod batches;
mod decode;
pub mod idx;
mod prefetch;
mod source;
pub mod tfrecord;

pub use batches::{Batches, BatchesState, Shard};
pub use decode::{decode_bytes, decode_scaled, Need, DEFAULT_MAX_PIXELS};
pub use prefetch::{Loader, LoaderOptions};
pub use source::{
    default_extensions, DataSources, Dataset, ImageFolder, DEFAULT_IMAGE_KEY, EXTENSIONS,
};

/// How images become input tensors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageSpec {
    pub height: u32,
    pub width: u32,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: u32,
    /// Pixel values are mapped linearly from [0, 255] to this range.
    pub range: (f32, f32),
}

/// Reads and decodes one image file.
pub fn load(path: &Path) -> std::result::Result<image::DynamicImage, String> {
    let bytes = decode::read_encoded(path)?;
    decode_bytes(&bytes, DEFAULT_MAX_PIXELS)
}

/// Writes RGB pixels in [0, 1] (HWC) into `dst` in `spec`'s channels and value range.
fn to_layout_into(rgb: &[f32], spec: &ImageSpec, dst: &mut [f32]) {
    let (lo, hi) = spec.range;
    let map = |v: f32| v * (hi - lo) + lo;
    match spec.channels {
        1 => {
            for (d, p) in dst.iter_mut().zip(rgb.chunks(3)) {
                *d = map(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]);
            }
        }
        _ => {
            for (d, &v) in dst.iter_mut().zip(rgb) {
                *d = map(v);
            }
        }
    }
}

/// The clean view written into `dst`: resized to fill `spec`'s size and center-cropped (HWC).
fn clean_view_into(img: &image::DynamicImage, spec: &ImageSpec, dst: &mut [f32]) {
    to_layout_into(&augment::fill(img, spec.width, spec.height), spec, dst);
}

/// The clean view: resized to fill `spec`'s size and center-cropped (HWC, f32).
pub fn clean_view(img: &image::DynamicImage, spec: &ImageSpec) -> Vec<f32> {
    let mut out = vec![0f32; (spec.height * spec.width * spec.channels) as usize];
    clean_view_into(img, spec, &mut out);
    out
}

/// Decodes one file into `spec`'s layout (HWC, f32), resized to fill and center-cropped.
pub fn decode(path: &Path, spec: &ImageSpec) -> std::result::Result<Vec<f32>, String> {
    Ok(clean_view(&load(path)?, spec))
}

/// Which views of each image a step needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ViewPlan {
    pub clean: bool,
    /// Number of independently augmented views.
    pub augmented: usize,
    pub augment: augment::AugmentConfig,
}

/// One step's images: the clean batch (if planned) and each augmented view's batch, as the
/// NHWC tensors the step is fed.
#[derive(Debug, Clone, Default)]
pub struct ViewBatch {
    pub clean: Option<tensorflow::Tensor<f32>>,
    pub views: Vec<tensorflow::Tensor<f32>>,
}

impl ViewBatch {
    /// The batch's tensors in feed order: the clean batch first (if any), then the views.
    pub fn into_tensors(self) -> Vec<tensorflow::Tensor<f32>> {
        self.clean.into_iter().chain(self.views).collect()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_formats;
