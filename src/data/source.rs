//! Where unlabeled images come from: image folders, TFRecord files of `tf.train.Example`, IDX
//! files. A `Dataset` is a compact index (one small entry per image, no pixels) over all of
//! them; each image is read and decoded only when a batch needs it.
use std::path::{Path, PathBuf};

use super::decode::{decode_bytes, decode_scaled, read_encoded, Need, DEFAULT_MAX_PIXELS};
use super::idx::IdxFile;
use super::tfrecord::{self, RecordRef};
use crate::error::{Error, Result};

/// File extensions treated as images.
pub const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// The default extensions, as owned strings.
pub fn default_extensions() -> Vec<String> {
    EXTENSIONS.iter().map(|e| e.to_string()).collect()
}

/// The TFRecord feature holding the encoded image by default (TF's object-detection and
/// image-classification conventions).
pub const DEFAULT_IMAGE_KEY: &str = "image/encoded";

fn has_extension(p: &Path, extensions: &[String]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Lists files under `root` (recursively if asked) for which `keep` holds; counts the rest.
/// Symlinks are followed, but each directory is entered and each file listed once (by device
/// and inode): a link back up the tree (`loop -> .`) or a second path to the same file adds
/// nothing.
fn walk(
    root: &Path,
    recursive: bool,
    keep: &dyn Fn(&Path) -> bool,
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
    use std::os::unix::fs::MetadataExt;
    let id = |m: &std::fs::Metadata| (m.dev(), m.ino());
    let (mut files, mut ignored, mut dirs) = (Vec::new(), 0, vec![root.to_path_buf()]);
    let mut seen = std::collections::HashSet::new();
    seen.insert(id(&std::fs::metadata(root).map_err(|e| Error::io(root, e))?));
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let p = e.map_err(|e| Error::io(&d, e))?.path();
            // A dangling link has no metadata: listed, so decoding reports it with the reason.
            let first = std::fs::metadata(&p).map_or(true, |m| seen.insert(id(&m)));
            if p.is_dir() {
                if recursive && first {
                    dirs.push(p);
                }
            } else if !first {
                continue;
            } else if keep(&p) {
                files.push(p);
            } else {
                ignored += 1;
            }
        }
    }
    Ok((files, ignored))
}

/// The image files of one or more folders, in sorted order.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub files: Vec<PathBuf>,
    /// Files without an image extension, ignored.
    pub ignored: usize,
}

impl ImageFolder {
    /// Lists image files under `root` (recursively if asked).
    pub fn scan(root: &Path, recursive: bool) -> Result<Self> {
        Self::scan_all(&[root.to_path_buf()], recursive, &default_extensions())
    }

    /// Lists files with one of `extensions` under every root; the union, sorted. The first
    /// root names the set in errors.
    pub fn scan_all(roots: &[PathBuf], recursive: bool, extensions: &[String]) -> Result<Self> {
        let folder = Self::scan_any(roots, recursive, extensions)?;
        if folder.files.is_empty() {
            return Err(Error::NoImages {
                path: folder.root,
                skipped: 0,
            });
        }
        Ok(folder)
    }

    /// Like `scan_all`, but an empty result is not an error.
    fn scan_any(roots: &[PathBuf], recursive: bool, extensions: &[String]) -> Result<Self> {
        let mut all = ImageFolder {
            root: roots.first().cloned().unwrap_or_default(),
            files: Vec::new(),
            ignored: 0,
        };
        for r in roots {
            let (files, ignored) = walk(r, recursive, &|p| has_extension(p, extensions))?;
            all.files.extend(files);
            all.ignored += ignored;
        }
        all.files.sort();
        all.files.dedup();
        Ok(all)
    }
}

/// What to read: the union of every source.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct DataSources {
    pub folders: Vec<PathBuf>,
    pub recursive: bool,
    pub extensions: Vec<String>,
    /// TFRecord files, or folders of them (`*.tfrecord*`, `*.tfrec`, `*.record`).
    pub tfrecords: Vec<PathBuf>,
    /// The Example feature with the encoded image.
    pub image_key: String,
    /// IDX image files (optionally gzip-compressed).
    pub idx: Vec<PathBuf>,
    /// Images claiming more pixels are skipped unread (None: `DEFAULT_MAX_PIXELS`).
    pub max_pixels: Option<u64>,
}

/// One image's address: cheap to keep for millions of images.
#[derive(Debug, Clone, Copy)]
enum Item {
    File(u32),
    Record { file: u32, at: RecordRef },
    Idx { file: u32, index: u32 },
}

/// An index over every image of some `DataSources`.
pub struct Dataset {
    items: Vec<Item>,
    files: Vec<PathBuf>,
    records: Vec<PathBuf>,
    idx: Vec<IdxFile>,
    image_key: String,
    max_pixels: u64,
    /// What names the dataset in errors (the first source).
    pub root: PathBuf,
    /// Files in the folders without an image extension.
    pub ignored: usize,
    /// Parts of files that could not be indexed: (file, reason), e.g. a corrupt record length.
    pub scan_skipped: Vec<(String, String)>,
}

fn is_tfrecord(p: &Path) -> bool {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    n.contains(".tfrecord") || n.ends_with(".tfrec") || n.ends_with(".record")
}

impl Dataset {
    /// Indexes every source (folders are listed, TFRecord headers framed, IDX headers read).
    pub fn open(src: &DataSources) -> Result<Self> {
        let folder = ImageFolder::scan_any(&src.folders, src.recursive, &src.extensions)?;
        let mut records = Vec::new();
        for p in &src.tfrecords {
            if p.is_dir() {
                let (mut found, _) = walk(p, src.recursive, &|f| is_tfrecord(f))?;
                found.sort();
                records.extend(found);
            } else if p.is_file() {
                records.push(p.clone());
            } else {
                return Err(Error::io(
                    p,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "TFRecord file does not exist",
                    ),
                ));
            }
        }
        let root = src
            .folders
            .iter()
            .chain(&src.tfrecords)
            .chain(&src.idx)
            .next()
            .cloned()
            .unwrap_or_default();
        let mut ds = Dataset {
            items: (0..folder.files.len() as u32).map(Item::File).collect(),
            files: folder.files,
            records: Vec::new(),
            idx: Vec::new(),
            max_pixels: src.max_pixels.unwrap_or(DEFAULT_MAX_PIXELS),
            image_key: if src.image_key.is_empty() {
                DEFAULT_IMAGE_KEY.into()
            } else {
                src.image_key.clone()
            },
            root,
            ignored: folder.ignored,
            scan_skipped: Vec::new(),
        };
        for p in records {
            let (refs, note) = tfrecord::index(&p).map_err(|e| Error::io(&p, e))?;
            let file = ds.records.len() as u32;
            ds.items
                .extend(refs.into_iter().map(|at| Item::Record { file, at }));
            if let Some(why) = note {
                log::warn!("{}: {why}", p.display());
                ds.scan_skipped.push((p.display().to_string(), why));
            }
            ds.records.push(p);
        }
        for p in &src.idx {
            let (f, note) = IdxFile::open(p, ds.max_pixels).map_err(|e| Error::io(p, e))?;
            let file = ds.idx.len() as u32;
            ds.items
                .extend((0..f.count as u32).map(|index| Item::Idx { file, index }));
            if let Some(why) = note {
                log::warn!("{}: {why}", p.display());
                ds.scan_skipped.push((p.display().to_string(), why));
            }
            ds.idx.push(f);
        }
        if ds.items.is_empty() {
            return Err(Error::NoImages {
                path: ds.root.clone(),
                skipped: ds.scan_skipped.len(),
            });
        }
        Ok(ds)
    }

    /// A dataset of image files only (tests, tools).
    pub fn from_folder(folder: ImageFolder) -> Self {
        Dataset {
            items: (0..folder.files.len() as u32).map(Item::File).collect(),
            files: folder.files,
            records: Vec::new(),
            idx: Vec::new(),
            image_key: DEFAULT_IMAGE_KEY.into(),
            max_pixels: DEFAULT_MAX_PIXELS,
            root: folder.root,
            ignored: folder.ignored,
            scan_skipped: Vec::new(),
        }
    }

    /// Number of images indexed.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Image `i`'s name in reports: its path, `FILE@OFFSET` for a record, `FILE[#N]` for IDX.
    pub fn name(&self, i: usize) -> String {
        match self.items[i] {
            Item::File(f) => self.files[f as usize].display().to_string(),
            Item::Record { file, at } => {
                format!("{}@{}", self.records[file as usize].display(), at.offset)
            }
            Item::Idx { file, index } => {
                format!("{}[#{index}]", self.idx[file as usize].path.display())
            }
        }
    }

    /// Reads and decodes image `i` at full size; the error is the reason it is skipped.
    pub fn load(&self, i: usize) -> std::result::Result<image::DynamicImage, String> {
        self.load_scaled(i, None)
    }

    /// Reads and decodes image `i`, a large JPEG at the reduced scale `need` allows.
    pub fn load_scaled(
        &self,
        i: usize,
        need: Option<&Need>,
    ) -> std::result::Result<image::DynamicImage, String> {
        let decode = |bytes: &[u8]| match need {
            Some(n) => decode_scaled(bytes, n, self.max_pixels),
            None => decode_bytes(bytes, self.max_pixels),
        };
        match self.items[i] {
            Item::File(f) => {
                let bytes = read_encoded(&self.files[f as usize])?;
                decode(&bytes)
            }
            Item::Record { file, at } => {
                let rec = tfrecord::read(&self.records[file as usize], at)?;
                let bytes = tfrecord::example_image(&rec, &self.image_key)
                    .map_err(|e| format!("offset {}: {e}", at.offset))?;
                decode(&bytes).map_err(|e| format!("offset {}: {e}", at.offset))
            }
            Item::Idx { file, index } => self.idx[file as usize].image(index as usize),
        }
    }
}
