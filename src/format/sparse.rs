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
    #[error("max-download-size {max_len} is too small for a sparse piece (at least {min} bytes)")]
    PieceTooSmall { max_len: u32, min: u64 },
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

/// Where a run of blocks of the expanded image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Bytes at this offset of the source stream (a raw image, or a sparse file's RAW data).
    Data { offset: u64 },
    /// The 32-bit word repeated.
    Fill(u32),
}

/// A run of backed blocks (libsparse's `backed_block`); what lies between runs is
/// don't-care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First block of the expanded image.
    pub block: u32,
    /// Length in bytes (a multiple of the block size, except a source's short tail).
    pub len: u64,
    pub source: Source,
}

/// An image as libsparse sees it: its size and its backed runs, in block order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub block_size: u32,
    /// Expanded size in blocks.
    pub total_blocks: u32,
    pub runs: Vec<Run>,
}

/// What an all-zero block of a raw image becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zeros {
    /// A FILL 0 chunk, as img2simg writes: the device writes zeros.
    #[default]
    Fill,
    /// Nothing (DONT_CARE): the device leaves what was there. Only for images whose zero
    /// blocks carry no meaning, such as unused space of a fresh filesystem.
    DontCare,
}

impl Layout {
    fn blocks_of(&self, len: u64) -> u64 {
        len.div_ceil(self.block_size as u64)
    }

    /// The chunks a sparse file of this layout holds, don't-care gaps included.
    pub fn chunks(&self) -> Vec<Chunk> {
        let mut out = Vec::new();
        let mut last = 0u64;
        for r in &self.runs {
            if r.block as u64 > last {
                out.push(Chunk::DontCare { blocks: (r.block as u64 - last) as u32 });
            }
            let blocks = self.blocks_of(r.len) as u32;
            out.push(match r.source {
                Source::Data { .. } => Chunk::Raw { blocks },
                Source::Fill(value) => Chunk::Fill { blocks, value },
            });
            last = r.block as u64 + blocks as u64;
        }
        if last < self.total_blocks as u64 {
            out.push(Chunk::DontCare { blocks: (self.total_blocks as u64 - last) as u32 });
        }
        out
    }

    /// Plans a raw image the way img2simg does (`sparse_file_read_normal`): each full
    /// block whose 32-bit words are all equal is a fill, others are data; neighbours of
    /// the same kind merge, data runs up to 64 MiB; a short last block is data.
    pub fn from_raw<R: Read>(mut input: R, block_size: u32, zeros: Zeros) -> Result<Layout, Error> {
        let mut p = Planner::new(block_size, zeros)?;
        let per_read = (1usize << 20).div_ceil(p.bs) * p.bs;
        let mut buf = vec![0u8; per_read];
        loop {
            let n = read_full(&mut input, &mut buf)?;
            for block in buf[..n].chunks(p.bs) {
                p.block(block);
            }
            if n < buf.len() {
                break;
            }
        }
        p.finish()
    }

    /// [`Layout::from_raw`] over an image already in memory (or memory-mapped): no copy.
    pub fn from_raw_slice(image: &[u8], block_size: u32, zeros: Zeros) -> Result<Layout, Error> {
        Layout::from_raw_slice_with_holes(image, block_size, zeros, &[])
    }

    /// [`Layout::from_raw_slice`] told where the image is known to read as zeros (byte
    /// ranges `(start, end)`, ascending, such as a file's holes): the whole blocks inside them
    /// are planned as zero blocks without reading them. The layout is the same as without
    /// the hint when those ranges do read as zeros.
    pub fn from_raw_slice_with_holes(
        image: &[u8],
        block_size: u32,
        zeros: Zeros,
        holes: &[(u64, u64)],
    ) -> Result<Layout, Error> {
        let mut p = Planner::new(block_size, zeros)?;
        let (bs, len) = (p.bs as u64, image.len() as u64);
        let mut holes = holes.iter().map(|&(a, b)| (a.div_ceil(bs) * bs, b.min(len) / bs * bs)).peekable();
        let mut at = 0u64;
        while at < len {
            while holes.peek().is_some_and(|&(_, end)| end <= at) {
                holes.next();
            }
            match holes.peek() {
                Some(&(start, end)) if start <= at && end > at => {
                    p.zero_blocks((end - at) / bs);
                    at = end;
                }
                next => {
                    // Up to the next hole (or the end), block by block.
                    let stop = next.map_or(len, |&(start, _)| start.max(at + bs).min(len));
                    for block in image[at as usize..stop as usize].chunks(p.bs) {
                        p.block(block);
                    }
                    at = stop;
                }
            }
        }
        p.finish()
    }

    /// Indexes a sparse file without reading its data: RAW chunks become data runs at
    /// their offset in the file, FILL chunks fill runs, DONT_CARE gaps (as libsparse's
    /// `sparse_file_import` does). CRC32 chunks are skipped.
    pub fn from_sparse<R: Read + Seek>(mut input: R) -> Result<Layout, Error> {
        let (header, chunk_hdr_sz) = read_header(&mut input)?;
        let bs = header.block_size as u64;
        let mut runs: Vec<Run> = Vec::new();
        let mut block = 0u64;
        for index in 0..header.total_chunks {
            let (chunk_type, chunk_sz) = read_chunk_header(&mut input, index, chunk_hdr_sz, &header)?;
            let end = block + chunk_sz;
            if end > header.total_blocks as u64 {
                return Err(Error::ChunkExceedsTotal { index, end, total: header.total_blocks });
            }
            match chunk_type {
                CHUNK_RAW => {
                    let offset = input.stream_position()?;
                    let len = chunk_sz * bs;
                    let after = offset.checked_add(len).ok_or(Error::Truncated("RAW chunk data"))?;
                    if input.seek(SeekFrom::End(0))? < after {
                        return Err(Error::Truncated("RAW chunk data"));
                    }
                    input.seek(SeekFrom::Start(after))?;
                    if len > 0 {
                        runs.push(Run { block: block as u32, len, source: Source::Data { offset } });
                    }
                }
                CHUNK_FILL => {
                    let mut v = [0u8; 4];
                    read_exact_or(&mut input, &mut v, "FILL value")?;
                    let value = u32::from_le_bytes(v);
                    match runs.last_mut() {
                        // libsparse merges neighbouring fills of one value.
                        Some(r) if r.source == Source::Fill(value) && r.block as u64 * bs + r.len == block * bs => {
                            r.len += chunk_sz * bs
                        }
                        _ if chunk_sz > 0 => {
                            runs.push(Run { block: block as u32, len: chunk_sz * bs, source: Source::Fill(value) })
                        }
                        _ => {}
                    }
                }
                CHUNK_DONT_CARE => {}
                _ => skip(&mut input, 4, "CRC32 value")?,
            }
            block = end;
        }
        if block != header.total_blocks as u64 {
            return Err(Error::BlockCountMismatch { covered: block, total: header.total_blocks });
        }
        Ok(Layout { block_size: header.block_size, total_blocks: header.total_blocks, runs })
    }

    /// This layout followed by `bytes` of zeros (rounded up to whole blocks) written after
    /// its end: a FILL 0 run that the device writes, so what followed the image there is
    /// gone.
    pub fn then_zeros(mut self, bytes: u64) -> Result<Layout, Error> {
        let bs = self.block_size as u64;
        let blocks = bytes.div_ceil(bs);
        let total = self.total_blocks as u64 + blocks;
        if total > u32::MAX as u64 {
            return Err(Error::TooManyBlocks { len: total * bs, block_size: self.block_size, blocks: total });
        }
        if blocks > 0 {
            self.runs.push(Run { block: self.total_blocks, len: blocks * bs, source: Source::Fill(0) });
        }
        self.total_blocks = total as u32;
        Ok(self)
    }

    /// The size in bytes of this layout written as a sparse file.
    pub fn sparse_len(&self) -> u64 {
        let bs = self.block_size as u64;
        28 + self
            .chunks()
            .iter()
            .map(|c| match c {
                Chunk::Raw { blocks } => 12 + *blocks as u64 * bs,
                Chunk::Fill { .. } => 16,
                Chunk::DontCare { .. } => 12,
            })
            .sum::<u64>()
    }

    /// Writes this layout as a sparse file, reading data runs from `src`.
    pub fn write<R: Read + Seek, W: Write>(&self, src: R, out: W) -> Result<Header, Error> {
        self.write_from(&mut Reader(src, vec![0u8; 1 << 20]), out)
    }

    /// [`Layout::write`] with the data in memory (or memory-mapped).
    pub fn write_slice<W: Write>(&self, mut src: &[u8], out: W) -> Result<Header, Error> {
        self.write_from(&mut src, out)
    }

    fn write_from<W: Write>(&self, src: &mut dyn DataSource, mut out: W) -> Result<Header, Error> {
        let chunks = self.chunks();
        let header = Header {
            block_size: self.block_size,
            total_blocks: self.total_blocks,
            total_chunks: chunks.len() as u32,
            image_checksum: 0,
        };
        out.write_all(&header.to_bytes())?;
        let bs = self.block_size as u64;
        let mut last = 0u64;
        for r in &self.runs {
            if r.block as u64 > last {
                write_chunk_header(&mut out, CHUNK_DONT_CARE, (r.block as u64 - last) as u32, 12)?;
            }
            let blocks = self.blocks_of(r.len);
            match r.source {
                Source::Data { offset } => {
                    let bytes = blocks * bs;
                    let total = u32::try_from(12 + bytes).map_err(|_| Error::TooManyBlocks {
                        len: bytes,
                        block_size: self.block_size,
                        blocks,
                    })?;
                    write_chunk_header(&mut out, CHUNK_RAW, blocks as u32, total)?;
                    let copied = src.copy(offset, r.len, &mut out)?;
                    // A short tail (last block of a raw image) is padded with zeros.
                    io::copy(&mut io::repeat(0).take(bytes - copied), &mut out)?;
                }
                Source::Fill(value) => {
                    write_chunk_header(&mut out, CHUNK_FILL, blocks as u32, 16)?;
                    out.write_all(&value.to_le_bytes())?;
                }
            }
            last = r.block as u64 + blocks;
        }
        if last < self.total_blocks as u64 {
            write_chunk_header(&mut out, CHUNK_DONT_CARE, (self.total_blocks as u64 - last) as u32, 12)?;
        }
        out.flush()?;
        Ok(header)
    }

    /// Cuts this layout into pieces whose sparse files are at most `max_len` bytes, exactly
    /// as fastboot does before flashing (libsparse `sparse_file_resparse`): each piece is a
    /// complete sparse image over the whole partition, don't-care outside its runs. A run
    /// that does not fit is split when the piece is empty or more than 1/8 of it is left.
    pub fn split(&self, max_len: u32) -> Result<Vec<Layout>, Error> {
        const OVERHEAD: u64 = 28 + 2 * 12 + 4;
        let bs = self.block_size as u64;
        let min = OVERHEAD + 12 + 2 * bs;
        if (max_len as u64) < min {
            return Err(Error::PieceTooSmall { max_len, min });
        }
        let len = max_len as u64 - OVERHEAD;
        let mut rest: std::collections::VecDeque<Run> = self.runs.iter().copied().collect();
        let mut pieces = Vec::new();
        loop {
            let mut piece = Vec::new();
            let mut file_len = 0u64;
            let mut last_block = 0u64;
            while let Some(&r) = rest.front() {
                let mut count = if r.block as u64 > last_block { 12 } else { 0 };
                last_block = r.block as u64 + self.blocks_of(r.len);
                count += match r.source {
                    Source::Data { .. } => 12 + self.blocks_of(r.len) * bs,
                    Source::Fill(_) => 16,
                };
                if file_len + count > len {
                    file_len += 12;
                    // Signed, as in libsparse: no room left means no split.
                    let room = len as i64 - file_len as i64;
                    if piece.is_empty() || room > (len / 8) as i64 {
                        // backed_block_split: cut at the room left, in whole blocks.
                        let cut = room.max(0) as u64 / bs * bs;
                        if r.len > cut {
                            let mut head = r;
                            head.len = cut;
                            let mut tail = r;
                            tail.len = r.len - cut;
                            tail.block = r.block + (cut / bs) as u32;
                            if let Source::Data { offset } = r.source {
                                tail.source = Source::Data { offset: offset + cut };
                            }
                            rest[0] = tail;
                            piece.push(head);
                        } else {
                            piece.push(r);
                            rest.pop_front();
                        }
                    }
                    break;
                }
                file_len += count;
                piece.push(r);
                rest.pop_front();
            }
            pieces.push(Layout { block_size: self.block_size, total_blocks: self.total_blocks, runs: piece });
            if rest.is_empty() {
                return Ok(pieces);
            }
        }
    }
}

/// Classifies blocks one after the other into runs (img2simg's choices).
struct Planner {
    bs: usize,
    block_size: u32,
    zeros: Zeros,
    max_raw: u64,
    runs: Vec<Run>,
    len: u64,
}

impl Planner {
    fn new(block_size: u32, zeros: Zeros) -> Result<Planner, Error> {
        check_block_size(block_size)?;
        let max_raw = MAX_RAW_BYTES.max(block_size as u64);
        Ok(Planner { bs: block_size as usize, block_size, zeros, max_raw, runs: Vec::new(), len: 0 })
    }

    fn block(&mut self, block: &[u8]) {
        let bs = self.bs as u64;
        let offset = self.len;
        self.len += block.len() as u64;
        let source = match fill_value(block).filter(|_| block.len() == self.bs) {
            Some(0) if self.zeros == Zeros::DontCare => return,
            Some(value) => Source::Fill(value),
            None => Source::Data { offset },
        };
        if let Some(r) = self.runs.last_mut() {
            if r.block as u64 * bs + r.len == offset {
                match (r.source, source) {
                    (Source::Data { .. }, Source::Data { .. }) if r.len + bs <= self.max_raw => {
                        r.len += block.len() as u64;
                        return;
                    }
                    (Source::Fill(a), Source::Fill(b)) if a == b => {
                        r.len += bs;
                        return;
                    }
                    _ => {}
                }
            }
        }
        self.runs.push(Run { block: (offset / bs) as u32, len: block.len() as u64, source });
    }

    /// `n` whole blocks of zeros, as `n` calls of [`Planner::block`] with them would plan.
    fn zero_blocks(&mut self, n: u64) {
        let bs = self.bs as u64;
        let offset = self.len;
        self.len += n * bs;
        if n == 0 || self.zeros == Zeros::DontCare {
            return;
        }
        if let Some(r) = self.runs.last_mut() {
            if r.block as u64 * bs + r.len == offset && r.source == Source::Fill(0) {
                r.len += n * bs;
                return;
            }
        }
        self.runs.push(Run { block: (offset / bs) as u32, len: n * bs, source: Source::Fill(0) });
    }

    fn finish(self) -> Result<Layout, Error> {
        let blocks = self.len.div_ceil(self.block_size as u64);
        if blocks > u32::MAX as u64 {
            return Err(Error::TooManyBlocks { len: self.len, block_size: self.block_size, blocks });
        }
        Ok(Layout { block_size: self.block_size, total_blocks: blocks as u32, runs: self.runs })
    }
}

/// Where the bytes of data runs come from when writing.
trait DataSource {
    /// Writes `len` bytes from `offset` to `out`; returns how many existed (the rest, past
    /// the end of the source, is the caller's to pad).
    fn copy(&mut self, offset: u64, len: u64, out: &mut dyn Write) -> io::Result<u64>;
}

struct Reader<R>(R, Vec<u8>);

impl<R: Read + Seek> DataSource for Reader<R> {
    fn copy(&mut self, offset: u64, len: u64, out: &mut dyn Write) -> io::Result<u64> {
        self.0.seek(SeekFrom::Start(offset))?;
        let mut left = len;
        let mut copied = 0;
        while left > 0 {
            let want = left.min(self.1.len() as u64) as usize;
            let got = read_full(&mut self.0, &mut self.1[..want])?;
            out.write_all(&self.1[..got])?;
            copied += got as u64;
            if got < want {
                break;
            }
            left -= want as u64;
        }
        Ok(copied)
    }
}

impl DataSource for &[u8] {
    fn copy(&mut self, offset: u64, len: u64, out: &mut dyn Write) -> io::Result<u64> {
        let start = (offset as usize).min(self.len());
        let end = (offset.saturating_add(len) as usize).min(self.len());
        out.write_all(&self[start..end])?;
        Ok((end - start) as u64)
    }
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

/// Encodes a raw image held in memory (or memory-mapped) as img2simg does.
pub fn encode_slice<W: Write>(image: &[u8], block_size: u32, zeros: Zeros, out: W) -> Result<Header, Error> {
    Layout::from_raw_slice(image, block_size, zeros)?.write_slice(image, out)
}

/// [`encode_slice`] told where the image reads as zeros (see
/// [`Layout::from_raw_slice_with_holes`]): the same bytes, without touching those ranges.
pub fn encode_slice_with_holes<W: Write>(
    image: &[u8],
    block_size: u32,
    zeros: Zeros,
    holes: &[(u64, u64)],
    out: W,
) -> Result<Header, Error> {
    Layout::from_raw_slice_with_holes(image, block_size, zeros, holes)?.write_slice(image, out)
}

/// Encodes a raw image into sparse form as img2simg does. Returns the header written.
pub fn encode<R: Read + Seek, W: Write>(mut input: R, block_size: u32, out: W) -> Result<Header, Error> {
    encode_with(&mut input, block_size, Zeros::Fill, out)
}

/// Encodes a raw image, choosing what zero blocks become.
pub fn encode_with<R: Read + Seek, W: Write>(
    mut input: R,
    block_size: u32,
    zeros: Zeros,
    out: W,
) -> Result<Header, Error> {
    let start = input.stream_position()?;
    let mut layout = Layout::from_raw(&mut input, block_size, zeros)?;
    for r in &mut layout.runs {
        if let Source::Data { offset } = &mut r.source {
            *offset += start;
        }
    }
    layout.write(input, out)
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

/// Reads one chunk header and checks its type and total size; returns (type, blocks).
fn read_chunk_header<R: Read>(
    input: &mut R,
    index: u32,
    chunk_hdr_sz: u16,
    header: &Header,
) -> Result<(u16, u64), Error> {
    let mut h = [0u8; 12];
    read_exact_or(input, &mut h, "chunk header")?;
    skip(input, (chunk_hdr_sz - CHUNK_HDR_SZ) as u64, "chunk header")?;
    let chunk_type = u16::from_le_bytes([h[0], h[1]]);
    let chunk_sz = u32::from_le_bytes(h[4..8].try_into().unwrap()) as u64;
    let total_sz = u32::from_le_bytes(h[8..12].try_into().unwrap());
    let hdr = chunk_hdr_sz as u64;
    let expected = match chunk_type {
        CHUNK_RAW => hdr + chunk_sz * header.block_size as u64,
        CHUNK_FILL | CHUNK_CRC32 => hdr + 4,
        CHUNK_DONT_CARE => hdr,
        _ => return Err(Error::UnknownChunk { index, chunk_type }),
    };
    if total_sz as u64 != expected {
        return Err(Error::BadChunkSize { index, total_sz, expected });
    }
    Ok((chunk_type, chunk_sz))
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
    let mut crc = super::crc32::Crc32::new();
    let mut buf = vec![0u8; 1 << 20];
    for index in 0..header.total_chunks {
        let (chunk_type, chunk_sz) = read_chunk_header(&mut input, index, chunk_hdr_sz, &header)?;
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
                crc_fill(&mut crc, value, len);
                sink(Op::Fill { offset, len, value })?;
            }
            CHUNK_DONT_CARE => {
                crc_fill(&mut crc, 0, len);
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

fn crc_fill(crc: &mut super::crc32::Crc32, value: u32, len: u64) {
    crc.update_repeated(value.to_le_bytes(), len);
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
        let layout = Layout::from_raw(Cursor::new(mixed_image()), 4096, Zeros::Fill).unwrap();
        assert_eq!(layout.total_blocks, 265);
        let chunks = layout.chunks();
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
    fn zeros_after_an_image_are_one_fill_chunk_the_reference_expands() {
        let layout = Layout::from_raw(Cursor::new(mixed_image()), 4096, Zeros::DontCare).unwrap();
        let ended = layout.clone().then_zeros(10 * 4096 - 5).unwrap();
        assert_eq!(ended.total_blocks, 275);
        assert_eq!(ended.chunks().last(), Some(&Chunk::Fill { blocks: 10, value: 0 }));
        assert_eq!(ended.sparse_len(), layout.sparse_len() + 16);
        let mut sparse = Vec::new();
        ended.write(Cursor::new(mixed_image()), &mut sparse).unwrap();
        let mut back = Vec::new();
        decode_to(Cursor::new(&sparse), &mut back).unwrap();
        let mut want = mixed_image();
        want.resize(275 * 4096, 0);
        assert!(back == want, "the image, then zeros to the new end");
        // Split for a small max-download-size, the pieces still end with the zeros.
        let pieces = ended.split(64 << 10).unwrap();
        let last = pieces.last().unwrap();
        assert!(matches!(last.chunks().last(), Some(Chunk::Fill { value: 0, .. })), "{:?}", last.chunks());
        assert!(pieces.iter().all(|p| p.total_blocks == 275));
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
        let mut data = vec![0u8; (64 << 20) + 8192];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let layout = Layout::from_raw(Cursor::new(&data), 4096, Zeros::Fill).unwrap();
        assert_eq!(layout.chunks(), vec![Chunk::Raw { blocks: 16384 }, Chunk::Raw { blocks: 2 }]);
    }

    #[test]
    fn slice_and_stream_paths_agree() {
        let raw = mixed_image();
        for zeros in [Zeros::Fill, Zeros::DontCare] {
            let mut a = Vec::new();
            encode_with(Cursor::new(&raw), 4096, zeros, &mut a).unwrap();
            let mut b = Vec::new();
            encode_slice(&raw, 4096, zeros, &mut b).unwrap();
            assert!(a == b, "{zeros:?}");
        }
    }

    #[test]
    fn zero_blocks_can_be_dont_care() {
        let layout = Layout::from_raw(Cursor::new(mixed_image()), 4096, Zeros::DontCare).unwrap();
        assert_eq!(
            layout.chunks(),
            vec![
                Chunk::Raw { blocks: 150 },
                Chunk::DontCare { blocks: 100 },
                Chunk::Fill { blocks: 2, value: 0xefbe_adde },
                Chunk::Raw { blocks: 13 },
            ]
        );
        let mut sparse = Vec::new();
        encode_with(Cursor::new(mixed_image()), 4096, Zeros::DontCare, &mut sparse).unwrap();
        let mut back = Vec::new();
        decode_to(Cursor::new(&sparse), &mut back).unwrap();
        let raw = mixed_image();
        assert_eq!(&back[..raw.len()], &raw[..], "don't-care regions expand to zeros");
    }

    #[test]
    fn index_of_a_sparse_file_round_trips() {
        let mut sparse = Vec::new();
        encode(Cursor::new(mixed_image()), 4096, &mut sparse).unwrap();
        let layout = Layout::from_sparse(Cursor::new(&sparse)).unwrap();
        assert_eq!(layout.sparse_len(), sparse.len() as u64);
        let mut again = Vec::new();
        layout.write(Cursor::new(&sparse), &mut again).unwrap();
        assert!(again == sparse, "re-writing an indexed sparse file gives it back");
    }

    #[test]
    fn split_pieces_fit_and_cover_the_image() {
        let raw = mixed_image();
        let mut sparse = Vec::new();
        encode(Cursor::new(&raw), 4096, &mut sparse).unwrap();
        let layout = Layout::from_sparse(Cursor::new(&sparse)).unwrap();
        for max in [8192 + 100, 65536, 262144, 1 << 30] {
            let pieces = layout.split(max).unwrap();
            let mut image = vec![0u8; 265 * 4096];
            for p in &pieces {
                assert_eq!(p.total_blocks, 265, "every piece spans the whole image");
                let mut bytes = Vec::new();
                p.write(Cursor::new(&sparse), &mut bytes).unwrap();
                assert!(bytes.len() as u64 <= max as u64, "piece of {} bytes over {max}", bytes.len());
                assert_eq!(bytes.len() as u64, p.sparse_len());
                // Apply the piece onto the partition, leaving don't-care regions alone.
                decode(Cursor::new(&bytes), |op| {
                    match op {
                        Op::Data { offset, data } => {
                            image[offset as usize..offset as usize + data.len()].copy_from_slice(data)
                        }
                        Op::Fill { offset, len, value } => {
                            for w in image[offset as usize..(offset + len) as usize].chunks_mut(4) {
                                w.copy_from_slice(&value.to_le_bytes());
                            }
                        }
                        Op::DontCare { .. } => {}
                    }
                    Ok(())
                })
                .unwrap();
            }
            assert_eq!(&image[..raw.len()], &raw[..], "pieces for max {max} rebuild the image");
        }
        assert!(matches!(layout.split(100), Err(Error::PieceTooSmall { .. })));
    }

    #[test]
    fn corrupt_images_are_errors_not_panics() {
        let mut sparse = Vec::new();
        encode(Cursor::new(mixed_image()), 4096, &mut sparse).unwrap();
        let run = |b: &[u8]| {
            decode(Cursor::new(b), |_| Ok(()))?;
            Layout::from_sparse(Cursor::new(b))
        };
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
        let mut c = crate::format::crc32::Crc32::new();
        c.update(&data);
        write_chunk_header(&mut s, CHUNK_CRC32, 0, 16).unwrap();
        s.extend_from_slice(&c.value().to_le_bytes());
        assert!(decode(Cursor::new(&s), |_| Ok(())).is_ok());
        let n = s.len();
        s[n - 1] ^= 1;
        assert!(matches!(decode(Cursor::new(&s), |_| Ok(())), Err(Error::CrcMismatch { .. })));
    }

    /// Told where the image reads as zeros, the encoder writes the same bytes as without
    /// the hint: zero stretches of every length and alignment, holes covering part of them,
    /// a partial last block, both treatments of zero blocks.
    #[test]
    fn holes_given_change_nothing_in_the_output() {
        let bs = 4096usize;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..40 {
            let len = bs * (1 + (next() % 64) as usize) + if round % 3 == 0 { 1000 } else { 0 };
            let mut image = vec![0u8; len];
            let mut zero_ranges = Vec::new();
            let mut at = 0;
            while at < len {
                let n = 1 + (next() % (3 * bs as u64)) as usize;
                let end = (at + n).min(len);
                match next() % 3 {
                    0 => zero_ranges.push((at as u64, end as u64)),
                    1 => image[at..end].fill(0x5a),
                    _ => {
                        for b in &mut image[at..end] {
                            *b = next() as u8 | 1;
                        }
                    }
                }
                at = end;
            }
            // Holes: the zero ranges, some trimmed, some left out.
            let mut holes = Vec::new();
            for &(a, b) in &zero_ranges {
                if next() % 4 != 0 {
                    let (cut_a, cut_b) = (next() % 100, next() % 100);
                    holes.push((a + cut_a, b.saturating_sub(cut_b).max(a)));
                }
            }
            for zeros in [Zeros::Fill, Zeros::DontCare] {
                let mut plain = Vec::new();
                encode_slice(&image, bs as u32, zeros, &mut plain).unwrap();
                let mut hinted = Vec::new();
                encode_slice_with_holes(&image, bs as u32, zeros, &holes, &mut hinted).unwrap();
                assert!(plain == hinted, "round {round}, {zeros:?}: holes {holes:?}");
            }
        }
    }
}
