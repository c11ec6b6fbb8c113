//! The arm64 kernel `Image` header, and kernels with device trees appended.
//!
//! Pipeline stage: format (pure). Layout reference: Linux
//! `Documentation/arch/arm64/booting.rst` (64-byte header: code0/code1, text_offset,
//! image_size, flags, reserved, magic "ARM\x64" at 56). A kernel packed into a boot image is
//! checked here first, compressed or not, so that mobix refuses what a bootloader would.
//!
//! Appended DTBs (`Image.gz-dtb`): Qualcomm's LK/ABL decompress `Image.gz` and look for
//! device tree blobs right after the end of the gzip stream; the blobs follow each other
//! with no padding.

use super::compress::{self, Compression};
use super::fdt;

pub const MAGIC: &[u8; 4] = b"ARM\x64";
pub const HEADER_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    pub text_offset: u64,
    /// Effective size including BSS (0 on kernels before 3.17).
    pub image_size: u64,
    pub flags: u64,
    /// Page size the kernel was built for, in bytes (from flags bits 1-2), if stated.
    pub page_size: Option<u32>,
    /// Whether the Image starts with "MZ" (it carries an EFI stub).
    pub efi_stub: bool,
}

/// What is known about a kernel before packing it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelInfo {
    pub compression: Compression,
    pub header: Header,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("the kernel is {0} bytes (decompressed), shorter than the 64-byte arm64 Image header")]
    TooShort(usize),
    #[error("the kernel has no arm64 Image magic (\"ARM\\x64\" at offset 56); found {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("the kernel is built big-endian (flags bit 0); phones boot little-endian")]
    BigEndian,
    #[error("text_offset {0:#x} is not a multiple of 4 KiB")]
    BadTextOffset(u64),
    #[error("image_size {image_size} is smaller than the uncompressed Image itself ({file} bytes)")]
    ImageSizeTooSmall { image_size: u64, file: u64 },
    #[error("decompressing the kernel's header: {0}")]
    Decompress(String),
    #[error("appended device trees need a gzip-compressed kernel (Image.gz); this one is {0}")]
    NotGzip(&'static str),
    #[error("appended device tree {index}: {source}")]
    BadDtb { index: usize, source: fdt::Error },
}

/// Parses the 64-byte header of an uncompressed Image.
pub fn parse_header(b: &[u8]) -> Result<Header, Error> {
    if b.len() < HEADER_LEN {
        return Err(Error::TooShort(b.len()));
    }
    let magic: [u8; 4] = b[56..60].try_into().unwrap();
    if &magic != MAGIC {
        return Err(Error::BadMagic(magic));
    }
    let le64 = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let flags = le64(24);
    Ok(Header {
        text_offset: le64(8),
        image_size: le64(16),
        flags,
        page_size: match (flags >> 1) & 3 {
            1 => Some(4096),
            2 => Some(16384),
            3 => Some(65536),
            _ => None,
        },
        efi_stub: &b[..2] == b"MZ",
    })
}

/// Checks a kernel (raw Image, or compressed in a form the kernel's boot wrappers and
/// bootloaders take) before it goes into a boot image.
pub fn check_kernel(kernel: &[u8]) -> Result<KernelInfo, Error> {
    let compression = Compression::detect(kernel);
    let head = compress::decompress_prefix(kernel, HEADER_LEN).map_err(|e| Error::Decompress(e.to_string()))?;
    let header = parse_header(&head)?;
    if header.flags & 1 != 0 {
        return Err(Error::BigEndian);
    }
    if header.text_offset % 4096 != 0 {
        return Err(Error::BadTextOffset(header.text_offset));
    }
    if compression == Compression::None && header.image_size != 0 && header.image_size < kernel.len() as u64 {
        return Err(Error::ImageSizeTooSmall { image_size: header.image_size, file: kernel.len() as u64 });
    }
    Ok(KernelInfo { compression, header })
}

/// `Image.gz` followed by the device trees: what LK/ABL-booted phones with header v0/v1
/// and `append_dtb` take as their kernel. Every blob is checked.
pub fn append_dtbs(kernel_gz: &[u8], dtbs: &[&[u8]]) -> Result<Vec<u8>, Error> {
    let c = Compression::detect(kernel_gz);
    if c != Compression::Gzip {
        return Err(Error::NotGzip(c.name()));
    }
    let mut out = kernel_gz.to_vec();
    for (index, d) in dtbs.iter().enumerate() {
        let h = fdt::header(d).map_err(|source| Error::BadDtb { index, source })?;
        out.extend_from_slice(&d[..h.totalsize as usize]);
    }
    Ok(out)
}

/// Splits a kernel into its gzip stream and the device trees appended after it (none for
/// a kernel without any). Non-gzip kernels come back whole.
pub fn split_appended_dtbs(kernel: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), Error> {
    if Compression::detect(kernel) != Compression::Gzip {
        return Ok((kernel.to_vec(), Vec::new()));
    }
    use std::io::Read;
    let mut dec = flate2::bufread::GzDecoder::new(kernel);
    std::io::copy(&mut (&mut dec).take(u64::MAX), &mut std::io::sink())
        .map_err(|e| Error::Decompress(e.to_string()))?;
    let rest = dec.into_inner();
    let gz_len = kernel.len() - rest.len();
    let mut dtbs = Vec::new();
    let mut off = 0;
    while off < rest.len() {
        let h = fdt::header(&rest[off..]).map_err(|source| Error::BadDtb { index: dtbs.len(), source })?;
        dtbs.push(rest[off..off + h.totalsize as usize].to_vec());
        off += h.totalsize as usize;
    }
    Ok((kernel[..gz_len].to_vec(), dtbs))
}

/// The kernel release an uncompressed `Image` announces (`Linux version 6.1.0-9-arm64 (…`),
/// when it holds the banner and the word is one a modules directory can be named.
pub fn release(image: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let at = image.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    let rest = &image[at..image.len().min(at + 128)];
    let end = rest.iter().position(|&b| b == b' ' || b == 0 || b == b'\n')?;
    let word = std::str::from_utf8(&rest[..end]).ok()?;
    let ok = !word.is_empty()
        && word != "."
        && word != ".."
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b));
    ok.then(|| word.to_string())
}

/// The kernel configuration an `Image` built with `CONFIG_IKCONFIG` carries (gzip between
/// the `IKCFG_ST` and `IKCFG_ED` markers), unpacked.
pub fn embedded_config(image: &[u8]) -> Option<Vec<u8>> {
    let start = image.windows(8).position(|w| w == b"IKCFG_ST")? + 8;
    let len = image[start..].windows(8).position(|w| w == b"IKCFG_ED")?;
    let gz = &image[start..start + len];
    (Compression::detect(gz) == Compression::Gzip).then(|| compress::decompress(gz, 16 << 20).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_and_config_come_from_the_banner_and_the_ikconfig_markers() {
        let mut img = image(0, 1 << 16, 2, 4096);
        assert_eq!(release(&img), None);
        assert_eq!(embedded_config(&img), None);
        img.extend_from_slice(b"\0Linux version 6.1.0-9-arm64 (debian-kernel@lists) #1 SMP\n\0");
        img.extend_from_slice(b"IKCFG_ST");
        img.extend(compress::compress(b"CONFIG_FOO=y\n", Compression::Gzip).unwrap());
        img.extend_from_slice(b"IKCFG_ED");
        assert_eq!(release(&img).as_deref(), Some("6.1.0-9-arm64"));
        assert_eq!(embedded_config(&img).as_deref(), Some(&b"CONFIG_FOO=y\n"[..]));
        // A banner whose word could escape a directory is no release.
        assert_eq!(release(b"Linux version ../x (y)"), None);
        assert_eq!(release(b"Linux version a/b (y)"), None);
    }

    /// A minimal Image: header with the given fields, then some code.
    pub(crate) fn image(text_offset: u64, image_size: u64, flags: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len.max(HEADER_LEN)];
        b[0..2].copy_from_slice(b"MZ");
        b[8..16].copy_from_slice(&text_offset.to_le_bytes());
        b[16..24].copy_from_slice(&image_size.to_le_bytes());
        b[24..32].copy_from_slice(&flags.to_le_bytes());
        b[56..60].copy_from_slice(MAGIC);
        for (i, x) in b[HEADER_LEN..].iter_mut().enumerate() {
            *x = (i % 7) as u8;
        }
        b
    }

    #[test]
    fn accepts_raw_and_compressed_images() {
        let img = image(0, 1 << 20, 0b0010, 4096);
        let info = check_kernel(&img).unwrap();
        assert_eq!(info.header.page_size, Some(4096));
        assert!(info.header.efi_stub);
        for c in [Compression::Gzip, Compression::Lz4, Compression::Xz, Compression::Zstd] {
            let z = compress::compress(&img, c).unwrap();
            assert_eq!(check_kernel(&z).unwrap().compression, c);
        }
    }

    #[test]
    fn refuses_what_a_bootloader_would() {
        let mut bad = image(0, 1 << 20, 0, 4096);
        bad[56] = b'X';
        assert!(matches!(check_kernel(&bad), Err(Error::BadMagic(_))));
        assert_eq!(check_kernel(&image(0, 1 << 20, 1, 4096)).err(), Some(Error::BigEndian));
        assert_eq!(check_kernel(&image(0x80001, 1 << 20, 0, 4096)).err(), Some(Error::BadTextOffset(0x80001)));
        assert!(matches!(check_kernel(&image(0, 100, 0, 4096)), Err(Error::ImageSizeTooSmall { .. })));
        assert_eq!(check_kernel(&[0u8; 10]).err(), Some(Error::TooShort(10)));
        assert!(check_kernel(&[0x1f, 0x8b, 8, 0, 1, 2]).is_err(), "truncated gzip");
    }

    fn dtb(fill: u8) -> Vec<u8> {
        // Header, empty reservation map, root node, no strings.
        let st: Vec<u8> = [1u32, 0, 2, 9].iter().flat_map(|w| w.to_be_bytes()).collect();
        let mut b = vec![0u8; 40];
        let total = 40 + 16 + st.len() + 4;
        for (i, v) in
            [fdt::MAGIC, total as u32, 56, (56 + st.len()) as u32, 40, 17, 16, 0, 4, st.len() as u32].iter().enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&[0u8; 16]);
        b.extend_from_slice(&st);
        b.extend_from_slice(&[fill, 0, 0, 0]);
        b
    }

    #[test]
    fn appended_dtbs_round_trip() {
        let gz = compress::compress(&image(0, 1 << 20, 0, 8192), Compression::Gzip).unwrap();
        let (a, b) = (dtb(1), dtb(2));
        let k = append_dtbs(&gz, &[&a, &b]).unwrap();
        assert_eq!(k.len(), gz.len() + a.len() + b.len());
        let (kernel, dtbs) = split_appended_dtbs(&k).unwrap();
        assert_eq!(kernel, gz);
        assert_eq!(dtbs, vec![a.clone(), b]);
        assert_eq!(split_appended_dtbs(&gz).unwrap().1.len(), 0);
        let raw = image(0, 1 << 20, 0, 8192);
        assert_eq!(append_dtbs(&raw, &[&a]).err(), Some(Error::NotGzip("none")));
        assert!(matches!(append_dtbs(&gz, &[&a[..30]]), Err(Error::BadDtb { index: 0, .. })));
        let mut broken = k.clone();
        broken.truncate(k.len() - 5);
        assert!(split_appended_dtbs(&broken).is_err());
    }
}
