//! Qualcomm QCDT device tree tables (`dt.img`, as dtbTool makes them), which older
//! Qualcomm phones' LK expects in a v0 boot image's `dt` slot.
//!
//! Pipeline stage: format (pure). Layout (all little-endian): magic "QCDT", version (1, 2
//! or 3), entry count, then the entries — v1 `{platform_id, variant_id, soc_rev, offset,
//! size}`, v2 adds `subtype` after the variant, v3 adds four PMIC ids after `soc_rev` —
//! then a zero u32, padding to the page size, and each distinct DTB padded to the page
//! size. `offset` counts from the start of dt.img; `size` is the padded size. dtbTool
//! adds a whole extra page of padding where the data is already aligned; mobix does not.

pub const MAGIC: &[u8; 4] = b"QCDT";

/// One table entry: the ids LK matches against the board, and its DTB.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// `qcom,msm-id` chipset.
    pub platform_id: u32,
    /// `qcom,board-id` platform (variant).
    pub variant_id: u32,
    /// `qcom,board-id` subtype (version 2 and 3).
    pub subtype_id: u32,
    pub soc_rev: u32,
    /// `qcom,pmic-id` (version 3).
    pub pmic: [u32; 4],
    #[serde(skip)]
    pub dtb: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub version: u32,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("QCDT version {0} is not 1, 2 or 3")]
    BadVersion(u32),
    #[error("dt.img is {len} bytes, too short for {what}")]
    Truncated { what: &'static str, len: usize },
    #[error("bad magic {0:02x?} (expected \"QCDT\")")]
    BadMagic([u8; 4]),
    #[error("entry {index}: DTB at {offset}+{size} runs past the end ({len} bytes)")]
    DtbPastEnd { index: usize, offset: u64, size: u64, len: usize },
    #[error("entry {index}: {source}")]
    BadDtb { index: usize, source: super::fdt::Error },
    #[error("entry {index}: version {version} cannot store a {field} of {value}")]
    FieldNotInVersion { index: usize, version: u32, field: &'static str, value: u32 },
    #[error("page size {0} is not a power of two of at least 2048")]
    BadPageSize(u32),
    #[error("the table has no entries")]
    Empty,
}

fn entry_size(version: u32) -> Result<usize, Error> {
    match version {
        1 => Ok(20),
        2 => Ok(24),
        3 => Ok(40),
        v => Err(Error::BadVersion(v)),
    }
}

impl Table {
    /// Builds dt.img; identical DTBs are stored once and shared by their entries.
    pub fn to_bytes(&self, page_size: u32) -> Result<Vec<u8>, Error> {
        let esize = entry_size(self.version)?;
        if !page_size.is_power_of_two() || page_size < 2048 {
            return Err(Error::BadPageSize(page_size));
        }
        if self.entries.is_empty() {
            return Err(Error::Empty);
        }
        for (index, e) in self.entries.iter().enumerate() {
            super::fdt::header(&e.dtb).map_err(|source| Error::BadDtb { index, source })?;
            if self.version < 2 && e.subtype_id != 0 {
                return Err(Error::FieldNotInVersion {
                    index,
                    version: self.version,
                    field: "subtype",
                    value: e.subtype_id,
                });
            }
            if self.version < 3 && e.pmic.iter().any(|&p| p != 0) {
                return Err(Error::FieldNotInVersion {
                    index,
                    version: self.version,
                    field: "pmic id",
                    value: e.pmic[0],
                });
            }
        }
        let page = page_size as usize;
        let pad = |n: usize| n.div_ceil(page) * page;
        let table_len = 12 + esize * self.entries.len() + 4;
        // Distinct DTBs in first-use order, with their offsets.
        let mut blobs: Vec<&[u8]> = Vec::new();
        let mut placed: Vec<(usize, usize)> = Vec::new(); // (offset, padded size) per entry
        let mut next = pad(table_len);
        let mut where_: Vec<usize> = Vec::new();
        for e in &self.entries {
            match blobs.iter().position(|b| *b == e.dtb.as_slice()) {
                Some(i) => placed.push((where_[i], pad(e.dtb.len()))),
                None => {
                    blobs.push(&e.dtb);
                    where_.push(next);
                    placed.push((next, pad(e.dtb.len())));
                    next += pad(e.dtb.len());
                }
            }
        }
        let mut out = Vec::with_capacity(next);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (e, (offset, size)) in self.entries.iter().zip(&placed) {
            let mut words = vec![e.platform_id, e.variant_id];
            if self.version >= 2 {
                words.push(e.subtype_id);
            }
            words.push(e.soc_rev);
            if self.version >= 3 {
                words.extend_from_slice(&e.pmic);
            }
            words.push(*offset as u32);
            words.push(*size as u32);
            for w in words {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.resize(pad(out.len()), 0);
        for b in blobs {
            out.extend_from_slice(b);
            out.resize(pad(out.len()), 0);
        }
        Ok(out)
    }

    /// Reads dt.img; each entry's DTB is cut to its own `totalsize`.
    pub fn parse(b: &[u8]) -> Result<Table, Error> {
        if b.len() < 12 {
            return Err(Error::Truncated { what: "the header", len: b.len() });
        }
        if &b[..4] != MAGIC {
            return Err(Error::BadMagic(b[..4].try_into().unwrap()));
        }
        let le = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let version = le(4);
        let esize = entry_size(version)?;
        let count = le(8) as usize;
        if count.checked_mul(esize).and_then(|n| n.checked_add(12)).is_none_or(|end| end > b.len()) {
            return Err(Error::Truncated { what: "the entry table", len: b.len() });
        }
        let mut entries = Vec::with_capacity(count);
        for index in 0..count {
            let base = 12 + index * esize;
            let mut w = (0..esize / 4).map(|i| le(base + 4 * i));
            let platform_id = w.next().unwrap();
            let variant_id = w.next().unwrap();
            let subtype_id = if version >= 2 { w.next().unwrap() } else { 0 };
            let soc_rev = w.next().unwrap();
            let mut pmic = [0u32; 4];
            if version >= 3 {
                for p in &mut pmic {
                    *p = w.next().unwrap();
                }
            }
            let offset = w.next().unwrap() as u64;
            let size = w.next().unwrap() as u64;
            if offset + size > b.len() as u64 {
                return Err(Error::DtbPastEnd { index, offset, size, len: b.len() });
            }
            let region = &b[offset as usize..(offset + size) as usize];
            let h = super::fdt::header(region).map_err(|source| Error::BadDtb { index, source })?;
            entries.push(Entry {
                platform_id,
                variant_id,
                subtype_id,
                soc_rev,
                pmic,
                dtb: region[..h.totalsize as usize].to_vec(),
            });
        }
        Ok(Table { version, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dtb(fill: u8) -> Vec<u8> {
        let st: Vec<u8> = [1u32, 0, 2, 9].iter().flat_map(|w| w.to_be_bytes()).collect();
        let mut b = vec![0u8; 40];
        let total = 40 + 16 + st.len() + 4;
        for (i, v) in
            [super::super::fdt::MAGIC, total as u32, 56, (56 + st.len()) as u32, 40, 17, 16, 0, 4, st.len() as u32]
                .iter()
                .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&[0u8; 16]);
        b.extend_from_slice(&st);
        b.extend_from_slice(&[fill, 0, 0, 0]);
        b
    }

    fn entry(platform: u32, variant: u32, fill: u8) -> Entry {
        Entry {
            platform_id: platform,
            variant_id: variant,
            subtype_id: 0,
            soc_rev: 0x10000,
            pmic: [0; 4],
            dtb: dtb(fill),
        }
    }

    #[test]
    fn layout_and_round_trip() {
        let t = Table { version: 1, entries: vec![entry(206, 8, 1), entry(206, 11, 2), entry(207, 8, 1)] };
        let b = t.to_bytes(2048).unwrap();
        // Table page + two distinct DTBs, one page each; the third entry shares the first.
        assert_eq!(b.len(), 3 * 2048);
        let le = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!((le(4), le(8)), (1, 3));
        assert_eq!((le(12 + 12), le(12 + 16)), (2048, 2048), "entry 0: offset, padded size");
        assert_eq!(le(12 + 20 + 12), 4096, "entry 1 gets the second blob");
        assert_eq!(le(12 + 40 + 12), 2048, "entry 2 shares the first blob");
        assert_eq!(le(12 + 60), 0, "terminator");
        assert_eq!(Table::parse(&b).unwrap(), t);
        use sha2::{Digest, Sha256};
        assert_eq!(format!("{:x}", Sha256::digest(&b)), GOLDEN_V1, "QCDT writer output changed");
        for v in [2, 3] {
            let mut t = Table { version: v, entries: vec![entry(321, 1, 3)] };
            t.entries[0].subtype_id = 4;
            if v == 3 {
                t.entries[0].pmic = [1, 2, 3, 4];
            }
            assert_eq!(Table::parse(&t.to_bytes(4096).unwrap()).unwrap(), t);
        }
    }

    const GOLDEN_V1: &str = "8495395c06dccf63c5f4dfea657a5eb643b1ea14f0726a959464d9ef5197d7c2";

    #[test]
    fn refusals_and_corruption() {
        let mut t = Table { version: 1, entries: vec![entry(1, 1, 1)] };
        t.entries[0].subtype_id = 3;
        assert!(matches!(t.to_bytes(2048), Err(Error::FieldNotInVersion { field: "subtype", .. })));
        assert_eq!(Table { version: 4, entries: vec![] }.to_bytes(2048).err(), Some(Error::BadVersion(4)));
        let good = Table { version: 2, entries: vec![entry(1, 1, 1)] }.to_bytes(2048).unwrap();
        for cut in [0, 11, 20, 100, 2048 + 10] {
            assert!(Table::parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Table::parse(&bad), Err(Error::Truncated { .. })));
        let mut bad = good;
        bad[2048] = 0;
        assert!(matches!(Table::parse(&bad), Err(Error::BadDtb { index: 0, .. })));
    }
}
