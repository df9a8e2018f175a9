//! Statistics of the augmentations (the crop areas, ratios and flip rate they promise) and
//! determinism under a seed.
use super::*;

fn test_image() -> DynamicImage {
    let img = image::RgbImage::from_fn(120, 80, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
    });
    DynamicImage::ImageRgb8(img)
}

#[test]
fn crop_areas_and_ratios_stay_within_bounds() {
    let cfg = AugmentConfig::default();
    let mut rng = view_rng(1, 0, 0);
    let (w, h) = (300u32, 300u32);
    let mut areas = Vec::new();
    for _ in 0..5000 {
        let (x, y, cw, ch) = crop_box(w, h, &cfg, &mut rng);
        assert!(x + cw <= w && y + ch <= h && cw > 0 && ch > 0);
        let a = (cw * ch) as f32 / (w * h) as f32;
        let r = cw as f32 / ch as f32;
        // Rounding to whole pixels and the centre-crop fallback widen the bounds slightly.
        assert!((0.075..=1.0).contains(&a), "area {a}");
        if a < 0.99 {
            assert!((0.74..=1.35).contains(&r), "ratio {r}");
        }
        areas.push(a);
    }
    // Areas are drawn uniformly from [0.08, 1] but large crops of extreme ratio do not fit and
    // are redrawn, so the mean sits below 0.54; both ends of the range must still be reached.
    let mean = areas.iter().sum::<f32>() / areas.len() as f32;
    let frac = |f: &dyn Fn(f32) -> bool| {
        areas.iter().filter(|a| f(**a)).count() as f32 / areas.len() as f32
    };
    assert!((0.38..0.56).contains(&mean), "mean crop area {mean}");
    assert!(frac(&|a| a < 0.15) > 0.05, "small crops missing");
    assert!(frac(&|a| a > 0.85) > 0.05, "large crops missing");
}

#[test]
fn flip_rate_is_near_one_half_and_views_are_deterministic() {
    let img = test_image();
    let cfg = AugmentConfig {
        crop_area: (1.0, 1.0),
        crop_ratio: (1.5, 1.5),
        jitter_p: 0.0,
        grayscale_p: 0.0,
        blur_p: 0.0,
        ..Default::default()
    };
    let mut flips = 0;
    let n = 2000;
    for i in 0..n {
        let v = augment(&img, 12, 8, &cfg, &mut view_rng(7, i, 0));
        // Red channel rises with x in the source: a flipped view has it falling.
        if v[0] > v[(11) * 3] {
            flips += 1;
        }
    }
    let rate = flips as f32 / n as f32;
    assert!((rate - 0.5).abs() < 0.04, "flip rate {rate}");
    let full = AugmentConfig::default();
    let a = augment(&img, 32, 32, &full, &mut view_rng(3, 5, 1));
    let b = augment(&img, 32, 32, &full, &mut view_rng(3, 5, 1));
    let c = augment(&img, 32, 32, &full, &mut view_rng(3, 5, 2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn grayscale_rate_and_blur_smooth() {
    let img = test_image();
    let cfg = AugmentConfig {
        jitter_p: 0.0,
        blur_p: 0.0,
        ..Default::default()
    };
    let n = 1000;
    let grays = (0..n)
        .filter(|&i| {
            augment(&img, 8, 8, &cfg, &mut view_rng(9, i, 0))
                .chunks(3)
                .all(|p| p[0] == p[1] && p[1] == p[2])
        })
        .count();
    let rate = grays as f32 / n as f32;
    assert!((rate - 0.2).abs() < 0.04, "grayscale rate {rate}");
    // Blur lowers the total variation of a sharp edge.
    let mut px: Vec<f32> = (0..16 * 16)
        .flat_map(|i| if i % 16 < 8 { [0.0; 3] } else { [1.0; 3] })
        .collect();
    // Largest step between horizontal neighbours (within rows).
    let tv = |p: &[f32]| {
        (0..16 * 16)
            .filter(|i| i % 16 != 15)
            .map(|i| (p[i * 3] - p[(i + 1) * 3]).abs())
            .fold(0.0f32, f32::max)
    };
    assert_eq!(tv(&px), 1.0);
    blur(&mut px, 16, 16, 1.5);
    assert!(tv(&px) < 0.5);
}

#[test]
fn bad_settings_name_their_key() {
    let c = AugmentConfig {
        flip_p: 1.5,
        ..Default::default()
    };
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("augment.flip_p"));
    let c = AugmentConfig {
        crop_area: (0.0, 1.0),
        ..Default::default()
    };
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("augment.crop_area"));
}

#[test]
fn crop_resize_matches_the_image_crates_triangle_filter_and_mirrors() {
    let img = image::RgbImage::from_fn(300, 200, |x, y| {
        image::Rgb([
            (x * 255 / 299) as u8,
            (y * 255 / 199) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    let (bx, by, bw, bh) = (40, 30, 180, 120);
    let ours = crop_resize(img.as_raw(), 300, 200, 3, (bx, by, bw, bh), 60, 40, false);
    let theirs = image::DynamicImage::ImageRgb8(img.clone())
        .crop_imm(bx, by, bw, bh)
        .resize_exact(60, 40, image::imageops::FilterType::Triangle)
        .to_rgb8();
    // Same filter family; the crate filters only inside the crop (edges differ slightly).
    let d: f32 = ours
        .iter()
        .zip(theirs.as_raw())
        .map(|(a, &b)| (a * 255.0 - b as f32).abs())
        .sum::<f32>()
        / ours.len() as f32;
    assert!(d < 2.0, "mean difference {d} of 255");
    let mirrored = crop_resize(img.as_raw(), 300, 200, 3, (bx, by, bw, bh), 60, 40, true);
    for y in 0..40 {
        for x in 0..60 {
            for c in 0..3 {
                assert_eq!(
                    ours[(y * 60 + x) * 3 + c],
                    mirrored[(y * 60 + 59 - x) * 3 + c]
                );
            }
        }
    }
    // A gray source is replicated into three channels; a constant stays constant.
    let g = image::GrayImage::from_pixel(50, 70, image::Luma([128]));
    let v = crop_resize(g.as_raw(), 50, 70, 1, (0, 0, 50, 70), 17, 23, false);
    assert!(v.iter().all(|&p| (p - 128.0 / 255.0).abs() < 1e-5));
    // fill: center crop to the output's aspect ratio.
    let f = fill(&image::DynamicImage::ImageRgb8(img), 20, 20);
    assert_eq!(f.len(), 20 * 20 * 3);
}

/// The plain HSV round trip (TF's `adjust_hue` formulation): the oracle for `shift_hue`.
fn hue_via_hsv(p: [f32; 3], dh: f32) -> [f32; 3] {
    let p = p.map(|v| v.clamp(0.0, 1.0));
    let (mx, mn) = (p[0].max(p[1]).max(p[2]), p[0].min(p[1]).min(p[2]));
    let d = mx - mn;
    let h = if d == 0.0 {
        0.0
    } else if mx == p[0] {
        ((p[1] - p[2]) / d).rem_euclid(6.0)
    } else if mx == p[1] {
        (p[2] - p[0]) / d + 2.0
    } else {
        (p[0] - p[1]) / d + 4.0
    } / 6.0;
    let s = if mx == 0.0 { 0.0 } else { d / mx };
    let h6 = (h + dh).rem_euclid(1.0) * 6.0;
    let c = mx * s;
    let x = c * (1.0 - ((h6 % 2.0) - 1.0).abs());
    let (r, g, b) = match h6 as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = mx - c;
    [r + m, g + m, b + m]
}

#[test]
fn hue_shift_equals_the_hsv_round_trip() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut worst = 0.0f32;
    for i in 0..200_000 {
        let mut p = [
            rng.gen_range(-0.2..1.2),
            rng.gen_range(-0.2..1.2),
            rng.gen_range(-0.2..1.2),
        ];
        if i % 10 == 0 {
            p[1] = p[0]; // ties between channels
        }
        if i % 37 == 0 {
            p = [p[0]; 3]; // gray
        }
        let dh = rng.gen_range(-0.6..0.6f32);
        let want = hue_via_hsv(p, dh);
        let mut got = p;
        shift_hue(&mut got, dh * 6.0);
        for k in 0..3 {
            worst = worst.max((got[k] - want[k]).abs());
        }
    }
    assert!(worst < 1e-5, "max |fast - HSV round trip| = {worst}");
}
