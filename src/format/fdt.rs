//! Flattened device tree blobs: header validation, packing, and finding nodes by their
//! `compatible`.
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
    #[error("device tree structure block is malformed at offset {0}: {1}")]
    Structure(usize, &'static str),
}

/// A node found in a tree: its full path (`/chosen/framebuffer@9d400000`) and whether its
/// `status` property lets the kernel use it (absent, `okay` or `ok`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub enabled: bool,
}

const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

/// The nodes whose `compatible` list holds `compatible`, sorted by path.
pub fn find_compatible(b: &[u8], compatible: &str) -> Result<Vec<Node>, Error> {
    let h = header(b)?;
    let st = &b[h.off_dt_struct as usize..(h.off_dt_struct + h.size_dt_struct) as usize];
    let strings = &b[h.off_dt_strings as usize..(h.off_dt_strings + h.size_dt_strings) as usize];
    let base = h.off_dt_struct as usize;
    let word = |at: usize| -> Result<u32, Error> {
        st.get(at..at + 4).map(|w| be32(w, 0)).ok_or(Error::Structure(base + at, "runs past the block"))
    };
    let cstr = |blk: &[u8], at: usize, what: &'static str| -> Result<String, Error> {
        let rest = blk.get(at..).ok_or(Error::Structure(base + at, what))?;
        let end = rest.iter().position(|&c| c == 0).ok_or(Error::Structure(base + at, what))?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    // Per open node: its path, whether it matched, whether it is enabled.
    let mut stack: Vec<(String, bool, bool)> = Vec::new();
    let mut found = Vec::new();
    let mut at = 0;
    loop {
        match word(at)? {
            BEGIN_NODE => {
                let name = cstr(st, at + 4, "unterminated node name")?;
                at = (at + 4 + name.len() + 1).next_multiple_of(4);
                let path = match stack.last() {
                    None => "/".to_string(),
                    Some((p, ..)) if p == "/" => format!("/{name}"),
                    Some((p, ..)) => format!("{p}/{name}"),
                };
                stack.push((path, false, true));
            }
            END_NODE => {
                let (path, matched, enabled) = stack.pop().ok_or(Error::Structure(base + at, "a node ends twice"))?;
                if matched {
                    found.push(Node { path, enabled });
                }
                at += 4;
            }
            PROP => {
                let len = word(at + 4)? as usize;
                let name = cstr(strings, word(at + 8)? as usize, "property name outside the strings block")?;
                let value = st
                    .get(at + 12..at + 12 + len)
                    .ok_or(Error::Structure(base + at, "property runs past the block"))?;
                let node = stack.last_mut().ok_or(Error::Structure(base + at, "property outside a node"))?;
                let list = || value.split(|&c| c == 0).filter(|s| !s.is_empty());
                match name.as_str() {
                    "compatible" => node.1 |= list().any(|c| c == compatible.as_bytes()),
                    "status" => node.2 = list().next().is_some_and(|s| s == b"okay" || s == b"ok"),
                    _ => {}
                }
                at = (at + 12 + len).next_multiple_of(4);
            }
            NOP => at += 4,
            END if stack.is_empty() => break,
            END => return Err(Error::Structure(base + at, "the tree ends inside a node")),
            _ => return Err(Error::Structure(base + at, "unknown token")),
        }
    }
    // Children end before their parents: sorted by path instead.
    found.sort_by_key(|n: &Node| n.path.clone());
    Ok(found)
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

    /// Trees dtc made: the bootloader's framebuffer is found under /chosen, a disabled one is
    /// reported as such, a tree without one has none.
    #[test]
    fn finds_nodes_by_compatible_in_trees_dtc_made() {
        let fb = include_bytes!("../../tests/fixtures/dtb/framebuffer.dtb");
        assert_eq!(
            find_compatible(fb, "simple-framebuffer").unwrap(),
            vec![
                Node { path: "/chosen/framebuffer@9d400000".into(), enabled: true },
                Node { path: "/soc@0/framebuffer@a0000000".into(), enabled: false },
            ]
        );
        assert_eq!(find_compatible(fb, "qcom,sdm845-mdss").unwrap().len(), 1);
        assert_eq!(find_compatible(fb, "simple").unwrap(), vec![], "whole entries only");
        let none = include_bytes!("../../tests/fixtures/dtb/nofb.dtb");
        assert_eq!(find_compatible(none, "simple-framebuffer").unwrap(), vec![]);
        assert_eq!(find_compatible(&tiny(16), "simple-framebuffer").unwrap(), vec![]);
    }

    /// Every cut and every flipped byte of a real tree is an answer or an error, not a panic.
    #[test]
    fn corrupt_structure_is_an_error_not_a_panic() {
        let fb = include_bytes!("../../tests/fixtures/dtb/framebuffer.dtb").to_vec();
        for i in 0..fb.len() {
            let _ = find_compatible(&fb[..i], "simple-framebuffer");
            let mut bad = fb.clone();
            bad[i] ^= 0xff;
            let _ = find_compatible(&bad, "simple-framebuffer");
        }
        let h = header(&fb).unwrap();
        let mut cut = fb.clone();
        // END replaced by NOP: the tree never ends.
        let end = (h.off_dt_struct + h.size_dt_struct - 4) as usize;
        cut[end..end + 4].copy_from_slice(&NOP.to_be_bytes());
        assert!(matches!(find_compatible(&cut, "x"), Err(Error::Structure(..))));
    }
}
