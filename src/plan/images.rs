//! The images of a generation: boot.img (and vendor_boot), vbmeta and the system image, as
//! recipes over the system plan.

use super::*;

/// The images a build writes for the phone, each a file of that name in its store path and
/// in the out directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageName {
    Boot,
    /// Header versions 3 and 4: written by the boot image step beside boot.img.
    VendorBoot,
    System,
    Vbmeta,
}

impl ImageName {
    pub const ALL: [ImageName; 4] = [ImageName::Boot, ImageName::VendorBoot, ImageName::System, ImageName::Vbmeta];

    /// `boot.img`, `vendor_boot.img`, `system.img`, `vbmeta.img`.
    pub fn file_name(self) -> &'static str {
        match self {
            ImageName::Boot => "boot.img",
            ImageName::VendorBoot => "vendor_boot.img",
            ImageName::System => "system.img",
            ImageName::Vbmeta => "vbmeta.img",
        }
    }

    pub fn from_file_name(name: &str) -> Option<ImageName> {
        ImageName::ALL.into_iter().find(|i| i.file_name() == name)
    }
}

impl std::fmt::Display for ImageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.file_name())
    }
}

/// The images a build produces, by store path.
#[derive(Debug, Clone)]
pub struct ImagePaths {
    pub boot: StorePath,
    pub system: StorePath,
    pub vbmeta: Option<StorePath>,
}

impl ImagePaths {
    pub fn all(&self) -> Vec<StorePath> {
        [Some(self.boot.clone()), Some(self.system.clone()), self.vbmeta.clone()].into_iter().flatten().collect()
    }
}

/// Plans the images of a build: boot.img from the system's kernel and initrd, the system
/// partition holding the given generations (toplevels of this plan or already in the
/// store) and the boot-state record it starts with, and a vbmeta where the device needs one.
pub fn images(
    profile: &Profile,
    sys: &SystemPlan,
    generations: &BTreeMap<u32, StorePath>,
    state: &crate::format::bootstate::Record,
    inp: &Inputs,
) -> Result<(Plan, ImagePaths)> {
    let mut plan = sys.plan.clone();
    let boot = boot_image(&mut plan, profile, sys);
    let system = system_image(&mut plan, profile, generations, state, inp)?;
    let vbmeta = vbmeta(&mut plan, profile);
    Ok((plan, ImagePaths { boot, system, vbmeta }))
}

/// Adds boot.img of the system `sys` (its kernel, initrd and dtb, the profile's header and
/// command line): what a build flashes and what `mobix deploy` writes to the inactive slot.
pub fn boot_image(plan: &mut Plan, profile: &Profile, sys: &SystemPlan) -> StorePath {
    let b = &profile.device.bootimg;
    let os_version = match (&b.os_version, &b.os_patch_level) {
        (Some(v), Some(p)) => {
            let v = crate::profile::parse_os_version(v).expect("validated");
            let p = crate::profile::parse_patch_level(p).expect("validated");
            crate::format::bootimg::pack_os_version(v, p).expect("validated")
        }
        _ => 0,
    };
    // Both fit 32 bits (validated); the sum wraps there, as mkbootimg-osm0sis adds them.
    let addr = |off: u64| (b.base + off) as u32;
    let header = BootHeader {
        header_version: b.header_version,
        page_size: b.page_size,
        kernel_addr: addr(b.kernel_offset),
        ramdisk_addr: addr(b.ramdisk_offset),
        // mkbootimg writes 0 for an absent second stage.
        second_addr: if b.dtb.as_ref().is_some_and(|d| d.mode.in_second()) { addr(b.second_offset) } else { 0 },
        tags_addr: addr(b.tags_offset),
        dtb_addr: if b.header_version >= 2 { b.base + b.dtb_offset } else { 0 },
        os_version,
        board: b.board.clone(),
        cmdline: cmdline(profile),
    };
    let mut boot_inputs = inputs(&[("kernel", &sys.kernel), ("initrd", &sys.initrd)]);
    if let Some(dtb) = &sys.dtb {
        boot_inputs.insert("dtb".into(), dtb.clone());
    }
    let dtb = b.dtb.as_ref().map(|d| DtbPlan { mode: d.mode, files: d.files.clone() });
    plan.add(Recipe {
        name: ImageName::Boot.file_name().into(),
        builder: Builder::BootImage { header, kernel_compression: b.kernel_compression, dtb },
        inputs: boot_inputs,
    })
}

/// Adds the profile's vbmeta image, if it has one.
pub fn vbmeta(plan: &mut Plan, profile: &Profile) -> Option<StorePath> {
    profile.device.vbmeta.as_ref().map(|v| {
        plan.add(Recipe {
            name: ImageName::Vbmeta.file_name().into(),
            builder: Builder::Vbmeta { flags: v.flags },
            inputs: BTreeMap::new(),
        })
    })
}

/// Adds the system image carrying `generations` (their toplevels, built or already in the
/// store) and starting with the boot-state record `state`.
pub fn system_image(
    plan: &mut Plan,
    profile: &Profile,
    generations: &BTreeMap<u32, StorePath>,
    state: &crate::format::bootstate::Record,
    inp: &Inputs,
) -> Result<StorePath> {
    let d = &profile.device;
    let gen_inputs: BTreeMap<String, StorePath> =
        generations.iter().map(|(n, p)| (format!("gen-{n}"), p.clone())).collect();
    for p in generations.values() {
        if plan.get(p).is_none() {
            plan.existing.insert(p.clone());
        }
    }
    let (mke2fs, mkfs_erofs) = match d.system.filesystem {
        Filesystem::Ext4 => (inp.mke2fs_version.clone(), None),
        Filesystem::Erofs => (
            String::new(),
            Some(
                inp.mkfs_erofs_version
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("the erofs tools' version was not gathered"))?,
            ),
        ),
    };
    Ok(plan.add(Recipe {
        name: ImageName::System.file_name().into(),
        builder: Builder::SystemImage {
            size: d.system_image_size(),
            filesystem: d.system.filesystem,
            mke2fs,
            mkfs_erofs,
            generations: generations.clone(),
            state: state.clone(),
        },
        inputs: gen_inputs,
    }))
}
