//! Android vendor_boot images (`VNDRBOOT`), header versions 3 and 4.
//!
//! Pipeline stage: format (pure). Input: a [`VendorBootImage`]; output: bytes, and back.
//!
//! Layout reference: AOSP `bootimg.h` (`vendor_boot_img_hdr_v3`, `vendor_boot_img_hdr_v4`,
//! `vendor_ramdisk_table_entry_v4`) and `mkbootimg.py`. Every section is padded to the
//! image's own `page_size`:
//! `header | vendor ramdisks (fragments back to back) | dtb | [v4: ramdisk table] | [v4: bootconfig]`.
//! The bootloader loads the vendor ramdisk(s) at `ramdisk_addr` and the generic ramdisk of
//! boot.img right after them, so the kernel sees one concatenated initramfs.

pub const MAGIC: &[u8; 8] = b"VNDRBOOT";
const HEADER_SIZE_V3: u32 = 2112;
const HEADER_SIZE_V4: u32 = 2128;
/// `VENDOR_RAMDISK_TABLE_ENTRY_V4_SIZE`.
pub const TABLE_ENTRY_SIZE: u32 = 108;
const VENDOR_BOOT_ARGS_SIZE: usize = 2048;
const NAME_SIZE: usize = 16;
const RAMDISK_NAME_SIZE: usize = 32;
const BOARD_ID_WORDS: usize = 16;

/// `VENDOR_RAMDISK_TYPE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RamdiskType {
    None,
    Platform,
    Recovery,
    Dlkm,
    /// A vendor-defined value.
    Other(u32),
}

impl RamdiskType {
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => RamdiskType::None,
            1 => RamdiskType::Platform,
            2 => RamdiskType::Recovery,
            3 => RamdiskType::Dlkm,
            o => RamdiskType::Other(o),
        }
    }
    pub fn to_u32(self) -> u32 {
        match self {
            RamdiskType::None => 0,
            RamdiskType::Platform => 1,
            RamdiskType::Recovery => 2,
            RamdiskType::Dlkm => 3,
            RamdiskType::Other(o) => o,
        }
    }
}

/// One vendor ramdisk fragment (v3 images have exactly one, of type platform, unnamed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorRamdisk {
    pub kind: RamdiskType,
    /// At most 31 bytes; unique within the image.
    pub name: String,
    pub board_id: [u32; BOARD_ID_WORDS],
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VendorBootImage {
    pub header_version: u32,
    pub page_size: u32,
    pub kernel_addr: u32,
    pub ramdisk_addr: u32,
    pub cmdline: String,
    pub tags_addr: u32,
    /// `name[16]` (`--board`).
    pub board: String,
    pub dtb: Vec<u8>,
    pub dtb_addr: u64,
    pub ramdisks: Vec<VendorRamdisk>,
    /// v4 only: `key = value` lines the bootloader passes to the kernel as bootconfig.
    pub bootconfig: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("vendor_boot image is {len} bytes, too short for its header (needs {need})")]
    Truncated { len: usize, need: usize },
    #[error("bad magic {0:02x?} (expected \"VNDRBOOT\")")]
    BadMagic([u8; 8]),
    #[error("vendor_boot header version {0} is not supported (expected 3 or 4)")]
    UnsupportedVersion(u32),
    #[error("page size {0} is invalid (expected a power of two from 2048 to 65536)")]
    BadPageSize(u32),
    #[error("header_size is {found}, expected {expected} for header version {version}")]
    BadHeaderSize { version: u32, found: u32, expected: u32 },
    #[error("{section} of {size} bytes at offset {offset} runs past the end of the image ({len} bytes)")]
    SectionPastEnd { section: &'static str, offset: u64, size: u64, len: usize },
    #[error("vendor ramdisk table entry size is {0}, expected 108")]
    BadEntrySize(u32),
    #[error("vendor ramdisk table size {size} is not {count} entries of 108 bytes")]
    BadTableSize { size: u32, count: u32 },
    #[error("vendor ramdisk {index} ({name:?}) at {offset}+{size} lies outside the {total}-byte ramdisk section")]
    FragmentOutside { index: usize, name: String, offset: u64, size: u64, total: u64 },
    #[error("header version 3 holds exactly one vendor ramdisk (platform, unnamed); {0} given")]
    V3Ramdisks(usize),
    #[error("vendor ramdisk name {0:?} is longer than 31 bytes")]
    NameTooLong(String),
    #[error("vendor ramdisk name {0:?} appears twice")]
    DuplicateName(String),
    #[error("board name {0:?} is longer than 15 bytes")]
    BoardTooLong(String),
    #[error("command line is {0} characters; vendor_boot holds at most 2047")]
    CmdlineTooLong(usize),
    #[error("command line contains a NUL byte")]
    CmdlineNul,
    #[error("bootconfig is only allowed with header version 4")]
    BootconfigV3,
    #[error("{0} is not valid UTF-8 text")]
    BadText(&'static str),
    #[error("{section} is {size} bytes, over the 4 GiB a header field can hold")]
    SectionTooLarge { section: &'static str, size: usize },
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn put32(h: &mut [u8], off: usize, v: u32) {
    h[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn size32(section: &'static str, n: usize) -> Result<u32, Error> {
    u32::try_from(n).map_err(|_| Error::SectionTooLarge { section, size: n })
}

fn text(buf: &[u8], what: &'static str) -> Result<String, Error> {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).map_err(|_| Error::BadText(what))
}

fn pad_to(out: &mut Vec<u8>, page: usize) {
    out.resize(out.len().div_ceil(page) * page, 0);
}

impl VendorBootImage {
    fn validate(&self) -> Result<(), Error> {
        let v = self.header_version;
        if !(3..=4).contains(&v) {
            return Err(Error::UnsupportedVersion(v));
        }
        if !(self.page_size.is_power_of_two() && (2048..=65536).contains(&self.page_size)) {
            return Err(Error::BadPageSize(self.page_size));
        }
        if self.cmdline.len() >= VENDOR_BOOT_ARGS_SIZE {
            return Err(Error::CmdlineTooLong(self.cmdline.len()));
        }
        if self.cmdline.contains('\0') {
            return Err(Error::CmdlineNul);
        }
        if self.board.len() >= NAME_SIZE {
            return Err(Error::BoardTooLong(self.board.clone()));
        }
        if v == 3 {
            let ok = matches!(self.ramdisks.as_slice(), [r] if r.kind == RamdiskType::Platform && r.name.is_empty() && r.board_id == [0; BOARD_ID_WORDS]);
            if !ok {
                return Err(Error::V3Ramdisks(self.ramdisks.len()));
            }
            if !self.bootconfig.is_empty() {
                return Err(Error::BootconfigV3);
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &self.ramdisks {
            if r.name.len() >= RAMDISK_NAME_SIZE {
                return Err(Error::NameTooLong(r.name.clone()));
            }
            if !names.insert(r.name.as_str()) {
                return Err(Error::DuplicateName(r.name.clone()));
            }
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        self.validate()?;
        let v = self.header_version;
        let page = self.page_size as usize;
        let ramdisk_total: usize = self.ramdisks.iter().map(|r| r.data.len()).sum();
        let mut h = vec![0u8; if v == 3 { HEADER_SIZE_V3 } else { HEADER_SIZE_V4 } as usize];
        h[..8].copy_from_slice(MAGIC);
        put32(&mut h, 8, v);
        put32(&mut h, 12, self.page_size);
        put32(&mut h, 16, self.kernel_addr);
        put32(&mut h, 20, self.ramdisk_addr);
        put32(&mut h, 24, size32("vendor ramdisk", ramdisk_total)?);
        h[28..28 + self.cmdline.len()].copy_from_slice(self.cmdline.as_bytes());
        put32(&mut h, 2076, self.tags_addr);
        h[2080..2080 + self.board.len()].copy_from_slice(self.board.as_bytes());
        put32(&mut h, 2096, if v == 3 { HEADER_SIZE_V3 } else { HEADER_SIZE_V4 });
        put32(&mut h, 2100, size32("dtb", self.dtb.len())?);
        h[2104..2112].copy_from_slice(&self.dtb_addr.to_le_bytes());
        let mut table = Vec::new();
        if v == 4 {
            let mut offset = 0u32;
            for r in &self.ramdisks {
                let size = size32("vendor ramdisk", r.data.len())?;
                table.extend_from_slice(&size.to_le_bytes());
                table.extend_from_slice(&offset.to_le_bytes());
                table.extend_from_slice(&r.kind.to_u32().to_le_bytes());
                let mut name = [0u8; RAMDISK_NAME_SIZE];
                name[..r.name.len()].copy_from_slice(r.name.as_bytes());
                table.extend_from_slice(&name);
                for w in r.board_id {
                    table.extend_from_slice(&w.to_le_bytes());
                }
                offset += size;
            }
            put32(&mut h, 2112, table.len() as u32);
            put32(&mut h, 2116, self.ramdisks.len() as u32);
            put32(&mut h, 2120, TABLE_ENTRY_SIZE);
            put32(&mut h, 2124, size32("bootconfig", self.bootconfig.len())?);
        }
        let mut out = h;
        pad_to(&mut out, page);
        for r in &self.ramdisks {
            out.extend_from_slice(&r.data);
        }
        pad_to(&mut out, page);
        out.extend_from_slice(&self.dtb);
        pad_to(&mut out, page);
        if v == 4 {
            out.extend_from_slice(&table);
            pad_to(&mut out, page);
            out.extend_from_slice(&self.bootconfig);
            pad_to(&mut out, page);
        }
        Ok(out)
    }

    pub fn parse(buf: &[u8]) -> Result<VendorBootImage, Error> {
        if buf.len() < 12 {
            return Err(Error::Truncated { len: buf.len(), need: 12 });
        }
        if &buf[..8] != MAGIC {
            return Err(Error::BadMagic(buf[..8].try_into().unwrap()));
        }
        let v = le32(buf, 8);
        let hdr_len = match v {
            3 => HEADER_SIZE_V3,
            4 => HEADER_SIZE_V4,
            _ => return Err(Error::UnsupportedVersion(v)),
        };
        if buf.len() < hdr_len as usize {
            return Err(Error::Truncated { len: buf.len(), need: hdr_len as usize });
        }
        let page_size = le32(buf, 12);
        if !(page_size.is_power_of_two() && (2048..=65536).contains(&page_size)) {
            return Err(Error::BadPageSize(page_size));
        }
        let hs = le32(buf, 2096);
        if hs != hdr_len {
            return Err(Error::BadHeaderSize { version: v, found: hs, expected: hdr_len });
        }
        let p = page_size as u64;
        let len = buf.len();
        let mut cursor = (hdr_len as u64).div_ceil(p) * p;
        let mut take = |section: &'static str, size: u64| -> Result<(u64, u64), Error> {
            let off = cursor;
            if off.checked_add(size).is_none_or(|e| e > len as u64) {
                return Err(Error::SectionPastEnd { section, offset: off, size, len });
            }
            cursor = off + size.div_ceil(p) * p;
            Ok((off, size))
        };
        let (rd_off, rd_size) = take("vendor ramdisk", le32(buf, 24) as u64)?;
        let (dtb_off, dtb_size) = take("dtb", le32(buf, 2100) as u64)?;
        let slice = |(o, s): (u64, u64)| &buf[o as usize..(o + s) as usize];
        let section = slice((rd_off, rd_size));
        let mut img = VendorBootImage {
            header_version: v,
            page_size,
            kernel_addr: le32(buf, 16),
            ramdisk_addr: le32(buf, 20),
            cmdline: text(&buf[28..2076], "cmdline")?,
            tags_addr: le32(buf, 2076),
            board: text(&buf[2080..2096], "name")?,
            dtb: slice((dtb_off, dtb_size)).to_vec(),
            dtb_addr: u64::from_le_bytes(buf[2104..2112].try_into().unwrap()),
            ramdisks: Vec::new(),
            bootconfig: Vec::new(),
        };
        if v == 3 {
            img.ramdisks.push(VendorRamdisk {
                kind: RamdiskType::Platform,
                name: String::new(),
                board_id: [0; BOARD_ID_WORDS],
                data: section.to_vec(),
            });
            return Ok(img);
        }
        let table_size = le32(buf, 2112);
        let count = le32(buf, 2116);
        let entry_size = le32(buf, 2120);
        if entry_size != TABLE_ENTRY_SIZE {
            return Err(Error::BadEntrySize(entry_size));
        }
        if count as u64 * TABLE_ENTRY_SIZE as u64 != table_size as u64 {
            return Err(Error::BadTableSize { size: table_size, count });
        }
        let table = slice(take("vendor ramdisk table", table_size as u64)?);
        img.bootconfig = slice(take("bootconfig", le32(buf, 2124) as u64)?).to_vec();
        for (index, e) in table.chunks_exact(TABLE_ENTRY_SIZE as usize).enumerate() {
            let size = le32(e, 0) as u64;
            let offset = le32(e, 4) as u64;
            let name = text(&e[12..44], "ramdisk_name")?;
            if offset + size > rd_size {
                return Err(Error::FragmentOutside { index, name, offset, size, total: rd_size });
            }
            let mut board_id = [0u32; BOARD_ID_WORDS];
            for (i, w) in board_id.iter_mut().enumerate() {
                *w = le32(e, 44 + 4 * i);
            }
            img.ramdisks.push(VendorRamdisk {
                kind: RamdiskType::from_u32(le32(e, 8)),
                name,
                board_id,
                data: section[offset as usize..(offset + size) as usize].to_vec(),
            });
        }
        Ok(img)
    }

    /// What the kernel receives as its initramfs: every vendor ramdisk fragment the
    /// bootloader selects for a normal boot (platform and dlkm), in table order.
    pub fn normal_boot_ramdisk(&self) -> Vec<u8> {
        self.ramdisks
            .iter()
            .filter(|r| matches!(r.kind, RamdiskType::Platform | RamdiskType::Dlkm | RamdiskType::None))
            .flat_map(|r| r.data.iter().copied())
            .collect()
    }
}

/// A small, fully populated image (the one `tests/fixtures/bootimg/gen.py` also writes).
#[doc(hidden)]
pub fn sample(version: u32) -> VendorBootImage {
    let mut dlkm_board = [0u32; BOARD_ID_WORDS];
    dlkm_board[0] = 5;
    let mut ramdisks = vec![VendorRamdisk {
        kind: RamdiskType::Platform,
        name: String::new(),
        board_id: [0; BOARD_ID_WORDS],
        data: vec![0x22; 1000],
    }];
    if version == 4 {
        ramdisks.push(VendorRamdisk {
            kind: RamdiskType::Dlkm,
            name: "dlkm".into(),
            board_id: dlkm_board,
            data: vec![0x33; 2000],
        });
    }
    let mut dtb = vec![0xd0, 0x0d, 0xfe, 0xed];
    dtb.extend_from_slice(&[0x11; 96]);
    VendorBootImage {
        header_version: version,
        page_size: 4096,
        kernel_addr: 0x4020_0000,
        ramdisk_addr: 0x4400_0000,
        cmdline: "androidboot.hardware=qemu".into(),
        tags_addr: 0x4000_0100,
        board: "qemu-aarch64".into(),
        dtb,
        dtb_addr: 0x43f0_0000,
        ramdisks,
        bootconfig: if version == 4 {
            b"androidboot.slot_suffix=_a\nandroidboot.serialno=mobix\n".to_vec()
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_v3_v4_and_layout() {
        for v in [3, 4] {
            let img = sample(v);
            let bytes = img.to_bytes().unwrap();
            assert!(VendorBootImage::parse(&bytes).unwrap() == img, "v{v}");
        }
        let b = sample(4).to_bytes().unwrap();
        assert_eq!(le32(&b, 2096), 2128);
        assert_eq!(le32(&b, 24), 3000, "vendor_ramdisk_size is the total of the fragments");
        assert_eq!(le32(&b, 2112), 216, "table size");
        assert_eq!(le32(&b, 2116), 2, "entries");
        // header, ramdisks, dtb, table, bootconfig: one page each.
        assert_eq!(b.len(), 5 * 4096);
        // The second fragment follows the first with no padding in between.
        assert_eq!(b[4096 + 1000], 0x33);
        assert_eq!(sample(4).normal_boot_ramdisk().len(), 3000);
    }

    #[test]
    fn refuses_bad_models() {
        let err = |img: VendorBootImage| img.to_bytes().err();
        let mut img = sample(3);
        img.ramdisks.push(img.ramdisks[0].clone());
        assert_eq!(err(img), Some(Error::V3Ramdisks(2)));
        let mut img = sample(4);
        img.ramdisks[1].name = String::new();
        assert_eq!(err(img), Some(Error::DuplicateName(String::new())));
        let mut img = sample(3);
        img.bootconfig = b"x=1\n".to_vec();
        assert_eq!(err(img), Some(Error::BootconfigV3));
        let mut img = sample(4);
        img.cmdline = "c".repeat(2048);
        assert_eq!(err(img), Some(Error::CmdlineTooLong(2048)));
    }

    #[test]
    fn corrupt_images_are_errors_not_panics() {
        let good = sample(4).to_bytes().unwrap();
        for cut in [0, 8, 100, 2127, 4096, 4096 + 2999, 3 * 4096 + 100, 4 * 4096 + 10] {
            assert!(VendorBootImage::parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[2120..2124].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(VendorBootImage::parse(&bad).err(), Some(Error::BadEntrySize(100)));
        let mut bad = good.clone();
        // Second entry's offset pushed past the ramdisk section.
        let e1 = 3 * 4096 + 108;
        bad[e1 + 4..e1 + 8].copy_from_slice(&2500u32.to_le_bytes());
        assert!(matches!(VendorBootImage::parse(&bad), Err(Error::FragmentOutside { index: 1, .. })));
        let mut bad = good;
        bad[2116..2120].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(VendorBootImage::parse(&bad), Err(Error::BadTableSize { .. })));
    }
}
