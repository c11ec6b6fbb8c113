//! Android boot images (`ANDROID!`), header versions 0 to 4.
//!
//! Pipeline stage: format (pure). Input: a [`BootImage`] model; output: image bytes, and
//! back. No I/O.
//!
//! Layout reference: AOSP `system/tools/mkbootimg/include/bootimg/bootimg.h`
//! (`boot_img_hdr_v0` … `boot_img_hdr_v4`) and `mkbootimg.py`.
//! - v0-v2: every section is padded to `page_size` and the header takes one page:
//!   `header | kernel | ramdisk | second | [dt (legacy v0)] | recovery_dtbo (v1+) | dtb (v2)`.
//! - v3-v4: the page size is fixed at 4096 and the header holds no addresses (they live in
//!   vendor_boot): `header | kernel | ramdisk | [boot signature (v4)]`.
//! - Legacy Qualcomm v0 images carry a QCDT `dt.img` after `second`, its size stored where
//!   later versions keep `header_version` (offset 40); mobix reads a value above 4 there as
//!   that size (as LK does).

use sha1::{Digest, Sha1};

pub const MAGIC: &[u8; 8] = b"ANDROID!";
const BOOT_NAME_SIZE: usize = 16;
const BOOT_ARGS_SIZE: usize = 512;
const BOOT_EXTRA_ARGS_SIZE: usize = 1024;
/// mkbootimg accepts this many command-line characters for v0-v2 (plus a NUL).
pub const MAX_CMDLINE_V0: usize = BOOT_ARGS_SIZE + BOOT_EXTRA_ARGS_SIZE - 2;
/// v3/v4 hold one `cmdline[1536]`, NUL-terminated.
pub const MAX_CMDLINE_V3: usize = 1535;
const HEADER_SIZE_V1: u32 = 1648;
const HEADER_SIZE_V2: u32 = 1660;
const HEADER_SIZE_V3: u32 = 1580;
const HEADER_SIZE_V4: u32 = 1584;
/// mkbootimg 29.0.6 (Debian bookworm) writes this pre-release value into final-layout v3.
const HEADER_SIZE_V3_DRAFT: u32 = 1596;
pub const PAGE_SIZE_V3: u32 = 4096;
/// `BOOT_IMAGE_V4_SIGNATURE_SIZE`: the v4 signature area is empty or exactly this.
pub const V4_SIGNATURE_SIZE: usize = 4096;

/// A boot image. Addresses are the absolute values stored in the header (base + offset),
/// as the bootloader reads them; fields a header version does not have must be zero/empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootImage {
    pub header_version: u32,
    /// v0-v2: 2048 to 65536; v3-v4: always 4096.
    pub page_size: u32,
    /// v0-v2 only (v3+ keep addresses in vendor_boot).
    pub kernel_addr: u32,
    pub ramdisk_addr: u32,
    pub second_addr: u32,
    pub tags_addr: u32,
    /// Only stored for header version 2.
    pub dtb_addr: u64,
    /// Packed as mkbootimg packs `--os_version` and `--os_patch_level`.
    pub os_version: u32,
    /// `name[16]` (`--board`), v0-v2 only.
    pub board: String,
    /// The whole command line; v0-v2 write it split over `cmdline` + `extra_cmdline`.
    pub cmdline: String,
    /// v0-v2: how many characters of the command line sit in `cmdline[512]` when that is
    /// not where upstream mkbootimg puts the split (511 + NUL); Debian's mkbootimg 29.0.6
    /// fills all 512. `None` means the upstream rule. Kept so that a repack is identical.
    pub cmdline_split: Option<usize>,
    pub kernel: Vec<u8>,
    pub ramdisk: Vec<u8>,
    /// v0-v2 only.
    pub second: Vec<u8>,
    /// Legacy Qualcomm `dt.img` (QCDT), header version 0 only.
    pub qcdt: Vec<u8>,
    /// Header versions 1 and 2 only.
    pub recovery_dtbo: Vec<u8>,
    /// Header version 2 only (and then required).
    pub dtb: Vec<u8>,
    /// Header version 4 only: empty, or the 4096-byte signature area.
    pub boot_signature: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("boot image is {len} bytes, too short for a header (needs {need})")]
    Truncated { len: usize, need: usize },
    #[error("bad magic {0:02x?} (expected \"ANDROID!\")")]
    BadMagic([u8; 8]),
    #[error("header version {0} is not supported (mobix reads and writes versions 0-4)")]
    UnsupportedVersion(u32),
    #[error("page size {0} is invalid (expected a power of two from 2048 to 65536)")]
    BadPageSize(u32),
    #[error("page size {0} is invalid: header versions 3 and 4 use 4096")]
    BadPageSizeV3(u32),
    #[error("{section} of {size} bytes at offset {offset} runs past the end of the image ({len} bytes)")]
    SectionPastEnd { section: &'static str, offset: u64, size: u64, len: usize },
    #[error("header_size is {found}, expected {expected} for header version {version}")]
    BadHeaderSize { version: u32, found: u32, expected: u32 },
    #[error(
        "header_size 1596 is the pre-release v3 layout size written by mkbootimg 29.0.6; final v3 images say 1580"
    )]
    DraftV3HeaderSize,
    #[error("recovery_dtbo_offset is {found}, expected {expected} from the section sizes")]
    BadRecoveryDtboOffset { found: u64, expected: u64 },
    #[error("command line is {len} characters; header version {version} holds at most {max}")]
    CmdlineTooLong { version: u32, len: usize, max: usize },
    #[error("command line contains a NUL byte")]
    CmdlineNul,
    #[error("command line split at {0} does not fit cmdline[512] and extra_cmdline[1024]")]
    BadCmdlineSplit(usize),
    #[error("board name {0:?} is longer than 15 bytes")]
    BoardTooLong(String),
    #[error("{0} is not valid UTF-8 text")]
    BadText(&'static str),
    #[error("the kernel is empty")]
    EmptyKernel,
    #[error("header version 2 needs a dtb")]
    MissingDtb,
    #[error("{section} is not allowed with header version {version}")]
    SectionNotAllowed { section: &'static str, version: u32 },
    #[error("{field} must be 0 with header version {version} (it has no such field)")]
    FieldNotAllowed { field: &'static str, version: u32 },
    #[error("{section} is {size} bytes, over the 4 GiB a header field can hold")]
    SectionTooLarge { section: &'static str, size: usize },
    #[error("the v4 boot signature is {0} bytes; it must be empty or exactly 4096")]
    BadSignatureSize(usize),
    #[error("a QCDT dt.img of {0} bytes cannot be told from a header version (it must be over 4 bytes)")]
    QcdtTooSmall(usize),
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn pages(size: u64, page: u64) -> u64 {
    size.div_ceil(page)
}

fn size32(section: &'static str, data: &[u8]) -> Result<u32, Error> {
    u32::try_from(data.len()).map_err(|_| Error::SectionTooLarge { section, size: data.len() })
}

fn put32(h: &mut [u8], off: usize, v: u32) {
    h[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// The value at offset 40, where every boot image version keeps `header_version`.
pub fn peek_header_version(buf: &[u8]) -> Result<u32, Error> {
    if buf.len() < 44 {
        return Err(Error::Truncated { len: buf.len(), need: 44 });
    }
    if &buf[..8] != MAGIC {
        return Err(Error::BadMagic(buf[..8].try_into().unwrap()));
    }
    Ok(le32(buf, 40))
}

/// The SHA-1 "image id" of v0-v2 as upstream AOSP mkbootimg computes it (`id[32]`).
pub fn image_id(img: &BootImage) -> [u8; 32] {
    let mut h = Sha1::new();
    let mut section = |d: &[u8]| {
        h.update(d);
        h.update((d.len() as u32).to_le_bytes());
    };
    section(&img.kernel);
    section(&img.ramdisk);
    section(&img.second);
    if img.header_version >= 1 {
        section(&img.recovery_dtbo);
    }
    if img.header_version >= 2 {
        section(&img.dtb);
    }
    let mut id = [0u8; 32];
    id[..20].copy_from_slice(&h.finalize());
    id
}

fn check_page_size(p: u32) -> Result<(), Error> {
    if p.is_power_of_two() && (2048..=65536).contains(&p) {
        Ok(())
    } else {
        Err(Error::BadPageSize(p))
    }
}

/// Appends `data` padded with zeros to a multiple of `page`.
fn push_padded(out: &mut Vec<u8>, data: &[u8], page: usize) {
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(page) * page, 0);
}

/// NUL-terminated text of a fixed-size field.
fn text(buf: &[u8], range: std::ops::Range<usize>, what: &'static str) -> Result<String, Error> {
    let raw = &buf[range];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8(raw[..end].to_vec()).map_err(|_| Error::BadText(what))
}

/// Hands out consecutive page-aligned sections, each checked against the buffer.
struct Sections<'a> {
    buf: &'a [u8],
    page: u64,
    cursor: u64,
}

impl Sections<'_> {
    fn take(&mut self, section: &'static str, size: u64) -> Result<(u64, Vec<u8>), Error> {
        let off = self.cursor;
        let len = self.buf.len();
        if off.checked_add(size).is_none_or(|end| end > len as u64) {
            return Err(Error::SectionPastEnd { section, offset: off, size, len });
        }
        self.cursor = off + pages(size, self.page) * self.page;
        Ok((off, self.buf[off as usize..(off + size) as usize].to_vec()))
    }
}

impl BootImage {
    fn validate(&self) -> Result<(), Error> {
        let v = self.header_version;
        if v > 4 {
            return Err(Error::UnsupportedVersion(v));
        }
        if self.kernel.is_empty() {
            return Err(Error::EmptyKernel);
        }
        if self.cmdline.contains('\0') {
            return Err(Error::CmdlineNul);
        }
        let max = if v >= 3 { MAX_CMDLINE_V3 } else { MAX_CMDLINE_V0 };
        if self.cmdline.len() > max {
            return Err(Error::CmdlineTooLong { version: v, len: self.cmdline.len(), max });
        }
        if let Some(split) = self.cmdline_split {
            let rest = self.cmdline.len().saturating_sub(split);
            if v >= 3
                || split > BOOT_ARGS_SIZE
                || rest >= BOOT_EXTRA_ARGS_SIZE
                || !self.cmdline.is_char_boundary(split.min(self.cmdline.len()))
            {
                return Err(Error::BadCmdlineSplit(split));
            }
        }
        if self.board.len() >= BOOT_NAME_SIZE {
            return Err(Error::BoardTooLong(self.board.clone()));
        }
        let not_allowed = |section: &'static str, present: bool| -> Result<(), Error> {
            if present {
                Err(Error::SectionNotAllowed { section, version: v })
            } else {
                Ok(())
            }
        };
        not_allowed("dt (QCDT)", v != 0 && !self.qcdt.is_empty())?;
        not_allowed("recovery_dtbo", !(1..=2).contains(&v) && !self.recovery_dtbo.is_empty())?;
        not_allowed("dtb", v != 2 && !self.dtb.is_empty())?;
        not_allowed("boot signature", v != 4 && !self.boot_signature.is_empty())?;
        not_allowed("second", v >= 3 && !self.second.is_empty())?;
        if v == 2 && self.dtb.is_empty() {
            return Err(Error::MissingDtb);
        }
        if !self.qcdt.is_empty() && self.qcdt.len() <= 4 {
            return Err(Error::QcdtTooSmall(self.qcdt.len()));
        }
        if v >= 3 {
            if self.page_size != PAGE_SIZE_V3 {
                return Err(Error::BadPageSizeV3(self.page_size));
            }
            for (field, value) in [
                ("kernel_addr", self.kernel_addr as u64),
                ("ramdisk_addr", self.ramdisk_addr as u64),
                ("second_addr", self.second_addr as u64),
                ("tags_addr", self.tags_addr as u64),
                ("dtb_addr", self.dtb_addr),
            ] {
                if value != 0 {
                    return Err(Error::FieldNotAllowed { field, version: v });
                }
            }
            if !self.board.is_empty() {
                return Err(Error::FieldNotAllowed { field: "board", version: v });
            }
            if !self.boot_signature.is_empty() && self.boot_signature.len() != V4_SIGNATURE_SIZE {
                return Err(Error::BadSignatureSize(self.boot_signature.len()));
            }
        } else {
            check_page_size(self.page_size)?;
            if v < 2 && self.dtb_addr != 0 {
                return Err(Error::FieldNotAllowed { field: "dtb_addr", version: v });
            }
        }
        Ok(())
    }

    /// Serialises the image. Fails on values a bootloader or mkbootimg would refuse.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        self.validate()?;
        if self.header_version >= 3 {
            self.to_bytes_v3()
        } else {
            self.to_bytes_v0()
        }
    }

    fn to_bytes_v0(&self) -> Result<Vec<u8>, Error> {
        let page = self.page_size as usize;
        let mut h = vec![0u8; page];
        h[..8].copy_from_slice(MAGIC);
        put32(&mut h, 8, size32("kernel", &self.kernel)?);
        put32(&mut h, 12, self.kernel_addr);
        put32(&mut h, 16, size32("ramdisk", &self.ramdisk)?);
        put32(&mut h, 20, self.ramdisk_addr);
        put32(&mut h, 24, size32("second", &self.second)?);
        put32(&mut h, 28, self.second_addr);
        put32(&mut h, 32, self.tags_addr);
        put32(&mut h, 36, self.page_size);
        // Legacy QCDT images keep the dt.img size where header_version now lives.
        let version_slot = if self.qcdt.is_empty() { self.header_version } else { size32("dt", &self.qcdt)? };
        put32(&mut h, 40, version_slot);
        put32(&mut h, 44, self.os_version);
        h[48..48 + self.board.len()].copy_from_slice(self.board.as_bytes());
        // mkbootimg: the first 511 characters + NUL go to cmdline, the rest to extra_cmdline.
        let cmd = self.cmdline.as_bytes();
        let first = self.cmdline_split.unwrap_or(BOOT_ARGS_SIZE - 1).min(cmd.len());
        h[64..64 + first].copy_from_slice(&cmd[..first]);
        h[576..608].copy_from_slice(&image_id(self));
        let rest = &cmd[first..];
        h[608..608 + rest.len()].copy_from_slice(rest);
        let p = page as u64;
        if self.header_version >= 1 {
            let rdtbo_off = if self.recovery_dtbo.is_empty() {
                0
            } else {
                p * (1
                    + pages(self.kernel.len() as u64, p)
                    + pages(self.ramdisk.len() as u64, p)
                    + pages(self.second.len() as u64, p))
            };
            put32(&mut h, 1632, size32("recovery_dtbo", &self.recovery_dtbo)?);
            h[1636..1644].copy_from_slice(&rdtbo_off.to_le_bytes());
            put32(&mut h, 1644, if self.header_version == 1 { HEADER_SIZE_V1 } else { HEADER_SIZE_V2 });
        }
        if self.header_version == 2 {
            put32(&mut h, 1648, size32("dtb", &self.dtb)?);
            h[1652..1660].copy_from_slice(&self.dtb_addr.to_le_bytes());
        }
        let mut out = h;
        for s in [&self.kernel, &self.ramdisk, &self.second, &self.qcdt, &self.recovery_dtbo, &self.dtb] {
            push_padded(&mut out, s, page);
        }
        Ok(out)
    }

    fn to_bytes_v3(&self) -> Result<Vec<u8>, Error> {
        let page = PAGE_SIZE_V3 as usize;
        let mut h = vec![0u8; page];
        h[..8].copy_from_slice(MAGIC);
        put32(&mut h, 8, size32("kernel", &self.kernel)?);
        put32(&mut h, 12, size32("ramdisk", &self.ramdisk)?);
        put32(&mut h, 16, self.os_version);
        put32(&mut h, 20, if self.header_version == 3 { HEADER_SIZE_V3 } else { HEADER_SIZE_V4 });
        put32(&mut h, 40, self.header_version);
        h[44..44 + self.cmdline.len()].copy_from_slice(self.cmdline.as_bytes());
        if self.header_version == 4 {
            put32(&mut h, 1580, self.boot_signature.len() as u32);
        }
        let mut out = h;
        for s in [&self.kernel, &self.ramdisk, &self.boot_signature] {
            push_padded(&mut out, s, page);
        }
        Ok(out)
    }

    /// Parses an image, checking every size and offset against the buffer length first.
    pub fn parse(buf: &[u8]) -> Result<BootImage, Error> {
        let slot = peek_header_version(buf)?;
        match slot {
            0..=2 => Self::parse_v0(buf, slot, 0),
            3 | 4 => Self::parse_v3(buf, slot),
            // Above 4: the size of a legacy QCDT dt.img in a v0 image.
            dt_size => Self::parse_v0(buf, 0, dt_size),
        }
    }

    fn parse_v0(buf: &[u8], version: u32, dt_size: u32) -> Result<BootImage, Error> {
        let hdr_len = match version {
            0 => 1632,
            1 => HEADER_SIZE_V1 as usize,
            _ => HEADER_SIZE_V2 as usize,
        };
        if buf.len() < hdr_len {
            return Err(Error::Truncated { len: buf.len(), need: hdr_len });
        }
        let page_size = le32(buf, 36);
        check_page_size(page_size)?;
        let (rdtbo_sz, rdtbo_off) = if version >= 1 {
            let hs = le32(buf, 1644);
            let expected = if version == 1 { HEADER_SIZE_V1 } else { HEADER_SIZE_V2 };
            if hs != expected {
                return Err(Error::BadHeaderSize { version, found: hs, expected });
            }
            (le32(buf, 1632) as u64, le64(buf, 1636))
        } else {
            (0, 0)
        };
        let (dtb_sz, dtb_addr) = if version == 2 { (le32(buf, 1648) as u64, le64(buf, 1652)) } else { (0, 0) };
        let mut s = Sections { buf, page: page_size as u64, cursor: page_size as u64 };
        let (_, kernel) = s.take("kernel", le32(buf, 8) as u64)?;
        let (_, ramdisk) = s.take("ramdisk", le32(buf, 16) as u64)?;
        let (_, second) = s.take("second", le32(buf, 24) as u64)?;
        let (_, qcdt) = s.take("dt", dt_size as u64)?;
        let (rd_off, recovery_dtbo) = s.take("recovery_dtbo", rdtbo_sz)?;
        let (_, dtb) = s.take("dtb", dtb_sz)?;
        if rdtbo_sz != 0 && rdtbo_off != rd_off {
            return Err(Error::BadRecoveryDtboOffset { found: rdtbo_off, expected: rd_off });
        }
        let mut cmdline = text(buf, 64..576, "cmdline")?;
        let extra = text(buf, 608..1632, "extra_cmdline")?;
        let cmdline_split = (!extra.is_empty() && cmdline.len() != BOOT_ARGS_SIZE - 1).then_some(cmdline.len());
        cmdline.push_str(&extra);
        Ok(BootImage {
            header_version: version,
            page_size,
            kernel_addr: le32(buf, 12),
            ramdisk_addr: le32(buf, 20),
            second_addr: le32(buf, 28),
            tags_addr: le32(buf, 32),
            dtb_addr,
            os_version: le32(buf, 44),
            board: text(buf, 48..64, "name")?,
            cmdline,
            cmdline_split,
            kernel,
            ramdisk,
            second,
            qcdt,
            recovery_dtbo,
            dtb,
            boot_signature: Vec::new(),
        })
    }

    fn parse_v3(buf: &[u8], version: u32) -> Result<BootImage, Error> {
        let hdr_len = if version == 3 { HEADER_SIZE_V3 } else { HEADER_SIZE_V4 } as usize;
        if buf.len() < hdr_len {
            return Err(Error::Truncated { len: buf.len(), need: hdr_len });
        }
        let hs = le32(buf, 20);
        if version == 3 && hs == HEADER_SIZE_V3_DRAFT {
            return Err(Error::DraftV3HeaderSize);
        }
        if hs != hdr_len as u32 {
            return Err(Error::BadHeaderSize { version, found: hs, expected: hdr_len as u32 });
        }
        let mut s = Sections { buf, page: PAGE_SIZE_V3 as u64, cursor: PAGE_SIZE_V3 as u64 };
        let (_, kernel) = s.take("kernel", le32(buf, 8) as u64)?;
        let (_, ramdisk) = s.take("ramdisk", le32(buf, 12) as u64)?;
        let (_, boot_signature) = if version == 4 {
            let size = le32(buf, 1580) as usize;
            if size != 0 && size != V4_SIGNATURE_SIZE {
                return Err(Error::BadSignatureSize(size));
            }
            s.take("boot signature", size as u64)?
        } else {
            (0, Vec::new())
        };
        Ok(BootImage {
            header_version: version,
            page_size: PAGE_SIZE_V3,
            os_version: le32(buf, 16),
            cmdline: text(buf, 44..1580, "cmdline")?,
            kernel,
            ramdisk,
            boot_signature,
            ..BootImage::default()
        })
    }
}

/// Packs `--os_version A.B.C` and `--os_patch_level YYYY-MM` as mkbootimg does.
pub fn pack_os_version(version: (u32, u32, u32), patch: (u32, u32)) -> Option<u32> {
    let (a, b, c) = version;
    let (y, m) = patch;
    if a >= 128 || b >= 128 || c >= 128 || !(2000..2128).contains(&y) || !(1..=12).contains(&m) {
        return None;
    }
    Some((((a << 14) | (b << 7) | c) << 11) | ((y - 2000) << 4) | m)
}

/// The inverse of [`pack_os_version`]: `((a, b, c), (year, month))`.
pub fn unpack_os_version(v: u32) -> ((u32, u32, u32), (u32, u32)) {
    let ver = v >> 11;
    let patch = v & 0x7ff;
    ((ver >> 14, (ver >> 7) & 0x7f, ver & 0x7f), ((patch >> 4) + 2000, patch & 0xf))
}

/// A small, fully populated image of the given header version, for tests and fuzzing seeds.
#[doc(hidden)]
pub fn sample(version: u32) -> BootImage {
    let v3 = version >= 3;
    BootImage {
        header_version: version,
        page_size: 4096,
        kernel_addr: if v3 { 0 } else { 0x4008_0000 },
        ramdisk_addr: if v3 { 0 } else { 0x4100_0000 },
        second_addr: 0,
        tags_addr: if v3 { 0 } else { 0x4000_0100 },
        dtb_addr: if version == 2 { 0x41f0_0000 } else { 0 },
        os_version: pack_os_version((12, 0, 0), (2024, 1)).unwrap(),
        board: if v3 { String::new() } else { "qemu".into() },
        cmdline: "console=ttyAMA0".into(),
        kernel: (0..5000u32).map(|i| i as u8).collect(),
        ramdisk: vec![0x1f; 3000],
        dtb: if version == 2 { vec![0xd0; 100] } else { vec![] },
        ..BootImage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Sha256;

    fn digest(b: &[u8]) -> String {
        format!("{:x}", Sha256::digest(b))
    }

    #[test]
    fn round_trip_every_version_with_golden_digests() {
        let golden = [GOLDEN_V0, GOLDEN_V1, GOLDEN_V2, GOLDEN_V3, GOLDEN_V4];
        for v in 0..=4 {
            let img = sample(v);
            let bytes = img.to_bytes().unwrap();
            assert_eq!(bytes.len() % 4096, 0);
            assert!(BootImage::parse(&bytes).unwrap() == img, "v{v} round trip");
            assert_eq!(digest(&bytes), golden[v as usize], "v{v} writer output changed");
        }
    }
    const GOLDEN_V0: &str = "d33dab35fafd06aca1b7a5fb75d5693b045ce9ee954212b211673f6096de93f9";
    const GOLDEN_V1: &str = "40ecbb3e03f9b9f0296db86d1fa39b984d412f53587ef9a3d20b90ec96e5b94e";
    const GOLDEN_V2: &str = "a6cc885a8963f7d7ff084a58e5ad42eb534dd49c07631d35f92190d6b6855642";
    const GOLDEN_V3: &str = "eb70133f30d1f587fc772988a59b0dc20290bc767fede812d4b1c8b5401a8b12";
    const GOLDEN_V4: &str = "e37464bf757f8ee6906918447657f29d7bbca10e8a9d4211d5fb103c26b97310";

    #[test]
    fn v2_layout_matches_bootimg_h() {
        let bytes = sample(2).to_bytes().unwrap();
        assert_eq!(le32(&bytes, 1644), 1660, "header_size");
        assert_eq!(le32(&bytes, 1648), 100, "dtb_size");
        assert_eq!(le64(&bytes, 1652), 0x41f0_0000, "dtb_addr");
        // header + kernel (2 pages) + ramdisk (1) + dtb (1)
        assert_eq!(bytes.len(), 5 * 4096);
    }

    #[test]
    fn v3_v4_layout_matches_bootimg_h() {
        let mut img = sample(4);
        img.boot_signature = vec![0xaa; V4_SIGNATURE_SIZE];
        let bytes = img.to_bytes().unwrap();
        assert_eq!(le32(&bytes, 8), 5000, "kernel_size");
        assert_eq!(le32(&bytes, 12), 3000, "ramdisk_size");
        assert_eq!(le32(&bytes, 16), img.os_version, "os_version");
        assert_eq!(le32(&bytes, 20), 1584, "header_size");
        assert_eq!(le32(&bytes, 40), 4, "header_version");
        assert_eq!(&bytes[44..59], b"console=ttyAMA0");
        assert_eq!(le32(&bytes, 1580), 4096, "signature_size");
        // header + kernel (2 pages) + ramdisk (1) + signature (1)
        assert_eq!(bytes.len(), 5 * 4096);
        assert_eq!(&bytes[4 * 4096..4 * 4096 + 4], &[0xaa; 4]);
        assert_eq!(le32(&sample(3).to_bytes().unwrap(), 20), 1580);
    }

    #[test]
    fn legacy_qcdt_size_lives_in_the_version_slot() {
        let mut img = sample(0);
        img.qcdt = b"QCDT-and-some-table".to_vec();
        let bytes = img.to_bytes().unwrap();
        assert_eq!(le32(&bytes, 40), 19);
        // header + kernel (2) + ramdisk (1) + dt (1)
        assert_eq!(bytes.len(), 5 * 4096);
        assert!(BootImage::parse(&bytes).unwrap() == img);
        let mut tiny = sample(0);
        tiny.qcdt = vec![1, 2];
        assert_eq!(tiny.to_bytes().err(), Some(Error::QcdtTooSmall(2)));
    }

    #[test]
    fn long_cmdline_is_split_like_mkbootimg() {
        let mut img = sample(2);
        img.cmdline = format!("{}{}", "x".repeat(511), "y".repeat(1023));
        let bytes = img.to_bytes().unwrap();
        assert_eq!(&bytes[64..575], "x".repeat(511).as_bytes());
        assert_eq!(bytes[575], 0);
        assert_eq!(&bytes[608..1631], "y".repeat(1023).as_bytes());
        assert_eq!(BootImage::parse(&bytes).unwrap().cmdline, img.cmdline);
        img.cmdline.push('z');
        assert!(matches!(img.to_bytes().err(), Some(Error::CmdlineTooLong { .. })));
        let mut v3 = sample(3);
        v3.cmdline = "c".repeat(MAX_CMDLINE_V3);
        assert_eq!(BootImage::parse(&v3.to_bytes().unwrap()).unwrap().cmdline, v3.cmdline);
        v3.cmdline.push('c');
        assert!(matches!(v3.to_bytes().err(), Some(Error::CmdlineTooLong { max: 1535, .. })));
    }

    #[test]
    fn os_version_packing_matches_mkbootimg() {
        // mkbootimg --os_version 11.0.0 --os_patch_level 2021-03 gives 0x16000153.
        assert_eq!(pack_os_version((11, 0, 0), (2021, 3)), Some(0x1600_0153));
        assert_eq!(unpack_os_version(0x1600_0153), ((11, 0, 0), (2021, 3)));
        assert_eq!(pack_os_version((11, 0, 0), (2021, 13)), None);
    }

    #[test]
    fn refuses_what_a_bootloader_would() {
        let err = |img: BootImage| img.to_bytes().err();
        let mut img = sample(2);
        img.dtb.clear();
        assert_eq!(err(img), Some(Error::MissingDtb));
        let mut img = sample(0);
        img.page_size = 3000;
        assert_eq!(err(img), Some(Error::BadPageSize(3000)));
        let mut img = sample(0);
        img.kernel.clear();
        assert_eq!(err(img), Some(Error::EmptyKernel));
        assert_eq!(err(sample(5)), Some(Error::UnsupportedVersion(5)));
        let mut img = sample(3);
        img.page_size = 2048;
        assert_eq!(err(img), Some(Error::BadPageSizeV3(2048)));
        let mut img = sample(3);
        img.kernel_addr = 0x8000;
        assert_eq!(err(img), Some(Error::FieldNotAllowed { field: "kernel_addr", version: 3 }));
        let mut img = sample(4);
        img.boot_signature = vec![1; 100];
        assert_eq!(err(img), Some(Error::BadSignatureSize(100)));
        let mut img = sample(1);
        img.dtb = vec![1];
        assert_eq!(err(img), Some(Error::SectionNotAllowed { section: "dtb", version: 1 }));
    }

    #[test]
    fn corrupt_images_are_errors_not_panics() {
        let good = sample(2).to_bytes().unwrap();
        // The dtb (100 bytes) starts at page 4; a cut inside it must be noticed.
        for cut in [0, 7, 43, 100, 1659, 4096, 8000, 4 * 4096 + 50] {
            assert!(BootImage::parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes()); // kernel_size
        assert!(matches!(BootImage::parse(&bad), Err(Error::SectionPastEnd { section: "kernel", .. })));
        let mut bad = good.clone();
        bad[36..40].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(BootImage::parse(&bad).err(), Some(Error::BadPageSize(0)));
        let mut bad = good;
        bad[1644..1648].copy_from_slice(&1596u32.to_le_bytes());
        assert!(matches!(BootImage::parse(&bad), Err(Error::BadHeaderSize { .. })));
        let v4 = sample(4).to_bytes().unwrap();
        for cut in [0, 44, 1583, 4096, 3 * 4096 + 10] {
            assert!(BootImage::parse(&v4[..cut]).is_err(), "v4 cut at {cut}");
        }
        let mut bad = v4.clone();
        bad[20..24].copy_from_slice(&1596u32.to_le_bytes());
        bad[40] = 3;
        assert_eq!(BootImage::parse(&bad).err(), Some(Error::DraftV3HeaderSize));
        let mut bad = v4;
        bad[1580..1584].copy_from_slice(&77u32.to_le_bytes());
        assert_eq!(BootImage::parse(&bad).err(), Some(Error::BadSignatureSize(77)));
    }
}
