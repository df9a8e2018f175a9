//! Throughput of pretext's input pipeline alone (decode + two SimCLR views per image in Rust,
//! on rayon threads), for comparing augmentation placements (docs/BENCHMARKS.md).
//!
//! cargo run --release --example data_throughput -- DIR SIZE BATCH BATCHES [fmnist]
use std::time::Instant;

use pretext::data::augment::AugmentConfig;
use pretext::data::{Batches, Dataset, ImageFolder, ImageSpec, ViewPlan};

fn main() -> Result<(), pretext::Error> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 {
        eprintln!("usage: data_throughput DIR SIZE BATCH BATCHES [fmnist]");
        std::process::exit(2);
    }
    let (size, batch, n): (u32, usize, usize) = (
        a[1].parse().expect("SIZE"),
        a[2].parse().expect("BATCH"),
        a[3].parse().expect("BATCHES"),
    );
    let mut augment = AugmentConfig::default();
    if a.get(4).map(|s| s == "fmnist").unwrap_or(false) {
        augment.crop_area = (0.2, 1.0);
        augment.jitter_strength = 0.5;
        augment.grayscale_p = 0.0;
        augment.blur_p = 0.0;
    }
    let folder = ImageFolder::scan(std::path::Path::new(&a[0]), true)?;
    let spec = ImageSpec {
        height: size,
        width: size,
        channels: 3,
        range: (0.0, 1.0),
    };
    let mut b = Batches::new(std::sync::Arc::new(Dataset::from_folder(folder)), spec, 0);
    let plan = ViewPlan {
        clean: false,
        augmented: 2,
        augment,
    };
    // Each batch's tensors are handed back for the next, as the trainer does after a step.
    let mut spare = b.next_views(batch, &plan)?.into_tensors(); // warm-up (threads, page cache)
    let t0 = Instant::now();
    for _ in 0..n {
        spare = b
            .next_views_reusing(batch, &plan, &mut spare)?
            .into_tensors();
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{} images ({} views) of {size}px in {s:.2}s: {:.1} images/s, {:.1} views/s ({} rayon threads)",
        n * batch,
        2 * n * batch,
        (n * batch) as f64 / s,
        (2 * n * batch) as f64 / s,
        rayon::current_num_threads()
    );
    Ok(())
}
