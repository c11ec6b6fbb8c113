//! Profile keys from what other tools know of a phone: its stock boot image (read by
//! [`crate::format::stockimg`]). What cannot be said in a mobix profile is listed with why,
//! never dropped without a word.

use super::imported::{
    BootImgKeys, DeviceKeys, IdentityKeys, KernelKeys, PartitionKeys, Stage1Keys, StorageKeys, SystemKeys,
};
use super::types::{Arch, Dtb, DtbMode, DtbSource, Filesystem, PartitionName, PrebuiltKernel, Size, State};
use crate::format::bootimg::unpack_os_version;
use crate::format::stockimg::{Analysis, DtbPlacement};
use serde::Serialize;

/// What a stock boot image says in profile keys: its header and its command line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StockKeys {
    pub bootimg: BootImgKeys,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
}

/// The profile keys a stock boot image gives, and what it holds that a profile cannot say:
/// (key or thing, why).
pub fn bootimg_keys(a: &Analysis, os_version: u32) -> (StockKeys, Vec<(String, String)>) {
    let mut unmapped = Vec::new();
    let mut b = BootImgKeys::new(a.header_version, a.page_size);
    match a.base {
        Some(base) => {
            b.base = Some(u64::from(base));
            b.kernel_offset = Some(u64::from(a.kernel_offset.unwrap_or_default()));
            b.ramdisk_offset = Some(u64::from(a.ramdisk_offset.unwrap_or_default()));
            b.second_offset = a.second_offset.map(u64::from);
            b.tags_offset = Some(u64::from(a.tags_offset.unwrap_or_default()));
            b.dtb_offset = a.dtb_offset;
        }
        None => unmapped.push((
            "base and offsets".into(),
            format!(
                "a header version {} boot image keeps them in vendor_boot.img: give it with --vendor-boot",
                a.header_version
            ),
        )),
    }
    if !a.board.is_empty() {
        b.board = Some(a.board.clone());
    }
    if os_version != 0 {
        let ((x, y, z), (year, month)) = unpack_os_version(os_version);
        if (x, y, z) != (0, 0, 0) {
            b.os_version = Some(format!("{x}.{y}.{z}"));
        }
        if year != 0 {
            b.os_patch_level = Some(format!("{year}-{month:02}"));
        }
    }
    b.kernel_compression = Some(a.kernel_compression);
    let dtb = |mode| Some(Dtb { source: DtbSource::Kernel, mode, files: Vec::new() });
    match &a.dtb {
        DtbPlacement::None => {}
        DtbPlacement::Appended { .. } => b.dtb = dtb(DtbMode::Append),
        DtbPlacement::Header => b.dtb = dtb(DtbMode::Header),
        DtbPlacement::Second => b.dtb = dtb(DtbMode::Second),
        other => {
            unmapped.push(("dtb".into(), format!("the device tree is {}, which mobix cannot write yet", other.name())))
        }
    }
    if b.dtb.is_some() {
        unmapped.push((
            "bootimg.dtb.files".into(),
            "a boot image does not name its device trees: list the kernel's dtb files for this phone".into(),
        ));
    }
    if let Some((k, r)) = &a.mtk_labels {
        unmapped.push((
            "MediaTek headers".into(),
            format!(
                "the kernel and ramdisk carry MediaTek headers (labels {k:?}, {r:?}), which mobix does not write yet"
            ),
        ));
    }
    let cmdline = a.cmdline.split_whitespace().map(str::to_string).collect();
    (StockKeys { bootimg: b, cmdline }, unmapped)
}

/// `kernel: {prebuilt: {image, dtbs}}` as a profile writes it.
pub fn prebuilt_kernel(image: &str, dtbs: Option<&str>) -> KernelKeys {
    KernelKeys::Prebuilt(PrebuiltKernel { image: image.to_string(), dtbs: dtbs.map(str::to_string) })
}

/// The fastboot product most bootloaders answer for a codename: its device part
/// (`oneplus-enchilada` gives `enchilada`). A guess, and imports say so.
pub fn guessed_product(codename: &str) -> &str {
    codename.split_once('-').map_or(codename, |(_, d)| d)
}

/// `system` and `state` for a store on `partition` (a 2 GiB ext4 image, the owner's state
/// after it), with the note that says so.
pub fn store_on(partition: &PartitionName) -> (SystemKeys, State, (String, String)) {
    let system = SystemKeys { partition: partition.clone(), filesystem: Filesystem::Ext4, size: Size(2 << 30) };
    let state = State { partition: partition.clone() };
    let note =
        ("system.size".to_string(), format!("2GiB of {partition} for the store; the rest keeps the owner's state"));
    (system, state, note)
}

/// The console a command line names last (`console=ttyMSM0,115200` gives `ttyMSM0`).
pub fn console_of<'a>(args: impl DoubleEndedIterator<Item = &'a str>) -> Option<String> {
    args.rev()
        .find_map(|a| a.strip_prefix("console="))
        .map(|c| c.split(',').next().unwrap_or(c).to_string())
        .filter(|c| !c.is_empty())
}

/// A partition name the import itself chose (`boot`, `userdata`).
pub(super) fn known_partition(name: &str) -> PartitionName {
    PartitionName::try_from(name).expect("a partition name mobix spells itself")
}

/// A whole profile from a stock boot image: its `bootimg` keys and command line, booting
/// the stock kernel (`kernel.prebuilt` with `image`, the device trees in `dtbs` as
/// `dtb_files`), with what no boot image says (A/B, the storage, the system partition)
/// assumed and noted. Refused where the image holds no addresses (header versions 3 and
/// 4 without their vendor_boot.img).
pub fn bootimg_profile(
    a: &Analysis,
    os_version: u32,
    codename: &str,
    image: &str,
    dtbs: &str,
    dtb_files: &[String],
) -> Result<(DeviceKeys, Vec<(String, String)>), String> {
    if a.base.is_none() {
        return Err(format!(
            "a header version {} boot image keeps its addresses in vendor_boot.img: give it with --vendor-boot",
            a.header_version
        ));
    }
    let (StockKeys { mut bootimg, cmdline }, mut notes) = bootimg_keys(a, os_version);
    if let Some(dtb) = &mut bootimg.dtb {
        dtb.files = dtb_files.to_vec();
        notes.retain(|(k, _)| k != "bootimg.dtb.files");
    }
    let product = guessed_product(codename);
    notes.push((
        "identity.fastboot_products".into(),
        format!("{product:?} is a guess from the name: check it with `fastboot getvar product`"),
    ));
    let part = |n: &str| PartitionKeys { name: known_partition(n), slotted: false };
    let mut partitions = vec![part("boot")];
    if a.header_version >= 3 {
        partitions.push(part("vendor_boot"));
    }
    partitions.push(part("userdata"));
    notes.push((
        "storage".into(),
        "a boot image says nothing of the storage: 512-byte sectors (eMMC; UFS phones have 4096) and no A/B slots \
         assumed; if `fastboot getvar slot-count` says 2, add `slotted: true` to boot"
            .into(),
    ));
    let (system, state, store_note) = store_on(&known_partition("userdata"));
    notes.push(store_note);
    notes.push((
        "kernel".into(),
        "the stock kernel, taken out of the image: it boots mobix only if it has built in what stage-1 needs (the \
         storage driver, ext4, devtmpfs); a mainline kernel is named with `kernel.prebuilt` or `kernel.package`"
            .into(),
    ));
    let console = console_of(cmdline.iter().map(String::as_str)).unwrap_or_else(|| {
        notes.push(("console".into(), "no console= argument: tty0 (the screen)".into()));
        "tty0".into()
    });
    let keys = DeviceKeys {
        family: None,
        name: codename.to_string(),
        arch: Arch::Aarch64,
        identity: IdentityKeys { fastboot_products: vec![product.to_string()] },
        storage: StorageKeys { sector_size: 512, partitions },
        system,
        state: Some(state),
        vbmeta: None,
        kernel: Some(prebuilt_kernel(image, Some(dtbs))),
        bootimg,
        variants: Default::default(),
        console,
        cmdline,
        stage1: Stage1Keys { modules: Vec::new(), compression: None },
        usb_network: None,
    };
    Ok((keys, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{bootimg, stockimg};

    #[test]
    fn a_stock_image_becomes_bootimg_keys_and_says_what_it_cannot_map() {
        let mut img = bootimg::sample(0);
        img.kernel_addr = 0x1000_8000;
        img.ramdisk_addr = 0x1100_0000;
        img.tags_addr = 0x1000_0100;
        img.qcdt = b"QCDT and the rest".to_vec();
        img.cmdline = "console=ttyMSM0,115200 androidboot.hardware=qcom".into();
        let (v, unmapped) = bootimg_keys(&stockimg::analyze(&img, None), img.os_version);
        let b = &v.bootimg;
        assert_eq!(b.base, Some(0x1000_0000));
        assert_eq!(b.ramdisk_offset, Some(0x0100_0000));
        assert_eq!(b.tags_offset, Some(0x100));
        assert_eq!(b.os_version.as_deref(), Some("12.0.0"));
        assert_eq!(b.second_offset, None, "no second stage, no address");
        let text = serde_norway::to_string(&v).unwrap();
        assert!(!text.contains("second_offset") && !text.contains("null"), "unset keys are left out:\n{text}");
        assert_eq!(v.cmdline[1], "androidboot.hardware=qcom");
        assert_eq!(unmapped.len(), 1);
        assert!(unmapped[0].1.contains("QCDT dt.img"), "{unmapped:?}");
        // Header version 3 without its vendor_boot: no addresses, and it says so.
        let (v, unmapped) = bootimg_keys(&stockimg::analyze(&bootimg::sample(3), None), 0);
        assert_eq!(v.bootimg.base, None);
        assert!(unmapped[0].1.contains("--vendor-boot"), "{unmapped:?}");
    }
}

/// The heading `mobix device import` writes above its notes at the end of a profile.
pub const NOTES_HEADING: &str = "# Not mapped, or assumed:";

/// How many notes (guesses, values not mapped) an imported profile's text still carries at
/// its end; None for a profile not written by an import (or whose notes were removed).
pub fn imported_notes(text: &str) -> Option<usize> {
    if !text.starts_with("# Written by `mobix device import") {
        return None;
    }
    let notes = text.lines().skip_while(|l| l.trim_end() != NOTES_HEADING).skip(1);
    let n = notes.take_while(|l| l.starts_with("# ")).filter(|l| l.starts_with("# - ")).count();
    (n > 0).then_some(n)
}

#[cfg(test)]
mod notes_tests {
    #[test]
    fn an_imported_profiles_notes_are_counted_until_the_owner_removes_them() {
        let text = "# Written by `mobix device import deviceinfo` from x.\nname: X\n\n# Not mapped, or assumed:\n\
                    # - identity.fastboot_products: a guess\n# - kernel: a stand-in\n";
        assert_eq!(super::imported_notes(text), Some(2));
        assert_eq!(super::imported_notes(&text.replace("# Not mapped, or assumed:", "")), None);
        assert_eq!(super::imported_notes("name: X\n# Not mapped, or assumed:\n# - a: b\n"), None);
    }
}
