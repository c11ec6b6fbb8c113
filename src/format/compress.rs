//! Compression of initramfs archives (and kernels) in the forms the Linux kernel accepts.
//!
//! Pipeline stage: format (pure). Bytes in, bytes out. The kernel's decompressors
//! (`lib/decompress.c`) pick a format by its first bytes, and each has a trap:
//! - lz4: only the *legacy* frame (magic 0x184C2102, then `{u32 LE size, block}` for each
//!   chunk of at most 8 MiB); the modern lz4 frame is not recognised;
//! - xz: XZ Embedded checks only CRC32 (or none); xz's default CRC64 fails to decode;
//! - gzip: written with mtime 0 and no file name so the output is reproducible.
//!
//! Decompression is bounded: it refuses to produce more than a caller-given limit, so a
//! hostile stream cannot turn into a huge allocation.

use std::io::{Read, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Lz4,
    Xz,
    Zstd,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{format} compression failed: {source}")]
    Compress { format: &'static str, source: std::io::Error },
    #[error("{format} data is corrupt: {source}")]
    Corrupt { format: &'static str, source: std::io::Error },
    #[error("decompressed data exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("lz4 legacy chunk at offset {offset} claims {size} bytes, only {left} remain")]
    Lz4ChunkPastEnd { offset: usize, size: usize, left: usize },
}

const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// The kernel's unlz4 decodes chunks of at most this many bytes.
const LZ4_CHUNK: usize = 8 << 20;

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// Recognises a compressed stream by its magic, as the kernel does.
    pub fn detect(data: &[u8]) -> Compression {
        match data {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x02, 0x21, 0x4c, 0x18, ..] => Compression::Lz4,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Xz,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// Compresses `data`; the same input always gives the same bytes.
pub fn compress(data: &[u8], c: Compression) -> Result<Vec<u8>, Error> {
    let err = |source| Error::Compress { format: c.name(), source };
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
            gz.write_all(data).map_err(err)?;
            gz.finish().map_err(err)
        }
        Compression::Lz4 => {
            let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
            for chunk in data.chunks(LZ4_CHUNK) {
                let block = lz4_flex::block::compress(chunk);
                out.extend_from_slice(&(block.len() as u32).to_le_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Xz => {
            // A 1 MiB dictionary keeps the kernel's decoder small (as Android builds do).
            let mut opts = liblzma::stream::LzmaOptions::new_preset(6).map_err(|e| err(e.into()))?;
            opts.dict_size(1 << 20);
            let mut filters = liblzma::stream::Filters::new();
            filters.lzma2(&opts);
            let stream = liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc32)
                .map_err(|e| err(e.into()))?;
            let mut w = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
            w.write_all(data).map_err(err)?;
            w.finish().map_err(err)
        }
        Compression::Zstd => zstd::stream::encode_all(data, 19).map_err(err),
    }
}

type Decoder<'a> = (Box<dyn Read + 'a>, &'static str);

/// A decoder over `data` for the stream formats, and the format's name for errors; `None`
/// for uncompressed data and for legacy lz4, which is read chunk by chunk.
fn decoder(data: &[u8]) -> Result<Option<Decoder<'_>>, Error> {
    Ok(Some(match Compression::detect(data) {
        Compression::None | Compression::Lz4 => return Ok(None),
        Compression::Gzip => (Box::new(flate2::read::MultiGzDecoder::new(data)), "gzip"),
        Compression::Xz => (Box::new(liblzma::read::XzDecoder::new_multi_decoder(data)), "xz"),
        Compression::Zstd => (
            Box::new(
                zstd::stream::read::Decoder::new(data).map_err(|source| Error::Corrupt { format: "zstd", source })?,
            ),
            "zstd",
        ),
    }))
}

/// At most `n` bytes from a decoder.
fn read_at_most(r: impl Read, n: u64, format: &'static str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    r.take(n).read_to_end(&mut out).map_err(|source| Error::Corrupt { format, source })?;
    Ok(out)
}

/// Decompresses whatever `data` is (detected by magic), producing at most `limit` bytes.
pub fn decompress(data: &[u8], limit: u64) -> Result<Vec<u8>, Error> {
    let out = match decoder(data)? {
        Some((r, format)) => read_at_most(r, limit.saturating_add(1), format)?,
        None if Compression::detect(data) == Compression::Lz4 => lz4_legacy(data, limit)?,
        None if data.len() as u64 > limit => return Err(Error::TooLarge { limit }),
        None => data.to_vec(),
    };
    if out.len() as u64 > limit {
        return Err(Error::TooLarge { limit });
    }
    Ok(out)
}

fn lz4_legacy(data: &[u8], limit: u64) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut off = 4;
    // Legacy streams may be followed by zero padding or another magic.
    while off + 4 <= data.len() {
        let size = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        if size == LZ4_LEGACY_MAGIC as usize {
            off += 4;
            continue;
        }
        if size == 0 {
            break;
        }
        off += 4;
        if size > data.len() - off {
            return Err(Error::Lz4ChunkPastEnd { offset: off - 4, size, left: data.len() - off });
        }
        // A chunk never expands past 8 MiB, so this allocation is bounded.
        let block = lz4_flex::block::decompress(&data[off..off + size], LZ4_CHUNK)
            .map_err(|e| Error::Corrupt { format: "lz4", source: std::io::Error::other(e.to_string()) })?;
        out.extend_from_slice(&block);
        if out.len() as u64 > limit {
            return Err(Error::TooLarge { limit });
        }
        off += size;
    }
    Ok(out)
}

/// The first `n` bytes of the decompressed stream (fewer if it is shorter), reading no more
/// of the input than that needs.
pub fn decompress_prefix(data: &[u8], n: usize) -> Result<Vec<u8>, Error> {
    if let Some((r, format)) = decoder(data)? {
        return read_at_most(r, n as u64, format);
    }
    if Compression::detect(data) == Compression::Lz4 {
        // The first chunk alone (at most 8 MiB) holds the prefix.
        let size = data.get(4..8).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize).unwrap_or(0);
        let end = 8usize.saturating_add(size).min(data.len());
        let mut out = lz4_legacy(&data[..end], LZ4_CHUNK as u64)?;
        out.truncate(n);
        return Ok(out);
    }
    Ok(data[..n.min(data.len())].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..40_000u32 {
            v.extend_from_slice(format!("line {i} of the initramfs\n").as_bytes());
        }
        v
    }

    #[test]
    fn every_format_round_trips_and_is_detected() {
        let data = sample();
        for c in [Compression::None, Compression::Gzip, Compression::Lz4, Compression::Xz, Compression::Zstd] {
            let z = compress(&data, c).unwrap();
            assert_eq!(Compression::detect(&z), c, "{c:?}");
            assert_eq!(z, compress(&data, c).unwrap(), "{c:?} is deterministic");
            assert_eq!(decompress(&z, 1 << 30).unwrap(), data, "{c:?}");
        }
    }

    #[test]
    fn prefixes() {
        let data = sample();
        for c in [Compression::None, Compression::Gzip, Compression::Lz4, Compression::Xz, Compression::Zstd] {
            let z = compress(&data, c).unwrap();
            assert_eq!(decompress_prefix(&z, 64).unwrap(), &data[..64], "{c:?}");
        }
    }

    #[test]
    fn xz_uses_crc32_and_lz4_the_legacy_frame() {
        let z = compress(b"hello", Compression::Xz).unwrap();
        assert_eq!(z[7], 0x01, "stream flags: check type CRC32");
        let z = compress(b"hello", Compression::Lz4).unwrap();
        assert_eq!(&z[..4], &[0x02, 0x21, 0x4c, 0x18]);
    }

    #[test]
    fn lz4_splits_into_8_mib_chunks() {
        let data = vec![7u8; LZ4_CHUNK + 10];
        let z = compress(&data, Compression::Lz4).unwrap();
        let first = u32::from_le_bytes(z[4..8].try_into().unwrap()) as usize;
        let second = u32::from_le_bytes(z[8 + first..12 + first].try_into().unwrap()) as usize;
        assert_eq!(12 + first + second, z.len());
        assert_eq!(decompress(&z, 1 << 30).unwrap(), data);
    }

    #[test]
    fn decompression_is_bounded_and_corruption_is_an_error() {
        let data = sample();
        for c in [Compression::Gzip, Compression::Lz4, Compression::Xz, Compression::Zstd] {
            let z = compress(&data, c).unwrap();
            assert!(matches!(decompress(&z, 1000), Err(Error::TooLarge { .. })), "{c:?}");
            let cut = &z[..z.len() / 2];
            assert!(decompress(cut, 1 << 30).is_err(), "{c:?} truncated");
        }
    }
}
