//! Retrain a SavedModel from Rust: the default experiment on MODEL over a folder of images,
//! a SimCLR head, 50 steps, then export OUT/<version>/ for TF Serving.
//!
//! cargo run --release --example retrain -- MODEL IMAGES OUT
use pretext::experiment::Experiment;
use pretext::heads::{HeadConfig, SimclrConfig};
use pretext::train::Trainer;

fn main() -> pretext::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [model, images, out] = &a[..] else {
        eprintln!("usage: retrain MODEL IMAGES OUT");
        std::process::exit(2);
    };
    let mut exp = Experiment::new(model.into(), vec![images.into()]);
    exp.head = HeadConfig::Simclr(SimclrConfig::default());
    exp.train.batch = 16;
    exp.check_settings()?; // every value checked, errors name the key (e.g. `train.batch`)
    let mut trainer = Trainer::new(&exp.train_config(50))?;
    let losses = trainer.run(50)?;
    println!("loss {:.4} → {:.4}", losses[0], losses[losses.len() - 1]);
    let dir = pretext::export::export(trainer.model(), out.as_ref(), None)?;
    println!("exported {}", dir.display());
    Ok(())
}
