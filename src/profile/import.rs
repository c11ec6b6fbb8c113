//! Profile keys from what other tools know of a phone: its stock boot image (read by
//! [`crate::format::stockimg`]). What cannot be said in a mobix profile is listed with why,
//! never dropped without a word.

use crate::format::bootimg::unpack_os_version;
use crate::format::compress::Compression;
use crate::format::stockimg::{Analysis, DtbPlacement};
use serde_norway::{Mapping, Value};

/// The profile keys a stock boot image gives (a mapping with `bootimg` and `cmdline`), and
/// what it holds that a profile cannot say: (key or thing, why).
pub fn bootimg_keys(a: &Analysis, os_version: u32) -> (Value, Vec<(String, String)>) {
    let mut unmapped = Vec::new();
    let mut b = Mapping::new();
    let mut put = |k: &str, v: Value| {
        b.insert(Value::from(k), v);
    };
    put("header_version", a.header_version.into());
    put("page_size", a.page_size.into());
    match a.base {
        Some(base) => {
            put("base", u64::from(base).into());
            put("kernel_offset", u64::from(a.kernel_offset.unwrap_or_default()).into());
            put("ramdisk_offset", u64::from(a.ramdisk_offset.unwrap_or_default()).into());
            if let Some(s) = a.second_offset {
                put("second_offset", u64::from(s).into());
            }
            put("tags_offset", u64::from(a.tags_offset.unwrap_or_default()).into());
            if let Some(d) = a.dtb_offset {
                put("dtb_offset", d.into());
            }
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
        put("board", a.board.clone().into());
    }
    if os_version != 0 {
        let ((x, y, z), (year, month)) = unpack_os_version(os_version);
        if (x, y, z) != (0, 0, 0) {
            put("os_version", format!("{x}.{y}.{z}").into());
        }
        if year != 0 {
            put("os_patch_level", format!("{year}-{month:02}").into());
        }
    }
    let compression = match a.kernel_compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Lz4 => "lz4",
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
    };
    put("kernel_compression", compression.into());
    let dtb = |mode: &str| {
        let mut m = Mapping::new();
        m.insert("source".into(), "kernel".into());
        m.insert("mode".into(), mode.into());
        m.insert("files".into(), Value::Sequence(Vec::new()));
        Value::Mapping(m)
    };
    match &a.dtb {
        DtbPlacement::None => {}
        DtbPlacement::Appended { .. } => put("dtb", dtb("append")),
        DtbPlacement::Header => put("dtb", dtb("header")),
        DtbPlacement::Second => put("dtb", dtb("second")),
        other => {
            unmapped.push(("dtb".into(), format!("the device tree is {}, which mobix cannot write yet", other.name())))
        }
    }
    if matches!(a.dtb, DtbPlacement::Appended { .. } | DtbPlacement::Header | DtbPlacement::Second) {
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
    let mut top = Mapping::new();
    top.insert("bootimg".into(), Value::Mapping(b));
    let args: Vec<Value> = a.cmdline.split_whitespace().map(Value::from).collect();
    if !args.is_empty() {
        top.insert("cmdline".into(), Value::Sequence(args));
    }
    (Value::Mapping(top), unmapped)
}

/// `kernel: {prebuilt: {image, dtbs}}` as a profile writes it.
pub fn prebuilt_kernel(image: &str, dtbs: Option<&str>) -> Value {
    let mut p = Mapping::new();
    p.insert("image".into(), image.into());
    if let Some(d) = dtbs {
        p.insert("dtbs".into(), d.into());
    }
    let mut k = Mapping::new();
    k.insert("prebuilt".into(), Value::Mapping(p));
    Value::Mapping(k)
}

/// The fastboot product most bootloaders answer for a codename: its device part
/// (`oneplus-enchilada` gives `enchilada`). A guess, and imports say so.
pub fn guessed_product(codename: &str) -> &str {
    codename.split_once('-').map_or(codename, |(_, d)| d)
}

/// `system` and `state` for a store on `partition` (a 2 GiB ext4 image, the owner's state
/// after it), with the note that says so.
pub fn store_on(partition: &str) -> (Value, Value, (String, String)) {
    let mut system = Mapping::new();
    system.insert("partition".into(), partition.into());
    system.insert("filesystem".into(), "ext4".into());
    system.insert("size".into(), "2GiB".into());
    let mut state = Mapping::new();
    state.insert("partition".into(), partition.into());
    let note =
        ("system.size".to_string(), format!("2GiB of {partition} for the store; the rest keeps the owner's state"));
    (Value::Mapping(system), Value::Mapping(state), note)
}

/// The console a command line names last (`console=ttyMSM0,115200` gives `ttyMSM0`).
pub fn console_of<'a>(args: impl DoubleEndedIterator<Item = &'a str>) -> Option<String> {
    args.rev()
        .find_map(|a| a.strip_prefix("console="))
        .map(|c| c.split(',').next().unwrap_or(c).to_string())
        .filter(|c| !c.is_empty())
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
) -> Result<(Value, Vec<(String, String)>), String> {
    if a.base.is_none() {
        return Err(format!(
            "a header version {} boot image keeps its addresses in vendor_boot.img: give it with --vendor-boot",
            a.header_version
        ));
    }
    let (keys, mut notes) = bootimg_keys(a, os_version);
    let mut bootimg = keys["bootimg"].clone();
    if let Some(dtb) = bootimg.get_mut("dtb").and_then(Value::as_mapping_mut) {
        dtb.insert("files".into(), Value::Sequence(dtb_files.iter().map(|f| Value::from(f.as_str())).collect()));
        notes.retain(|(k, _)| k != "bootimg.dtb.files");
    }
    let mut top = Mapping::new();
    let mut put = |k: &str, v: Value| {
        top.insert(Value::from(k), v);
    };
    put("name", codename.into());
    put("arch", "aarch64".into());
    let product = guessed_product(codename);
    let mut identity = Mapping::new();
    identity.insert("fastboot_products".into(), Value::Sequence(vec![product.into()]));
    put("identity", Value::Mapping(identity));
    notes.push((
        "identity.fastboot_products".into(),
        format!("{product:?} is a guess from the name: check it with `fastboot getvar product`"),
    ));
    let part = |n: &str| {
        let mut m = Mapping::new();
        m.insert("name".into(), n.into());
        Value::Mapping(m)
    };
    let mut parts = vec![part("boot")];
    if a.header_version >= 3 {
        parts.push(part("vendor_boot"));
    }
    parts.push(part("userdata"));
    let mut storage = Mapping::new();
    storage.insert("sector_size".into(), 512u64.into());
    storage.insert("partitions".into(), Value::Sequence(parts));
    put("storage", Value::Mapping(storage));
    notes.push((
        "storage".into(),
        "a boot image says nothing of the storage: 512-byte sectors (eMMC; UFS phones have 4096) and no A/B slots \
         assumed; if `fastboot getvar slot-count` says 2, add `slotted: true` to boot"
            .into(),
    ));
    let (system, state, store_note) = store_on("userdata");
    put("system", system);
    put("state", state);
    notes.push(store_note);
    put("kernel", prebuilt_kernel(image, Some(dtbs)));
    notes.push((
        "kernel".into(),
        "the stock kernel, taken out of the image: it boots mobix only if it has built in what stage-1 needs (the \
         storage driver, ext4, devtmpfs); a mainline kernel is named with `kernel.prebuilt` or `kernel.package`"
            .into(),
    ));
    put("bootimg", bootimg);
    let args: Vec<&str> = a.cmdline.split_whitespace().collect();
    match console_of(args.iter().copied()) {
        Some(c) => put("console", c.into()),
        None => {
            put("console", "tty0".into());
            notes.push(("console".into(), "no console= argument: tty0 (the screen)".into()));
        }
    }
    if let Some(c) = keys.get("cmdline") {
        put("cmdline", c.clone());
    }
    let mut stage1 = Mapping::new();
    stage1.insert("modules".into(), Value::Sequence(Vec::new()));
    put("stage1", Value::Mapping(stage1));
    Ok((Value::Mapping(top), notes))
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
        let b = &v["bootimg"];
        assert_eq!(b["base"].as_u64(), Some(0x1000_0000));
        assert_eq!(b["ramdisk_offset"].as_u64(), Some(0x0100_0000));
        assert_eq!(b["tags_offset"].as_u64(), Some(0x100));
        assert_eq!(b["os_version"].as_str(), Some("12.0.0"));
        assert!(b.get("second_offset").is_none(), "no second stage, no address");
        assert_eq!(v["cmdline"][1].as_str(), Some("androidboot.hardware=qcom"));
        assert_eq!(unmapped.len(), 1);
        assert!(unmapped[0].1.contains("QCDT dt.img"), "{unmapped:?}");
        // Header version 3 without its vendor_boot: no addresses, and it says so.
        let (v, unmapped) = bootimg_keys(&stockimg::analyze(&bootimg::sample(3), None), 0);
        assert!(v["bootimg"].get("base").is_none());
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
