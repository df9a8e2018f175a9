//! The fuzzing engine of tests/fuzz.rs: seeded mutations of committed seeds, a case budget in
//! cases or seconds, crash inputs kept and replayed.
#![allow(dead_code)]
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use pretext::proto;

pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target)
}

fn crashes_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/crashes")
        .join(target)
}

fn read_dir_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// One case: the bytes, and a scratch directory for targets that read files.
pub struct Input {
    pub bytes: Vec<u8>,
    scratch: tempfile::TempDir,
}

impl Input {
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Writes the bytes as `name` in the scratch directory.
    pub fn file(&self, name: &str) -> PathBuf {
        let p = self.scratch.path().join(name);
        std::fs::write(&p, &self.bytes).unwrap();
        p
    }
}

type Structured = fn(&[u8], &mut ChaCha8Rng) -> Option<Vec<u8>>;

pub struct Fuzz {
    target: &'static str,
    structured: Option<Structured>,
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

impl Fuzz {
    pub fn new(target: &'static str) -> Fuzz {
        Fuzz {
            target,
            structured: None,
        }
    }

    /// Also mutate by decoding, editing and re-encoding (half the cases).
    pub fn structured(mut self, f: Structured) -> Fuzz {
        self.structured = Some(f);
        self
    }

    /// Replays the kept crashes and the seeds, then mutated cases until the budget is spent.
    pub fn run(self, f: impl Fn(&Input)) {
        let seeds = read_dir_files(&corpus_dir(self.target));
        assert!(!seeds.is_empty(), "no seeds for {}", self.target);
        let cases = env_u64("PRETEXT_FUZZ_CASES").unwrap_or(300);
        let budget = env_u64("PRETEXT_FUZZ_SECONDS").map(Duration::from_secs);
        let seed = env_u64("PRETEXT_FUZZ_SEED").unwrap_or(0);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv(self.target.as_bytes()));
        let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
        std::fs::create_dir_all(&state).unwrap();
        let current = state.join(format!("{}.current", self.target));
        let exec = |bytes: Vec<u8>, what: &str| {
            std::fs::write(&current, &bytes).unwrap();
            let input = Input {
                bytes,
                scratch: tempfile::tempdir().unwrap(),
            };
            if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
                let keep = state.join(format!("{}-{:016x}", self.target, fnv(&input.bytes)));
                std::fs::write(&keep, &input.bytes).unwrap();
                panic!(
                    "{} panicked on {what}; input kept in {} (add it to {} as a test)",
                    self.target,
                    keep.display(),
                    crashes_dir(self.target).display()
                );
            }
        };
        for (p, b) in read_dir_files(&crashes_dir(self.target)) {
            exec(b, &format!("kept crash {}", p.display()));
        }
        for (p, b) in &seeds {
            exec(b.clone(), &format!("seed {}", p.display()));
        }
        let t0 = Instant::now();
        let mut n = 0u64;
        while match budget {
            Some(b) => t0.elapsed() < b,
            None => n < cases,
        } {
            let (_, base) = &seeds[rng.gen_range(0..seeds.len())];
            let bytes = match self.structured {
                Some(s) if rng.gen_bool(0.5) => s(base, &mut rng).unwrap_or_else(|| base.clone()),
                _ => {
                    let (_, other) = &seeds[rng.gen_range(0..seeds.len())];
                    mutate_bytes(base, other, &mut rng)
                }
            };
            exec(bytes, &format!("case {n} (seed {seed})"));
            n += 1;
        }
        eprintln!(
            "fuzz {}: {n} cases in {:.1} s ({} seeds, seed {seed})",
            self.target,
            t0.elapsed().as_secs_f64(),
            seeds.len()
        );
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

const INTERESTING: [u32; 10] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    65000,
];

/// 1–8 byte-level mutations of `base` (`other` is another seed, for splices).
pub fn mutate_bytes(base: &[u8], other: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..rng.gen_range(1..=8) {
        let len = b.len();
        let at = if len == 0 { 0 } else { rng.gen_range(0..len) };
        match rng.gen_range(0..9) {
            0 if len > 0 => b[at] ^= 1 << rng.gen_range(0..8),
            1 if len > 0 => b[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())] as u8,
            2 if len >= 4 => {
                let v = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                let at = at.min(len - 4);
                let bytes = if rng.gen() {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                b[at..at + 4].copy_from_slice(&bytes);
            }
            3 => {
                let n = rng.gen_range(1..=16);
                let ins: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                b.splice(at..at, ins);
            }
            4 if len > 0 => {
                let end = (at + rng.gen_range(1..=64)).min(len);
                b.drain(at..end);
            }
            5 if len > 0 => {
                let end = (at + rng.gen_range(1..=64)).min(len);
                let chunk = b[at..end].to_vec();
                b.splice(at..at, chunk);
            }
            6 => b.truncate(at),
            7 if !other.is_empty() => {
                let from = rng.gen_range(0..other.len());
                let end = (from + rng.gen_range(1..=256)).min(other.len());
                b.splice(at..at, other[from..end].iter().copied());
            }
            // A long protobuf varint / length: the classic over-allocation probe.
            _ => {
                b.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
        }
    }
    b
}

/// Structural mutations of a SavedModel: rewired inputs (cycles, dangling names), calls to
/// the calling function itself (recursion), dropped nodes, changed op types and attributes.
pub fn mutate_saved_model(base: &[u8], rng: &mut ChaCha8Rng) -> Option<Vec<u8>> {
    let mut sm = proto::SavedModel::decode(base).ok()?;
    let gd = sm.meta_graphs.first_mut()?.graph_def.as_mut()?;
    let lib = gd.library.as_mut()?;
    if lib.function.is_empty() {
        return None;
    }
    let names: Vec<String> = lib
        .function
        .iter()
        .filter_map(|f| f.signature.as_ref().map(|s| s.name.clone()))
        .collect();
    for _ in 0..rng.gen_range(1..=4) {
        let fi = rng.gen_range(0..lib.function.len());
        let fun = &mut lib.function[fi];
        let own = fun
            .signature
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        if fun.node_def.is_empty() {
            continue;
        }
        let nodes: Vec<String> = fun.node_def.iter().map(|n| n.name.clone()).collect();
        let ni = rng.gen_range(0..fun.node_def.len());
        let node = &mut fun.node_def[ni];
        match rng.gen_range(0..6) {
            0 if !node.input.is_empty() => {
                let k = rng.gen_range(0..node.input.len());
                let to = &nodes[rng.gen_range(0..nodes.len())];
                node.input[k] = format!("{to}:output:{}", rng.gen_range(0..3));
            }
            1 => {
                let callee = if rng.gen() {
                    own.clone()
                } else {
                    names[rng.gen_range(0..names.len())].clone()
                };
                let f = proto::AttrValue {
                    value: Some(proto::attr_value::Value::Func(proto::NameAttrList {
                        name: callee.clone(),
                        attr: Default::default(),
                    })),
                };
                node.attr.insert("f".into(), f);
                node.op = if rng.gen() {
                    "StatefulPartitionedCall".into()
                } else {
                    callee
                };
            }
            2 => {
                fun.node_def.remove(ni);
            }
            3 => {
                const OPS: [&str; 8] = [
                    "Identity",
                    "Conv2D",
                    "MatMul",
                    "If",
                    "While",
                    "Const",
                    "NoOp",
                    "ReadVariableOp",
                ];
                node.op = OPS[rng.gen_range(0..OPS.len())].into();
            }
            4 if !node.attr.is_empty() => {
                let key = node
                    .attr
                    .keys()
                    .nth(rng.gen_range(0..node.attr.len()))
                    .cloned()
                    .unwrap();
                let v = match rng.gen_range(0..3) {
                    0 => proto::attr_value::Value::I(-1),
                    1 => proto::attr_value::Value::Type(rng.gen_range(-1..40)),
                    _ => proto::attr_value::Value::S(b"\xff".to_vec()),
                };
                node.attr.insert(key, proto::AttrValue { value: Some(v) });
            }
            _ => {
                node.input
                    .push(format!("^{}", nodes[rng.gen_range(0..nodes.len())]));
            }
        }
    }
    Some(sm.encode_to_vec())
}
