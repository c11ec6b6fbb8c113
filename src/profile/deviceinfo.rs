//! postmarketOS `deviceinfo` files: what pmOS knows of a phone, as shell assignments
//! `deviceinfo_KEY="value"` (comments and blank lines between). [`parse`] reads them with
//! their line numbers; [`profile_keys`] maps them to mobix profile keys the way pmOS's
//! boot-deploy hands them to mkbootimg, listing every key it read but cannot map, with why.
//!
//! Unset and `"false"` mean the same (newer pmaports dropped explicit false values).

use super::import::known_partition;
use super::imported::{
    BootImgKeys, DeviceKeys, IdentityKeys, KernelKeys, PartitionKeys, Stage1Keys, StorageKeys, VariantKeys,
};
use super::types::{Arch, Compression, Dtb, DtbMode, DtbSource, PartitionName, UsbNetwork, Vbmeta};
use crate::util::Fail;
use anyhow::Result;
use std::collections::BTreeMap;

/// The assignments of a deviceinfo file: key (without `deviceinfo_`) to value and line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    pub origin: String,
    pub keys: BTreeMap<String, (String, usize)>,
}

/// mkbootimg's defaults, which a deviceinfo without the key leaves in force.
pub const MKBOOTIMG_KERNEL_OFFSET: u64 = 0x0000_8000;
pub const MKBOOTIMG_RAMDISK_OFFSET: u64 = 0x0100_0000;
pub const MKBOOTIMG_SECOND_OFFSET: u64 = 0x00f0_0000;
pub const MKBOOTIMG_TAGS_OFFSET: u64 = 0x0000_0100;
pub const MKBOOTIMG_PAGE_SIZE: u32 = 2048;
pub const MKBOOTIMG_BASE: u64 = 0x1000_0000;
pub const MKBOOTIMG_DTB_OFFSET: u64 = 0x01f0_0000;
/// boot-deploy's base when `deviceinfo_flash_offset_base` is unset.
pub const BOOT_DEPLOY_BASE: u64 = 0x1000_0000;

/// Reads `text` (named `origin` in errors). Refused, naming the line: anything but a
/// comment, a blank line or a `deviceinfo_` assignment; an unclosed quote; a file with no
/// assignment at all.
pub fn parse(text: &str, origin: &str) -> Result<DeviceInfo> {
    let mut keys = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| -> anyhow::Error {
            Fail::new(format!("{origin}:{n}: {why}: {line:?}"))
                .hint("a deviceinfo holds `deviceinfo_KEY=\"value\"` lines (postmarketOS's device packages)")
                .into()
        };
        let Some((name, rest)) = line.split_once('=') else {
            return Err(bad("not an assignment"));
        };
        let Some(key) = name.strip_prefix("deviceinfo_") else {
            return Err(bad("not a deviceinfo_ key"));
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad("not a variable name"));
        }
        let value = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => {
                // A quoted value may go on over the next lines.
                let mut body = rest[1..].to_string();
                loop {
                    if let Some(end) = body.find(q) {
                        let after = body[end + 1..].trim();
                        if !after.is_empty() && !after.starts_with('#') {
                            return Err(bad("text after the closing quote"));
                        }
                        body.truncate(end);
                        break body;
                    }
                    match lines.next() {
                        Some((_, more)) => {
                            body.push('\n');
                            body.push_str(more);
                        }
                        None => return Err(bad("the quote is never closed")),
                    }
                }
            }
            _ => {
                let v = rest.split('#').next().unwrap_or("").trim();
                if v.contains(char::is_whitespace) {
                    return Err(bad("a value with spaces needs quotes"));
                }
                v.to_string()
            }
        };
        keys.insert(key.to_string(), (value, n));
    }
    if keys.is_empty() {
        return Err(Fail::new(format!("{origin} is not a deviceinfo file: it assigns no deviceinfo_ key"))
            .hint("give the `deviceinfo` file of a pmaports device package (device/*/device-*/deviceinfo)")
            .into());
    }
    Ok(DeviceInfo { origin: origin.to_string(), keys })
}

impl DeviceInfo {
    /// The value of `key`, if set and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(|(v, _)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn line(&self, key: &str) -> usize {
        self.keys.get(key).map_or(0, |k| k.1)
    }

    pub fn required(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| {
            Fail::new(format!("{}: deviceinfo_{key} is missing", self.origin))
                .hint("every pmaports deviceinfo sets name, manufacturer, codename and arch")
                .into()
        })
    }

    /// `"true"`; unset and `"false"` are false; anything else is refused.
    pub fn flag(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(Fail::new(format!(
                "{}:{}: deviceinfo_{key}: {v:?} is neither \"true\" nor \"false\"",
                self.origin,
                self.line(key)
            ))
            .into()),
        }
    }

    /// A number that fits 32 bits (a header version, a page or sector size), if set.
    pub fn small_number(&self, key: &str) -> Result<Option<u32>> {
        self.number(key)?.map(|n| self.fits(key, n, "more than 32 bits hold")).transpose()
    }

    /// A 16-bit USB id, if set.
    fn usb_id(&self, key: &str) -> Result<Option<u16>> {
        self.number(key)?.map(|n| self.fits(key, n, "not a 16-bit USB id")).transpose()
    }

    fn fits<T: TryFrom<u64>>(&self, key: &str, n: u64, why: &str) -> Result<T> {
        T::try_from(n).map_err(|_| {
            Fail::new(format!("{}:{}: deviceinfo_{key}: {n:#x} is {why}", self.origin, self.line(key))).into()
        })
    }

    /// `value` of `key` as a partition name.
    fn partition(&self, key: &str, value: &str) -> Result<PartitionName> {
        PartitionName::try_from(value).map_err(|why| {
            Fail::new(format!("{}:{}: deviceinfo_{key}: {why}", self.origin, self.line(key)))
                .hint("mobix profiles name GPT partitions in lowercase letters, digits and _")
                .into()
        })
    }

    /// A number (decimal or `0x` hex), if set.
    pub fn number(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        };
        parsed.map(Some).ok_or_else(|| {
            Fail::new(format!("{}:{}: deviceinfo_{key}: {v:?} is not a number", self.origin, self.line(key))).into()
        })
    }
}

/// What [`profile_keys`] made of a deviceinfo.
#[derive(Debug, Clone)]
pub struct Imported {
    pub codename: String,
    /// The profile keys, as `device.yaml` holds them.
    pub keys: DeviceKeys,
    /// (key or thing, why it is not in `keys` or what was assumed).
    pub notes: Vec<(String, String)>,
}

/// A family of the tree, as an import matches it: its name (`qcom-sdm845`) and its stage-1
/// modules.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyHint {
    pub name: String,
    pub modules: Vec<String>,
}

/// The family a phone's device tree names: `qcom/sdm845-oneplus-fajita` is `qcom-sdm845`.
pub fn family_of_dtb(dtb: &str) -> Option<String> {
    let (vendor, file) = dtb.rsplit_once('/')?;
    let soc = file.split('-').next().filter(|s| !s.is_empty())?;
    Some(format!("{}-{soc}", vendor.rsplit('/').next().unwrap_or(vendor)))
}

/// What an import infers beyond pmOS's keys. Where the tree has the family of the phone's SoC
/// (named by its device tree), the profile joins it: its stage-1 modules come first in the
/// list (pmOS's `modules_initfs` are a phone's extras), and its kernel replaces Debian's
/// generic stand-in. Else, when stage-1 would load no module and the kernel is not a
/// prebuilt one (Debian's have their storage drivers as modules), a note says it would find
/// no storage.
pub fn infer(imp: &mut Imported, di: &DeviceInfo, families: &[FamilyHint], kernel: &KernelChoice) {
    let keys = &mut imp.keys;
    let dtb = di.get("dtb").and_then(|d| d.split_whitespace().next());
    let family = dtb.and_then(family_of_dtb).and_then(|f| families.iter().find(|h| h.name == f));
    if let (Some(f), KernelChoice::Prebuilt { .. }) = (family, kernel) {
        // A family names its kernel (source, package); a prebuilt one is the only kernel.
        imp.notes.insert(
            0,
            (
                "family".into(),
                format!(
                    "the tree's family {} fits this phone's SoC (device tree {}), but names a kernel of its own, \
                     and a prebuilt kernel must be the only one: not joined; its stage-1 modules are worth a look",
                    f.name,
                    dtb.unwrap_or("")
                ),
            ),
        );
        return;
    }
    if let Some(f) = family {
        let mut joined = f.modules.clone();
        for m in keys.stage1.modules.drain(..) {
            if !joined.contains(&m) {
                joined.push(m);
            }
        }
        keys.stage1.modules = joined;
        let mut notes = vec![format!(
            "{} (the tree's family of {} phones, from the device tree {}): its values apply where this profile sets \
             none; its stage-1 modules lead the list",
            f.name,
            f.name,
            dtb.unwrap_or("")
        )];
        if matches!(kernel, KernelChoice::Package(_)) {
            keys.kernel = None;
            imp.notes.retain(|(k, _)| k != "kernel");
            notes.push("the family's kernel replaces Debian's generic stand-in".into());
        }
        keys.family = Some(f.name.clone());
        imp.notes.insert(0, ("family".into(), notes.join("; ")));
        return;
    }
    if keys.stage1.modules.is_empty() && !matches!(kernel, KernelChoice::Prebuilt { .. }) {
        let why = match dtb.and_then(family_of_dtb) {
            Some(f) => format!("no family {f} in devices/families/ to take them from; "),
            None => String::new(),
        };
        imp.notes.push((
            "stage1.modules".into(),
            format!(
                "empty: stage-1 would load no storage driver, and a Debian kernel has them as modules (UFS: \
                 ufs-qcom and its phy; eMMC: sdhci-msm, or the SoC's own), so it would not find the system \
                 partition; {why}list the phone's storage, bus and filesystem modules here"
            ),
        ));
    }
}

/// Which kernel an imported profile names.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelChoice {
    /// `kernel.prebuilt` with these paths (as the profile writes them).
    Prebuilt { image: String, dtbs: Option<String> },
    /// A `debs` entry of `mobix.lock`: Debian's generic arm64 kernel as a stand-in.
    Package(String),
    /// None: the keys are for reading, and say that a kernel is missing.
    Unknown,
}

/// The profile keys of `di`; `cmdline` is the device's `kernel-cmdline.conf`, if given
/// (deviceinfo's own cmdline keys are obsolete and read only without it).
pub fn profile_keys(di: &DeviceInfo, cmdline: Option<&str>, kernel: &KernelChoice) -> Result<Imported> {
    let mut notes: Vec<(String, String)> = Vec::new();
    let mut note = |k: &str, why: String| notes.push((k.to_string(), why));
    let name = di.required("name")?;
    let manufacturer = di.required("manufacturer")?;
    let codename = di.required("codename")?.to_string();
    let arch = di.required("arch")?;
    if arch != "aarch64" {
        return Err(Fail::new(format!(
            "{}:{}: deviceinfo_arch is {arch:?}; mobix builds aarch64 systems only",
            di.origin,
            di.line("arch")
        ))
        .into());
    }
    let full_name = if name.starts_with(manufacturer) { name.to_string() } else { format!("{manufacturer} {name}") };

    // Identity: pmOS does not record what fastboot calls the phone; the codename's device
    // part is what most bootloaders answer.
    let product = super::import::guessed_product(&codename);
    let identity = IdentityKeys { fastboot_products: vec![product.to_string()] };
    note(
        "identity.fastboot_products",
        format!("{product:?} is a guess from the codename: check it with `fastboot getvar product`"),
    );

    // Storage and flashing.
    let method = di.get("flash_method").unwrap_or("none");
    if method != "fastboot" {
        note("flash_method", format!("pmOS flashes it with {method}; mobix flashes with fastboot only"));
    }
    let kernel_part = di.get("flash_fastboot_partition_kernel").unwrap_or("boot");
    let rootfs_part = di.get("flash_fastboot_partition_rootfs").unwrap_or("userdata");
    let sector = di.small_number("rootfs_image_sector_size")?.unwrap_or(512);
    // A partition named with its slot (`boot_a`) says the phone has A/B slots.
    let unslotted = |p: &str| p.strip_suffix("_a").or_else(|| p.strip_suffix("_b")).unwrap_or(p).to_string();
    let ab = unslotted(kernel_part) != kernel_part;
    if unslotted(kernel_part) != "boot" {
        note(
            "flash_fastboot_partition_kernel",
            format!("pmOS flashes the kernel to {kernel_part}; mobix writes boot.img to boot"),
        );
    }
    let part = |name: PartitionName, slotted: bool| PartitionKeys { name, slotted };
    let mut parts = vec![part(known_partition("boot"), ab)];
    if di.number("header_version")?.unwrap_or(0) >= 3 {
        parts.push(part(known_partition("vendor_boot"), ab));
    }
    for key in ["flash_fastboot_partition_dtbo", "flash_fastboot_partition_vbmeta"] {
        if let Some(p) = di.get(key) {
            let base = unslotted(p);
            let slotted = ab || base != p;
            parts.push(part(di.partition(key, &base)?, slotted));
        }
    }
    let rootfs_part = if unslotted(rootfs_part) != rootfs_part {
        note(
            "flash_fastboot_partition_rootfs",
            format!("{rootfs_part} is one slot's; mobix keeps its generations on one unslotted partition: userdata"),
        );
        known_partition("userdata")
    } else {
        di.partition("flash_fastboot_partition_rootfs", rootfs_part)?
    };
    if !parts.iter().any(|p| p.name == rootfs_part) {
        parts.push(part(rootfs_part.clone(), false));
    }
    let storage = StorageKeys { sector_size: sector, partitions: parts };
    if ab {
        note("storage.partitions", format!("A/B: pmOS flashes the kernel to {kernel_part}"));
    } else {
        note(
            "storage.partitions",
            "pmOS does not say whether the phone has A/B slots: if `fastboot getvar slot-count` says 2, add \
             `slotted: true` to the boot partition (and to vendor_boot, dtbo and vbmeta)"
                .into(),
        );
    }
    let (system, state, (k, why)) = super::import::store_on(&rootfs_part);
    note(&k, why);
    let vbmeta = match di.get("flash_fastboot_partition_vbmeta") {
        Some(v) => Some(Vbmeta { partition: di.partition("flash_fastboot_partition_vbmeta", v)?, flags: 3 }),
        None => None,
    };
    if let Some(v) = di.get("flash_fastboot_partition_dtbo") {
        note("flash_fastboot_partition_dtbo", format!("pmOS flashes a dtbo from its kernel to {v}; mobix writes none"));
    }

    // The kernel: pmOS builds its own for each phone.
    let kernel_keys = match kernel {
        KernelChoice::Prebuilt { image, dtbs } => Some(super::import::prebuilt_kernel(image, dtbs.as_deref())),
        KernelChoice::Package(name) => {
            note(
                "kernel",
                format!(
                    "pmOS builds this phone's kernel itself; Debian's generic arm64 kernel ({name}) stands in, \
                     which boots it only if it carries its device tree and drivers (the build names a device tree \
                     it lacks): `--kernel-image FILE --dtbs DIR` name your own"
                ),
            );
            Some(KernelKeys::Package(name.clone()))
        }
        KernelChoice::Unknown => {
            note(
                "kernel",
                "pmOS builds this phone's kernel itself: name your own (`kernel: {prebuilt: {image: FILE, dtbs: \
                 DIR}}`), a kernels/ spec (`kernel: {source: …}`) or a Debian kernel package that carries its \
                 device tree (`kernel: {package: …}`)"
                    .into(),
            );
            None
        }
    };

    // The boot image, as boot-deploy passes it to mkbootimg.
    if !di.flag("generate_bootimg")? {
        note(
            "generate_bootimg",
            "pmOS boots it without an Android boot image (extlinux, depthcharge or U-Boot); mobix writes boot.img"
                .into(),
        );
    }
    let header_version = di.small_number("header_version")?.unwrap_or(0);
    let page_size = match di.small_number("flash_pagesize")? {
        Some(p) => p,
        None => {
            note("flash_pagesize", format!("unset: mkbootimg's default {MKBOOTIMG_PAGE_SIZE}"));
            MKBOOTIMG_PAGE_SIZE
        }
    };
    let mut b = BootImgKeys::new(header_version, page_size);
    if header_version >= 3 {
        // boot-deploy passes mkbootimg no addresses for these: mkbootimg's defaults.
        b.base = Some(MKBOOTIMG_BASE);
        b.kernel_offset = Some(MKBOOTIMG_KERNEL_OFFSET);
        b.ramdisk_offset = Some(MKBOOTIMG_RAMDISK_OFFSET);
        b.tags_offset = Some(MKBOOTIMG_TAGS_OFFSET);
        b.dtb_offset = Some(MKBOOTIMG_DTB_OFFSET);
        note(
            "header_version",
            format!(
                "version {header_version}: boot.img holds the kernel, vendor_boot.img the ramdisk, command line, \
                 device tree and mkbootimg's default addresses (boot-deploy passes none)"
            ),
        );
    } else {
        let base = di.number("flash_offset_base")?.unwrap_or(BOOT_DEPLOY_BASE);
        b.base = Some(base);
        let (mut unset, mut highest) = (Vec::new(), 0);
        for (key, default) in [
            ("flash_offset_kernel", MKBOOTIMG_KERNEL_OFFSET),
            ("flash_offset_ramdisk", MKBOOTIMG_RAMDISK_OFFSET),
            ("flash_offset_second", MKBOOTIMG_SECOND_OFFSET),
            ("flash_offset_tags", MKBOOTIMG_TAGS_OFFSET),
        ] {
            let v = di.number(key)?.unwrap_or_else(|| {
                unset.push(key);
                default
            });
            // (mkbootimg adds the second offset only to a second stage it is given.)
            if key != "flash_offset_second" || di.flag("bootimg_dtb_second")? {
                highest = highest.max(v);
            }
            let field = match key {
                "flash_offset_kernel" => &mut b.kernel_offset,
                "flash_offset_ramdisk" => &mut b.ramdisk_offset,
                "flash_offset_second" => &mut b.second_offset,
                _ => &mut b.tags_offset,
            };
            *field = Some(v);
        }
        if !unset.is_empty() {
            note("offsets", format!("unset, so mkbootimg's defaults: {}", unset.join(", ")));
        }
        if base + highest > u64::from(u32::MAX) {
            note(
                "flash_offset_base",
                "base plus an offset passes 32 bits: the header gets the sum modulo 2^32, as mkbootimg-osm0sis writes it"
                    .into(),
            );
        }
    }
    let dtbs = |v: &str| -> Vec<String> { v.split_whitespace().map(|d| format!("{d}.dtb")).collect() };
    let dtb_files = di.get("dtb").map(dtbs).unwrap_or_default();
    // `dtb_<variant>`: the device tree of a kernel variant (a panel, a board revision).
    let mut variants = BTreeMap::new();
    for (k, (v, line)) in &di.keys {
        let Some(variant) = k.strip_prefix("dtb_") else { continue };
        if v.is_empty() {
            continue;
        }
        if matches!(v.as_str(), "true" | "false") {
            note(&format!("deviceinfo_{k}"), format!("line {line}: a true/false value, not a device tree (ignored)"));
            continue;
        }
        variants.insert(variant.replace('_', "-"), VariantKeys::dtbs(dtbs(v)));
    }
    let has_dtb = !dtb_files.is_empty() || !variants.is_empty();
    // As boot-deploy hands them to mkbootimg: the kernel is Image.gz-dtb with append_dtb,
    // and besides that the dtb goes to `--second` (dtb_second), or `--dtb` (header
    // version 2 with its offset; 3 and 4 into vendor_boot).
    let append = di.flag("append_dtb")?;
    if append {
        b.kernel_compression = Some(Compression::Gzip);
    }
    let also = if di.flag("bootimg_qcdt")? {
        note("bootimg_qcdt", "the device trees go in a QCDT dt.img, which mobix build does not write yet".into());
        None
    } else if di.flag("bootimg_dtb_second")? {
        Some(DtbMode::Second)
    } else if header_version == 2 {
        let off = di.number("flash_offset_dtb")?.ok_or_else(|| {
            Fail::new(format!("{}: header version 2 needs deviceinfo_flash_offset_dtb", di.origin))
                .hint("boot-deploy refuses such a deviceinfo too")
        })?;
        b.dtb_offset = Some(off);
        Some(DtbMode::Header)
    } else if header_version >= 3 {
        Some(DtbMode::Header)
    } else {
        None
    };
    let mode = match (append, also) {
        (true, Some(DtbMode::Second)) => Some(DtbMode::AppendSecond),
        (true, Some(_)) => Some(DtbMode::AppendHeader),
        (true, None) => Some(DtbMode::Append),
        (false, place) => {
            if place.is_none() && has_dtb && !di.flag("bootimg_qcdt")? {
                note("dtb", "neither appended nor in the header: pmOS's bootloader finds it elsewhere".into());
            }
            place
        }
    };
    if let (Some(mode), true) = (mode, has_dtb) {
        b.dtb = Some(Dtb { source: DtbSource::Kernel, mode, files: dtb_files });
    }
    for key in ["bootimg_append_seandroidenforce", "bootimg_prepend_dhtb", "bootimg_pxa", "bootimg_blobpack"] {
        if di.get(key).is_some_and(|v| v != "false") {
            note(key, "a vendor quirk of the boot image that mobix does not write yet".into());
        }
    }
    if let Some(v) = di.get("bootimg_override_payload") {
        note(
            "bootimg_override_payload",
            format!("pmOS puts {v:?} in boot.img instead of the kernel (a bootloader that loads it); mobix puts the kernel there"),
        );
    }
    if let Some(v) = di.get("bootimg_custom_args") {
        note("bootimg_custom_args", format!("extra mkbootimg arguments {v:?} are not mapped"));
    }

    // The command line and the console.
    if cmdline.is_none() {
        note(
            "cmdline",
            "read from deviceinfo's obsolete kernel_cmdline keys: pmOS keeps the phone's command line in \
             kernel-cmdline.conf beside deviceinfo; give it with `--kernel-cmdline FILE`"
                .into(),
        );
    }
    let text = match cmdline {
        Some(c) => c.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join(" "),
        None => {
            let mut t = di.get("kernel_cmdline").unwrap_or("").to_string();
            if let Some(a) = di.get("kernel_cmdline_append") {
                t = format!("{t} {a}");
            }
            t
        }
    };
    // `-ARG` in kernel-cmdline.conf takes one of pmOS's default arguments away; mobix adds
    // none of them.
    let (removed, args): (Vec<&str>, Vec<&str>) = text.split_whitespace().partition(|a| a.starts_with('-'));
    if !removed.is_empty() {
        note("cmdline", format!("{} remove pmOS default arguments, which mobix does not add", removed.join(" ")));
    }
    let console = super::import::console_of(args.iter().copied())
        .or_else(|| di.get("getty").map(|g| g.split(';').next().unwrap_or(g).to_string()))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| {
            note(
                "console",
                "no console= argument and no getty: tty0 (the screen); name the serial console if it has one".into(),
            );
            "tty0".into()
        });

    // Stage-1.
    let mut modules: Vec<String> =
        di.get("modules_initfs").unwrap_or("").split_whitespace().map(str::to_string).collect();
    if matches!(kernel, KernelChoice::Prebuilt { .. }) && !modules.is_empty() {
        note(
            "deviceinfo_modules_initfs",
            format!("a prebuilt kernel brings no modules: {} must be built into it", modules.join(" ")),
        );
        modules.clear();
    }
    let compression = match di.get("initfs_compression") {
        Some(c) => {
            let algo = c.split(':').next().unwrap_or(c);
            match algo {
                "gzip" => Some(Compression::Gzip),
                "lz4" => Some(Compression::Lz4),
                "xz" => Some(Compression::Xz),
                "zstd" => Some(Compression::Zstd),
                "none" => Some(Compression::None),
                _ => {
                    note("initfs_compression", format!("{c:?} is not one mobix writes; gzip it is"));
                    None
                }
            }
        }
        None => None,
    };

    // USB networking: pmOS's gadget ids.
    let usb_network = match (di.usb_id("usb_idVendor")?, di.usb_id("usb_idProduct")?) {
        (Some(vendor_id), Some(product_id)) => Some(UsbNetwork { vendor_id, product_id }),
        _ => None,
    };

    // What is read for people only, or has no place in a profile.
    // (mobix flashes the system image sparse whatever `flash_sparse` says.)
    const FOR_PEOPLE: &[&str] =
        &["format_version", "year", "chassis", "external_storage", "keyboard", "drm", "flash_sparse"];
    let used = |k: &str| {
        FOR_PEOPLE.contains(&k)
            || k.starts_with("dtb_")
            || matches!(
                k,
                "name"
                    | "manufacturer"
                    | "codename"
                    | "arch"
                    | "flash_method"
                    | "flash_fastboot_partition_kernel"
                    | "flash_fastboot_partition_rootfs"
                    | "flash_fastboot_partition_vbmeta"
                    | "flash_fastboot_partition_dtbo"
                    | "rootfs_image_sector_size"
                    | "generate_bootimg"
                    | "header_version"
                    | "flash_pagesize"
                    | "flash_offset_base"
                    | "flash_offset_kernel"
                    | "flash_offset_ramdisk"
                    | "flash_offset_second"
                    | "flash_offset_tags"
                    | "flash_offset_dtb"
                    | "dtb"
                    | "append_dtb"
                    | "bootimg_qcdt"
                    | "bootimg_dtb_second"
                    | "bootimg_append_seandroidenforce"
                    | "bootimg_prepend_dhtb"
                    | "bootimg_pxa"
                    | "bootimg_blobpack"
                    | "bootimg_custom_args"
                    | "bootimg_override_payload"
                    | "kernel_cmdline"
                    | "kernel_cmdline_append"
                    | "getty"
                    | "modules_initfs"
                    | "initfs_compression"
                    | "usb_idVendor"
                    | "usb_idProduct"
            )
    };
    for (k, (v, line)) in &di.keys {
        if !used(k) && !v.is_empty() && v != "false" {
            note(&format!("deviceinfo_{k}"), format!("line {line}: {v:?} has no mobix profile key"));
        }
    }
    let keys = DeviceKeys {
        family: None,
        name: full_name,
        arch: Arch::Aarch64,
        identity,
        storage,
        system,
        state: Some(state),
        vbmeta,
        kernel: kernel_keys,
        bootimg: b,
        variants,
        console,
        cmdline: args.iter().map(|a| a.to_string()).collect(),
        stage1: Stage1Keys { modules, compression },
        usb_network,
    };
    Ok(Imported { codename, keys, notes })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_family_is_named_by_the_device_tree() {
        assert_eq!(family_of_dtb("qcom/sdm845-oneplus-fajita").as_deref(), Some("qcom-sdm845"));
        assert_eq!(family_of_dtb("exynos/google/gs101-oriole").as_deref(), Some("google-gs101"));
        assert_eq!(family_of_dtb("exynos9610"), None, "no vendor directory: no family to name");
    }

    use super::*;

    const ENCHILADA: &str = "# Reference: <https://postmarketos.org/deviceinfo>\n\
        deviceinfo_format_version=\"0\"\n\
        deviceinfo_name=\"OnePlus 6\"\n\
        deviceinfo_manufacturer=\"OnePlus\"\n\
        deviceinfo_codename=\"oneplus-enchilada\"\n\
        deviceinfo_arch=\"aarch64\"\n\
        deviceinfo_dtb=\"qcom/sdm845-oneplus-enchilada\"\n\
        deviceinfo_append_dtb=\"true\"\n\
        deviceinfo_flash_method=\"fastboot\"\n\
        deviceinfo_generate_bootimg=\"true\"\n\
        deviceinfo_flash_offset_base=\"0x00000000\"\n\
        deviceinfo_flash_offset_kernel=\"0x00008000\"\n\
        deviceinfo_flash_offset_ramdisk=\"0x01000000\"\n\
        deviceinfo_flash_offset_second=\"0x00f00000\"\n\
        deviceinfo_flash_offset_tags=\"0x00000100\"\n\
        deviceinfo_flash_pagesize=\"4096\"\n\
        deviceinfo_flash_sparse=\"true\"\n\
        deviceinfo_getty=\"ttyMSM0;115200\" # a comment\n\
        deviceinfo_rootfs_image_sector_size=\"4096\"\n";

    #[test]
    fn a_deviceinfo_becomes_profile_keys_as_boot_deploy_reads_it() {
        let di = parse(ENCHILADA, "enchilada/deviceinfo").unwrap();
        assert_eq!(di.get("getty"), Some("ttyMSM0;115200"));
        let got = profile_keys(&di, Some("console=ttyMSM0,115200\n# serial\nquiet\n-splash\n"), &KernelChoice::Unknown)
            .unwrap();
        let k = &got.keys;
        assert_eq!(got.codename, "oneplus-enchilada");
        assert_eq!(k.name, "OnePlus 6");
        assert_eq!(k.identity.fastboot_products, ["enchilada"]);
        let b = &k.bootimg;
        assert_eq!((b.header_version, b.page_size), (0, 4096));
        assert_eq!((b.base, b.kernel_offset), (Some(0), Some(0x8000)));
        let dtb = b.dtb.as_ref().expect("a device tree");
        assert_eq!(dtb.mode, DtbMode::Append);
        assert_eq!(dtb.files, ["qcom/sdm845-oneplus-enchilada.dtb"]);
        assert_eq!(b.kernel_compression, Some(Compression::Gzip));
        assert_eq!(k.storage.sector_size, 4096);
        assert_eq!(k.console, "ttyMSM0");
        assert_eq!(k.cmdline, ["console=ttyMSM0,115200", "quiet"], "comment lines left out, -splash removes a default");
        assert_eq!(k.kernel, None);
        assert!(got.notes.iter().any(|(k, _)| k == "kernel"), "{:?}", got.notes);
        // Written as a person writes a profile: no empty or unset key, addresses as numbers.
        let text = serde_norway::to_string(k).unwrap();
        assert!(text.starts_with("name: OnePlus 6\narch: aarch64\n"), "{text}");
        assert!(!text.contains("null") && !text.contains("kernel:") && !text.contains("slotted"), "{text}");
        assert!(text.contains("size: 2GiB"), "{text}");
    }

    #[test]
    fn unset_means_the_defaults_and_variants_come_from_suffixed_dtbs() {
        let text = "deviceinfo_name=\"Poco F1\"\ndeviceinfo_manufacturer=\"Xiaomi\"\n\
            deviceinfo_codename=\"xiaomi-beryllium\"\ndeviceinfo_arch=\"aarch64\"\n\
            deviceinfo_dtb_tianma=\"qcom/sdm845-xiaomi-beryllium-tianma\"\n\
            deviceinfo_dtb_second=\"false\"\ndeviceinfo_append_dtb=\"true\"\n\
            deviceinfo_kernel_cmdline='console=ttyS0'\ndeviceinfo_keyboard=false\n";
        let got = profile_keys(&parse(text, "d").unwrap(), None, &KernelChoice::Unknown).unwrap();
        let b = &got.keys.bootimg;
        assert_eq!(b.base, Some(BOOT_DEPLOY_BASE));
        assert_eq!(b.tags_offset, Some(MKBOOTIMG_TAGS_OFFSET));
        assert_eq!(b.page_size, MKBOOTIMG_PAGE_SIZE);
        assert_eq!(got.keys.variants["tianma"].bootimg.dtb.files, ["qcom/sdm845-xiaomi-beryllium-tianma.dtb"]);
        assert!(!got.keys.variants.contains_key("second"), "a true/false value is no device tree");
        assert_eq!(got.keys.name, "Xiaomi Poco F1");
        assert_eq!(got.keys.console, "ttyS0", "the obsolete cmdline key, read without the file");
    }

    #[test]
    fn a_prebuilt_kernel_takes_no_modules_and_a_slot_named_partition_means_a_b() {
        let text = format!(
            "{ENCHILADA}deviceinfo_modules_initfs=\"rmi_core\"\n\
             deviceinfo_flash_fastboot_partition_kernel=\"boot_a\"\n\
             deviceinfo_flash_fastboot_partition_vbmeta=\"vbmeta\"\n"
        );
        let di = parse(&text, "d").unwrap();
        let prebuilt = KernelChoice::Prebuilt { image: "Image".into(), dtbs: Some("dtbs".into()) };
        let got = profile_keys(&di, None, &prebuilt).unwrap();
        let Some(KernelKeys::Prebuilt(p)) = &got.keys.kernel else { panic!("{:?}", got.keys.kernel) };
        assert_eq!(p.dtbs.as_deref(), Some("dtbs"));
        assert!(got.keys.stage1.modules.is_empty());
        assert!(got.notes.iter().any(|(k, why)| k == "deviceinfo_modules_initfs" && why.contains("rmi_core")));
        let parts = &got.keys.storage.partitions;
        assert_eq!((parts[0].name.as_str(), parts[0].slotted), ("boot", true));
        assert_eq!((parts[1].name.as_str(), parts[1].slotted), ("vbmeta", true), "vbmeta follows boot: {parts:?}");
        let package = profile_keys(&di, None, &KernelChoice::Package("linux-image-6.12".into())).unwrap();
        assert_eq!(package.keys.kernel, Some(KernelKeys::Package("linux-image-6.12".into())));
        assert_eq!(package.keys.stage1.modules, ["rmi_core"]);
        let yaml = serde_norway::to_string(&package.keys).unwrap();
        assert!(yaml.contains("kernel:\n  package: linux-image-6.12\n"), "{yaml}");
    }

    #[test]
    fn a_family_leads_the_profile_and_its_modules_the_list() {
        let text = format!("{ENCHILADA}deviceinfo_modules_initfs=\"rmi_core ufs_qcom\"\n");
        let di = parse(&text, "d").unwrap();
        let kernel = KernelChoice::Package("linux-image-6.12".into());
        let mut got = profile_keys(&di, None, &kernel).unwrap();
        let families =
            [FamilyHint { name: "qcom-sdm845".into(), modules: vec!["ufs_qcom".into(), "phy_qcom_qmp_ufs".into()] }];
        infer(&mut got, &di, &families, &kernel);
        assert_eq!(got.keys.family.as_deref(), Some("qcom-sdm845"));
        assert_eq!(got.keys.stage1.modules, ["ufs_qcom", "phy_qcom_qmp_ufs", "rmi_core"]);
        assert_eq!(got.keys.kernel, None, "the family's kernel replaces the stand-in");
        assert!(serde_norway::to_string(&got.keys).unwrap().starts_with("family: qcom-sdm845\nname: "));
        assert_eq!(got.notes[0].0, "family");
    }

    #[test]
    fn broken_deviceinfo_names_the_key_and_line() {
        let err = |text: &str| {
            let e =
                parse(text, "x/deviceinfo").and_then(|d| profile_keys(&d, None, &KernelChoice::Unknown)).unwrap_err();
            crate::util::find_fail(&e).map(|f| f.msg.clone()).unwrap_or_else(|| format!("{e:#}"))
        };
        let base = "deviceinfo_name=\"N\"\ndeviceinfo_manufacturer=\"M\"\ndeviceinfo_codename=\"m-n\"\n";
        assert!(err(base).contains("deviceinfo_arch is missing"));
        let e = err(&format!("{base}deviceinfo_arch=\"aarch64\"\ndeviceinfo_flash_offset_base=\"0xzz\"\n"));
        assert!(e.contains("x/deviceinfo:5: deviceinfo_flash_offset_base: \"0xzz\" is not a number"), "{e}");
        assert!(err("[Desktop Entry]\nName=foo\n").contains("x/deviceinfo:1: not an assignment"));
        assert!(err("Name=foo\n").contains("x/deviceinfo:1: not a deviceinfo_ key"));
        assert!(err("# only a comment\n").contains("is not a deviceinfo file"));
        assert!(err("deviceinfo_name=\"open\n").contains("never closed"));
        assert!(err(&format!("{base}deviceinfo_arch=\"armv7\"\n")).contains("aarch64 systems only"));
        let e = err(&format!("{base}deviceinfo_arch=\"aarch64\"\ndeviceinfo_append_dtb=\"yes\"\n"));
        assert!(e.contains(":5: deviceinfo_append_dtb: \"yes\" is neither"), "{e}");
        let e = err(&format!("{base}deviceinfo_arch=\"aarch64\"\ndeviceinfo_usb_idVendor=\"0x12345\"\n"));
        assert!(e.contains(":5: deviceinfo_usb_idVendor: 0x12345 is not a 16-bit USB id"), "{e}");
        let e =
            err(&format!("{base}deviceinfo_arch=\"aarch64\"\ndeviceinfo_flash_fastboot_partition_rootfs=\"Data\"\n"));
        assert!(e.contains(":5: deviceinfo_flash_fastboot_partition_rootfs: \"Data\" is not a partition name"), "{e}");
    }
}
