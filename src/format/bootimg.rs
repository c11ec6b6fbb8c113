//! Android boot images (`ANDROID!`), header versions 0, 1 and 2.
//!
//! Pipeline stage: format (pure). Input: a [`BootImage`] model; output: image bytes, and
//! back. No I/O. Header versions 3 and 4 and vendor_boot are refused with a clear error
//! until they are implemented.
//!
//! Layout reference: AOSP `system/tools/mkbootimg/include/bootimg/bootimg.h`
//! (`boot_img_hdr_v0`, `boot_img_hdr_v1`, `boot_img_hdr_v2`) and `mkbootimg.py`.
//! Every section is padded to `page_size`; the header takes exactly one page:
//! `header | kernel | ramdisk | second | recovery_dtbo (v1+) | dtb (v2)`.

use sha1::{Digest, Sha1};

pub const MAGIC: &[u8; 8] = b"ANDROID!";
const BOOT_NAME_SIZE: usize = 16;
const BOOT_ARGS_SIZE: usize = 512;
const BOOT_EXTRA_ARGS_SIZE: usize = 1024;
/// mkbootimg accepts this many command-line characters for v0-v2 (plus a NUL).
pub const MAX_CMDLINE_V0: usize = BOOT_ARGS_SIZE + BOOT_EXTRA_ARGS_SIZE - 2;
const HEADER_SIZE_V1: u32 = 1648;
const HEADER_SIZE_V2: u32 = 1660;

/// A boot image with header version 0, 1 or 2. Addresses are the absolute values stored in
/// the header (base + offset), as the bootloader reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImage {
    pub header_version: u32,
    pub page_size: u32,
    pub kernel_addr: u32,
    pub ramdisk_addr: u32,
    pub second_addr: u32,
    pub tags_addr: u32,
    /// Only stored for header version 2.
    pub dtb_addr: u64,
    /// Packed as mkbootimg packs `--os_version` and `--os_patch_level`.
    pub os_version: u32,
    /// `name[16]` in bootimg.h (`--board`).
    pub board: String,
    /// The whole command line; written split over `cmdline[512]` + `extra_cmdline[1024]`.
    pub cmdline: String,
    pub kernel: Vec<u8>,
    pub ramdisk: Vec<u8>,
    pub second: Vec<u8>,
    /// Header version 1 and 2 only.
    pub recovery_dtbo: Vec<u8>,
    /// Header version 2 only (and then required).
    pub dtb: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("boot image is {len} bytes, too short for a header (needs {need})")]
    Truncated { len: usize, need: usize },
    #[error("bad magic {0:02x?} (expected \"ANDROID!\")")]
    BadMagic([u8; 8]),
    #[error("header version {0} is not supported yet (mobix reads and writes versions 0-2)")]
    UnsupportedVersion(u32),
    #[error("page size {0} is invalid (expected a power of two from 2048 to 65536)")]
    BadPageSize(u32),
    #[error(
        "{section} of {size} bytes at offset {offset} runs past the end of the image ({len} bytes)"
    )]
    SectionPastEnd {
        section: &'static str,
        offset: u64,
        size: u64,
        len: usize,
    },
    #[error("header_size is {found}, expected {expected} for header version {version}")]
    BadHeaderSize {
        version: u32,
        found: u32,
        expected: u32,
    },
    #[error("recovery_dtbo_offset is {found}, expected {expected} from the section sizes")]
    BadRecoveryDtboOffset { found: u64, expected: u64 },
    #[error("command line is {len} characters; header version {version} holds at most {max}")]
    CmdlineTooLong {
        version: u32,
        len: usize,
        max: usize,
    },
    #[error("command line contains a NUL byte")]
    CmdlineNul,
    #[error("board name {0:?} is longer than 15 bytes")]
    BoardTooLong(String),
    #[error("{0} is not valid ASCII/UTF-8 text")]
    BadText(&'static str),
    #[error("the kernel is empty")]
    EmptyKernel,
    #[error("header version 2 needs a dtb")]
    MissingDtb,
    #[error("{section} is not allowed with header version {version}")]
    SectionNotAllowed { section: &'static str, version: u32 },
    #[error("{section} is {size} bytes, over the 4 GiB a header field can hold")]
    SectionTooLarge { section: &'static str, size: usize },
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
    u32::try_from(data.len()).map_err(|_| Error::SectionTooLarge {
        section,
        size: data.len(),
    })
}

/// The header version is at offset 40 in every boot image version; read it first.
pub fn peek_header_version(buf: &[u8]) -> Result<u32, Error> {
    if buf.len() < 44 {
        return Err(Error::Truncated {
            len: buf.len(),
            need: 44,
        });
    }
    if &buf[..8] != MAGIC {
        return Err(Error::BadMagic(buf[..8].try_into().unwrap()));
    }
    Ok(le32(buf, 40))
}

/// The SHA-1 "image id" as upstream AOSP mkbootimg computes it (bootimg.h `id[32]`).
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

impl BootImage {
    fn validate(&self) -> Result<(), Error> {
        if self.header_version > 2 {
            return Err(Error::UnsupportedVersion(self.header_version));
        }
        check_page_size(self.page_size)?;
        if self.kernel.is_empty() {
            return Err(Error::EmptyKernel);
        }
        if self.cmdline.contains('\0') {
            return Err(Error::CmdlineNul);
        }
        if self.cmdline.len() > MAX_CMDLINE_V0 {
            return Err(Error::CmdlineTooLong {
                version: self.header_version,
                len: self.cmdline.len(),
                max: MAX_CMDLINE_V0,
            });
        }
        if self.board.len() >= BOOT_NAME_SIZE {
            return Err(Error::BoardTooLong(self.board.clone()));
        }
        if self.header_version < 1 && !self.recovery_dtbo.is_empty() {
            return Err(Error::SectionNotAllowed {
                section: "recovery_dtbo",
                version: 0,
            });
        }
        if self.header_version < 2 && !self.dtb.is_empty() {
            return Err(Error::SectionNotAllowed {
                section: "dtb",
                version: self.header_version,
            });
        }
        if self.header_version == 2 && self.dtb.is_empty() {
            return Err(Error::MissingDtb);
        }
        Ok(())
    }

    /// Serialises the image. Fails on values a bootloader or mkbootimg would refuse.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        self.validate()?;
        let page = self.page_size as usize;
        let mut h = vec![0u8; page];
        let put32 =
            |h: &mut [u8], off: usize, v: u32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
        h[..8].copy_from_slice(MAGIC);
        put32(&mut h, 8, size32("kernel", &self.kernel)?);
        put32(&mut h, 12, self.kernel_addr);
        put32(&mut h, 16, size32("ramdisk", &self.ramdisk)?);
        put32(&mut h, 20, self.ramdisk_addr);
        put32(&mut h, 24, size32("second", &self.second)?);
        put32(&mut h, 28, self.second_addr);
        put32(&mut h, 32, self.tags_addr);
        put32(&mut h, 36, self.page_size);
        put32(&mut h, 40, self.header_version);
        put32(&mut h, 44, self.os_version);
        h[48..48 + self.board.len()].copy_from_slice(self.board.as_bytes());
        // mkbootimg: the first 511 characters + NUL go to cmdline, the rest to extra_cmdline.
        let cmd = self.cmdline.as_bytes();
        let first = cmd.len().min(BOOT_ARGS_SIZE - 1);
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
            let hs = if self.header_version == 1 {
                HEADER_SIZE_V1
            } else {
                HEADER_SIZE_V2
            };
            put32(&mut h, 1644, hs);
        }
        if self.header_version == 2 {
            put32(&mut h, 1648, size32("dtb", &self.dtb)?);
            h[1652..1660].copy_from_slice(&self.dtb_addr.to_le_bytes());
        }
        let mut out = h;
        for s in [
            &self.kernel,
            &self.ramdisk,
            &self.second,
            &self.recovery_dtbo,
            &self.dtb,
        ] {
            out.extend_from_slice(s);
            let padded = out.len().div_ceil(page) * page;
            out.resize(padded, 0);
        }
        Ok(out)
    }

    /// Parses an image, checking every size and offset against the buffer length first.
    pub fn parse(buf: &[u8]) -> Result<BootImage, Error> {
        let version = peek_header_version(buf)?;
        if version > 2 {
            return Err(Error::UnsupportedVersion(version));
        }
        let hdr_len = match version {
            0 => 1632,
            1 => HEADER_SIZE_V1 as usize,
            _ => HEADER_SIZE_V2 as usize,
        };
        if buf.len() < hdr_len {
            return Err(Error::Truncated {
                len: buf.len(),
                need: hdr_len,
            });
        }
        let page_size = le32(buf, 36);
        check_page_size(page_size)?;
        let p = page_size as u64;
        let ksz = le32(buf, 8) as u64;
        let rsz = le32(buf, 16) as u64;
        let ssz = le32(buf, 24) as u64;
        let (rdtbo_sz, rdtbo_off) = if version >= 1 {
            let hs = le32(buf, 1644);
            let expected = if version == 1 {
                HEADER_SIZE_V1
            } else {
                HEADER_SIZE_V2
            };
            if hs != expected {
                return Err(Error::BadHeaderSize {
                    version,
                    found: hs,
                    expected,
                });
            }
            (le32(buf, 1632) as u64, le64(buf, 1636))
        } else {
            (0, 0)
        };
        let (dtb_sz, dtb_addr) = if version == 2 {
            (le32(buf, 1648) as u64, le64(buf, 1652))
        } else {
            (0, 0)
        };
        // Sections follow each other, each padded to a page; all arithmetic in u64 so a
        // hostile header cannot overflow it (u32 sizes, page count bounded).
        let mut cursor = p;
        let mut take = |name: &'static str, size: u64| -> Result<(u64, u64), Error> {
            let off = cursor;
            if off
                .checked_add(size)
                .is_none_or(|end| end > buf.len() as u64)
            {
                return Err(Error::SectionPastEnd {
                    section: name,
                    offset: off,
                    size,
                    len: buf.len(),
                });
            }
            cursor = off + pages(size, p) * p;
            Ok((off, size))
        };
        let k = take("kernel", ksz)?;
        let r = take("ramdisk", rsz)?;
        let s = take("second", ssz)?;
        let rd = take("recovery_dtbo", rdtbo_sz)?;
        let d = take("dtb", dtb_sz)?;
        if rdtbo_sz != 0 && rdtbo_off != rd.0 {
            return Err(Error::BadRecoveryDtboOffset {
                found: rdtbo_off,
                expected: rd.0,
            });
        }
        let slice = |(off, size): (u64, u64)| buf[off as usize..(off + size) as usize].to_vec();
        let text = |range: std::ops::Range<usize>, what: &'static str| -> Result<String, Error> {
            let raw = &buf[range];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8(raw[..end].to_vec()).map_err(|_| Error::BadText(what))
        };
        let mut cmdline = text(64..576, "cmdline")?;
        cmdline.push_str(&text(608..1632, "extra_cmdline")?);
        Ok(BootImage {
            header_version: version,
            page_size,
            kernel_addr: le32(buf, 12),
            ramdisk_addr: le32(buf, 20),
            second_addr: le32(buf, 28),
            tags_addr: le32(buf, 32),
            dtb_addr,
            os_version: le32(buf, 44),
            board: text(48..64, "name")?,
            cmdline,
            kernel: slice(k),
            ramdisk: slice(r),
            second: slice(s),
            recovery_dtbo: slice(rd),
            dtb: slice(d),
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

/// A small, fully populated image of the given header version, for tests and fuzzing seeds.
#[doc(hidden)]
pub fn sample(version: u32) -> BootImage {
    BootImage {
        header_version: version,
        page_size: 4096,
        kernel_addr: 0x4008_0000,
        ramdisk_addr: 0x4100_0000,
        second_addr: 0,
        tags_addr: 0x4000_0100,
        dtb_addr: if version == 2 { 0x41f0_0000 } else { 0 },
        os_version: pack_os_version((12, 0, 0), (2024, 1)).unwrap(),
        board: "qemu".into(),
        cmdline: "console=ttyAMA0".into(),
        kernel: (0..5000u32).map(|i| i as u8).collect(),
        ramdisk: vec![0x1f; 3000],
        second: vec![],
        recovery_dtbo: vec![],
        dtb: if version == 2 {
            vec![0xd0; 100]
        } else {
            vec![]
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Sha256;

    fn sample(version: u32) -> BootImage {
        super::sample(version)
    }

    #[test]
    fn round_trip_v0_v1_v2_with_golden_digests() {
        let golden = [GOLDEN_V0, GOLDEN_V1, GOLDEN_V2];
        for v in 0..=2 {
            let img = sample(v);
            let bytes = img.to_bytes().unwrap();
            assert_eq!(bytes.len() % 4096, 0);
            assert_eq!(BootImage::parse(&bytes).unwrap(), img, "v{v}");
            let digest = format!("{:x}", Sha256::digest(&bytes));
            assert_eq!(digest, golden[v as usize], "v{v} writer output changed");
        }
    }
    const GOLDEN_V0: &str = "d33dab35fafd06aca1b7a5fb75d5693b045ce9ee954212b211673f6096de93f9";
    const GOLDEN_V1: &str = "40ecbb3e03f9b9f0296db86d1fa39b984d412f53587ef9a3d20b90ec96e5b94e";
    const GOLDEN_V2: &str = "a6cc885a8963f7d7ff084a58e5ad42eb534dd49c07631d35f92190d6b6855642";

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
    fn long_cmdline_is_split_like_mkbootimg() {
        let mut img = sample(2);
        img.cmdline = format!("{}{}", "x".repeat(511), "y".repeat(1023));
        let bytes = img.to_bytes().unwrap();
        assert_eq!(&bytes[64..575], "x".repeat(511).as_bytes());
        assert_eq!(bytes[575], 0);
        assert_eq!(&bytes[608..1631], "y".repeat(1023).as_bytes());
        assert_eq!(BootImage::parse(&bytes).unwrap().cmdline, img.cmdline);
        img.cmdline.push('z');
        assert!(matches!(img.to_bytes(), Err(Error::CmdlineTooLong { .. })));
    }

    #[test]
    fn os_version_packing_matches_mkbootimg() {
        // mkbootimg --os_version 11.0.0 --os_patch_level 2021-03 gives 0x16000153.
        assert_eq!(pack_os_version((11, 0, 0), (2021, 3)), Some(0x1600_0153));
        assert_eq!(pack_os_version((11, 0, 0), (2021, 13)), None);
    }

    #[test]
    fn refuses_what_a_bootloader_would() {
        let mut img = sample(2);
        img.dtb.clear();
        assert_eq!(img.to_bytes(), Err(Error::MissingDtb));
        let mut img = sample(0);
        img.page_size = 3000;
        assert_eq!(img.to_bytes(), Err(Error::BadPageSize(3000)));
        let mut img = sample(0);
        img.kernel.clear();
        assert_eq!(img.to_bytes(), Err(Error::EmptyKernel));
        assert_eq!(sample(3).to_bytes(), Err(Error::UnsupportedVersion(3)));
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
        assert!(matches!(
            BootImage::parse(&bad),
            Err(Error::SectionPastEnd {
                section: "kernel",
                ..
            })
        ));
        let mut bad = good.clone();
        bad[36..40].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(BootImage::parse(&bad), Err(Error::BadPageSize(0)));
        let mut bad = good;
        bad[1644..1648].copy_from_slice(&1596u32.to_le_bytes());
        assert!(matches!(
            BootImage::parse(&bad),
            Err(Error::BadHeaderSize { .. })
        ));
    }
}
