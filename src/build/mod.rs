//! Builders: one function per recipe kind, each turning its inputs into one output path.
//!
//! Pipeline stage: store (the work behind realisation). Input: a planned recipe and the
//! host paths of its inputs; output: a file or directory at the temporary location the
//! store hands over. Builders run external tools (apt-get, dpkg-deb, depmod, cargo,
//! qemu, mke2fs, debugfs, e2fsck) through [`crate::util::run`].

mod cargo;
mod cc;
pub mod deb;
pub mod images;
mod initramfs;
pub mod kbuild;
pub mod kernel;
mod kernel_package;
mod realise;
pub mod source;
mod sw;
mod system;
mod uboot;

use crate::plan::{Builder, Planned};
use crate::store::{Store, StorePath};
use crate::util;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use cargo::{cargo, cargo_vendor, stable_vendor};
pub use initramfs::resolve_modules;
pub use kernel_package::check_kernel;
use kernel_package::{kernel, kernel_modules};
pub use realise::{preview, realise, Preview, Report, USED_PATHS_ENV};
use sw::{firmware, merge_tree, overlay_inputs, sw};
use system::{qemu_dtb, toplevel};

/// What builders share: where things are, and how to tell the user.
pub struct Ctx<'a> {
    pub store: &'a Store,
    /// Cache of downloaded packages (kept between stores).
    pub downloads: PathBuf,
    /// mobix's private apt root (`lock::apt`), which downloads Debian packages.
    pub apt_root: PathBuf,
    /// Cache of cargo's target directories and of the vendored crates they were compiled
    /// from (`vendor/`), so dependencies are compiled once per host, whichever store builds.
    pub cargo_cache: PathBuf,
    pub progress: &'a dyn crate::report::Reporter,
    /// Binary caches to take paths from before building them (`--substituter`, the user's
    /// configuration file), in the order given.
    pub substituters: Vec<crate::store::cache::Substituter>,
    /// Keys whose signatures on cache entries are trusted (`--trust`).
    pub trusted: Vec<crate::store::cache::PublicKey>,
    /// Files downloaded so far (packages, source packages), for the summary.
    pub fetched: std::sync::atomic::AtomicUsize,
    /// Binary caches that did not answer earlier in this command: not asked again (a
    /// build realises the system, then its images).
    pub caches_down: std::sync::Mutex<BTreeSet<String>>,
}

impl Ctx<'_> {
    /// Counts one download.
    fn fetched_one(&self) {
        self.fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    /// How many files builders downloaded through this context.
    pub fn downloads(&self) -> usize {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn input(&self, planned: &Planned, name: &str) -> Result<PathBuf> {
        let p = planned
            .recipe
            .inputs
            .get(name)
            .with_context(|| format!("recipe {} has no input {name}", planned.recipe.name))?;
        Ok(self.store.host_path(p))
    }
}

/// Unpacks the tar stream `cmd` writes on its stdout (a decompressor, `dpkg-deb
/// --fsys-tarfile`) of `file` into `dest` with the store's safe unpacker, which refuses
/// anything that would land outside `dest` and no absolute links.
pub(crate) fn unpack_piped(
    cmd: &mut Command,
    file: &Path,
    dest: &Path,
    links: crate::store::archive::AbsoluteLinks,
) -> Result<()> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| util::user_error(e, format!("running {what}")))?;
    let mut stdout = child.stdout.take().expect("piped");
    let res = crate::store::archive::unpack(&mut stdout, dest, links)
        .with_context(|| format!("unpacking {}", file.display()));
    // tar stops at its end-of-archive blocks; the decompressor may still be writing the
    // record padding after them, and closing the pipe on it would kill it with SIGPIPE.
    if res.is_ok() {
        io::copy(&mut stdout, &mut io::sink())?;
    }
    drop(stdout);
    let out = child.wait_with_output()?;
    res?;
    if !out.status.success() {
        anyhow::bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn build_one(ctx: &Ctx, planned: &Planned, out: &Path) -> Result<()> {
    match &planned.recipe.builder {
        Builder::Deb { pin } => {
            let deps: Vec<StorePath> = planned.recipe.inputs.values().cloned().collect();
            deb::build(ctx, std::slice::from_ref(pin), &deps, out)
        }
        Builder::DebGroup { pins } => {
            let deps: Vec<StorePath> = planned.recipe.inputs.values().cloned().collect();
            deb::build(ctx, pins, &deps, out)
        }
        Builder::KernelConfig { arch, base, fragments, required, .. } => {
            kernel::config(ctx, planned, arch, base, fragments, required, out)
        }
        Builder::KernelBuild { arch, .. } => kernel::build(ctx, planned, arch, out),
        Builder::KernelPrebuilt { image, image_sha256, dtbs, dtbs_sha256 } => {
            kernel::prebuilt(image, image_sha256, dtbs.as_deref().zip(dtbs_sha256.as_deref()), out)
        }
        Builder::Kernel => kernel(ctx, planned, out),
        Builder::DebSource { pin } => source::build(ctx, pin, out),
        Builder::UBoot { defconfig, fragments, .. } => uboot::build(ctx, planned, defconfig, fragments, out),
        Builder::KernelModules { only } => kernel_modules(ctx, planned, only.as_deref(), out),
        Builder::Sw => sw(ctx, planned, out),
        Builder::GlibSchemas { .. } => sw::glib_schemas(ctx, planned, out),
        Builder::PixbufLoaders { .. } => sw::pixbuf_loaders(ctx, planned, out),
        Builder::MimeDatabase { .. } => sw::mime_database(ctx, planned, out),
        Builder::Firmware { files, directory } => firmware(ctx, planned, files, directory.as_deref(), out),
        Builder::Cc { make, cflags, install, .. } => cc::build(ctx, planned, make, cflags, install, out),
        Builder::CargoVendor { source_dir, .. } => cargo_vendor(source_dir, out),
        Builder::Cargo { binary, target, source_dir, dir, .. } => {
            let vendor = stable_vendor(ctx, &ctx.input(planned, "vendor")?)?;
            cargo(ctx, source_dir, dir, binary, target, &vendor, out)
        }
        Builder::Etc { files, links } => {
            fs::create_dir(out)?;
            // Debian's configuration files first, as dpkg would have unpacked them.
            for (key, p) in planned.recipe.inputs.iter().filter(|(k, _)| k.starts_with("pkg-")) {
                merge_tree(&ctx.store.host_path(p).join("etc"), out).with_context(|| format!("/etc of {key} ({p})"))?;
            }
            for (name, target) in links {
                let at = out.join(name);
                fs::create_dir_all(at.parent().expect("below out"))?;
                let _ = fs::remove_file(&at);
                std::os::unix::fs::symlink(target, &at)?;
            }
            for (name, content) in files {
                if let Some(dir) = Path::new(name).parent() {
                    fs::create_dir_all(out.join(dir))?;
                }
                let _ = fs::remove_file(out.join(name));
                fs::write(out.join(name), content)?;
            }
            for ov in overlay_inputs(ctx, planned) {
                merge_tree(&ov.join("etc"), out)?;
            }
            Ok(())
        }
        Builder::Overlay { source_dir, source_sha256, name } => {
            let files = source_dir.join("files");
            let got = crate::hash::sha256_tree(&files, &|_| false)?;
            if got.hex() != *source_sha256 {
                anyhow::bail!(
                    "overlay {name} changed while building (its files hash to {got}, planned {source_sha256})"
                );
            }
            util::copy_tree(&files, out)
        }
        Builder::Initramfs { modules, compression, config, firmware, screen_modules, programs, crypt_modules } => {
            let modules = initramfs::Modules { stage1: modules, screen: screen_modules, crypt: crypt_modules };
            initramfs::build(ctx, planned, modules, *compression, config, firmware, programs, out)
        }
        Builder::Toplevel { cmdline, label } => toplevel(ctx, planned, cmdline, label, out),
        Builder::QemuDtb { machine, cpu, memory_mib, smp, .. } => qemu_dtb(machine, cpu, *memory_mib, *smp, out),
        Builder::BootImage { header, kernel_compression, dtb } => {
            images::boot_image(ctx, planned, header, *kernel_compression, dtb.as_ref(), out)
        }
        Builder::Vbmeta { flags } => images::vbmeta(*flags, out),
        Builder::SystemImage { size, filesystem, generations, state, .. } => {
            images::system_image(ctx, planned, *size, *filesystem, generations, state, out)
        }
    }
}

#[cfg(test)]
mod tests;
