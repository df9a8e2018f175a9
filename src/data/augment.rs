//! SimCLR-style augmentations in Rust, applied to the decoded full-resolution image before it is
//! resized: random resized crop, horizontal flip, colour jitter, grayscale, Gaussian blur.
//! Each draw comes from its own seeded RNG, so a view is a pure function of (seed, sample, view).
use image::{DynamicImage, GenericImageView};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Augmentation parameters (defaults: SimCLR's ImageNet recipe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Crop area as a fraction of the image, [min, max].
    pub crop_area: (f32, f32),
    /// Crop aspect ratio (w/h), [min, max], drawn log-uniformly.
    pub crop_ratio: (f32, f32),
    pub flip_p: f32,
    /// Colour-jitter strength s: brightness/contrast/saturation 0.8·s, hue 0.2·s.
    pub jitter_strength: f32,
    pub jitter_p: f32,
    pub grayscale_p: f32,
    pub blur_p: f32,
    /// Blur sigma range, in pixels of the output image scaled to a 224-px side.
    pub blur_sigma: (f32, f32),
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            crop_area: (0.08, 1.0),
            crop_ratio: (0.75, 4.0 / 3.0),
            flip_p: 0.5,
            jitter_strength: 1.0,
            jitter_p: 0.8,
            grayscale_p: 0.2,
            blur_p: 0.5,
            blur_sigma: (0.1, 2.0),
        }
    }
}

fn prob(key: &str, p: f32) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("{p} is not a probability in [0, 1]"),
        ))
    }
}

impl AugmentConfig {
    /// Checks every value, naming the key of the first bad one.
    pub fn validate(&self) -> Result<()> {
        let (a0, a1) = self.crop_area;
        if !(a0 > 0.0 && a0 <= a1 && a1 <= 1.0) {
            return Err(Error::config(
                "augment.crop_area",
                format!("{:?} must satisfy 0 < min ≤ max ≤ 1", self.crop_area),
            ));
        }
        let (r0, r1) = self.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1) {
            return Err(Error::config(
                "augment.crop_ratio",
                format!("{:?} must satisfy 0 < min ≤ max", self.crop_ratio),
            ));
        }
        prob("augment.flip_p", self.flip_p)?;
        prob("augment.jitter_p", self.jitter_p)?;
        prob("augment.grayscale_p", self.grayscale_p)?;
        prob("augment.blur_p", self.blur_p)?;
        if !(self.jitter_strength >= 0.0 && self.jitter_strength <= 4.0) {
            return Err(Error::config(
                "augment.jitter_strength",
                "must be in [0, 4]",
            ));
        }
        let (s0, s1) = self.blur_sigma;
        if !(s0 > 0.0 && s0 <= s1) {
            return Err(Error::config(
                "augment.blur_sigma",
                "must satisfy 0 < min ≤ max",
            ));
        }
        Ok(())
    }
}

/// The RNG of one view of one sample.
pub fn view_rng(seed: u64, sample: u64, view: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(sample.wrapping_mul(64).wrapping_add(view));
    r
}

/// Draws a crop rectangle (x, y, w, h) as torchvision's RandomResizedCrop does.
pub fn crop_box(w: u32, h: u32, cfg: &AugmentConfig, rng: &mut impl Rng) -> (u32, u32, u32, u32) {
    let area = (w * h) as f32;
    let (lr0, lr1) = (cfg.crop_ratio.0.ln(), cfg.crop_ratio.1.ln());
    for _ in 0..10 {
        let a = area * rng.gen_range(cfg.crop_area.0..=cfg.crop_area.1);
        let r = rng.gen_range(lr0..=lr1).exp();
        let cw = (a * r).sqrt().round() as u32;
        let ch = (a / r).sqrt().round() as u32;
        if cw >= 1 && ch >= 1 && cw <= w && ch <= h {
            return (rng.gen_range(0..=w - cw), rng.gen_range(0..=h - ch), cw, ch);
        }
    }
    let s = w.min(h);
    ((w - s) / 2, (h - s) / 2, s, s)
}

fn gray(p: &[f32]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// Rotates one RGB pixel's HSV hue by `dh6` sixths of a turn, in place (inputs clamped to
/// [0, 1]). Same result as RGB → HSV → hue + dh → RGB (TF's `adjust_hue`), computed without
/// leaving RGB: the shift keeps the pixel's max and min channel, so only which channel holds
/// them and the one in between change. Gray pixels (max = min) have no hue and stay.
fn shift_hue(p: &mut [f32], dh6: f32) {
    let (r, g, b) = (
        p[0].clamp(0.0, 1.0),
        p[1].clamp(0.0, 1.0),
        p[2].clamp(0.0, 1.0),
    );
    let (mx, mn) = (r.max(g).max(b), r.min(g).min(b));
    let c = mx - mn;
    if c <= 0.0 {
        p.copy_from_slice(&[r, g, b]);
        return;
    }
    let h = if mx == r {
        (g - b) / c
    } else if mx == g {
        (b - r) / c + 2.0
    } else {
        (r - g) / c + 4.0
    } + dh6;
    let h = if (0.0..6.0).contains(&h) {
        h
    } else {
        h.rem_euclid(6.0)
    };
    let sector = (h as u32).min(5);
    let f = h - sector as f32;
    let (up, down) = (mn + c * f, mx - c * f);
    let out = match sector {
        0 => [mx, up, mn],
        1 => [down, mx, mn],
        2 => [mn, mx, up],
        3 => [mn, down, mx],
        4 => [up, mn, mx],
        _ => [mx, mn, down],
    };
    p.copy_from_slice(&out);
}

/// Colour jitter on RGB pixels in [0, 1], the four adjustments in random order.
fn jitter(px: &mut [f32], s: f32, rng: &mut impl Rng) {
    let (b, c, sat) = (0.8 * s, 0.8 * s, 0.8 * s);
    let h = 0.2 * s;
    let mut order = [0, 1, 2, 3];
    for i in (1..4).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let n = px.len() / 3;
    for k in order {
        match k {
            0 => {
                let f = rng.gen_range((1.0 - b).max(0.0)..=1.0 + b);
                px.iter_mut().for_each(|v| *v *= f);
            }
            1 => {
                let f = rng.gen_range((1.0 - c).max(0.0)..=1.0 + c);
                let mean = px.chunks(3).map(gray).sum::<f32>() / n as f32;
                px.iter_mut().for_each(|v| *v = (*v - mean) * f + mean);
            }
            2 => {
                let f = rng.gen_range((1.0 - sat).max(0.0)..=1.0 + sat);
                for p in px.chunks_mut(3) {
                    let g = gray(p);
                    p.iter_mut().for_each(|v| *v = (*v - g) * f + g);
                }
            }
            _ => {
                let dh = rng.gen_range(-h..=h);
                if dh != 0.0 {
                    px.chunks_mut(3).for_each(|p| shift_hue(p, dh * 6.0));
                }
            }
        }
        px.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    }
}

/// Separable Gaussian blur of an HWC RGB image in place: a horizontal pass over an
/// edge-padded copy of each row, then a vertical pass that sums whole rows (both vectorise).
fn blur(px: &mut [f32], w: usize, h: usize, sigma: f32) {
    let r = (3.0 * sigma).ceil().max(1.0) as usize;
    let k: Vec<f32> = (0..=2 * r)
        .map(|i| {
            let d = i as f32 - r as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / sum).collect();
    let row = w * 3;
    let mut tmp = vec![0.0f32; px.len()];
    let mut pad = vec![0.0f32; (w + 2 * r) * 3];
    for y in 0..h {
        let src = &px[y * row..(y + 1) * row];
        for x in 0..w + 2 * r {
            let sx = x.saturating_sub(r).min(w - 1);
            pad[x * 3..x * 3 + 3].copy_from_slice(&src[sx * 3..sx * 3 + 3]);
        }
        let dst = &mut tmp[y * row..(y + 1) * row];
        for (j, &kv) in k.iter().enumerate() {
            for (d, s) in dst.iter_mut().zip(&pad[j * 3..j * 3 + row]) {
                *d += kv * s;
            }
        }
    }
    for y in 0..h {
        let dst = &mut px[y * row..(y + 1) * row];
        dst.iter_mut().for_each(|v| *v = 0.0);
        for (j, &kv) in k.iter().enumerate() {
            let sy = (y + j).saturating_sub(r).min(h - 1);
            for (d, s) in dst.iter_mut().zip(&tmp[sy * row..(sy + 1) * row]) {
                *d += kv * s;
            }
        }
    }
}

/// Triangle-filter weights mapping `n_in` source samples starting at `start` onto `n_out`
/// outputs (support widened by the scale when shrinking, as an antialiasing filter does):
/// (first source index, weights) per output.
fn weights(start: u32, n_in: u32, n_out: u32, limit: u32) -> Vec<(usize, Vec<f32>)> {
    let scale = n_in as f32 / n_out as f32;
    let support = scale.max(1.0);
    (0..n_out)
        .map(|o| {
            let center = start as f32 + (o as f32 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0) as u32).min(limit - 1);
            let hi = ((center + support).ceil() as u32).min(limit);
            let mut ws: Vec<f32> = (lo..hi.max(lo + 1))
                .map(|i| (1.0 - ((i as f32 + 0.5 - center) / support).abs()).max(0.0))
                .collect();
            let sum: f32 = ws.iter().sum();
            if sum > 0.0 {
                ws.iter_mut().for_each(|v| *v /= sum);
            } else {
                ws.iter_mut().for_each(|v| *v = 0.0);
                ws[0] = 1.0;
            }
            (lo as usize, ws)
        })
        .collect()
}

/// The crop (x, y, cw, ch) of an 8-bit gray (`c` = 1) or RGB (`c` = 3) image of `w` × `h`,
/// resized to `ow` × `oh` (triangle filter), optionally mirrored, as HWC RGB f32 in [0, 1].
/// The vertical pass runs first: each output row is a weighted sum of whole source rows over
/// the columns the crop reads (contiguous, so it vectorises; it is the heavy pass when
/// shrinking), then the `oh` rows it leaves are filtered horizontally.
#[allow(clippy::too_many_arguments)]
fn crop_resize(
    raw: &[u8],
    w: u32,
    h: u32,
    c: usize,
    (x, y, cw, ch): (u32, u32, u32, u32),
    ow: u32,
    oh: u32,
    flip: bool,
) -> Vec<f32> {
    let hx = weights(x, cw, ow, w);
    let vy = weights(y, ch, oh, h);
    let col_lo = hx.iter().map(|v| v.0).min().unwrap_or(0);
    let col_hi = hx.iter().map(|(s, ws)| s + ws.len()).max().unwrap_or(0);
    let span = (col_hi - col_lo) * c;
    let mut mid = vec![0.0f32; vy.len() * span];
    for ((s0, ws), dst) in vy.iter().zip(mid.chunks_exact_mut(span.max(1))) {
        for (k, &wv) in ws.iter().enumerate() {
            let at = ((s0 + k) * w as usize + col_lo) * c;
            for (d, &p) in dst.iter_mut().zip(&raw[at..at + span]) {
                *d += wv * p as f32;
            }
        }
    }
    let orow = ow as usize * 3;
    let mut out = vec![0.0f32; oh as usize * orow];
    for (src, dst) in mid
        .chunks_exact(span.max(1))
        .zip(out.chunks_exact_mut(orow))
    {
        for (o, (s0, ws)) in hx.iter().enumerate() {
            let ox = if flip { ow as usize - 1 - o } else { o };
            let base = s0 - col_lo;
            let acc = if c == 1 {
                let g: f32 = ws.iter().zip(&src[base..]).map(|(&wv, &p)| wv * p).sum();
                [g; 3]
            } else {
                let mut acc = [0.0f32; 3];
                for (k, &wv) in ws.iter().enumerate() {
                    let p = &src[(base + k) * 3..(base + k) * 3 + 3];
                    acc[0] += wv * p[0];
                    acc[1] += wv * p[1];
                    acc[2] += wv * p[2];
                }
                acc
            };
            for (d, v) in dst[ox * 3..ox * 3 + 3].iter_mut().zip(acc) {
                *d = (v / 255.0).clamp(0.0, 1.0);
            }
        }
    }
    out
}

/// `img` resized to fill `ow` × `oh` and center-cropped (the clean view), HWC RGB f32 in [0, 1].
pub fn fill(img: &DynamicImage, ow: u32, oh: u32) -> Vec<f32> {
    let (w, h) = img.dimensions();
    // The largest centered box with the output's aspect ratio.
    let (cw, ch) = if w as u64 * oh as u64 > h as u64 * ow as u64 {
        (((h as u64 * ow as u64) / oh as u64).max(1) as u32, h)
    } else {
        (w, ((w as u64 * oh as u64) / ow as u64).max(1) as u32)
    };
    let b = ((w - cw) / 2, (h - ch) / 2, cw, ch);
    match img {
        DynamicImage::ImageRgb8(i) => crop_resize(i.as_raw(), w, h, 3, b, ow, oh, false),
        DynamicImage::ImageLuma8(i) => crop_resize(i.as_raw(), w, h, 1, b, ow, oh, false),
        other => crop_resize(other.to_rgb8().as_raw(), w, h, 3, b, ow, oh, false),
    }
}

/// One augmented view of `img` as HWC RGB f32 in [0, 1] of size `side_w`×`side_h`.
pub fn augment(
    img: &DynamicImage,
    side_w: u32,
    side_h: u32,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let crop = crop_box(w, h, cfg, rng);
    let flip = rng.gen::<f32>() < cfg.flip_p;
    let mut px = match img {
        DynamicImage::ImageRgb8(i) => crop_resize(i.as_raw(), w, h, 3, crop, side_w, side_h, flip),
        DynamicImage::ImageLuma8(i) => crop_resize(i.as_raw(), w, h, 1, crop, side_w, side_h, flip),
        other => crop_resize(
            other.to_rgb8().as_raw(),
            w,
            h,
            3,
            crop,
            side_w,
            side_h,
            flip,
        ),
    };
    if rng.gen::<f32>() < cfg.jitter_p {
        jitter(&mut px, cfg.jitter_strength, rng);
    }
    if rng.gen::<f32>() < cfg.grayscale_p {
        for p in px.chunks_mut(3) {
            let g = gray(p);
            p.iter_mut().for_each(|v| *v = g);
        }
    }
    if rng.gen::<f32>() < cfg.blur_p {
        let sigma =
            rng.gen_range(cfg.blur_sigma.0..=cfg.blur_sigma.1) * side_w.max(side_h) as f32 / 224.0;
        blur(&mut px, side_w as usize, side_h as usize, sigma.max(0.05));
    }
    px
}

#[cfg(test)]
mod tests;
