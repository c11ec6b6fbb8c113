//! postmarketOS `deviceinfo` files: what pmOS knows of a phone, as shell assignments
//! `deviceinfo_KEY="value"` (comments and blank lines between). [`parse`] reads them with
//! their line numbers; [`profile_keys`] maps them to mobix profile keys the way pmOS's
//! boot-deploy hands them to mkbootimg, listing every key it read but cannot map, with why.
//!
//! Unset and `"false"` mean the same (newer pmaports dropped explicit false values).

use crate::util::Fail;
use anyhow::Result;
use serde_norway::{Mapping, Value};
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
pub const MKBOOTIMG_PAGE_SIZE: u64 = 2048;
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
    /// Profile keys (a mapping, as `device.yaml` holds them).
    pub keys: Value,
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
    let Value::Mapping(top) = &mut imp.keys else { return };
    let dtb = di.get("dtb").and_then(|d| d.split_whitespace().next());
    let family = dtb.and_then(family_of_dtb).and_then(|f| families.iter().find(|h| h.name == f));
    fn modules_key(top: &mut Mapping) -> Option<&mut Vec<Value>> {
        match top.get_mut("stage1")?.get_mut("modules")? {
            Value::Sequence(v) => Some(v),
            _ => None,
        }
    }
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
        let mut joined: Vec<Value> = f.modules.iter().map(|m| Value::from(m.as_str())).collect();
        if let Some(list) = modules_key(top) {
            for m in list.drain(..) {
                if !joined.contains(&m) {
                    joined.push(m);
                }
            }
            *list = joined;
        }
        let mut notes = vec![format!(
            "{} (the tree's family of {} phones, from the device tree {}): its values apply where this profile sets \
             none; its stage-1 modules lead the list",
            f.name,
            f.name,
            dtb.unwrap_or("")
        )];
        if matches!(kernel, KernelChoice::Package(_)) {
            top.remove("kernel");
            imp.notes.retain(|(k, _)| k != "kernel");
            notes.push("the family's kernel replaces Debian's generic stand-in".into());
        }
        // The family first, as a profile written by hand has it.
        let mut with = Mapping::new();
        with.insert("family".into(), f.name.as_str().into());
        with.extend(std::mem::take(top));
        *top = with;
        imp.notes.insert(0, ("family".into(), notes.join("; ")));
        return;
    }
    let empty = modules_key(top).is_none_or(|l| l.is_empty());
    if empty && !matches!(kernel, KernelChoice::Prebuilt { .. }) {
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
    let mut top = Mapping::new();
    let put = |m: &mut Mapping, k: &str, v: Value| {
        m.insert(Value::from(k), v);
    };
    put(&mut top, "name", full_name.into());
    put(&mut top, "arch", "aarch64".into());

    // Identity: pmOS does not record what fastboot calls the phone; the codename's device
    // part is what most bootloaders answer.
    let product = super::import::guessed_product(&codename);
    let mut identity = Mapping::new();
    put(&mut identity, "fastboot_products", Value::Sequence(vec![product.into()]));
    put(&mut top, "identity", Value::Mapping(identity));
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
    let sector = di.number("rootfs_image_sector_size")?.unwrap_or(512);
    // A partition named with its slot (`boot_a`) says the phone has A/B slots.
    let unslotted = |p: &str| p.strip_suffix("_a").or_else(|| p.strip_suffix("_b")).unwrap_or(p).to_string();
    let ab = unslotted(kernel_part) != kernel_part;
    if unslotted(kernel_part) != "boot" {
        note(
            "flash_fastboot_partition_kernel",
            format!("pmOS flashes the kernel to {kernel_part}; mobix writes boot.img to boot"),
        );
    }
    let mut parts = Vec::new();
    let part = |name: &str, slotted: bool| {
        let mut m = Mapping::new();
        m.insert("name".into(), name.into());
        if slotted {
            m.insert("slotted".into(), true.into());
        }
        Value::Mapping(m)
    };
    parts.push(part("boot", ab));
    if di.number("header_version")?.unwrap_or(0) >= 3 {
        parts.push(part("vendor_boot", ab));
    }
    let mut named = vec!["boot".to_string()];
    for key in ["flash_fastboot_partition_dtbo", "flash_fastboot_partition_vbmeta"] {
        if let Some(p) = di.get(key) {
            let base = unslotted(p);
            parts.push(part(&base, ab || base != p));
            named.push(base);
        }
    }
    let rootfs_part = if unslotted(rootfs_part) != rootfs_part {
        note(
            "flash_fastboot_partition_rootfs",
            format!("{rootfs_part} is one slot's; mobix keeps its generations on one unslotted partition: userdata"),
        );
        "userdata"
    } else {
        rootfs_part
    };
    if !named.iter().any(|n| n == rootfs_part) {
        parts.push(part(rootfs_part, false));
    }
    let mut storage = Mapping::new();
    put(&mut storage, "sector_size", sector.into());
    put(&mut storage, "partitions", Value::Sequence(parts));
    put(&mut top, "storage", Value::Mapping(storage));
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
    let (system, state, (k, why)) = super::import::store_on(rootfs_part);
    put(&mut top, "system", system);
    put(&mut top, "state", state);
    note(&k, why);
    if let Some(v) = di.get("flash_fastboot_partition_vbmeta") {
        let mut m = Mapping::new();
        put(&mut m, "partition", v.into());
        put(&mut m, "flags", 3u64.into());
        put(&mut top, "vbmeta", Value::Mapping(m));
    }
    if let Some(v) = di.get("flash_fastboot_partition_dtbo") {
        note("flash_fastboot_partition_dtbo", format!("pmOS flashes a dtbo from its kernel to {v}; mobix writes none"));
    }

    // The kernel: pmOS builds its own for each phone.
    let mut k = Mapping::new();
    match kernel {
        KernelChoice::Prebuilt { image, dtbs } => {
            if let Value::Mapping(m) = super::import::prebuilt_kernel(image, dtbs.as_deref()) {
                k = m;
            }
        }
        KernelChoice::Package(name) => {
            put(&mut k, "package", name.as_str().into());
            note(
                "kernel",
                format!(
                    "pmOS builds this phone's kernel itself; Debian's generic arm64 kernel ({name}) stands in, \
                     which boots it only if it carries its device tree and drivers (the build names a device tree \
                     it lacks): `--kernel-image FILE --dtbs DIR` name your own"
                ),
            );
        }
        KernelChoice::Unknown => note(
            "kernel",
            "pmOS builds this phone's kernel itself: name your own (`kernel: {prebuilt: {image: FILE, dtbs: \
             DIR}}`), a kernels/ spec (`kernel: {source: …}`) or a Debian kernel package that carries its device \
             tree (`kernel: {package: …}`)"
                .into(),
        ),
    }
    if !k.is_empty() {
        put(&mut top, "kernel", Value::Mapping(k));
    }

    // The boot image, as boot-deploy passes it to mkbootimg.
    if !di.flag("generate_bootimg")? {
        note(
            "generate_bootimg",
            "pmOS boots it without an Android boot image (extlinux, depthcharge or U-Boot); mobix writes boot.img"
                .into(),
        );
    }
    let header_version = di.number("header_version")?.unwrap_or(0);
    let mut b = Mapping::new();
    put(&mut b, "header_version", header_version.into());
    let page_size = match di.number("flash_pagesize")? {
        Some(p) => p,
        None => {
            note("flash_pagesize", format!("unset: mkbootimg's default {MKBOOTIMG_PAGE_SIZE}"));
            MKBOOTIMG_PAGE_SIZE
        }
    };
    put(&mut b, "page_size", page_size.into());
    if header_version >= 3 {
        // boot-deploy passes mkbootimg no addresses for these: mkbootimg's defaults.
        put(&mut b, "base", MKBOOTIMG_BASE.into());
        put(&mut b, "kernel_offset", MKBOOTIMG_KERNEL_OFFSET.into());
        put(&mut b, "ramdisk_offset", MKBOOTIMG_RAMDISK_OFFSET.into());
        put(&mut b, "tags_offset", MKBOOTIMG_TAGS_OFFSET.into());
        put(&mut b, "dtb_offset", MKBOOTIMG_DTB_OFFSET.into());
        note(
            "header_version",
            format!(
                "version {header_version}: boot.img holds the kernel, vendor_boot.img the ramdisk, command line, \
                 device tree and mkbootimg's default addresses (boot-deploy passes none)"
            ),
        );
    } else {
        let base = di.number("flash_offset_base")?.unwrap_or(BOOT_DEPLOY_BASE);
        put(&mut b, "base", base.into());
        let (mut unset, mut highest) = (Vec::new(), 0);
        for (key, profile_key, default) in [
            ("flash_offset_kernel", "kernel_offset", MKBOOTIMG_KERNEL_OFFSET),
            ("flash_offset_ramdisk", "ramdisk_offset", MKBOOTIMG_RAMDISK_OFFSET),
            ("flash_offset_second", "second_offset", MKBOOTIMG_SECOND_OFFSET),
            ("flash_offset_tags", "tags_offset", MKBOOTIMG_TAGS_OFFSET),
        ] {
            let v = di.number(key)?.unwrap_or_else(|| {
                unset.push(key);
                default
            });
            // (mkbootimg adds the second offset only to a second stage it is given.)
            if key != "flash_offset_second" || di.flag("bootimg_dtb_second")? {
                highest = highest.max(v);
            }
            put(&mut b, profile_key, v.into());
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
    let dtbs = |v: &str| -> Vec<Value> { v.split_whitespace().map(|d| Value::from(format!("{d}.dtb"))).collect() };
    let dtb_files = di.get("dtb").map(dtbs).unwrap_or_default();
    // `dtb_<variant>`: the device tree of a kernel variant (a panel, a board revision).
    let mut variants = Mapping::new();
    for (k, (v, line)) in &di.keys {
        let Some(variant) = k.strip_prefix("dtb_") else { continue };
        if v.is_empty() {
            continue;
        }
        if matches!(v.as_str(), "true" | "false") {
            note(&format!("deviceinfo_{k}"), format!("line {line}: a true/false value, not a device tree (ignored)"));
            continue;
        }
        let mut dtb = Mapping::new();
        put(&mut dtb, "files", Value::Sequence(dtbs(v)));
        let mut bi = Mapping::new();
        put(&mut bi, "dtb", Value::Mapping(dtb));
        let mut var = Mapping::new();
        put(&mut var, "bootimg", Value::Mapping(bi));
        put(&mut variants, &variant.replace('_', "-"), Value::Mapping(var));
    }
    let has_dtb = !dtb_files.is_empty() || !variants.is_empty();
    // As boot-deploy hands them to mkbootimg: the kernel is Image.gz-dtb with append_dtb,
    // and besides that the dtb goes to `--second` (dtb_second), or `--dtb` (header
    // version 2 with its offset; 3 and 4 into vendor_boot).
    let append = di.flag("append_dtb")?;
    if append {
        put(&mut b, "kernel_compression", "gzip".into());
    }
    let also = if di.flag("bootimg_qcdt")? {
        note("bootimg_qcdt", "the device trees go in a QCDT dt.img, which mobix build does not write yet".into());
        None
    } else if di.flag("bootimg_dtb_second")? {
        Some("second")
    } else if header_version == 2 {
        let off = di.number("flash_offset_dtb")?.ok_or_else(|| {
            Fail::new(format!("{}: header version 2 needs deviceinfo_flash_offset_dtb", di.origin))
                .hint("boot-deploy refuses such a deviceinfo too")
        })?;
        put(&mut b, "dtb_offset", off.into());
        Some("header")
    } else if header_version >= 3 {
        Some("header")
    } else {
        None
    };
    let mode = match (append, also) {
        (true, Some(place)) => Some(format!("append+{place}")),
        (true, None) => Some("append".to_string()),
        (false, Some(place)) => Some(place.to_string()),
        (false, None) => {
            if has_dtb && !di.flag("bootimg_qcdt")? {
                note("dtb", "neither appended nor in the header: pmOS's bootloader finds it elsewhere".into());
            }
            None
        }
    };
    if let (Some(mode), true) = (mode.as_deref(), has_dtb) {
        let mut dtb = Mapping::new();
        put(&mut dtb, "source", "kernel".into());
        put(&mut dtb, "mode", mode.into());
        put(&mut dtb, "files", Value::Sequence(dtb_files));
        put(&mut b, "dtb", Value::Mapping(dtb));
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
    put(&mut top, "bootimg", Value::Mapping(b));
    if !variants.is_empty() {
        put(&mut top, "variants", Value::Mapping(variants));
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
        .or_else(|| di.get("getty").map(|g| g.split(';').next().unwrap_or(g).to_string()));
    match console {
        Some(c) if !c.is_empty() => put(&mut top, "console", c.into()),
        _ => {
            put(&mut top, "console", "tty0".into());
            note(
                "console",
                "no console= argument and no getty: tty0 (the screen); name the serial console if it has one".into(),
            )
        }
    }
    if !args.is_empty() {
        put(&mut top, "cmdline", Value::Sequence(args.iter().map(|a| Value::from(*a)).collect()));
    }

    // Stage-1.
    let mut stage1 = Mapping::new();
    let mut modules: Vec<Value> = di.get("modules_initfs").unwrap_or("").split_whitespace().map(Value::from).collect();
    if matches!(kernel, KernelChoice::Prebuilt { .. }) && !modules.is_empty() {
        let names: Vec<&str> = modules.iter().filter_map(Value::as_str).collect();
        note(
            "deviceinfo_modules_initfs",
            format!("a prebuilt kernel brings no modules: {} must be built into it", names.join(" ")),
        );
        modules.clear();
    }
    put(&mut stage1, "modules", Value::Sequence(modules));
    if let Some(c) = di.get("initfs_compression") {
        let algo = c.split(':').next().unwrap_or(c);
        if matches!(algo, "gzip" | "lz4" | "xz" | "zstd" | "none") {
            put(&mut stage1, "compression", algo.into());
        } else {
            note("initfs_compression", format!("{c:?} is not one mobix writes; gzip it is"));
        }
    }
    put(&mut top, "stage1", Value::Mapping(stage1));

    // USB networking: pmOS's gadget ids.
    if let (Some(v), Some(p)) = (di.number("usb_idVendor")?, di.number("usb_idProduct")?) {
        let mut u = Mapping::new();
        put(&mut u, "vendor_id", v.into());
        put(&mut u, "product_id", p.into());
        put(&mut top, "usb_network", Value::Mapping(u));
    }

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
    Ok(Imported { codename, keys: Value::Mapping(top), notes })
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
        assert_eq!(k["name"].as_str(), Some("OnePlus 6"));
        assert_eq!(k["identity"]["fastboot_products"][0].as_str(), Some("enchilada"));
        let b = &k["bootimg"];
        assert_eq!((b["header_version"].as_u64(), b["page_size"].as_u64()), (Some(0), Some(4096)));
        assert_eq!((b["base"].as_u64(), b["kernel_offset"].as_u64()), (Some(0), Some(0x8000)));
        assert_eq!(b["dtb"]["mode"].as_str(), Some("append"));
        assert_eq!(b["dtb"]["files"][0].as_str(), Some("qcom/sdm845-oneplus-enchilada.dtb"));
        assert_eq!(b["kernel_compression"].as_str(), Some("gzip"));
        assert_eq!(k["storage"]["sector_size"].as_u64(), Some(4096));
        assert_eq!(k["console"].as_str(), Some("ttyMSM0"));
        assert_eq!(k["cmdline"][1].as_str(), Some("quiet"), "comment lines of kernel-cmdline.conf left out");
        assert!(k["cmdline"].get(2).is_none(), "-splash removes a pmOS default: {:?}", k["cmdline"]);
        assert!(got.notes.iter().any(|(k, _)| k == "kernel"), "{:?}", got.notes);
    }

    #[test]
    fn unset_means_the_defaults_and_variants_come_from_suffixed_dtbs() {
        let text = "deviceinfo_name=\"Poco F1\"\ndeviceinfo_manufacturer=\"Xiaomi\"\n\
            deviceinfo_codename=\"xiaomi-beryllium\"\ndeviceinfo_arch=\"aarch64\"\n\
            deviceinfo_dtb_tianma=\"qcom/sdm845-xiaomi-beryllium-tianma\"\n\
            deviceinfo_dtb_second=\"false\"\ndeviceinfo_append_dtb=\"true\"\n\
            deviceinfo_kernel_cmdline='console=ttyS0'\ndeviceinfo_keyboard=false\n";
        let got = profile_keys(&parse(text, "d").unwrap(), None, &KernelChoice::Unknown).unwrap();
        let b = &got.keys["bootimg"];
        assert_eq!(b["base"].as_u64(), Some(BOOT_DEPLOY_BASE));
        assert_eq!(b["tags_offset"].as_u64(), Some(MKBOOTIMG_TAGS_OFFSET));
        assert_eq!(b["page_size"].as_u64(), Some(MKBOOTIMG_PAGE_SIZE));
        assert_eq!(
            got.keys["variants"]["tianma"]["bootimg"]["dtb"]["files"][0].as_str(),
            Some("qcom/sdm845-xiaomi-beryllium-tianma.dtb")
        );
        assert!(got.keys["variants"].get("second").is_none(), "a true/false value is no device tree");
        assert_eq!(got.keys["name"].as_str(), Some("Xiaomi Poco F1"));
        assert_eq!(got.keys["console"].as_str(), Some("ttyS0"), "the obsolete cmdline key, read without the file");
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
        assert_eq!(got.keys["kernel"]["prebuilt"]["dtbs"].as_str(), Some("dtbs"));
        assert_eq!(got.keys["stage1"]["modules"].as_sequence().map(Vec::len), Some(0));
        assert!(got.notes.iter().any(|(k, why)| k == "deviceinfo_modules_initfs" && why.contains("rmi_core")));
        let parts = &got.keys["storage"]["partitions"];
        assert_eq!(parts[0]["name"].as_str(), Some("boot"));
        assert_eq!(parts[0]["slotted"].as_bool(), Some(true));
        assert_eq!(parts[1]["slotted"].as_bool(), Some(true), "vbmeta follows boot: {parts:?}");
        let package = profile_keys(&di, None, &KernelChoice::Package("linux-image-6.12".into())).unwrap();
        assert_eq!(package.keys["kernel"]["package"].as_str(), Some("linux-image-6.12"));
        assert_eq!(package.keys["stage1"]["modules"][0].as_str(), Some("rmi_core"));
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
    }
}
