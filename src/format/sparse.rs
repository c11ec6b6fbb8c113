//! Android sparse images (libsparse format), as fastboot flashes them.
//!
//! Pipeline stage: format (pure). The encoder reads a raw image through `Read + Seek` and
//! writes the sparse form to any `Write`; the decoder reads a sparse stream and reports
//! what to put where through a callback. Neither knows about files or paths.
//!
//! Layout reference: AOSP `system/core/libsparse/sparse_format.h`. Chunk choice follows
//! img2simg (`sparse_file_read_normal`): a full block whose 32-bit words are all equal
//! becomes a FILL chunk (zeros included), anything else RAW; adjacent runs merge; RAW runs
//! are cut at 64 MiB like libsparse's `MAX_BACKED_BLOCK_SIZE`.

use std::io::{self, Read, Seek, SeekFrom, Write};

pub const MAGIC: u32 = 0xed26_ff3a;
const FILE_HDR_SZ: u16 = 28;
const CHUNK_HDR_SZ: u16 = 12;
pub const CHUNK_RAW: u16 = 0xcac1;
pub const CHUNK_FILL: u16 = 0xcac2;
pub const CHUNK_DONT_CARE: u16 = 0xcac3;
pub const CHUNK_CRC32: u16 = 0xcac4;
const MAX_RAW_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading input: {0}")]
    Io(#[from] io::Error),
    #[error("block size {0} is invalid (expected a non-zero multiple of 4, at least 1024)")]
    BadBlockSize(u32),
    #[error("image of {len} bytes has {blocks} blocks of {block_size}, more than 2^32")]
    TooManyBlocks { len: u64, block_size: u32, blocks: u64 },
    #[error("bad magic {0:#010x} (expected 0xed26ff3a)")]
    BadMagic(u32),
    #[error("unsupported major version {0} (expected 1)")]
    BadVersion(u16),
    #[error("file header size {0} is smaller than 28")]
    BadFileHeaderSize(u16),
    #[error("chunk header size {0} is smaller than 12")]
    BadChunkHeaderSize(u16),
    #[error("total_blks is 0")]
    NoBlocks,
    #[error("chunk {index}: unknown chunk type {chunk_type:#06x}")]
    UnknownChunk { index: u32, chunk_type: u16 },
    #[error("chunk {index}: total_sz {total_sz} does not match {expected} for its type and size")]
    BadChunkSize { index: u32, total_sz: u32, expected: u64 },
    #[error("chunk {index}: ends at block {end}, past total_blks {total}")]
    ChunkExceedsTotal { index: u32, end: u64, total: u32 },
    #[error("chunks cover {covered} blocks but the header says total_blks {total}")]
    BlockCountMismatch { covered: u64, total: u32 },
    #[error("chunk {index}: CRC32 {found:#010x} does not match the data ({computed:#010x})")]
    CrcMismatch { index: u32, found: u32, computed: u32 },
    #[error("truncated sparse image: {0}")]
    Truncated(&'static str),
}

/// The 28-byte file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub block_size: u32,
    pub total_blocks: u32,
    pub total_chunks: u32,
    pub image_checksum: u32,
}

impl Header {
    fn to_bytes(self) -> [u8; 28] {
        let mut b = [0u8; 28];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&1u16.to_le_bytes());
        b[6..8].copy_from_slice(&0u16.to_le_bytes());
        b[8..10].copy_from_slice(&FILE_HDR_SZ.to_le_bytes());
        b[10..12].copy_from_slice(&CHUNK_HDR_SZ.to_le_bytes());
        b[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.total_blocks.to_le_bytes());
        b[20..24].copy_from_slice(&self.total_chunks.to_le_bytes());
        b[24..28].copy_from_slice(&self.image_checksum.to_le_bytes());
        b
    }
}

/// One run of blocks in the expanded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    Raw { blocks: u32 },
    Fill { blocks: u32, value: u32 },
    DontCare { blocks: u32 },
}

impl Chunk {
    pub fn blocks(&self) -> u32 {
        match *self {
            Chunk::Raw { blocks } | Chunk::Fill { blocks, .. } | Chunk::DontCare { blocks } => blocks,
        }
    }
}

fn check_block_size(bs: u32) -> Result<(), Error> {
    if bs >= 1024 && bs % 4 == 0 {
        Ok(())
    } else {
        Err(Error::BadBlockSize(bs))
    }
}

/// Classifies one full block: `Some(word)` if every 32-bit word equals `word`.
fn fill_value(block: &[u8]) -> Option<u32> {
    let first: [u8; 4] = block[..4].try_into().unwrap();
    // Compare in 8-byte steps where possible: this loop is the encoder's hot path.
    let pat = u64::from_ne_bytes([first[0], first[1], first[2], first[3], first[0], first[1], first[2], first[3]]);
    let mut words = block.chunks_exact(8);
    for w in &mut words {
        if u64::from_ne_bytes(w.try_into().unwrap()) != pat {
            return None;
        }
    }
    if words.remainder().chunks_exact(4).any(|w| w != first) {
        return None;
    }
    Some(u32::from_le_bytes(first))
}

fn push(chunks: &mut Vec<Chunk>, c: Chunk, max_raw_blocks: u32) {
    match (chunks.last_mut(), c) {
        (Some(Chunk::Raw { blocks }), Chunk::Raw { blocks: n }) if *blocks + n <= max_raw_blocks => *blocks += n,
        (Some(Chunk::Fill { blocks, value }), Chunk::Fill { blocks: n, value: v }) if *value == v => *blocks += n,
        (Some(Chunk::DontCare { blocks }), Chunk::DontCare { blocks: n }) => *blocks += n,
        _ => chunks.push(c),
    }
}

/// Reads `input` to its end and plans the chunks img2simg would emit.
pub fn plan<R: Read>(mut input: R, block_size: u32) -> Result<(u64, Vec<Chunk>), Error> {
    check_block_size(block_size)?;
    let bs = block_size as usize;
    let max_raw_blocks = (MAX_RAW_BYTES / block_size as u64).max(1) as u32;
    let per_read = (1usize << 20).div_ceil(bs) * bs;
    let mut buf = vec![0u8; per_read];
    let mut chunks = Vec::new();
    let mut len = 0u64;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        for block in buf[..n].chunks(bs) {
            let c = if block.len() == bs {
                match fill_value(block) {
                    Some(value) => Chunk::Fill { blocks: 1, value },
                    None => Chunk::Raw { blocks: 1 },
                }
            } else {
                // A trailing partial block is RAW, zero-padded (as img2simg does).
                Chunk::Raw { blocks: 1 }
            };
            push(&mut chunks, c, max_raw_blocks);
        }
        if n < buf.len() {
            break;
        }
    }
    let blocks = len.div_ceil(block_size as u64);
    if blocks > u32::MAX as u64 {
        return Err(Error::TooManyBlocks { len, block_size, blocks });
    }
    Ok((len, chunks))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Encodes a raw image into sparse form. Returns the header written.
pub fn encode<R: Read + Seek, W: Write>(mut input: R, block_size: u32, mut out: W) -> Result<Header, Error> {
    let start = input.stream_position()?;
    let (len, chunks) = plan(&mut input, block_size)?;
    input.seek(SeekFrom::Start(start))?;
    let header = Header {
        block_size,
        total_blocks: len.div_ceil(block_size as u64) as u32,
        total_chunks: chunks.len() as u32,
        image_checksum: 0,
    };
    out.write_all(&header.to_bytes())?;
    let bs = block_size as u64;
    let mut pos = 0u64; // position in the expanded image
    let mut buf = vec![0u8; 1 << 20];
    for c in &chunks {
        let bytes = c.blocks() as u64 * bs;
        match *c {
            Chunk::Raw { blocks } => {
                write_chunk_header(&mut out, CHUNK_RAW, blocks, 12 + bytes as u32)?;
                input.seek(SeekFrom::Start(start + pos))?;
                let mut left = bytes;
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let got = read_full(&mut input, &mut buf[..want])?;
                    // Past the end of the input (trailing partial block): zero padding.
                    buf[got..want].fill(0);
                    out.write_all(&buf[..want])?;
                    left -= want as u64;
                }
            }
            Chunk::Fill { blocks, value } => {
                write_chunk_header(&mut out, CHUNK_FILL, blocks, 16)?;
                out.write_all(&value.to_le_bytes())?;
            }
            Chunk::DontCare { blocks } => write_chunk_header(&mut out, CHUNK_DONT_CARE, blocks, 12)?,
        }
        pos += bytes;
    }
    out.flush()?;
    Ok(header)
}

fn write_chunk_header<W: Write>(out: &mut W, ty: u16, blocks: u32, total: u32) -> io::Result<()> {
    let mut h = [0u8; 12];
    h[0..2].copy_from_slice(&ty.to_le_bytes());
    h[4..8].copy_from_slice(&blocks.to_le_bytes());
    h[8..12].copy_from_slice(&total.to_le_bytes());
    out.write_all(&h)
}

/// What the decoder asks its sink to do, at byte offsets of the expanded image.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Data { offset: u64, data: &'a [u8] },
    Fill { offset: u64, len: u64, value: u32 },
    DontCare { offset: u64, len: u64 },
}

fn read_exact_or<R: Read>(r: &mut R, buf: &mut [u8], what: &'static str) -> Result<(), Error> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated(what),
        _ => Error::Io(e),
    })
}

/// Reads and validates the file header (skipping extra header bytes as libsparse does).
pub fn read_header<R: Read>(input: &mut R) -> Result<(Header, u16), Error> {
    let mut b = [0u8; 28];
    read_exact_or(input, &mut b, "file header")?;
    let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let magic = u32at(0);
    if magic != MAGIC {
        return Err(Error::BadMagic(magic));
    }
    if u16at(4) != 1 {
        return Err(Error::BadVersion(u16at(4)));
    }
    let file_hdr_sz = u16at(8);
    if file_hdr_sz < FILE_HDR_SZ {
        return Err(Error::BadFileHeaderSize(file_hdr_sz));
    }
    let chunk_hdr_sz = u16at(10);
    if chunk_hdr_sz < CHUNK_HDR_SZ {
        return Err(Error::BadChunkHeaderSize(chunk_hdr_sz));
    }
    let header =
        Header { block_size: u32at(12), total_blocks: u32at(16), total_chunks: u32at(20), image_checksum: u32at(24) };
    check_block_size(header.block_size)?;
    if header.total_blocks == 0 {
        return Err(Error::NoBlocks);
    }
    skip(input, (file_hdr_sz - FILE_HDR_SZ) as u64, "file header")?;
    Ok((header, chunk_hdr_sz))
}

fn skip<R: Read>(input: &mut R, n: u64, what: &'static str) -> Result<(), Error> {
    let copied = io::copy(&mut input.take(n), &mut io::sink())?;
    if copied != n {
        return Err(Error::Truncated(what));
    }
    Ok(())
}

/// Decodes a sparse stream, calling `sink` for every region in order. Validates every
/// chunk against the header before acting on it; RAW data is passed in pieces of at most
/// 1 MiB so a hostile size never turns into a huge allocation.
pub fn decode<R: Read, F>(mut input: R, mut sink: F) -> Result<Header, Error>
where
    F: FnMut(Op<'_>) -> io::Result<()>,
{
    let (header, chunk_hdr_sz) = read_header(&mut input)?;
    let bs = header.block_size as u64;
    let mut block = 0u64;
    let mut crc = crc32::Crc32::new();
    let mut buf = vec![0u8; 1 << 20];
    for index in 0..header.total_chunks {
        let mut h = [0u8; 12];
        read_exact_or(&mut input, &mut h, "chunk header")?;
        skip(&mut input, (chunk_hdr_sz - CHUNK_HDR_SZ) as u64, "chunk header")?;
        let chunk_type = u16::from_le_bytes([h[0], h[1]]);
        let chunk_sz = u32::from_le_bytes(h[4..8].try_into().unwrap()) as u64;
        let total_sz = u32::from_le_bytes(h[8..12].try_into().unwrap());
        let hdr = chunk_hdr_sz as u64;
        let expected = match chunk_type {
            CHUNK_RAW => hdr + chunk_sz * bs,
            CHUNK_FILL | CHUNK_CRC32 => hdr + 4,
            CHUNK_DONT_CARE => hdr,
            _ => return Err(Error::UnknownChunk { index, chunk_type }),
        };
        if total_sz as u64 != expected {
            return Err(Error::BadChunkSize { index, total_sz, expected });
        }
        let end = block + chunk_sz;
        if end > header.total_blocks as u64 {
            return Err(Error::ChunkExceedsTotal { index, end, total: header.total_blocks });
        }
        let offset = block * bs;
        let len = chunk_sz * bs;
        match chunk_type {
            CHUNK_RAW => {
                let mut left = len;
                let mut at = offset;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    read_exact_or(&mut input, &mut buf[..n], "RAW chunk data")?;
                    crc.update(&buf[..n]);
                    sink(Op::Data { offset: at, data: &buf[..n] })?;
                    at += n as u64;
                    left -= n as u64;
                }
            }
            CHUNK_FILL => {
                let mut v = [0u8; 4];
                read_exact_or(&mut input, &mut v, "FILL value")?;
                let value = u32::from_le_bytes(v);
                crc.update_fill(value, len);
                sink(Op::Fill { offset, len, value })?;
            }
            CHUNK_DONT_CARE => {
                crc.update_fill(0, len);
                sink(Op::DontCare { offset, len })?;
            }
            _ => {
                let mut v = [0u8; 4];
                read_exact_or(&mut input, &mut v, "CRC32 value")?;
                let found = u32::from_le_bytes(v);
                let computed = crc.value();
                if found != computed {
                    return Err(Error::CrcMismatch { index, found, computed });
                }
            }
        }
        block = end;
    }
    if block != header.total_blocks as u64 {
        return Err(Error::BlockCountMismatch { covered: block, total: header.total_blocks });
    }
    Ok(header)
}

/// Expands a sparse stream into `out` (DONT_CARE regions are zeros, as simg2img writes them).
pub fn decode_to<R: Read, W: Write>(input: R, mut out: W) -> Result<Header, Error> {
    let zeros = vec![0u8; 1 << 16];
    decode(input, |op| match op {
        Op::Data { data, .. } => out.write_all(data),
        Op::Fill { len, value, .. } => {
            let pattern: Vec<u8> = value.to_le_bytes().iter().copied().cycle().take(1 << 16).collect();
            write_repeated(&mut out, &pattern, len)
        }
        Op::DontCare { len, .. } => write_repeated(&mut out, &zeros, len),
    })
}

fn write_repeated<W: Write>(out: &mut W, pattern: &[u8], mut len: u64) -> io::Result<()> {
    while len > 0 {
        let n = len.min(pattern.len() as u64) as usize;
        out.write_all(&pattern[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// CRC-32 (IEEE 802.3, as zlib) for the optional CRC32 chunk.
mod crc32 {
    pub struct Crc32 {
        value: u32,
        table: [u32; 256],
    }
    impl Crc32 {
        pub fn new() -> Self {
            let mut table = [0u32; 256];
            for (i, t) in table.iter_mut().enumerate() {
                let mut c = i as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                }
                *t = c;
            }
            Crc32 { value: 0, table }
        }
        pub fn update(&mut self, data: &[u8]) {
            let mut c = !self.value;
            for &b in data {
                c = self.table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
            }
            self.value = !c;
        }
        pub fn update_fill(&mut self, value: u32, len: u64) {
            let pat = value.to_le_bytes();
            for _ in 0..len / 4 {
                self.update(&pat);
            }
        }
        pub fn value(&self) -> u32 {
            self.value
        }
    }
}

/// 600 KiB of varied data, 400 KiB of zeros, 8 KiB of a repeated word, 48 KiB varied,
/// and a 100-byte partial block: the shapes img2simg distinguishes.
#[doc(hidden)]
pub fn sample_image() -> Vec<u8> {
    let mut v = Vec::new();
    let mut x = 0x1234_5678u32;
    let mut noise = |n: usize, v: &mut Vec<u8>| {
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.push(x as u8);
        }
    };
    noise(600 * 1024, &mut v);
    v.extend(std::iter::repeat_n(0u8, 400 * 1024));
    v.extend([0xde, 0xad, 0xbe, 0xef].iter().cycle().take(8192));
    noise(48 * 1024, &mut v);
    noise(100, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Cursor;

    use super::sample_image as mixed_image;

    #[test]
    fn chunks_follow_img2simg() {
        let (len, chunks) = plan(Cursor::new(mixed_image()), 4096).unwrap();
        assert_eq!(len, (600 + 400 + 8 + 48) * 1024 + 100);
        assert_eq!(
            chunks,
            vec![
                Chunk::Raw { blocks: 150 },
                Chunk::Fill { blocks: 100, value: 0 },
                Chunk::Fill { blocks: 2, value: 0xefbe_adde },
                Chunk::Raw { blocks: 13 },
            ]
        );
    }

    #[test]
    fn round_trip_with_golden_digest() {
        let raw = mixed_image();
        let mut sparse = Vec::new();
        let h = encode(Cursor::new(&raw), 4096, &mut sparse).unwrap();
        assert_eq!(h.total_blocks, 265);
        assert_eq!(h.total_chunks, 4);
        let mut back = Vec::new();
        decode_to(Cursor::new(&sparse), &mut back).unwrap();
        // The expanded image is the input padded to whole blocks.
        assert_eq!(&back[..raw.len()], &raw[..]);
        assert!(back[raw.len()..].iter().all(|&b| b == 0));
        assert_eq!(back.len(), 265 * 4096);
        let digest = format!("{:x}", Sha256::digest(&sparse));
        assert_eq!(digest, GOLDEN_MIXED, "sparse writer output changed");
    }
    const GOLDEN_MIXED: &str = "04b9741a11cc978b7995e23ff866dbd71dcc11dbebf6390ab96117e4f6b6c8e3";

    #[test]
    fn raw_runs_are_cut_at_64_mib() {
        let mut chunks = Vec::new();
        for _ in 0..(16384 + 5) {
            push(&mut chunks, Chunk::Raw { blocks: 1 }, 16384);
        }
        assert_eq!(chunks, vec![Chunk::Raw { blocks: 16384 }, Chunk::Raw { blocks: 5 }]);
    }

    #[test]
    fn corrupt_images_are_errors_not_panics() {
        let mut sparse = Vec::new();
        encode(Cursor::new(mixed_image()), 4096, &mut sparse).unwrap();
        let run = |b: &[u8]| decode(Cursor::new(b), |_| Ok(()));
        for cut in [0, 10, 27, 28, 39, 100, sparse.len() - 1] {
            assert!(run(&sparse[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = sparse.clone();
        bad[0] = 0;
        assert!(matches!(run(&bad), Err(Error::BadMagic(_))));
        let mut bad = sparse.clone();
        bad[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(run(&bad), Err(Error::BadBlockSize(0))));
        // First chunk claims more blocks than the image has.
        let mut bad = sparse.clone();
        bad[28 + 4..28 + 8].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(matches!(run(&bad), Err(Error::BadChunkSize { index: 0, .. })));
        let mut bad = sparse.clone();
        bad[16..20].copy_from_slice(&10u32.to_le_bytes()); // total_blks too small
        assert!(matches!(run(&bad), Err(Error::ChunkExceedsTotal { index: 0, .. })));
        let mut bad = sparse;
        bad[28..30].copy_from_slice(&0xcaffu16.to_le_bytes());
        assert!(matches!(run(&bad), Err(Error::UnknownChunk { index: 0, chunk_type: 0xcaff })));
    }

    #[test]
    fn crc_chunk_is_checked() {
        let data = vec![5u8; 4096];
        let mut s = Vec::new();
        s.extend_from_slice(
            &Header { block_size: 4096, total_blocks: 1, total_chunks: 2, image_checksum: 0 }.to_bytes(),
        );
        write_chunk_header(&mut s, CHUNK_RAW, 1, 12 + 4096).unwrap();
        s.extend_from_slice(&data);
        let mut c = crc32::Crc32::new();
        c.update(&data);
        write_chunk_header(&mut s, CHUNK_CRC32, 0, 16).unwrap();
        s.extend_from_slice(&c.value().to_le_bytes());
        assert!(decode(Cursor::new(&s), |_| Ok(())).is_ok());
        let n = s.len();
        s[n - 1] ^= 1;
        assert!(matches!(decode(Cursor::new(&s), |_| Ok(())), Err(Error::CrcMismatch { .. })));
    }
}
