//! Kernels from Debian packages: the `Image` and device trees of an unpacked
//! `linux-image-*` package, and the modules a system carries (with a fresh `modules.dep`).

use super::Ctx;
use crate::plan::Planned;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::fs;
use std::path::Path;
use std::process::Command;

/// The single `boot/vmlinuz-<release>` of an unpacked kernel package.
fn kernel_release(deb: &Path) -> Result<String> {
    let mut found = Vec::new();
    for e in fs::read_dir(deb.join("boot")).with_context(|| format!("reading {}/boot", deb.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(rel) = name.strip_prefix("vmlinuz-") {
            found.push(rel.to_string());
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Fail::new(format!("expected one boot/vmlinuz-* in the kernel package, found {found:?}")).into()),
    }
}

/// Refuses a kernel a bootloader would refuse (see [`crate::format::arm64::check_kernel`]).
pub fn check_kernel(data: &[u8]) -> Result<()> {
    crate::format::arm64::check_kernel(data).map_err(|e| crate::util::user_error(e, "checking the kernel Image"))?;
    Ok(())
}

pub(super) fn kernel(ctx: &Ctx, planned: &Planned, out: &Path) -> Result<()> {
    let deb = ctx.input(planned, "deb")?;
    let rel = kernel_release(&deb)?;
    let image = fs::read(deb.join("boot").join(format!("vmlinuz-{rel}")))?;
    check_kernel(&image)?;
    fs::create_dir(out)?;
    fs::write(out.join("Image"), &image)?;
    fs::copy(deb.join("boot").join(format!("config-{rel}")), out.join("config"))?;
    fs::write(out.join("release"), format!("{rel}\n"))?;
    // Debian ships the device trees beside the kernel, per vendor directory.
    let dtbs = deb.join("usr/lib").join(format!("linux-image-{rel}"));
    if dtbs.is_dir() {
        util::copy_tree(&dtbs, &out.join("dtbs"))?;
    }
    Ok(())
}

pub(super) fn kernel_modules(ctx: &Ctx, planned: &Planned, only: Option<&[String]>, out: &Path) -> Result<()> {
    let deb = ctx.input(planned, "deb")?;
    let rel = kernel_release(&deb)?;
    let src = deb.join("lib/modules").join(&rel);
    let dst = out.join("lib/modules").join(&rel);
    fs::create_dir_all(out.join("lib/modules"))?;
    util::copy_tree(&src, &dst)?;
    // Debian ships no modules.dep (its postinst makes it); depmod works on arm64 modules
    // from an x86 host.
    let depmod = || util::run(Command::new("depmod").arg("-b").arg(out).arg(&rel));
    depmod()?;
    if let Some(only) = only {
        let keep: std::collections::BTreeSet<String> =
            super::resolve_modules(&dst, only, "kernel.modules")?.into_iter().collect();
        let mut drop = Vec::new();
        util::walk(&dst, &mut |p, m| {
            if m.is_file() && p.contains(".ko") && !keep.contains(p) {
                drop.push(p.to_string());
            }
            Ok(true)
        })?;
        for p in drop {
            fs::remove_file(dst.join(p))?;
        }
        prune_empty_dirs(&dst)?;
        depmod()?;
    }
    fs::write(out.join("release"), format!("{rel}\n"))?;
    Ok(())
}

/// Removes the directories under `dir` that hold no file (after modules were dropped).
fn prune_empty_dirs(dir: &Path) -> Result<bool> {
    let mut empty = true;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() && prune_empty_dirs(&e.path())? {
            fs::remove_dir(e.path())?;
        } else {
            empty = false;
        }
    }
    Ok(empty)
}
