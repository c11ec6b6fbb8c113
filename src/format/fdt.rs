//! Flattened device tree blobs: header validation and packing.
//!
//! Pipeline stage: format (pure). Layout reference: the devicetree specification, FDT
//! header (40 bytes, big-endian): magic 0xd00dfeed, totalsize, off_dt_struct,
//! off_dt_strings, off_mem_rsvmap, version, last_comp_version, boot_cpuid_phys,
//! size_dt_strings, size_dt_struct.
//!
//! QEMU's `dumpdtb` writes a blob padded to 1 MiB of free space; booted through `-dtb` that
//! blob hangs the kernel before its first message, so mobix packs it: the same memory
//! reservation map, structure and strings blocks, laid out back to back.

pub const MAGIC: u32 = 0xd00d_feed;
const HEADER_LEN: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub totalsize: u32,
    pub off_dt_struct: u32,
    pub off_dt_strings: u32,
    pub off_mem_rsvmap: u32,
    pub version: u32,
    pub last_comp_version: u32,
    pub boot_cpuid_phys: u32,
    pub size_dt_strings: u32,
    pub size_dt_struct: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("device tree of {0} bytes is shorter than its 40-byte header")]
    Truncated(usize),
    #[error("bad device tree magic {0:#010x} (expected 0xd00dfeed)")]
    BadMagic(u32),
    #[error("device tree version {version} (last compatible {last_comp}) is not supported (need 16 or 17)")]
    BadVersion { version: u32, last_comp: u32 },
    #[error("device tree totalsize {totalsize} is larger than the {len} bytes given")]
    TotalSize { totalsize: u32, len: usize },
    #[error("device tree {block} block at {offset}+{size} runs past totalsize {totalsize}")]
    BlockPastEnd { block: &'static str, offset: u64, size: u64, totalsize: u32 },
    #[error("device tree memory reservation map at {0} is not terminated")]
    RsvmapUnterminated(u32),
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

/// Reads and checks the header against the blob's length.
pub fn header(b: &[u8]) -> Result<Header, Error> {
    if b.len() < HEADER_LEN {
        return Err(Error::Truncated(b.len()));
    }
    if be32(b, 0) != MAGIC {
        return Err(Error::BadMagic(be32(b, 0)));
    }
    let h = Header {
        totalsize: be32(b, 4),
        off_dt_struct: be32(b, 8),
        off_dt_strings: be32(b, 12),
        off_mem_rsvmap: be32(b, 16),
        version: be32(b, 20),
        last_comp_version: be32(b, 24),
        boot_cpuid_phys: be32(b, 28),
        size_dt_strings: be32(b, 32),
        size_dt_struct: be32(b, 36),
    };
    if h.version < 16 || h.last_comp_version > 17 {
        return Err(Error::BadVersion { version: h.version, last_comp: h.last_comp_version });
    }
    if h.totalsize as usize > b.len() || (h.totalsize as usize) < HEADER_LEN {
        return Err(Error::TotalSize { totalsize: h.totalsize, len: b.len() });
    }
    for (block, off, size) in [
        ("structure", h.off_dt_struct, h.size_dt_struct),
        ("strings", h.off_dt_strings, h.size_dt_strings),
        ("reservation map", h.off_mem_rsvmap, 16),
    ] {
        if off as u64 + size as u64 > h.totalsize as u64 {
            return Err(Error::BlockPastEnd { block, offset: off as u64, size: size as u64, totalsize: h.totalsize });
        }
    }
    Ok(h)
}

/// The same tree without free space: header, reservation map, structure, strings.
pub fn pack(b: &[u8]) -> Result<Vec<u8>, Error> {
    let h = header(b)?;
    // The reservation map ends with an all-zero 16-byte entry.
    let mut end = h.off_mem_rsvmap as usize;
    loop {
        if end + 16 > h.totalsize as usize {
            return Err(Error::RsvmapUnterminated(h.off_mem_rsvmap));
        }
        let zero = b[end..end + 16].iter().all(|&x| x == 0);
        end += 16;
        if zero {
            break;
        }
    }
    let rsvmap = &b[h.off_mem_rsvmap as usize..end];
    let st = &b[h.off_dt_struct as usize..(h.off_dt_struct + h.size_dt_struct) as usize];
    let strings = &b[h.off_dt_strings as usize..(h.off_dt_strings + h.size_dt_strings) as usize];
    let off_rsv = HEADER_LEN.next_multiple_of(8);
    let off_struct = off_rsv + rsvmap.len();
    let off_strings = off_struct + st.len();
    let total = off_strings + strings.len();
    let mut out = vec![0u8; total];
    out[..HEADER_LEN].copy_from_slice(&b[..HEADER_LEN]);
    let put = |o: &mut [u8], at: usize, v: usize| o[at..at + 4].copy_from_slice(&(v as u32).to_be_bytes());
    put(&mut out, 4, total);
    put(&mut out, 8, off_struct);
    put(&mut out, 12, off_strings);
    put(&mut out, 16, off_rsv);
    out[off_rsv..off_struct].copy_from_slice(rsvmap);
    out[off_struct..off_strings].copy_from_slice(st);
    out[off_strings..].copy_from_slice(strings);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid tree: one root node with no properties, padded with free space.
    pub(crate) fn tiny(padding: usize) -> Vec<u8> {
        let st: Vec<u8> = [1u32, 0, 2, 9].iter().flat_map(|w| w.to_be_bytes()).collect(); // BEGIN_NODE "" END_NODE END
        let strings = b"".to_vec();
        let mut b = vec![0u8; 40];
        let off_rsv = 40;
        let off_struct = off_rsv + 16;
        let off_strings = off_struct + st.len();
        let total = off_strings + strings.len() + padding;
        for (i, v) in
            [MAGIC, total as u32, off_struct as u32, off_strings as u32, off_rsv as u32, 17, 16, 0, 0, st.len() as u32]
                .iter()
                .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&[0u8; 16]);
        b.extend_from_slice(&st);
        b.resize(total, 0);
        b
    }

    #[test]
    fn pack_drops_free_space_and_keeps_blocks() {
        let padded = tiny(4096);
        let packed = pack(&padded).unwrap();
        assert_eq!(packed.len(), 40 + 16 + 16);
        let h = header(&packed).unwrap();
        assert_eq!(h.totalsize as usize, packed.len());
        assert_eq!(pack(&packed).unwrap(), packed, "packing is idempotent");
    }

    #[test]
    fn corrupt_blobs_are_errors() {
        let good = tiny(0);
        assert_eq!(header(&good[..10]), Err(Error::Truncated(10)));
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(header(&bad), Err(Error::BadMagic(_))));
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert!(matches!(header(&bad), Err(Error::TotalSize { .. })));
        let mut bad = good;
        bad[36..40].copy_from_slice(&1000u32.to_be_bytes());
        assert!(matches!(header(&bad), Err(Error::BlockPastEnd { block: "structure", .. })));
    }
}
