//! The `deb` builder: an arm64 Debian package fetched with the ordinary client
//! (`apt-get download`) into a download cache, checked against its pinned sha256, and
//! unpacked into the store without running any of its scripts.

use super::Ctx;
use crate::hash::sha256_file;
use crate::lock::DebPin;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cached files of `pins`, those missing downloaded in one `apt-get download` by
/// mobix's private apt root (`lock::apt`), each checked against its pin before it enters
/// the cache. With every file cached, no network and no apt is needed.
pub fn fetch_all(ctx: &Ctx, pins: &[DebPin]) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(&ctx.downloads).with_context(|| format!("creating {}", ctx.downloads.display()))?;
    let mut missing = Vec::new();
    for pin in pins {
        let want = pin.digest().context("lock entries are validated")?;
        let file = ctx.downloads.join(pin.file_name());
        if file.exists() {
            if sha256_file(&file)? == want {
                continue;
            }
            ctx.progress.note(&format!("cached {} does not match its pin; downloading again", file.display()));
            fs::remove_file(&file)?;
        }
        missing.push(pin);
    }
    if !missing.is_empty() {
        download(ctx, &missing)?;
    }
    Ok(pins.iter().map(|p| ctx.downloads.join(p.file_name())).collect())
}

fn download(ctx: &Ctx, pins: &[&DebPin]) -> Result<()> {
    let specs: Vec<String> = pins.iter().map(|p| p.apt_spec()).collect();
    let shown = if specs.len() == 1 { specs[0].clone() } else { format!("{} packages", specs.len()) };
    ctx.progress.note(&format!("downloading {shown} with apt-get"));
    let partial = ctx.downloads.join(format!(".partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)?;
    let res = (|| -> Result<()> {
        let apt = crate::lock::apt::Apt::open(&ctx.apt_root)?;
        apt.ensure_lists(ctx.progress)?;
        apt.download(&specs, &partial).map_err(|e| {
            if util::find_fail(&e).is_some() {
                return e; // a version the archive dropped: said, with the fix
            }
            e.context(Fail::new(format!("downloading {shown} failed")).hint(
                "check the network (deb.debian.org); a build whose packages are all in the download cache needs \
                 none",
            ))
        })?;
        for pin in pins {
            let got_file = partial.join(pin.file_name());
            let got =
                sha256_file(&got_file).with_context(|| format!("apt-get did not produce {}", got_file.display()))?;
            let want = pin.digest().context("lock entries are validated")?;
            if got != want {
                return Err(Fail::new(format!(
                    "{} does not match its pin in mobix.lock: expected sha256 {want}, got {got}",
                    pin.file_name()
                ))
                .hint(
                    "nothing was added to the store; if the new package is trusted, re-pin it (`mobix lock update \
                     NAME`)",
                )
                .into());
            }
            fs::rename(&got_file, ctx.downloads.join(pin.file_name()))?;
            ctx.fetched_one();
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&partial);
    res
}

/// Unpacks the packages (one, or several that depend on each other in a cycle) into one
/// output; with `depends`, also writes their store paths to `share/mobix/depends`, which
/// makes them references (in every closure holding this one). Absolute links in the
/// packages are kept: they point into the phone's root.
pub fn build(ctx: &Ctx, pins: &[DebPin], depends: &[crate::store::StorePath], out: &Path) -> Result<()> {
    let files = fetch_all(ctx, pins)?;
    fs::create_dir(out)?;
    for file in &files {
        super::unpack_piped(
            Command::new("dpkg-deb").arg("--fsys-tarfile").arg(file),
            file,
            out,
            crate::store::archive::AbsoluteLinks::PhoneRoot,
        )?;
    }
    if !depends.is_empty() {
        let dir = out.join("share/mobix");
        fs::create_dir_all(&dir)?;
        let text: String = depends.iter().map(|d| format!("{d}\n")).collect();
        fs::write(dir.join("depends"), text)?;
    }
    Ok(())
}

/// The version of `pin`'s package apt would install now (its candidate), pinned by the
/// sha256 in apt's signed package index. The package name stays: a kernel whose ABI
/// changed is a new package, named in the lock by hand.
/// Also returns the packages apt says it depends on (first alternatives, no versions).
pub fn candidate(apt: &crate::lock::apt::Apt, pin: &DebPin) -> Result<(DebPin, Vec<String>)> {
    let spec = format!("{}:{}", pin.package, pin.arch);
    let text = apt.show_candidate(&spec).map_err(|e| {
        e.context(Fail::new(format!("apt does not know {spec}")).hint("check the package name in mobix.lock"))
    })?;
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}: ")).map(str::trim));
    let (Some(version), Some(sha256)) = (field("Version"), field("SHA256")) else {
        return Err(Fail::new(format!("apt-cache show {spec} gave no version and sha256")).into());
    };
    let mut apt_depends = Vec::new();
    for k in ["Pre-Depends", "Depends"] {
        for d in field(k).unwrap_or("").split(',') {
            let first = d.split('|').next().unwrap_or("").trim();
            let name = first.split([' ', '(', ':']).next().unwrap_or("");
            if !name.is_empty() {
                apt_depends.push(name.to_string());
            }
        }
    }
    let new = DebPin {
        package: pin.package.clone(),
        version: version.to_string(),
        arch: pin.arch.clone(),
        sha256: sha256.to_string(),
        depends: pin.depends.clone(),
    };
    Ok((new, apt_depends))
}
