//! The device profile's checks serde cannot make: ranges, uniqueness, cross references.

use super::*;
use std::collections::BTreeSet;

fn is_module_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// A failed check: the dotted key path and what is wrong with it.
pub type Invalid = (String, String);

impl Device {
    /// Checks what serde cannot: ranges, uniqueness and cross references.
    pub fn validate(&self) -> Result<(), Invalid> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        if ![512, 4096].contains(&self.storage.sector_size) {
            return err("storage.sector_size", format!("{} is not 512 or 4096", self.storage.sector_size));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.storage.partitions.iter().enumerate() {
            let key = format!("storage.partitions[{i}]");
            let names: Vec<String> = if p.slotted {
                vec![format!("{}_a", p.name), format!("{}_b", p.name)]
            } else {
                vec![p.name.to_string()]
            };
            for n in names {
                if !seen.insert(n.clone()) {
                    return err(&format!("{key}.name"), format!("partition {n} is defined twice"));
                }
            }
            let ss = self.storage.sector_size as u64;
            if let Some(size) = p.size {
                if size.0 == 0 || size.0 % ss != 0 {
                    return err(
                        &format!("{key}.size"),
                        format!("{} is not a positive multiple of the sector size {ss}", size.0),
                    );
                }
            }
        }
        let sys = &self.system.partition;
        match self.storage.partitions.iter().find(|p| &p.name == sys) {
            None => return err("system.partition", format!("{sys:?} is not in storage.partitions")),
            Some(p) if p.slotted => {
                return err(
                    "system.partition",
                    format!("{sys:?} is slotted; mobix keeps generations on one system partition"),
                )
            }
            Some(p) => match (self.system.size, p.size) {
                (None, None) => return err("system.size", format!("give the image size: partition {sys} has no size")),
                (Some(s), Some(ps)) if s.0 > ps.0 => {
                    return err(
                        "system.size",
                        format!(
                            "{} bytes do not fit partition {sys} ({} bytes): a config that gives the partitions \
                             gives `system.size` too",
                            s.0, ps.0
                        ),
                    )
                }
                (Some(s), _) if s.0 == 0 || s.0 % 4096 != 0 => {
                    return err("system.size", format!("{} is not a positive multiple of 4096", s.0))
                }
                _ => {}
            },
        }
        if !self.storage.partitions.iter().any(|p| p.name == "boot") {
            return err("storage.partitions", "there is no boot partition".into());
        }
        let b = &self.bootimg;
        if b.header_version > 4 {
            return err(
                "bootimg.header_version",
                format!("{} is not a boot image header version (0-4)", b.header_version),
            );
        }
        if b.header_version >= 3 {
            // The addresses, the ramdisk, the command line and the dtb go in vendor_boot.img.
            match self.partition("vendor_boot") {
                None => {
                    return err(
                        "storage.partitions",
                        format!("header version {} needs a vendor_boot partition", b.header_version),
                    )
                }
                Some(p) if p.slotted != self.is_ab() => {
                    return err("storage.partitions", "vendor_boot is slotted exactly when boot is".into())
                }
                _ => {}
            }
            if self.qemu.is_some() {
                return err(
                    "bootimg.header_version",
                    "the emulated phone (`qemu`) boots header versions 0-2: its boot.img carries the ramdisk".into(),
                );
            }
        }
        if !(b.page_size.is_power_of_two() && (2048..=16384).contains(&b.page_size)) {
            return err("bootimg.page_size", format!("{} is not a power of two from 2048 to 16384", b.page_size));
        }
        // Each is a 32-bit number; their sums wrap at 32 bits, as mkbootimg-osm0sis (which
        // postmarketOS uses for header versions 0-2) computes them: some phones' values
        // rely on it.
        for (k, v) in [
            ("base", b.base),
            ("kernel_offset", b.kernel_offset),
            ("ramdisk_offset", b.ramdisk_offset),
            ("second_offset", b.second_offset),
            ("tags_offset", b.tags_offset),
        ] {
            if v > u32::MAX as u64 {
                return err(&format!("bootimg.{k}"), format!("{v:#x} does not fit 32 bits"));
            }
        }
        if b.base.checked_add(b.dtb_offset).is_none() {
            return err("bootimg.dtb_offset", "base + dtb_offset overflows".into());
        }
        if b.board.len() > 15 {
            return err("bootimg.board", format!("{:?} is longer than 15 bytes", b.board));
        }
        let header_dtb = b.dtb.as_ref().is_some_and(|d| d.mode.in_header());
        if b.header_version == 2 && !header_dtb {
            return err("bootimg.dtb", "header version 2 needs a dtb with mode: header (or append+header)".into());
        }
        if b.header_version < 2 && header_dtb {
            return err(
                "bootimg.dtb.mode",
                format!("header version {} has no dtb section (use mode: append or second)", b.header_version),
            );
        }
        if b.header_version >= 3 && b.dtb.as_ref().is_some_and(|d| d.mode.in_second()) {
            return err(
                "bootimg.dtb.mode",
                format!("header version {} has no second stage (use mode: header)", b.header_version),
            );
        }
        if let Some(d) = &b.dtb {
            match d.source {
                DtbSource::Kernel if d.files.is_empty() => {
                    return err("bootimg.dtb.files", "name the kernel's device tree(s) to use".into())
                }
                DtbSource::Qemu if !d.files.is_empty() => {
                    return err("bootimg.dtb.files", "a qemu device tree is dumped, not picked from files".into())
                }
                _ => {}
            }
            if d.mode.appended() && b.kernel_compression != Compression::Gzip {
                return err(
                    "bootimg.kernel_compression",
                    "appended device trees follow a gzip-compressed kernel: use gzip".into(),
                );
            }
            if (d.mode.in_header() || d.mode.in_second()) && d.files.len() > 1 {
                return err("bootimg.dtb.files", "the header's dtb section and the second stage hold one dtb".into());
            }
            for (i, f) in d.files.iter().enumerate() {
                if f.starts_with('/') || f.split('/').any(|c| c == ".." || c.is_empty()) || !f.ends_with(".dtb") {
                    return err(&format!("bootimg.dtb.files[{i}]"), format!("{f:?} is not a relative path to a .dtb"));
                }
            }
        }
        if !matches!(b.kernel_compression, Compression::None | Compression::Gzip | Compression::Lz4) {
            return err(
                "bootimg.kernel_compression",
                format!("{} is not one bootloaders take (none, gzip, lz4)", b.kernel_compression.name()),
            );
        }
        if let Some(v) = &b.os_version {
            if parse_os_version(v).is_none() {
                return err("bootimg.os_version", format!("{v:?} is not A.B.C with each part below 128"));
            }
        }
        if let Some(v) = &b.os_patch_level {
            if parse_patch_level(v).is_none() {
                return err("bootimg.os_patch_level", format!("{v:?} is not YYYY-MM (2000-2127)"));
            }
        }
        if b.os_version.is_some() != b.os_patch_level.is_some() {
            return err("bootimg.os_version", "os_version and os_patch_level go together".into());
        }
        if b.dtb.as_ref().is_some_and(|d| d.source == DtbSource::Qemu) && self.qemu.is_none() {
            return err("bootimg.dtb.source", "qemu needs a `qemu` section".into());
        }
        let cmdline_len: usize = self.cmdline.iter().map(|a| a.len() + 1).sum();
        if cmdline_len > crate::format::bootimg::MAX_CMDLINE_V0 - 200 {
            return err(
                "cmdline",
                format!("{cmdline_len} characters leaves too little room in the boot image's command line"),
            );
        }
        for (i, a) in self.cmdline.iter().enumerate() {
            if a.is_empty() || a.contains(char::is_whitespace) {
                return err(&format!("cmdline[{i}]"), format!("{a:?} must be one argument without spaces"));
            }
        }
        if self.console.is_empty() || self.console.contains('/') {
            return err("console", format!("{:?} is not a device name like ttyAMA0", self.console));
        }
        for (i, m) in self.stage1.modules.iter().enumerate() {
            if !is_module_name(m) {
                return err(&format!("stage1.modules[{i}]"), format!("{m:?} is not a module name"));
            }
        }
        for (i, m) in self.kernel.modules.iter().flatten().enumerate() {
            if !is_module_name(m) {
                return err(&format!("kernel.modules[{i}]"), format!("{m:?} is not a module name"));
            }
        }
        if self.kernel.source.is_none() && self.kernel.package.is_none() && self.kernel.prebuilt.is_none() {
            return err(
                "kernel",
                "name a kernel: `source` (a kernels/ spec) and/or `package` (a prebuilt package), or `prebuilt` \
                 (your own Image and dtbs)"
                    .into(),
            );
        }
        if let Some(p) = &self.kernel.prebuilt {
            if self.kernel.source.is_some() || self.kernel.package.is_some() {
                return err(
                    "kernel.prebuilt",
                    "a prebuilt kernel is the only kernel: drop `source` and `package` (or `prebuilt`)".into(),
                );
            }
            if p.image.is_empty() {
                return err("kernel.prebuilt.image", "name the kernel Image file".into());
            }
            if p.dtbs.as_deref() == Some("") {
                return err("kernel.prebuilt.dtbs", "name the directory of device trees".into());
            }
        }
        if let Some(u) = self.qemu.as_ref().and_then(|q| q.u_boot.as_ref()) {
            if super::Codename::new(u).is_err() {
                return err("qemu.u_boot", format!("{u:?} is not the name of a bootloaders/ directory"));
            }
        }
        if let Some(s) = &self.kernel.source {
            if super::Codename::new(s).is_err() {
                return err("kernel.source", format!("{s:?} is not the name of a kernels/ directory"));
            }
        }
        if self.identity.fastboot_products.is_empty() {
            return err("identity.fastboot_products", "name at least one product".into());
        }
        if let Some(fw) = &self.firmware {
            let mut seen = BTreeSet::new();
            for (i, f) in fw.files.iter().enumerate() {
                let bad = f.path.is_empty()
                    || f.path.starts_with('/')
                    || f.path.split('/').any(|c| c.is_empty() || c == "." || c == "..");
                if bad {
                    return err(
                        &format!("firmware.files[{i}].path"),
                        format!("{:?} is not a relative path under /lib/firmware", f.path),
                    );
                }
                if crate::hash::Sha256Digest::parse_hex(&f.sha256).is_none() {
                    return err(
                        &format!("firmware.files[{i}].sha256"),
                        format!("{:?} is not a lowercase hex sha256", f.sha256),
                    );
                }
                if !seen.insert(&f.path) {
                    return err(&format!("firmware.files[{i}].path"), format!("{} is listed twice", f.path));
                }
            }
        }
        if let Some(st) = &self.state {
            match self.partition(&st.partition) {
                None => {
                    return err(
                        "state.partition",
                        format!(
                            "{} is not in storage.partitions (`state: null` for no persistent state)",
                            st.partition
                        ),
                    )
                }
                Some(p) if p.slotted => return err("state.partition", format!("{} is slotted", st.partition)),
                // Beside the store: the state filesystem follows the system image, whose
                // size must then be set smaller than the partition.
                Some(p) if st.partition == self.system.partition => {
                    let image = self.system_image_size();
                    match (self.system.size, p.size) {
                        (None, _) => {
                            return err(
                                "state.partition",
                                format!(
                                    "{} holds the system image; keeping the state beside it needs `system.size`",
                                    st.partition
                                ),
                            )
                        }
                        (Some(_), Some(part)) if part.0 < image + mobix_bootctl::contract::MIN_STATE => {
                            return err(
                                "system.size",
                                format!(
                                    "leaves less than {} MiB of {} for the state beside it",
                                    mobix_bootctl::contract::MIN_STATE >> 20,
                                    st.partition
                                ),
                            )
                        }
                        _ => {}
                    }
                }
                Some(_) => {}
            }
        }
        if let Some(v) = &self.vbmeta {
            if !(1..=3).contains(&v.flags) {
                return err("vbmeta.flags", format!("{} is not 1, 2 or 3", v.flags));
            }
        }
        if let Some(q) = &self.qemu {
            if let Some((i, p)) = self.storage.partitions.iter().enumerate().find(|(_, p)| p.size.is_none()) {
                // Located at `qemu`, where the emulated phone was asked for: often a system
                // config's `device: qemu:` meant for the emulated phone, built for a real one.
                return err(
                    "qemu",
                    format!(
                        "an emulated phone needs every partition's size, and storage.partitions[{i}] ({}) has none: \
                         this profile describes a real phone (a config's `device: qemu:` is for the emulated one)",
                        p.name
                    ),
                );
            }
            if let Some(s) = q.screen {
                if !(64..=4096).contains(&s.width) || !(64..=4096).contains(&s.height) {
                    return err(
                        "qemu.screen",
                        format!(
                            "{}x{} is not a screen QEMU's virtio GPU can show (64 to 4096 pixels each way)",
                            s.width, s.height
                        ),
                    );
                }
            }
            if q.memory_mib < 128 {
                return err("qemu.memory_mib", format!("{} MiB is too little to boot", q.memory_mib));
            }
            if q.smp == 0 {
                return err("qemu.smp", "needs at least one CPU".into());
            }
        }
        Ok(())
    }
}
