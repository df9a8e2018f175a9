//! IDX files (MNIST / Fashion-MNIST's format): a big-endian header of dimensions, then unsigned
//! bytes. Gzip-compressed files (how the datasets ship) are unpacked once into a temporary file
//! so every image stays a positioned read and memory stays flat in the dataset's size.
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// An opened IDX image file: `count` images of `rows × cols × channels` bytes.
#[derive(Debug)]
pub struct IdxFile {
    pub path: PathBuf,
    pub count: usize,
    pub rows: u32,
    pub cols: u32,
    /// 1 (grayscale, 3-dimensional files) or 3 (4-dimensional files ending in 3).
    pub channels: u32,
    data_offset: u64,
    /// The unpacked copy of a gzip file (removed on drop).
    file: File,
    _unpacked: Option<tempfile::NamedTempFile>,
}

/// The most a gzip IDX file may expand: image data compresses 2–5× (Fashion-MNIST 1.8×,
/// MNIST 4.8×); a file that claims far more is a decompression bomb, not a dataset.
const MAX_GZIP_RATIO: u64 = 64;

/// Refuses unpacking `want` bytes from a `compressed`-byte gzip file when the ratio is
/// implausible or the temporary directory has not that much room.
fn check_unpack(want: u64, compressed: u64) -> std::io::Result<()> {
    if want > compressed.saturating_mul(MAX_GZIP_RATIO) {
        return Err(bad(format!(
            "the header declares {want} bytes of images in a {compressed}-byte gzip file \
             (over {MAX_GZIP_RATIO}× expansion: not image data); nothing was unpacked"
        )));
    }
    let dir = std::env::temp_dir();
    if let Some(free) = free_bytes(&dir) {
        if want > free {
            return Err(bad(format!(
                "unpacking needs {:.1} GB in {} ({:.1} GB free); set TMPDIR to a larger disk",
                want as f64 / 1e9,
                dir.display(),
                free as f64 / 1e9
            )));
        }
    }
    Ok(())
}

/// Bytes available to this user on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Why an IDX file cannot be used (the caller names the file).
fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// The IDX header from the start of `r`: (number of dimensions, dimensions).
fn header(r: &mut dyn Read) -> std::io::Result<(usize, Vec<u64>)> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head)
        .map_err(|_| bad("too short for an IDX header"))?;
    if head[0] != 0 || head[1] != 0 {
        return Err(bad(format!(
            "not an IDX file (magic {:02x}{:02x}{:02x}{:02x})",
            head[0], head[1], head[2], head[3]
        )));
    }
    if head[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x}; pretext reads unsigned-byte (0x08) images",
            head[2]
        )));
    }
    let nd = head[3] as usize;
    let mut dims = vec![0u8; 4 * nd];
    r.read_exact(&mut dims)
        .map_err(|_| bad("truncated IDX header"))?;
    let dims = dims
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64)
        .collect();
    Ok((nd, dims))
}

impl IdxFile {
    /// Opens `path`, unpacking it first if it is gzip-compressed; checks header and size.
    /// Images of more than `max_pixels` pixels refuse the file from its header, before anything
    /// is unpacked; a gzip file is unpacked only as far as its header's images reach.
    pub fn open(path: &Path, max_pixels: u64) -> std::io::Result<(Self, Option<String>)> {
        let mut f = File::open(path)?;
        let mut magic = [0u8; 2];
        f.read_exact(&mut magic)
            .map_err(|_| bad("too short for an IDX header"))?;
        let gz = magic == [0x1F, 0x8B];
        let reader = || -> std::io::Result<Box<dyn Read>> {
            let src = BufReader::new(File::open(path)?);
            Ok(if gz {
                Box::new(flate2::read::MultiGzDecoder::new(src))
            } else {
                Box::new(src)
            })
        };
        let (nd, dims) = header(&mut reader()?)?;
        let (rows, cols, channels) = match dims[..] {
            [_, r, c] => (r, c, 1),
            [_, r, c, ch] if ch == 1 || ch == 3 => (r, c, ch),
            [_] => {
                return Err(bad(
                    "a 1-dimensional IDX file holds labels, not images; give the images file",
                ))
            }
            _ => {
                return Err(bad(format!(
                    "IDX dimensions {dims:?}; images need [count, rows, cols] or [count, rows, cols, 1|3]"
                )))
            }
        };
        if rows == 0 || cols == 0 {
            return Err(bad(format!("IDX images of {rows}×{cols} pixels")));
        }
        if rows * cols > max_pixels {
            return Err(bad(format!(
                "IDX images of {rows}×{cols} pixels, over data.max_pixels ({max_pixels})"
            )));
        }
        let data_offset = 4 + 4 * nd as u64;
        let (file, unpacked) = if gz {
            let want = data_offset.saturating_add(dims[0].saturating_mul(rows * cols * channels));
            check_unpack(want, f.metadata()?.len())?;
            let mut tmp = tempfile::NamedTempFile::new()?;
            std::io::copy(&mut reader()?.take(want), tmp.as_file_mut())
                .map_err(|e| bad(format!("gzip data is corrupt: {e}")))?;
            (tmp.reopen()?, Some(tmp))
        } else {
            (File::open(path)?, None)
        };
        let size = file.metadata()?.len();
        let per = rows * cols * channels;
        let declared = dims[0];
        let present = size.saturating_sub(data_offset) / per;
        let note = (present < declared).then(|| {
            format!(
                "the header declares {declared} images, the file holds {present} whole ones; the rest is skipped (truncated file)"
            )
        });
        Ok((
            IdxFile {
                path: path.to_path_buf(),
                count: present.min(declared) as usize,
                rows: rows as u32,
                cols: cols as u32,
                channels: channels as u32,
                data_offset,
                file,
                _unpacked: unpacked,
            },
            note,
        ))
    }

    /// Image `i` as a decoded image.
    pub fn image(&self, i: usize) -> Result<image::DynamicImage, String> {
        let per = (self.rows * self.cols * self.channels) as usize;
        let mut buf = vec![0u8; per];
        self.file
            .read_exact_at(&mut buf, self.data_offset + (i * per) as u64)
            .map_err(|e| e.to_string())?;
        let img = if self.channels == 1 {
            image::GrayImage::from_raw(self.cols, self.rows, buf).map(image::DynamicImage::from)
        } else {
            image::RgbImage::from_raw(self.cols, self.rows, buf).map(image::DynamicImage::from)
        };
        img.ok_or_else(|| "image buffer of the wrong size".to_string())
    }
}

/// An IDX image file's bytes (tests and fixtures): `images` of `rows × cols` grayscale.
pub fn encode(rows: u32, cols: u32, images: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, 3];
    for d in [images.len() as u32, rows, cols] {
        out.extend_from_slice(&d.to_be_bytes());
    }
    for im in images {
        out.extend_from_slice(im);
    }
    out
}
