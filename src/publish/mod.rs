//! Images: what a build hands to the user, in `out/<device>/`.
//!
//! Pipeline stage: image. Input: the realised boot and system image store paths and the
//! generation they carry; output: links in the out directory to the images in the store,
//! `manifest.json` (device, generation, toplevel, sha256 of each image) and
//! `flash-plan.json` (which image goes to which partition). Writes only the out directory,
//! atomically.

use crate::build::images::read_sums;
use crate::hash::Sha256Digest;
use crate::plan::ImageName;
use crate::profile::Profile;
use crate::store::{Store, StorePath};
use crate::util;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageInfo {
    pub sha256: Sha256Digest,
    pub size: u64,
    pub store_path: StorePath,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub device: String,
    #[serde(default)]
    pub variant: Option<String>,
    pub generation: u32,
    pub toplevel: StorePath,
    /// Image file name (as in the out directory) to its digest and origin.
    pub images: BTreeMap<String, ImageInfo>,
    /// The system config the build used, so that `mobix test` and `run` load the profile as
    /// the build did (and refuse another one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigUsed>,
}

/// A system config file as a build read it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigUsed {
    pub path: PathBuf,
    pub sha256: Sha256Digest,
}

impl ConfigUsed {
    /// `path` as it is now (its absolute path and content hash).
    pub fn of(path: &Path) -> Result<ConfigUsed> {
        let abs = path.canonicalize().map_err(|e| util::user_error(e, format!("reading {}", path.display())))?;
        let sha256 =
            crate::hash::sha256_file(&abs).map_err(|e| util::user_error(e, format!("reading {}", abs.display())))?;
        Ok(ConfigUsed { path: abs, sha256 })
    }
}

pub const FLASH_PLAN: &str = "flash-plan.json";

/// One step of flashing a build onto its phone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Step {
    /// Erase a partition (full name, slot suffix included).
    Erase { partition: String },
    /// Write an image of the out directory to a partition. `slotted`: the partition exists
    /// per slot, and the image goes to the slot being flashed.
    Flash { partition: String, slotted: bool, image: String },
}

/// Which image goes to which partition, in order: `flash-plan.json` of a build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlashPlan {
    pub version: u32,
    pub device: String,
    /// fastboot `getvar:product` values this plan is for.
    pub products: Vec<String>,
    /// Whether the phone has A/B slots (boot is slotted).
    pub ab: bool,
    pub steps: Vec<Step>,
    /// Where the system partition also holds the persistent state (the store on userdata):
    /// the byte the state starts at. Flashing writes only the system image before it, so
    /// a phone flashed again keeps its /home and /var.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_after: Option<u64>,
}

/// The flash plan of a profile: erase steps, then boot (and vendor_boot for header versions
/// 3 and 4), vbmeta, and the system partition.
pub fn flash_plan(profile: &Profile, has_vbmeta: bool) -> FlashPlan {
    let d = &profile.device;
    let slotted = |name: &str| d.partition(name).is_some_and(|p| p.slotted);
    let mut steps: Vec<Step> =
        d.flash.iter().flat_map(|f| f.erase.iter()).map(|p| Step::Erase { partition: p.to_string() }).collect();
    steps.push(Step::Flash {
        partition: "boot".into(),
        slotted: slotted("boot"),
        image: ImageName::Boot.file_name().into(),
    });
    if d.bootimg.header_version >= 3 {
        steps.push(Step::Flash {
            partition: "vendor_boot".into(),
            slotted: slotted("vendor_boot"),
            image: ImageName::VendorBoot.file_name().into(),
        });
    }
    if let (true, Some(v)) = (has_vbmeta, &d.vbmeta) {
        steps.push(Step::Flash {
            partition: v.partition.to_string(),
            slotted: slotted(&v.partition),
            image: ImageName::Vbmeta.file_name().into(),
        });
    }
    steps.push(Step::Flash {
        partition: d.system.partition.to_string(),
        slotted: slotted(&d.system.partition),
        image: ImageName::System.file_name().into(),
    });
    FlashPlan {
        version: 1,
        device: profile.codename.to_string(),
        products: d.identity.fastboot_products.clone(),
        ab: d.is_ab(),
        steps,
        state_after: (profile.system.init == crate::profile::Init::Systemd && d.persistent_state_start() > 0)
            .then(|| d.persistent_state_start()),
    }
}

/// The files that let people with only the stock tools flash a build: `android-info.txt`
/// (the product requirement `fastboot flashall`/`update` check), `fastboot-info.txt` (the
/// flashing manifest of newer fastboot clients) and `flash.sh` (the flash plan with the
/// stock client: the inactive slot, `--set-active` only after every write).
pub fn stock_tool_files(plan: &FlashPlan, generation: u32) -> Vec<(&'static str, String)> {
    let products = plan.products.join("|");
    let android_info = format!("require board={products}\n");
    let mut info = String::from("version 1\n");
    let mut sh = format!(
        "#!/bin/sh\n\
         # Flashes generation {generation} of {device} with the stock fastboot client, as `mobix flash`\n\
         # does{ab}.\n\
         # Usage: ./flash.sh [-s SERIAL]   (FASTBOOT=path overrides the client)\n\
         set -eu\n\
         cd \"$(dirname \"$0\")\"\n\
         fb() {{ \"${{FASTBOOT:-fastboot}}\" \"$@\"; }}\n\
         product=$(fb \"$@\" getvar product 2>&1 | sed -n 's/^product: *//p' | head -n 1)\n\
         case \"$product\" in\n  {case}) ;;\n  \
         *) echo \"flash.sh: the device is '$product', this build is for {device} ({products})\" >&2; exit 1 ;;\n\
         esac\n",
        device = plan.device,
        ab = if plan.ab { ": the inactive slot, made active only after every image is written" } else { "" },
        case = plan.products.join("|"),
    );
    if plan.ab {
        sh.push_str(
            "current=$(fb \"$@\" getvar current-slot 2>&1 | sed -n 's/^current-slot: *_\\{0,1\\}//p' | head -n 1)\n\
             case \"$current\" in\n  a) slot=b ;;\n  b) slot=a ;;\n  \
             *) echo \"flash.sh: cannot read the current slot ('$current')\" >&2; exit 1 ;;\nesac\n\
             echo \"flash.sh: the phone runs slot $current; writing slot $slot\"\n",
        );
    }
    for step in &plan.steps {
        match step {
            Step::Erase { partition } => {
                info.push_str(&format!("erase {partition}\n"));
                sh.push_str(&format!("fb \"$@\" erase {partition}\n"));
            }
            Step::Flash { partition, slotted, image } => {
                let vbmeta = if image == ImageName::Vbmeta.file_name() { "--apply-vbmeta " } else { "" };
                info.push_str(&format!("flash {vbmeta}{partition} {image}\n"));
                let target = if *slotted { format!("{partition}_$slot") } else { partition.clone() };
                sh.push_str(&format!("fb \"$@\" flash {target} {image}\n"));
            }
        }
    }
    if plan.ab {
        sh.push_str("fb \"$@\" --set-active=\"$slot\"\necho \"flash.sh: done; slot $slot is active (reboot: fastboot reboot)\"\n");
    } else {
        sh.push_str("echo \"flash.sh: done (reboot: fastboot reboot)\"\n");
    }
    vec![("android-info.txt", android_info), ("fastboot-info.txt", info), ("flash.sh", sh)]
}

/// Links the images into `out`, writes the manifest and the flash plan. Returns the manifest.
pub fn publish(
    store: &Store,
    out: &Path,
    profile: &Profile,
    generation: u32,
    toplevel: &StorePath,
    image_paths: &[StorePath],
) -> Result<Manifest> {
    std::fs::create_dir_all(out)
        .map_err(|e| util::user_error(e, format!("creating the out directory {}", out.display())))?;
    let old = load_manifest(out).ok();
    let mut images = BTreeMap::new();
    for sp in image_paths {
        let dir = store.host_path(sp);
        for (name, digest) in read_sums(&dir)? {
            let file = dir.join(&name);
            let size = std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?.len();
            util::symlink_atomic(&file, &out.join(&name))?;
            images.insert(name, ImageInfo { sha256: digest, size, store_path: (*sp).clone() });
        }
    }
    // A link an earlier build made to an image this one does not have (system.ext4 before
    // the store kept only the sparse image) would show another generation: drop it.
    for name in old.iter().flat_map(|m| m.images.keys()).filter(|n| !images.contains_key(*n)) {
        let p = out.join(name);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    // The out directory keeps what it links to alive (`mobix gc`).
    store.register_out(out)?;
    let plan = flash_plan(profile, images.contains_key(ImageName::Vbmeta.file_name()));
    util::write_atomic(&out.join(FLASH_PLAN), (serde_json::to_string_pretty(&plan)? + "\n").as_bytes())?;
    for (name, text) in stock_tool_files(&plan, generation) {
        let path = out.join(name);
        util::write_atomic(&path, text.as_bytes())?;
        if name.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", path.display()))?;
        }
    }
    let m = Manifest {
        version: 1,
        device: profile.codename.to_string(),
        variant: profile.variant.clone(),
        generation,
        toplevel: toplevel.clone(),
        images,
        config: profile.config.as_deref().map(ConfigUsed::of).transpose()?,
    };
    util::write_atomic(&out.join(MANIFEST), (serde_json::to_string_pretty(&m)? + "\n").as_bytes())?;
    Ok(m)
}

/// Copies the build in `out` to `dest` as real files (the out directory links into the
/// store, so a copy of it elsewhere would hold dangling links): the images, each checked
/// against the manifest after the copy, every other file the build wrote there (flash
/// plan, stock-tool files), and the manifest last. Each file is written atomically;
/// directories (`vm/`, `phone/`) and hidden files stay behind. Returns the bytes copied.
pub fn export(store: &Store, out: &Path, dest: &Path) -> Result<u64> {
    let m = load_manifest(out)?;
    let same = |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
    if same(out, dest) {
        return Err(util::Fail::new(format!("--export {}: that is the out directory itself", dest.display()))
            .hint("export to another directory")
            .into());
    }
    std::fs::create_dir_all(dest)
        .map_err(|e| util::user_error(e, format!("creating the export directory {}", dest.display())))?;
    let mut bytes = 0;
    for name in m.images.keys() {
        bytes += util::copy_atomic(&image_file_linked(store, out, &m, name)?, &dest.join(name), 0o644)?;
        image_file(dest, &m, name).context("checking the exported copy")?;
    }
    let mut others: Vec<String> = std::fs::read_dir(out)
        .with_context(|| format!("reading {}", out.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && n != MANIFEST && !m.images.contains_key(n) && out.join(n).is_file())
        .collect();
    others.sort();
    for name in others.iter().map(String::as_str).chain([MANIFEST]) {
        let from = out.join(name);
        let executable = std::fs::metadata(&from).is_ok_and(|md| {
            use std::os::unix::fs::PermissionsExt;
            md.permissions().mode() & 0o111 != 0
        });
        bytes += util::copy_atomic(&from, &dest.join(name), if executable { 0o755 } else { 0o644 })?;
    }
    Ok(bytes)
}

/// Reads the manifest of the last build in `out`.
pub fn load_manifest(out: &Path) -> Result<Manifest> {
    load_manifest_hinting(out, &format!("build into it first: `mobix build --device <name> --out {}`", out.display()))
}

fn load_manifest_hinting(out: &Path, hint: &str) -> Result<Manifest> {
    let f = out.join(MANIFEST);
    let text = std::fs::read_to_string(&f).map_err(|e| {
        anyhow::Error::new(e).context(
            util::Fail::new(format!("no build found in {} (reading {})", out.display(), f.display())).hint(hint),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| util::user_error(e, format!("parsing {}", f.display())))
}

/// Reads the manifest of the last build in `out`, refusing one made for another device or
/// variant than `profile`.
pub fn load_manifest_for(profile: &Profile, out: &Path) -> Result<Manifest> {
    // The command that builds into `out`: `--out` only where it is not the default one.
    let default = match (&profile.variant, profile.variant_chosen) {
        (Some(v), true) => format!("{}-{v}", profile.codename),
        _ => profile.codename.to_string(),
    };
    let out_arg =
        if out.ends_with(Path::new("out").join(default)) { String::new() } else { format!(" --out {}", out.display()) };
    let m = load_manifest_hinting(out, &format!("run `mobix build {}{out_arg}` first", profile.selection_args()))?;
    if m.device != profile.codename.as_str() || m.variant != profile.variant {
        return Err(util::Fail::new(format!(
            "{} holds a build for {}, not {}",
            out.display(),
            m.device,
            profile.shown()
        ))
        .hint("pass the --device and --variant it was built with, or another --out")
        .into());
    }
    Ok(m)
}

/// The path of an image of the manifest, cheaply: when the out directory's entry is the
/// link a build made into the store path the manifest names, the store's content (named
/// by its recipe, written once, read-only) is trusted without hashing; anything else is
/// hashed as [`image_file`] does.
pub fn image_file_linked(store: &crate::store::Store, out: &Path, m: &Manifest, name: &str) -> Result<PathBuf> {
    let info = m.images.get(name).with_context(|| format!("the build in {} has no {name}", out.display()))?;
    let p = out.join(name);
    let want = store.host_path(&info.store_path).join(name);
    if std::fs::read_link(&p).is_ok_and(|t| t == want) && want.is_file() {
        return Ok(want);
    }
    image_file(out, m, name)
}

/// The path of an image of the manifest, checked against its recorded digest.
pub fn image_file(out: &Path, m: &Manifest, name: &str) -> Result<PathBuf> {
    let info = m.images.get(name).with_context(|| format!("the build in {} has no {name}", out.display()))?;
    let p = out.join(name);
    let got = crate::hash::sha256_file(&p).map_err(|e| util::user_error(e, format!("reading {}", p.display())))?;
    if got != info.sha256 {
        return Err(util::Fail::new(format!(
            "{} does not match manifest.json (sha256 {} expected, {} found)",
            p.display(),
            info.sha256,
            got
        ))
        .hint("rebuild with `mobix build`")
        .into());
    }
    Ok(p)
}
