//! Encoded bytes to pixels. JPEGs much larger than a batch needs are decoded at 1/2, 1/4 or 1/8
//! scale in the IDCT (the cheapest way to shrink a JPEG: most of the decoding work is skipped),
//! never below the resolution the smallest possible view needs; everything else goes through the
//! `image` crate's decoders at full size.
use image::DynamicImage;

use super::augment::AugmentConfig;

/// The smallest fraction of an image's full size that still gives every view it will be cut
/// into at least the output's resolution (so shrinking at decode never loses detail a view uses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Need {
    pub width: u32,
    pub height: u32,
    /// Smallest crop area fraction and the aspect-ratio range of augmented views (None: only
    /// the clean view, resized to fill).
    pub crop: Option<(f32, (f32, f32))>,
}

impl Need {
    /// The views of `plan`-like settings at `width` × `height`.
    pub fn new(width: u32, height: u32, augment: Option<&AugmentConfig>) -> Self {
        Need {
            width,
            height,
            crop: augment.map(|a| (a.crop_area.0, a.crop_ratio)),
        }
    }

    /// The fraction of a `w` × `h` image's side that must be kept (≤ 1).
    pub fn fraction(&self, w: u32, h: u32) -> f32 {
        let (w, h) = (w.max(1) as f32, h.max(1) as f32);
        let (ow, oh) = (self.width as f32, self.height as f32);
        let mut f = (ow / w).max(oh / h);
        if let Some((area, (r0, r1))) = self.crop {
            // The narrowest and the flattest of the smallest crops.
            let a = area * w * h;
            let min_w = (a * r0).sqrt().min(w);
            let min_h = (a / r1).sqrt().min(h);
            f = f.max(ow / min_w).max(oh / min_h);
        }
        f.min(1.0)
    }
}

/// The most pixels an image may claim before it is skipped unread (`data.max_pixels`): 40 MP,
/// e.g. 7,300 × 5,500; a decoded RGBA image that size is 160 MB per decoding thread.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Refuses, from its header alone, an image that claims more than `max_pixels` pixels (a few
/// hundred bytes can claim 65,000 × 65,000); the error is the reason it is skipped.
/// The largest encoded image (a file or a TFRecord record) read into memory: far above any
/// photo, far below what would exhaust a worker's memory.
pub const MAX_ENCODED_BYTES: u64 = 256 << 20;

/// Refuses an encoded image of `len` bytes before it is read.
pub fn check_encoded_len(len: u64) -> std::result::Result<(), String> {
    if len > MAX_ENCODED_BYTES {
        return Err(format!(
            "{len} bytes, over the {} MiB limit for one encoded image; skipped unread",
            MAX_ENCODED_BYTES >> 20
        ));
    }
    Ok(())
}

/// Reads an image file whole, after checking its size.
pub fn read_encoded(path: &std::path::Path) -> std::result::Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    check_encoded_len(len)?;
    std::fs::read(path).map_err(|e| e.to_string())
}

fn check_header(bytes: &[u8], max_pixels: u64) -> std::result::Result<(), String> {
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .into_dimensions()
        .map_err(|e| e.to_string())?;
    let px = w as u64 * h as u64;
    if px > max_pixels {
        return Err(format!(
            "header claims {w}×{h} pixels ({:.1} MP), over data.max_pixels ({:.1} MP)",
            px as f64 / 1e6,
            max_pixels as f64 / 1e6
        ));
    }
    Ok(())
}

/// Decodes an encoded image (JPEG, PNG, WebP, BMP, GIF; the format is sniffed from the bytes)
/// of at most `max_pixels` pixels (checked in the header first). Every mode the codecs know is
/// accepted: 8/16-bit, grayscale, alpha (dropped when RGB is asked for, as TF's
/// `decode_image(channels=3)` does), palette, CMYK JPEG (converted to RGB).
pub fn decode_bytes(bytes: &[u8], max_pixels: u64) -> std::result::Result<DynamicImage, String> {
    check_header(bytes, max_pixels)?;
    image::load_from_memory(bytes).map_err(|e| e.to_string())
}

/// Like `decode_bytes`, but a JPEG at least twice as large as `need` asks for is decoded at a
/// reduced scale (grayscale and RGB JPEGs; CMYK and 16-bit ones decode at full size).
pub fn decode_scaled(
    bytes: &[u8],
    need: &Need,
    max_pixels: u64,
) -> std::result::Result<DynamicImage, String> {
    check_header(bytes, max_pixels)?;
    if bytes.starts_with(&[0xFF, 0xD8]) {
        if let Some(img) = scaled_jpeg(bytes, need) {
            return Ok(img);
        }
    }
    image::load_from_memory(bytes).map_err(|e| e.to_string())
}

/// None when scaling would not pay or the JPEG is of a kind left to the full decoder.
fn scaled_jpeg(bytes: &[u8], need: &Need) -> Option<DynamicImage> {
    use jpeg_decoder::{Decoder, PixelFormat};
    let mut d = Decoder::new(bytes);
    d.read_info().ok()?;
    let info = d.info()?;
    if !matches!(info.pixel_format, PixelFormat::L8 | PixelFormat::RGB24) {
        return None;
    }
    let f = need.fraction(info.width as u32, info.height as u32);
    if f > 0.5 {
        return None;
    }
    let rw = (info.width as f32 * f).ceil().max(1.0) as u16;
    let rh = (info.height as f32 * f).ceil().max(1.0) as u16;
    let (w, h) = d.scale(rw, rh).ok()?;
    if (w as u32) < need.width.min(info.width as u32)
        || (h as u32) < need.height.min(info.height as u32)
    {
        return None;
    }
    let px = d.decode().ok()?;
    match info.pixel_format {
        PixelFormat::L8 => {
            image::GrayImage::from_raw(w as u32, h as u32, px).map(DynamicImage::from)
        }
        _ => image::RgbImage::from_raw(w as u32, h as u32, px).map(DynamicImage::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn images_claiming_too_many_pixels_are_refused_from_the_header() {
        let bytes = jpeg(300, 200);
        let e = decode_bytes(&bytes, 50_000).unwrap_err();
        assert!(e.contains("300×200") && e.contains("max_pixels"), "{e}");
        assert!(decode_scaled(&bytes, &Need::new(8, 8, None), 50_000).is_err());
        assert!(decode_bytes(&bytes, 60_000).is_ok());
    }

    #[test]
    fn files_over_the_encoded_limit_are_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("big.jpg");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_ENCODED_BYTES + 1).unwrap(); // sparse: nothing is written
        let e = read_encoded(&p).unwrap_err();
        assert!(e.contains("256 MiB") && e.contains("skipped unread"), "{e}");
        assert!(check_encoded_len(MAX_ENCODED_BYTES).is_ok());
    }

    #[test]
    fn the_fraction_keeps_the_smallest_crop_at_output_resolution() {
        let clean = Need::new(64, 64, None);
        assert_eq!(clean.fraction(640, 480), 64.0 / 480.0);
        assert_eq!(clean.fraction(32, 32), 1.0);
        let aug = Need::new(64, 64, Some(&AugmentConfig::default()));
        // area 0.08 of 640×480 at ratio 3/4 is ~135×… wide, so ~0.47 of the side must stay.
        let f = aug.fraction(640, 480);
        assert!(f > 0.4 && f < 0.55, "{f}");
    }

    #[test]
    fn large_jpegs_decode_smaller_but_never_below_need() {
        let bytes = jpeg(800, 600);
        let need = Need::new(96, 96, None);
        let img = decode_scaled(&bytes, &need, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (200, 150),
            "1/4 scale: 150 ≥ 96 > 75"
        );
        let full = decode_bytes(&bytes, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!((full.width(), full.height()), (800, 600));
        // Scaled decoding is a downsample of the same picture.
        let small = full
            .resize_exact(200, 150, image::imageops::FilterType::Triangle)
            .to_rgb8();
        let d: f64 = small
            .as_raw()
            .iter()
            .zip(img.to_rgb8().as_raw())
            .map(|(&a, &b)| (a as f64 - b as f64).abs())
            .sum::<f64>()
            / small.as_raw().len() as f64;
        assert!(d < 6.0, "mean difference {d}");
        // Too small to pay: decoded at full size by the image crate.
        let img = decode_scaled(&jpeg(150, 120), &need, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!((img.width(), img.height()), (150, 120));
    }
}
