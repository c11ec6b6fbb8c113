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
use std::process::{Command, Stdio};

/// The cached package file, downloaded if missing, with its hash checked.
pub fn fetch(ctx: &Ctx, pin: &DebPin) -> Result<PathBuf> {
    let want = pin.digest().context("lock entries are validated")?;
    fs::create_dir_all(&ctx.downloads).with_context(|| format!("creating {}", ctx.downloads.display()))?;
    let file = ctx.downloads.join(pin.file_name());
    if file.exists() {
        if sha256_file(&file)? == want {
            return Ok(file);
        }
        ctx.progress.note(&format!("cached {} does not match its pin; downloading again", file.display()));
        fs::remove_file(&file)?;
    }
    ctx.progress.note(&format!("downloading {} with apt-get", pin.apt_spec()));
    let partial = ctx.downloads.join(format!(".partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)?;
    // apt-get drops privileges to _apt for downloads; let it write here.
    let _ = Command::new("chown").arg("_apt").arg(&partial).stderr(Stdio::null()).status();
    let res = util::run(Command::new("apt-get").arg("download").arg("-q").arg(pin.apt_spec()).current_dir(&partial));
    if let Err(e) = res {
        let _ = fs::remove_dir_all(&partial);
        return Err(e.context(Fail::new(format!("downloading {} failed", pin.apt_spec())).hint(
            "run `scripts/setup` (it enables the arm64 architecture and updates apt's lists); if the \
                 archive no longer has this version, pin a current one in mobix.lock",
        )));
    }
    let got_file = partial.join(pin.file_name());
    let got = sha256_file(&got_file).with_context(|| format!("apt-get did not produce {}", got_file.display()))?;
    if got != want {
        let _ = fs::remove_dir_all(&partial);
        return Err(Fail::new(format!(
            "{} does not match its pin in mobix.lock: expected sha256 {}, got {}",
            pin.file_name(),
            want,
            got
        ))
        .hint("nothing was added to the store; if the new package is trusted, re-pin it (`mobix lock update NAME`)")
        .into());
    }
    fs::rename(&got_file, &file)?;
    let _ = fs::remove_dir_all(&partial);
    ctx.fetched_one();
    Ok(file)
}

/// Unpacks the package; with `depends`, also writes their store paths to
/// `share/mobix/depends`, which makes them references (in every closure holding this one).
pub fn build(ctx: &Ctx, pin: &DebPin, depends: &[crate::store::StorePath], out: &Path) -> Result<()> {
    let file = fetch(ctx, pin)?;
    fs::create_dir(out)?;
    super::unpack_piped(Command::new("dpkg-deb").arg("--fsys-tarfile").arg(&file), &file, out)?;
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
pub fn candidate(pin: &DebPin) -> Result<(DebPin, Vec<String>)> {
    let spec = format!("{}:{}", pin.package, pin.arch);
    let out = util::run(Command::new("apt-cache").args(["show", "--no-all-versions", &spec])).map_err(|e| {
        e.context(
            Fail::new(format!("apt does not know {spec}"))
                .hint("run `apt-get update` (scripts/setup does), and check the package name in mobix.lock"),
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
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
