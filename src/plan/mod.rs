//! Recipes and their hashes: what to build, named before it is built.
//!
//! Pipeline stage: plan (pure). Input: a [`Profile`], the pins of `mobix.lock`, and facts
//! gathered beforehand ([`Inputs`]: source tree hashes, host tool versions). Output: a
//! [`Plan`], recipes in dependency order, each with the store path its hash names. Nothing
//! here reads files or runs programs.
//!
//! A recipe's hash covers its name, its builder with every parameter, the builder's
//! version, and the store paths of its inputs; change any of them and the path changes.

use crate::hash::Sha256Digest;
use crate::lock::{DebPin, Lock};
use crate::profile::{Compression, DtbMode, DtbSource, Filesystem, Init, Profile, QemuDisk};
use crate::store::StorePath;
use crate::util::Fail;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

mod caches;
mod crypt;
mod debs;
pub mod etc;
mod images;
pub mod kconfig;

use crypt::*;
use debs::*;
pub use images::*;

/// What a recipe's builder does, with every parameter that shapes its output.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Builder {
    /// An arm64 Debian package: fetched with apt-get, checked against its pin, unpacked.
    Deb { pin: DebPin },
    /// Debian packages that depend on each other in a cycle (libc6 and libgcc-s1), which
    /// no order of separate store paths can hold: unpacked together into one.
    DebGroup { pins: Vec<DebPin> },
    /// A kernel configuration assembled from a source tree (input `source`): the base
    /// target, the fragments in order, then the options mobix needs; `olddefconfig`; and a
    /// report of every asked-for option that did not survive.
    KernelConfig { arch: String, base: String, fragments: Vec<(String, String)>, required: String, cross: String },
    /// A kernel cross-compiled from source (inputs `source`, `config`), laid out as Debian's
    /// kernel packages are (boot/vmlinuz-*, lib/modules/*, usr/lib/linux-image-*/).
    KernelBuild { arch: String, cross: String },
    /// A Debian source package's files (`apt-get source --download-only`), each checked
    /// against its pin.
    DebSource { pin: crate::lock::SourcePin },
    /// U-Boot from a Debian source package (input `source`): Debian's patches, the board's
    /// defconfig, the fragments in order; `u-boot.bin` and its config.
    UBoot { defconfig: String, fragments: Vec<(String, String)>, cross: String },
    /// A kernel the user supplies (`kernel.prebuilt`), laid out as Debian's kernel packages
    /// are: its `Image` (unpacked if gzip-compressed), no modules, its device trees. Named
    /// by the files' hashes; the paths are not hashed.
    KernelPrebuilt {
        image_sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dtbs_sha256: Option<String>,
        #[serde(skip)]
        image: PathBuf,
        #[serde(skip)]
        dtbs: Option<PathBuf>,
    },
    /// The kernel `Image` and its config, from an unpacked kernel package (input `deb`).
    Kernel,
    /// The kernel's module tree with a fresh `modules.dep` (input `deb`): with `only`, just
    /// those modules and what they depend on.
    KernelModules { only: Option<Vec<String>> },
    /// The software tree: busybox (input `busybox`) as `bin/busybox` and `bin/sh`; the
    /// files of each package input (`pkg-NN`) as links into it, `usr/` merged into the top
    /// (a path two packages hold differently is refused); the overlays' files on top.
    Sw,
    /// GSettings' compiled schemas (`share/glib-2.0/schemas/gschemas.compiled`), as Debian's
    /// libglib2.0-0 trigger makes them when a package adds a schema: the `*.gschema.xml`,
    /// `*.enums.xml` and `*.gschema.override` files of the package inputs (`pkg-NN`) and overlays
    /// (`overlay-NN`), compiled with the host's `glib-compile-schemas` (its version here: the
    /// format does not depend on the architecture). Linked into the software tree, which
    /// takes it as input `cache-glib-schemas`.
    GlibSchemas { compiler: String },
    /// GdkPixbuf's loader cache (`lib/aarch64-linux-gnu/gdk-pixbuf-2.0/2.10.0/loaders.cache`),
    /// as Debian's libgdk-pixbuf-2.0-0 trigger makes it: the packages' own
    /// `gdk-pixbuf-query-loaders` asks each loader module of the package inputs (`pkg-NN`)
    /// and overlays what it reads. Those are arm64 programs, run on the host by QEMU's user
    /// mode (`emulator`, its version here). Linked into the software tree as input
    /// `cache-gdk-pixbuf`.
    PixbufLoaders { emulator: String },
    /// The shared MIME database (`share/mime/mime.cache` and its text forms), as Debian's
    /// shared-mime-info trigger makes it: the `share/mime/packages/*.xml` of the package
    /// inputs (`pkg-NN`) and overlays, by the host's `update-mime-database` (`tool`, its
    /// version: the database does not depend on the architecture). GLib guesses file types
    /// with it, and GdkPixbuf picks an image's loader by that guess. Linked into the
    /// software tree as input `cache-mime`.
    MimeDatabase { tool: String },
    /// Firmware files, each checked against its pin, under `lib/firmware` (from input
    /// `package`, or from `directory`, which is not hashed: the files' pins are).
    Firmware {
        files: Vec<FirmwareFile>,
        #[serde(skip)]
        directory: Option<PathBuf>,
    },
    /// A C program from a Debian source package (input `source`, Debian's patches
    /// applied), built by `make` with `aarch64-linux-gnu-gcc`, statically linked; the
    /// `install` files (output path to path in the tree), ELF files stripped.
    Cc {
        make: Vec<String>,
        cflags: Vec<String>,
        install: BTreeMap<String, String>,
        /// `aarch64-linux-gnu-gcc --version`: a compiler change is an input change.
        cross: String,
    },
    /// The registry crates a Rust crate of this repository depends on (`cargo vendor
    /// --locked`), named by its Cargo.lock, so that compiling it needs no network.
    CargoVendor {
        dir: String,
        lock_sha256: String,
        #[serde(skip)]
        source_dir: PathBuf,
    },
    /// A Rust crate from this repository, cross-compiled and statically linked, offline
    /// from its vendored crates (input `vendor`).
    Cargo {
        /// Crate directory, relative to the repository.
        dir: String,
        binary: String,
        target: String,
        /// `rustc -vV` of the host: a compiler change is an input change.
        rustc: String,
        source_sha256: String,
        #[serde(skip)]
        source_dir: PathBuf,
    },
    /// Files of `/etc`: the `etc/` of each package input (`pkg-NN`, in order: Debian's
    /// configuration files), the files and links generated from the configuration, then
    /// the `etc/` of each overlay input (`overlay-NN`, in order) merged on top. Without
    /// inputs, a small tree of generated files and links (the links Debian's maintainer
    /// scripts would have made for a phone UI, linked into the software tree).
    Etc {
        files: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        links: BTreeMap<String, String>,
    },
    /// An overlay's file tree (`overlays/<name>/files/`), named by its content.
    Overlay {
        name: String,
        source_sha256: String,
        #[serde(skip)]
        source_dir: PathBuf,
    },
    /// The stage-1 initramfs (inputs `init`, `modules`, and `firmware` for the files of
    /// `firmware`, paths under lib/firmware that stage-1 needs).
    Initramfs {
        modules: Vec<String>,
        compression: Compression,
        config: Box<Stage1Config>,
        firmware: Vec<String>,
        /// `stage1.screen_modules` (left out of the hash when empty, as before it existed).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        screen_modules: Vec<String>,
        /// Programs of the package inputs (`pkg-<name>`) copied in with the libraries they
        /// load (`sbin/cryptsetup` for an encrypted state); left out of the hash when empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        programs: Vec<String>,
        /// The modules an encrypted state needs (device-mapper's crypt target and the
        /// ciphers), loaded by stage-1 before it opens the state, each one that fails to
        /// load (a CPU without its instructions) passed over.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        crypt_modules: Vec<String>,
    },
    /// A generation's toplevel (inputs `kernel`, `initrd`, `init`, `sw`, `etc`, `modules`).
    Toplevel { cmdline: String, label: String },
    /// The device tree QEMU builds for its machine model, dumped (deterministically).
    QemuDtb { qemu: String, machine: String, cpu: String, memory_mib: u32, smp: u32, disk: QemuDisk },
    /// boot.img (inputs `kernel`, `initrd`, optional `dtb`).
    BootImage { header: BootHeader, kernel_compression: Compression, dtb: Option<DtbPlan> },
    /// The minimal top-level vbmeta with verity and/or verification disabled.
    Vbmeta { flags: u32 },
    /// The system partition (ext4 + Android sparse), holding the closure of the listed
    /// generations (inputs `gen-<n>`).
    /// The last 64 KiB hold the boot-state record `state`, twice.
    SystemImage {
        size: u64,
        filesystem: Filesystem,
        /// `mke2fs -V` for ext4 (empty for erofs).
        mke2fs: String,
        /// `fsck.erofs -V` (erofs-utils) for erofs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mkfs_erofs: Option<String>,
        generations: BTreeMap<u32, StorePath>,
        state: crate::format::bootstate::Record,
    },
}

/// One pinned firmware file of a [`Builder::Firmware`] recipe. Hashed as the
/// `[path, sha256, stage1]` triple it has always been, so store paths stay put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareFile {
    /// Path under `lib/firmware`.
    pub path: String,
    /// Lowercase hex, validated by the profile.
    pub sha256: String,
    /// Whether stage-1 needs it.
    pub stage1: bool,
}

impl Serialize for FirmwareFile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.path, &self.sha256, self.stage1).serialize(s)
    }
}

impl Builder {
    /// Bumped whenever a builder's output for the same parameters changes.
    pub fn version(&self) -> u32 {
        match self {
            Builder::Deb { .. } => 2,
            Builder::DebGroup { .. } => 2,
            Builder::KernelConfig { .. } => 1,
            Builder::KernelBuild { .. } => 1,
            Builder::DebSource { .. } => 1,
            Builder::UBoot { .. } => 1,
            Builder::KernelPrebuilt { .. } => 2,
            Builder::Kernel => 2,
            Builder::KernelModules { .. } => 1,
            Builder::Sw => 2,
            Builder::GlibSchemas { .. } => 1,
            Builder::PixbufLoaders { .. } => 1,
            Builder::MimeDatabase { .. } => 1,
            Builder::Firmware { .. } => 1,
            Builder::Cc { .. } => 1,
            Builder::CargoVendor { .. } => 1,
            Builder::Cargo { .. } => 2,
            Builder::Etc { .. } => 2,
            Builder::Overlay { .. } => 1,
            Builder::Initramfs { .. } => 4,
            Builder::Toplevel { .. } => 1,
            Builder::QemuDtb { .. } => 2,
            Builder::BootImage { .. } => 2,
            Builder::Vbmeta { .. } => 1,
            Builder::SystemImage { .. } => 3,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Builder::Deb { .. } => "deb",
            Builder::DebGroup { .. } => "deb-group",
            Builder::KernelConfig { .. } => "kernel-config",
            Builder::KernelBuild { .. } => "kernel-build",
            Builder::DebSource { .. } => "deb-source",
            Builder::UBoot { .. } => "u-boot",
            Builder::KernelPrebuilt { .. } => "kernel-prebuilt",
            Builder::Kernel => "kernel",
            Builder::KernelModules { .. } => "kernel-modules",
            Builder::Sw => "sw",
            Builder::GlibSchemas { .. } => "glib-schemas",
            Builder::PixbufLoaders { .. } => "gdk-pixbuf-loaders",
            Builder::MimeDatabase { .. } => "mime-database",
            Builder::Firmware { .. } => "firmware",
            Builder::Cc { .. } => "cc",
            Builder::CargoVendor { .. } => "cargo-vendor",
            Builder::Cargo { .. } => "cargo",
            Builder::Etc { .. } => "etc",
            Builder::Overlay { .. } => "overlay",
            Builder::Initramfs { .. } => "initramfs",
            Builder::Toplevel { .. } => "toplevel",
            Builder::QemuDtb { .. } => "qemu-dtb",
            Builder::BootImage { .. } => "boot-image",
            Builder::Vbmeta { .. } => "vbmeta",
            Builder::SystemImage { .. } => "system-image",
        }
    }
}

/// What stage-1 needs to know (the phone contract: `etc/mobix/stage1.json`).
pub use mobix_bootctl::contract::Stage1Config;

/// Where boot.img's device tree comes from and where it goes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DtbPlan {
    pub mode: DtbMode,
    /// Paths under the kernel's `dtbs/`; empty when the dtb is the `dtb` input (QEMU's).
    pub files: Vec<String>,
}

/// boot.img header parameters, resolved from the profile.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BootHeader {
    pub header_version: u32,
    pub page_size: u32,
    pub kernel_addr: u32,
    pub ramdisk_addr: u32,
    pub second_addr: u32,
    pub tags_addr: u32,
    pub dtb_addr: u64,
    pub os_version: u32,
    pub board: String,
    pub cmdline: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recipe {
    pub name: String,
    pub builder: Builder,
    /// Named inputs: what the builder reads, by store path.
    pub inputs: BTreeMap<String, StorePath>,
}

impl Recipe {
    /// The store path this recipe builds: its hash is that of the canonical JSON of
    /// name, builder (with parameters), builder version and inputs.
    pub fn store_path(&self) -> StorePath {
        #[derive(Serialize)]
        struct Hashed<'a> {
            name: &'a str,
            builder: &'a Builder,
            builder_version: u32,
            inputs: &'a BTreeMap<String, StorePath>,
        }
        let json = serde_json::to_vec(&Hashed {
            name: &self.name,
            builder: &self.builder,
            builder_version: self.builder.version(),
            inputs: &self.inputs,
        })
        .expect("recipes serialise");
        StorePath::new(Sha256Digest::of(&json).store_hash(), &self.name).expect("recipe names are valid store names")
    }
}

/// A recipe with its output path.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub path: StorePath,
    #[serde(flatten)]
    pub recipe: Recipe,
}

/// Recipes in dependency order (every input before its user).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub recipes: Vec<Planned>,
    /// Paths used as inputs that this plan does not build: they must be in the store
    /// already (the toplevels of older generations a system image carries).
    pub existing: BTreeSet<StorePath>,
}

impl Plan {
    /// Adds a recipe (once) and returns its path. Inputs must already be in the plan.
    pub fn add(&mut self, recipe: Recipe) -> StorePath {
        for (k, p) in &recipe.inputs {
            assert!(
                self.get(p).is_some() || self.existing.contains(p),
                "input {k} of {} added before its recipe",
                recipe.name
            );
        }
        let path = recipe.store_path();
        if self.get(&path).is_none() {
            self.recipes.push(Planned { path: path.clone(), recipe });
        }
        path
    }

    pub fn get(&self, p: &StorePath) -> Option<&Planned> {
        self.recipes.iter().find(|r| &r.path == p)
    }

    /// Every path `p` was planned from (its inputs, transitively), `p` included: the
    /// candidates its output may refer to.
    pub fn input_closure(&self, p: &StorePath) -> BTreeSet<StorePath> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![p.clone()];
        while let Some(q) = todo.pop() {
            if seen.insert(q.clone()) {
                if let Some(r) = self.get(&q) {
                    todo.extend(r.recipe.inputs.values().cloned());
                }
            }
        }
        seen
    }

    /// Appends another plan's recipes that are not here yet.
    pub fn merge(&mut self, other: Plan) {
        self.existing.extend(other.existing);
        for r in other.recipes {
            if self.get(&r.path).is_none() {
                self.recipes.push(r);
            }
        }
    }
}

/// Where the kernel comes from when a profile names both a source and a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelFrom {
    /// Build the `kernels/` spec from source.
    #[default]
    Source,
    /// Use the prebuilt package the profile names as substitute.
    Substitute,
}

impl KernelFrom {
    /// What a build uses unless told: the prebuilt package where the profile names one (a
    /// newcomer should not compile a kernel for hours), else the source.
    pub fn default_for(profile: &Profile) -> KernelFrom {
        match profile.device.kernel.package {
            Some(_) => KernelFrom::Substitute,
            None => KernelFrom::Source,
        }
    }
}

/// Facts about the world the plan depends on, gathered before planning.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The system config's overlays: (name, hash of its files/ tree, directory).
    pub overlays: Vec<(String, Sha256Digest, PathBuf)>,
    pub kernel_from: KernelFrom,
    /// The profile's `kernels/` spec, read (when it has one).
    pub kernel_spec: Option<crate::profile::LoadedKernel>,
    /// `aarch64-linux-gnu-gcc --version`, when a kernel or a package is built from source.
    pub cross_gcc: Option<String>,
    /// `kernel.prebuilt`, resolved and hashed.
    pub prebuilt_kernel: Option<PrebuiltKernelFiles>,
    /// The `packages/` specs the system config names (the others are `debs` entries).
    pub packages: Vec<crate::profile::LoadedPackage>,
    pub repo: PathBuf,
    /// Hash of `init/` (sources and lock file).
    pub init_source: Sha256Digest,
    /// Hash of `init/Cargo.lock`: what names its vendored crates.
    pub init_lock: Sha256Digest,
    pub rustc_version: String,
    pub qemu_version: String,
    pub mke2fs_version: String,
    /// `fsck.erofs -V`, when erofs-utils is installed.
    pub mkfs_erofs_version: Option<String>,
    /// `glib-compile-schemas --version`, when the system has GLib (its packages' schemas are
    /// compiled at build time).
    pub glib_schemas_version: Option<String>,
    /// `qemu-aarch64-static --version`, when installed: it runs the packages' own arm64
    /// tools that make caches Debian's triggers would have made on the phone.
    pub aarch64_emulator_version: Option<String>,
    /// `update-mime-database -v`, when installed: it compiles the system's MIME database.
    pub mime_database_version: Option<String>,
}

/// The package whose image loaders are found through a cache made at build time.
pub const PIXBUF_PACKAGE: &str = "libgdk-pixbuf-2.0-0";

/// The files of a `kernel.prebuilt`, with their hashes (a directory's as the store hashes
/// trees).
#[derive(Debug, Clone)]
pub struct PrebuiltKernelFiles {
    pub image: PathBuf,
    pub image_sha256: Sha256Digest,
    pub dtbs: Option<(PathBuf, Sha256Digest)>,
}

pub const INIT_TARGET: &str = "aarch64-unknown-linux-musl";

/// The toplevel of a system and the recipes leading to it.
#[derive(Debug, Clone)]
pub struct SystemPlan {
    pub plan: Plan,
    /// Where the kernel comes from, for people.
    pub kernel_origin: String,
    pub toplevel: StorePath,
    pub kernel: StorePath,
    pub initrd: StorePath,
    pub dtb: Option<StorePath>,
    /// The kernel command line its boot image carries.
    pub cmdline: String,
}

impl SystemPlan {
    /// What this system's boot image boots, as its toplevel's `boot.json` will say (known
    /// before anything is built): the kernel file, the initramfs, the command line.
    pub fn boots(&self) -> (String, String, &str) {
        (format!("{}/Image", self.kernel.phone_path()), self.initrd.phone_path(), &self.cmdline)
    }
}

/// The modules stage-1 loads: the profile's, and the system filesystem's module when
/// stage-1 loads modules at all (a kernel with everything built in needs none).
fn stage1_modules(d: &crate::profile::Device) -> Vec<String> {
    let mut m = d.stage1.modules.clone();
    let fs = d.system.filesystem.name();
    if !m.is_empty() && !m.iter().any(|x| x == fs) {
        m.push(fs.to_string());
    }
    m
}

fn name_of(pin: &DebPin) -> String {
    // Store names allow no ':' (epochs): drop the epoch, keep the rest readable.
    format!("{}-{}", pin.package, without_epoch(&pin.version).replace('~', "_"))
}

fn inputs(pairs: &[(&str, &StorePath)]) -> BTreeMap<String, StorePath> {
    pairs.iter().map(|(k, v)| (k.to_string(), (*v).clone())).collect()
}

/// The boot command line of a profile (what goes into boot.img and boot.json): the
/// device's arguments, then the system config's.
pub fn cmdline(profile: &Profile) -> String {
    profile.device.cmdline.iter().chain(&profile.system.cmdline).cloned().collect::<Vec<_>>().join(" ")
}

/// Plans the software of a system, up to its toplevel.
pub fn system(profile: &Profile, lock: &Lock, inp: &Inputs) -> Result<SystemPlan> {
    let d = &profile.device;
    let mut plan = Plan::default();
    let (kpkg, kernel_origin) = kernel_package(profile, lock, inp, &mut plan)?;
    let kernel =
        plan.add(Recipe { name: "kernel".into(), builder: Builder::Kernel, inputs: inputs(&[("deb", &kpkg)]) });
    let modules = plan.add(Recipe {
        name: "kernel-modules".into(),
        builder: Builder::KernelModules {
            // Stage-1's modules come from this tree too: keep them whatever the list says.
            only: d.kernel.modules.as_ref().map(|m| {
                let mut all: Vec<String> =
                    m.iter().chain(&stage1_modules(d)).chain(&d.stage1.screen_modules).cloned().collect();
                // The state beside the store is reached through a loop device.
                if d.persistent_state_start() > 0 && profile.system.init == Init::Systemd {
                    all.push("loop".into());
                }
                if profile.system.state.encrypted() {
                    all.extend(crypt_modules(d, unlock_link(profile).as_ref()));
                }
                all.sort();
                all.dedup();
                all
            }),
        },
        inputs: inputs(&[("deb", &kpkg)]),
    });
    let bdeb = deb(&mut plan, lock, "busybox")?;
    let overlays: Vec<(String, StorePath)> = inp
        .overlays
        .iter()
        .enumerate()
        .map(|(i, (name, sha, dir))| {
            let p = plan.add(Recipe {
                name: format!("overlay-{name}"),
                builder: Builder::Overlay { name: name.clone(), source_sha256: sha.hex(), source_dir: dir.clone() },
                inputs: BTreeMap::new(),
            });
            (format!("overlay-{i:02}"), p)
        })
        .collect();
    let with_overlays = |mut m: BTreeMap<String, StorePath>| {
        m.extend(overlays.iter().cloned());
        m
    };
    let mut sw_inputs = with_overlays(inputs(&[("busybox", &bdeb)]));
    let pkgs: BTreeMap<String, StorePath> = packages(profile, lock, inp, &mut plan)?
        .into_iter()
        .enumerate()
        .map(|(i, p)| (format!("pkg-{i:02}"), p))
        .collect();
    sw_inputs.extend(pkgs.clone());
    // The indexes Debian's triggers and maintainer scripts would have made of the packages.
    sw_inputs.extend(caches::sw_caches(profile, lock, inp, &with_overlays(pkgs.clone()), &mut plan)?);
    let sw = plan.add(Recipe { name: "sw".into(), builder: Builder::Sw, inputs: sw_inputs });
    let vendor = plan.add(Recipe {
        name: "mobix-init-crates".into(),
        builder: Builder::CargoVendor {
            dir: "init".into(),
            lock_sha256: inp.init_lock.hex(),
            source_dir: inp.repo.join("init"),
        },
        inputs: BTreeMap::new(),
    });
    let init = plan.add(Recipe {
        name: "mobix-init".into(),
        builder: Builder::Cargo {
            dir: "init".into(),
            binary: "mobix-init".into(),
            target: INIT_TARGET.into(),
            rustc: inp.rustc_version.clone(),
            source_sha256: inp.init_source.hex(),
            source_dir: inp.repo.join("init"),
        },
        inputs: inputs(&[("vendor", &vendor)]),
    });
    let (files, links, etc_inputs) = match profile.system.init {
        Init::Minimal => {
            (etc::etc_files(profile, &etc::EtcPlan::default()), BTreeMap::new(), with_overlays(BTreeMap::new()))
        }
        Init::Systemd => {
            let gen = etc::systemd(profile, lock)?;
            let mut files = etc::etc_files(profile, &gen);
            files.extend(gen.files);
            (files, gen.links, with_overlays(pkgs.clone()))
        }
    };
    let etc = plan.add(Recipe { name: "etc".into(), builder: Builder::Etc { files, links }, inputs: etc_inputs });
    let firmware = match &d.firmware {
        Some(fw) => {
            let files = (fw.files.iter())
                .map(|f| FirmwareFile { path: f.path.clone(), sha256: f.sha256.clone(), stage1: f.stage1 })
                .collect();
            let mut fw_inputs = BTreeMap::new();
            let directory = match &fw.package {
                Some(name) => {
                    let p = deb(&mut plan, lock, name)?;
                    fw_inputs.insert("package".to_string(), p);
                    None
                }
                None => Some(profile.system.firmware_dir.clone().ok_or_else(|| {
                    crate::util::Fail::new(format!(
                        "{} lists firmware but no package; name the directory holding it",
                        profile.instance()
                    ))
                    .hint("set `firmware_dir: DIR` in the system config (--config FILE)")
                })?),
            };
            Some(plan.add(Recipe {
                name: "firmware".into(),
                builder: Builder::Firmware { files, directory },
                inputs: fw_inputs,
            }))
        }
        None => None,
    };
    let encrypted = profile.system.state.encrypted();
    let link = unlock_link(profile);
    // cryptsetup and what it loads, for stage-1 to open (or make) the encrypted state, and
    // dropbear for its remote unlock.
    let mut stage1_programs: Vec<String> = Vec::new();
    let mut stage1_packages: Vec<String> = Vec::new();
    if encrypted {
        stage1_programs.push(CRYPTSETUP_PROGRAM.into());
        stage1_packages.push(crate::profile::CRYPTSETUP_PACKAGE.into());
    }
    if link.is_some() {
        stage1_programs.extend(DROPBEAR_PROGRAMS.iter().map(|p| p.to_string()));
        stage1_packages.push(crate::profile::DROPBEAR_PACKAGE.into());
    }
    let crypt_packages =
        if stage1_packages.is_empty() { vec![] } else { debs::apt_packages(&mut plan, lock, &stage1_packages) };
    let initrd = plan.add(Recipe {
        name: "initrd".into(),
        builder: Builder::Initramfs {
            modules: stage1_modules(d),
            screen_modules: d.stage1.screen_modules.clone(),
            programs: stage1_programs,
            crypt_modules: if encrypted { crypt_modules(d, link.as_ref()) } else { vec![] },
            compression: d.stage1.compression,
            firmware: d
                .firmware
                .iter()
                .flat_map(|f| f.files.iter())
                .filter(|f| f.stage1)
                .map(|f| f.path.clone())
                .collect(),
            config: Box::new(Stage1Config {
                system_partition: d.system.partition.to_string(),
                filesystem: d.system.filesystem.name().into(),
                console: d.console.clone(),
                state_offset: d.state_offset(),
                kernel: format!("{}/Image", kernel.phone_path()),
                cmdline: cmdline(profile),
                menu_timeout_ms: profile.system.boot.menu_timeout_ms,
                menu_idle_s: profile.system.boot.menu_idle_timeout,
                menu_key: match d.stage1.menu_key {
                    crate::profile::MenuKey::VolumeDown => mobix_bootctl::contract::MenuKey::VolumeDown,
                    crate::profile::MenuKey::VolumeUp => mobix_bootctl::contract::MenuKey::VolumeUp,
                },
                device: d.name.clone(),
                usb_network: d.usb_network.as_ref().map(|u| mobix_bootctl::contract::UsbNetwork {
                    vendor_id: u.vendor_id,
                    product_id: u.product_id,
                    product: d.name.clone(),
                }),
                encryption: (encrypted.then_some(d.state.as_ref()).flatten()).map(|st| {
                    mobix_bootctl::contract::Encryption {
                        partition: st.partition.to_string(),
                        offset: d.persistent_state_start(),
                        kdf: profile.system.state.kdf.map(|k| mobix_bootctl::contract::KdfCost {
                            memory_kib: k.memory_kib,
                            iter_time_ms: k.iter_time_ms,
                        }),
                    }
                }),
                remote_unlock: link.map(|link| mobix_bootctl::contract::RemoteUnlock {
                    authorized_keys: profile
                        .system
                        .users
                        .get("root")
                        .map(|u| u.authorized_keys.clone())
                        .unwrap_or_default(),
                    link,
                    port: 22,
                }),
            }),
        },
        inputs: {
            let mut i = inputs(&[("init", &init), ("modules", &modules)]);
            for p in &crypt_packages {
                i.insert(format!("pkg-{}", p.name()), p.clone());
            }
            if let Some(fw) = &firmware {
                i.insert("firmware".into(), fw.clone());
            }
            i
        },
    });
    let toplevel = plan.add(Recipe {
        name: format!("mobix-system-{}", profile.codename),
        builder: Builder::Toplevel { cmdline: cmdline(profile), label: format!("mobix on {}", d.name) },
        inputs: {
            let mut i = inputs(&[
                ("kernel", &kernel),
                ("initrd", &initrd),
                ("init", &init),
                ("sw", &sw),
                ("etc", &etc),
                ("modules", &modules),
            ]);
            if let Some(fw) = &firmware {
                i.insert("firmware".into(), fw.clone());
            }
            i
        },
    });
    let dtb = match &d.bootimg.dtb {
        Some(spec) if spec.source == DtbSource::Qemu => {
            let q = d.qemu.as_ref().expect("validated: qemu dtb needs a qemu section");
            Some(plan.add(Recipe {
                name: format!("{}-dtb", profile.codename),
                builder: Builder::QemuDtb {
                    qemu: inp.qemu_version.clone(),
                    machine: q.machine.clone(),
                    cpu: q.cpu.clone(),
                    memory_mib: q.memory_mib,
                    smp: q.smp,
                    disk: q.disk,
                },
                inputs: BTreeMap::new(),
            }))
        }
        _ => None,
    };
    Ok(SystemPlan { plan, kernel_origin, toplevel, kernel, initrd, dtb, cmdline: cmdline(profile) })
}

/// The options mobix itself needs from a kernel it builds: devtmpfs (stage-1 mounts it),
/// an initramfs in the profile's compression, proc/sys/tmpfs, ELF binaries and futexes
/// (the Rust init), GPT partition names (stage-1 finds the system partition by name), the
/// system filesystem, and module loading when stage-1 loads modules.
pub fn required_options(profile: &Profile) -> kconfig::Config {
    let d = &profile.device;
    let mut c = kconfig::Config::new();
    for o in ["DEVTMPFS", "BLK_DEV_INITRD", "PROC_FS", "SYSFS", "TMPFS", "SHMEM", "BINFMT_ELF", "FUTEX", "MULTIUSER"] {
        c.insert(o.into(), "y".into());
    }
    for o in ["BLOCK", "PARTITION_ADVANCED", "EFI_PARTITION", "PRINTK", "TTY"] {
        c.insert(o.into(), "y".into());
    }
    let rd = match d.stage1.compression {
        Compression::Gzip => Some("RD_GZIP"),
        Compression::Lz4 => Some("RD_LZ4"),
        Compression::Xz => Some("RD_XZ"),
        Compression::Zstd => Some("RD_ZSTD"),
        Compression::None => None,
    };
    if let Some(rd) = rd {
        c.insert(rd.into(), "y".into());
    }
    // Built in unless stage-1 loads it as a module (which it does whenever it loads any).
    let fs = d.system.filesystem;
    let loads_fs = stage1_modules(d).iter().any(|m| m == fs.name());
    c.insert(fs.kernel_option().into(), if loads_fs { "m".into() } else { "y".into() });
    if !d.stage1.modules.is_empty() {
        c.insert("MODULES".into(), "y".into());
    }
    c
}

/// Plans the kernel package the system uses: a pinned Debian package, or a kernel built
/// from its `kernels/` spec. Returns its path and, for people, where it comes from.
fn kernel_package(profile: &Profile, lock: &Lock, inp: &Inputs, plan: &mut Plan) -> Result<(StorePath, String)> {
    let k = &profile.device.kernel;
    if k.prebuilt.is_some() {
        let files =
            inp.prebuilt_kernel.as_ref().ok_or_else(|| anyhow::anyhow!("the prebuilt kernel was not hashed"))?;
        let p = plan.add(Recipe {
            name: "kernel-prebuilt".into(),
            builder: Builder::KernelPrebuilt {
                image_sha256: files.image_sha256.hex(),
                dtbs_sha256: files.dtbs.as_ref().map(|(_, h)| h.hex()),
                image: files.image.clone(),
                dtbs: files.dtbs.as_ref().map(|(d, _)| d.clone()),
            },
            inputs: BTreeMap::new(),
        });
        let mut origin = format!("prebuilt Image {} (sha256 {})", files.image.display(), files.image_sha256.hex());
        if let Some((d, _)) = &files.dtbs {
            origin.push_str(&format!(", device trees from {}", d.display()));
        }
        return Ok((p, origin));
    }
    let use_source = match (&k.source, &k.package, inp.kernel_from) {
        (Some(_), _, KernelFrom::Source) | (Some(_), None, _) => true,
        (_, Some(_), _) => false,
        (None, None, _) => anyhow::bail!("validated: a kernel is named"),
    };
    if !use_source {
        let name = k.package.as_ref().expect("checked above");
        let pin = lock.deb(name)?.clone();
        let mut origin = format!("prebuilt package {} {}", pin.package, pin.version);
        if let Some(src) = &k.source {
            origin.push_str(&format!(
                " (`--kernel-from source` compiles kernels/{src} instead: hours on a machine of a few cores)"
            ));
        }
        return Ok((deb(plan, lock, name)?, origin));
    }
    let spec = inp.kernel_spec.as_ref().ok_or_else(|| anyhow::anyhow!("the kernel spec was not loaded"))?;
    let cross = inp.cross_gcc.clone().ok_or_else(|| anyhow::anyhow!("the cross compiler version was not gathered"))?;
    let pin = lock.deb(&spec.spec.source)?.clone();
    let src = deb(plan, lock, &spec.spec.source)?;
    let config = plan.add(Recipe {
        name: format!("kernel-config-{}", spec.name),
        builder: Builder::KernelConfig {
            arch: "arm64".into(),
            base: spec.spec.base.clone(),
            fragments: spec.fragments.clone(),
            required: kconfig::render(&required_options(profile)),
            cross: cross.clone(),
        },
        inputs: inputs(&[("source", &src)]),
    });
    let build = plan.add(Recipe {
        name: format!("kernel-build-{}", spec.name),
        builder: Builder::KernelBuild { arch: "arm64".into(), cross },
        inputs: inputs(&[("source", &src), ("config", &config)]),
    });
    let mut origin = format!("built from source: kernels/{} ({} {})", spec.name, pin.package, pin.version);
    if let Some(p) = &k.package {
        origin.push_str(&format!(" (`--kernel-from substitute` takes the prebuilt {p} instead)"));
    }
    Ok((build, origin))
}

/// The plan of a U-Boot spec: its pinned source package, then the build.
pub fn u_boot(lock: &Lock, spec: &crate::profile::LoadedUBoot, cross: &str) -> Result<(Plan, StorePath)> {
    let mut plan = Plan::default();
    let src = deb_source(&mut plan, lock, &spec.spec.source)?;
    let bin = plan.add(Recipe {
        name: spec.name.clone(),
        builder: Builder::UBoot {
            defconfig: spec.spec.defconfig.clone(),
            fragments: spec.fragments.clone(),
            cross: cross.to_string(),
        },
        inputs: inputs(&[("source", &src)]),
    });
    Ok((plan, bin))
}

/// The kernel-config recipe of a system plan, if its kernel is built from source.
pub fn kernel_config_recipe(plan: &Plan) -> Option<&Planned> {
    plan.recipes.iter().find(|r| matches!(r.recipe.builder, Builder::KernelConfig { .. }))
}

#[cfg(test)]
mod tests;
