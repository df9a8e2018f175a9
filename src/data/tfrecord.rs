//! TFRecord files of `tf.train.Example`, the format TF users keep image data in: an index of
//! record offsets built by reading only the 12-byte headers (length + its masked CRC-32C), and
//! random access to one record with its data CRC checked.
//!
//! Layout of one record: `u64 length (LE) · u32 masked_crc32c(length) · data · u32
//! masked_crc32c(data)`. A bad length CRC means the rest of the file cannot be framed: the index
//! stops there and the error names the file and offset; a bad data CRC skips that record only.
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        t[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// TFRecord's masked CRC (rotated and offset so CRCs of CRCs stay well distributed).
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xA282_EAD8)
}

/// One record's place in its file: the offset of its header and its data length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordRef {
    pub offset: u64,
    pub len: u64,
}

/// Frames every record of `path` from the headers alone (the data is not read). Returns the
/// records found and, if the file cannot be framed to its end, why and where it stopped.
pub fn index(path: &Path) -> std::io::Result<(Vec<RecordRef>, Option<String>)> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut magic = [0u8; 2];
    if size >= 2 {
        f.read_exact(&mut magic)?;
        if magic == [0x1F, 0x8B] {
            return Ok((
                Vec::new(),
                Some("offset 0: the file is gzip-compressed; pretext reads uncompressed TFRecord files (decompress it with gunzip)".into()),
            ));
        }
    }
    let mut out = Vec::new();
    let mut off = 0u64;
    let mut head = [0u8; 12];
    while off < size {
        if size - off < 12 {
            return Ok((
                out,
                Some(format!(
                    "offset {off}: truncated record header ({} bytes left)",
                    size - off
                )),
            ));
        }
        f.seek(SeekFrom::Start(off))?;
        f.read_exact(&mut head)?;
        let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(head[8..].try_into().expect("4 bytes"));
        if masked_crc(&head[..8]) != crc {
            return Ok((out, Some(format!("offset {off}: corrupt record length (length CRC mismatch); the rest of the file is skipped"))));
        }
        let end = off.checked_add(16).and_then(|e| e.checked_add(len));
        match end {
            Some(end) if end <= size => {
                out.push(RecordRef { offset: off, len });
                off = end;
            }
            _ => {
                return Ok((out, Some(format!("offset {off}: record of {len} bytes runs past the end of the file ({size} bytes); truncated"))));
            }
        }
    }
    Ok((out, None))
}

/// Reads one record's data and checks its CRC.
pub fn read(path: &Path, r: RecordRef) -> Result<Vec<u8>, String> {
    super::decode::check_encoded_len(r.len)
        .map_err(|e| format!("offset {}: record of {e}", r.offset))?;
    let f = File::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; r.len as usize + 4];
    f.read_exact_at(&mut buf, r.offset + 12)
        .map_err(|e| format!("offset {}: {e}", r.offset))?;
    let crc = u32::from_le_bytes(buf[r.len as usize..].try_into().expect("4 bytes"));
    buf.truncate(r.len as usize);
    if masked_crc(&buf) != crc {
        return Err(format!(
            "offset {}: corrupt record data (data CRC mismatch)",
            r.offset
        ));
    }
    Ok(buf)
}

/// Appends one framed record to `out` (tests and fixtures).
pub fn frame(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// `tf.train.Example` and the messages it holds (tensorflow/core/example/{example,feature}.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Example {
    #[prost(message, optional, tag = "1")]
    pub features: Option<Features>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Features {
    #[prost(map = "string, message", tag = "1")]
    pub feature: HashMap<String, Feature>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Feature {
    #[prost(oneof = "Kind", tags = "1, 2, 3")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(message, tag = "1")]
    BytesList(BytesList),
    #[prost(message, tag = "2")]
    FloatList(FloatList),
    #[prost(message, tag = "3")]
    Int64List(Int64List),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BytesList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub value: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FloatList {
    #[prost(float, repeated, tag = "1")]
    pub value: Vec<f32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Int64List {
    #[prost(int64, repeated, tag = "1")]
    pub value: Vec<i64>,
}

/// The encoded image under `key` in a serialized Example.
pub fn example_image(record: &[u8], key: &str) -> Result<Vec<u8>, String> {
    let ex: Example =
        prost::Message::decode(record).map_err(|e| format!("not a tf.train.Example: {e}"))?;
    let mut feats = ex.features.map(|f| f.feature).unwrap_or_default();
    match feats.remove(key).and_then(|f| f.kind) {
        Some(Kind::BytesList(mut b)) if !b.value.is_empty() => Ok(b.value.swap_remove(0)),
        Some(Kind::BytesList(_)) => Err(format!("feature '{key}' is an empty bytes list")),
        Some(_) => Err(format!(
            "feature '{key}' is not a bytes list (an encoded image)"
        )),
        None => {
            let mut keys: Vec<_> = feats.keys().cloned().collect();
            keys.sort();
            Err(format!(
                "the Example has no feature '{key}' (it has: {}); set data.image_key",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ))
        }
    }
}

/// A serialized Example with one bytes feature (tests and fixtures).
pub fn example_with(key: &str, bytes: Vec<u8>) -> Vec<u8> {
    let mut feature = HashMap::new();
    feature.insert(
        key.to_string(),
        Feature {
            kind: Some(Kind::BytesList(BytesList { value: vec![bytes] })),
        },
    );
    prost::Message::encode_to_vec(&Example {
        features: Some(Features { feature }),
    })
}
