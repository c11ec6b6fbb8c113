//! What a stock boot image says about its phone: the mkbootimg arguments that made it (base
//! and offsets, page size, header version, command line) and where its device tree sits,
//! read back from the parsed image alone. Pure: the caller parses the image (and its
//! vendor_boot, for header versions 3 and 4) and decides what to do with the answer.
//!
//! Addresses are turned into a base and offsets the way Android's own unpackers do: the
//! base is the kernel address less mkbootimg's default kernel offset (0x8000), and every
//! other address is an offset from that base; where that would make an offset negative,
//! the base is the lowest address rounded down to 16 MiB instead.

use super::bootimg::BootImage;
use super::compress::Compression;
use super::vendor_boot::VendorBootImage;
use super::{arm64, fdt};

/// mkbootimg's default `--kernel_offset`: what a base is computed back with.
pub const DEFAULT_KERNEL_OFFSET: u32 = 0x0000_8000;

/// MediaTek's 512-byte header in front of a kernel or ramdisk: its magic, then the
/// payload size, then a 32-byte label.
const MTK_MAGIC: [u8; 4] = [0x88, 0x16, 0x88, 0x58];
const MTK_HEADER: usize = 512;

/// Where the device tree of a boot image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtbPlacement {
    /// None found.
    None,
    /// `count` FDTs appended to the kernel (Image.gz-dtb and the like).
    Appended { count: usize },
    /// The header's own dtb section (header version 2; vendor_boot for 3 and 4).
    Header,
    /// A Qualcomm `dt.img` (QCDT) in the header's dt area (header version 0).
    Qcdt,
    /// Spreadtrum's `dt.img` (SPRD magic).
    Sprd,
    /// Samsung Exynos' `dt.img` (DTBH magic).
    Dtbh,
    /// An FDT in the second-stage slot.
    Second,
}

impl DtbPlacement {
    pub fn name(&self) -> &'static str {
        match self {
            DtbPlacement::None => "none",
            DtbPlacement::Appended { .. } => "appended to the kernel",
            DtbPlacement::Header => "in the header's dtb section",
            DtbPlacement::Qcdt => "QCDT dt.img",
            DtbPlacement::Sprd => "SPRD dt.img",
            DtbPlacement::Dtbh => "DTBH dt.img",
            DtbPlacement::Second => "in the second-stage slot",
        }
    }
}

/// The values a stock boot image was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub header_version: u32,
    pub page_size: u32,
    /// `None` where the image holds no addresses (header 3/4 without its vendor_boot).
    pub base: Option<u32>,
    pub kernel_offset: Option<u32>,
    pub ramdisk_offset: Option<u32>,
    /// Header versions 0-2, where the image has a second stage or its address.
    pub second_offset: Option<u32>,
    pub tags_offset: Option<u32>,
    /// Header version 2, and vendor_boot: the dtb's address less the base.
    pub dtb_offset: Option<u64>,
    /// The boot image's command line, then vendor_boot's (header 3/4), space-separated.
    pub cmdline: String,
    pub board: String,
    pub dtb: DtbPlacement,
    /// The kernel's compression (after a MediaTek header, where there is one).
    pub kernel_compression: Compression,
    /// MediaTek header labels of the kernel and the ramdisk, where they carry one.
    pub mtk_labels: Option<(String, String)>,
}

/// Reads back what made `boot` (and, for header versions 3 and 4, its `vendor_boot`).
pub fn analyze(boot: &BootImage, vendor_boot: Option<&VendorBootImage>) -> Analysis {
    let (kernel, kernel_label) = strip_mtk(&boot.kernel);
    let (_, ramdisk_label) = strip_mtk(&boot.ramdisk);
    let mtk_labels = match (kernel_label, ramdisk_label) {
        (None, None) => None,
        (k, r) => Some((k.unwrap_or_default(), r.unwrap_or_default())),
    };
    let mut a = Analysis {
        header_version: boot.header_version,
        page_size: boot.page_size,
        base: None,
        kernel_offset: None,
        ramdisk_offset: None,
        second_offset: None,
        tags_offset: None,
        dtb_offset: None,
        cmdline: boot.cmdline.clone(),
        board: boot.board.clone(),
        dtb: DtbPlacement::None,
        kernel_compression: Compression::detect(kernel),
        mtk_labels,
    };
    let appended = appended_dtbs(kernel);
    if boot.header_version <= 2 {
        let second = !boot.second.is_empty() || boot.second_addr != 0;
        let mut addrs = vec![boot.kernel_addr, boot.ramdisk_addr, boot.tags_addr];
        addrs.extend(second.then_some(boot.second_addr));
        if boot.header_version == 2 {
            addrs.extend(u32::try_from(boot.dtb_addr).ok());
        }
        let base = base_for(&addrs);
        a.base = Some(base);
        a.kernel_offset = Some(boot.kernel_addr.wrapping_sub(base));
        a.ramdisk_offset = Some(boot.ramdisk_addr.wrapping_sub(base));
        // mkbootimg writes no second address for an image without a second stage.
        a.second_offset = second.then(|| boot.second_addr.wrapping_sub(base));
        a.tags_offset = Some(boot.tags_addr.wrapping_sub(base));
        if boot.header_version == 2 {
            a.dtb_offset = Some(boot.dtb_addr.wrapping_sub(base as u64));
        }
        a.dtb = if !boot.dtb.is_empty() {
            DtbPlacement::Header
        } else if boot.qcdt.starts_with(b"QCDT") {
            DtbPlacement::Qcdt
        } else if boot.qcdt.starts_with(b"SPRD") || boot.second.starts_with(b"SPRD") {
            DtbPlacement::Sprd
        } else if boot.qcdt.starts_with(b"DTBH") || boot.second.starts_with(b"DTBH") {
            DtbPlacement::Dtbh
        } else if appended > 0 {
            DtbPlacement::Appended { count: appended }
        } else if fdt::header(&boot.second).is_ok() {
            DtbPlacement::Second
        } else {
            DtbPlacement::None
        };
    } else if let Some(v) = vendor_boot {
        a.page_size = v.page_size;
        let mut addrs = vec![v.kernel_addr, v.ramdisk_addr, v.tags_addr];
        addrs.extend(u32::try_from(v.dtb_addr).ok());
        let base = base_for(&addrs);
        a.base = Some(base);
        a.kernel_offset = Some(v.kernel_addr.wrapping_sub(base));
        a.ramdisk_offset = Some(v.ramdisk_addr.wrapping_sub(base));
        a.tags_offset = Some(v.tags_addr.wrapping_sub(base));
        a.dtb_offset = Some(v.dtb_addr.wrapping_sub(base as u64));
        a.board = v.board.clone();
        if !v.cmdline.is_empty() {
            a.cmdline = [boot.cmdline.as_str(), v.cmdline.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
        }
        a.dtb = if !v.dtb.is_empty() {
            DtbPlacement::Header
        } else if appended > 0 {
            DtbPlacement::Appended { count: appended }
        } else {
            DtbPlacement::None
        };
    } else if appended > 0 {
        a.dtb = DtbPlacement::Appended { count: appended };
    }
    a
}

/// The base the addresses were made from: the kernel's (the first) less mkbootimg's default
/// kernel offset, unless an address lies below that (or the kernel's is below 0x8000);
/// then the lowest address rounded down to 16 MiB, so that no offset is negative.
fn base_for(addrs: &[u32]) -> u32 {
    let low = addrs.iter().copied().min().unwrap_or(0);
    match addrs.first().and_then(|k| k.checked_sub(DEFAULT_KERNEL_OFFSET)) {
        Some(b) if b <= low => b,
        _ => low & !0x00ff_ffff,
    }
}

/// The payload after a MediaTek header and its label, or the data as it is.
fn strip_mtk(data: &[u8]) -> (&[u8], Option<String>) {
    if data.len() < MTK_HEADER || data[..4] != MTK_MAGIC {
        return (data, None);
    }
    let label = &data[8..40];
    let end = label.iter().position(|b| *b == 0).unwrap_or(label.len());
    (&data[MTK_HEADER..], Some(String::from_utf8_lossy(&label[..end]).into_owned()))
}

/// The stock kernel as a kernel: without a MediaTek header and without the device trees
/// appended to it; and the device trees where `analysis` found them (appended, the dtb
/// section of boot.img or vendor_boot.img, the second-stage slot). A `dt.img` (QCDT, SPRD,
/// DTBH) gives none.
pub fn stock_kernel(
    boot: &BootImage,
    vendor_boot: Option<&VendorBootImage>,
    analysis: &Analysis,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (kernel, _) = strip_mtk(&boot.kernel);
    match analysis.dtb {
        DtbPlacement::Appended { .. } => split_appended(kernel),
        DtbPlacement::Header => {
            let dtb = vendor_boot.filter(|_| boot.header_version >= 3).map_or(&boot.dtb, |v| &v.dtb);
            (kernel.to_vec(), vec![dtb.clone()])
        }
        DtbPlacement::Second => (kernel.to_vec(), vec![boot.second.clone()]),
        _ => (kernel.to_vec(), Vec::new()),
    }
}

/// How many FDTs follow the kernel (see [`split_appended`]).
fn appended_dtbs(kernel: &[u8]) -> usize {
    split_appended(kernel).1.len()
}

/// The kernel and the FDTs that follow it: after a gzip stream, or, for a kernel that is
/// not gzip, a run of FDTs that ends exactly where the kernel does. None found: the kernel
/// whole.
fn split_appended(kernel: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    if Compression::detect(kernel) == Compression::Gzip {
        return arm64::split_appended_dtbs(kernel).unwrap_or_else(|_| (kernel.to_vec(), Vec::new()));
    }
    let magic = [0xd0, 0x0d, 0xfe, 0xed];
    let mut from = 0;
    while let Some(at) = kernel[from..].windows(4).position(|w| w == magic).map(|p| p + from) {
        if let Some(dtbs) = fdt_run(&kernel[at..]) {
            return (kernel[..at].to_vec(), dtbs);
        }
        from = at + 1;
    }
    (kernel.to_vec(), Vec::new())
}

/// The FDTs `data` is made of, end to end, if it is exactly that.
fn fdt_run(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let (mut off, mut dtbs) = (0usize, Vec::new());
    while off < data.len() {
        let h = fdt::header(&data[off..]).ok()?;
        let end = off.checked_add(h.totalsize as usize)?;
        dtbs.push(data.get(off..end)?.to_vec());
        off = end;
    }
    (off == data.len() && !dtbs.is_empty()).then_some(dtbs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::bootimg;

    fn tiny_fdt() -> Vec<u8> {
        fdt::tests::tiny(0)
    }

    #[test]
    fn base_and_offsets_come_back_from_the_addresses() {
        let mut img = bootimg::sample(0);
        let base = 0x8000_0000u32;
        img.kernel_addr = base + 0x8000;
        img.ramdisk_addr = base + 0x0100_0000;
        img.second_addr = base + 0x00f0_0000;
        img.tags_addr = base + 0x100;
        let a = analyze(&img, None);
        assert_eq!(a.base, Some(base));
        assert_eq!(
            (a.kernel_offset, a.ramdisk_offset, a.second_offset, a.tags_offset),
            (Some(0x8000), Some(0x0100_0000), Some(0x00f0_0000), Some(0x100))
        );
        // A kernel far above the tags (base 0x40000000, kernel offset 0x200000): the base
        // is the lowest address rounded down, and no offset is negative.
        img.kernel_addr = 0x4020_0000;
        img.ramdisk_addr = 0x4400_0000;
        img.tags_addr = 0x4000_0100;
        let a = analyze(&img, None);
        assert_eq!((a.base, a.kernel_offset, a.tags_offset), (Some(0x4000_0000), Some(0x0020_0000), Some(0x100)));
        // A kernel below 0x8000.
        img.kernel_addr = 0x1000;
        img.tags_addr = 0x100;
        assert_eq!(analyze(&img, None).base, Some(0));
    }

    #[test]
    fn dtb_placements_are_told_apart() {
        let fdt = tiny_fdt();
        let mut img = bootimg::sample(0);
        img.kernel = b"not gzip".to_vec();
        assert_eq!(analyze(&img, None).dtb, DtbPlacement::None);
        // Appended to a raw kernel: twice.
        img.kernel = [b"MZ kernel".as_slice(), &fdt, &fdt].concat();
        assert_eq!(analyze(&img, None).dtb, DtbPlacement::Appended { count: 2 });
        img.kernel = b"plain".to_vec();
        img.second = fdt.clone();
        assert_eq!(analyze(&img, None).dtb, DtbPlacement::Second);
        img.second.clear();
        for (magic, want) in
            [(b"QCDT", DtbPlacement::Qcdt), (b"SPRD", DtbPlacement::Sprd), (b"DTBH", DtbPlacement::Dtbh)]
        {
            img.qcdt = [magic.as_slice(), &[0u8; 60]].concat();
            assert_eq!(analyze(&img, None).dtb, want);
        }
        let mut v2 = bootimg::sample(2);
        v2.dtb = fdt;
        assert_eq!(analyze(&v2, None).dtb, DtbPlacement::Header);
    }

    #[test]
    fn mediatek_labels_are_read_and_skipped() {
        let mut img = bootimg::sample(0);
        let mtk = |label: &str, payload: &[u8]| {
            let mut h = vec![0u8; MTK_HEADER];
            h[..4].copy_from_slice(&MTK_MAGIC);
            h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            h[8..8 + label.len()].copy_from_slice(label.as_bytes());
            [h, payload.to_vec()].concat()
        };
        img.kernel = mtk("KERNEL", &[0x1f, 0x8b, 8, 0]);
        img.ramdisk = mtk("ROOTFS", b"070701");
        let a = analyze(&img, None);
        assert_eq!(a.mtk_labels, Some(("KERNEL".into(), "ROOTFS".into())));
        assert_eq!(a.kernel_compression, Compression::Gzip, "what follows the header");
    }
}
