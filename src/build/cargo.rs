//! Rust programs built for the phone: `cargo vendor --locked` of a lock file, then
//! `cargo build --release --offline` against the vendored crates, with a target directory
//! kept between stores (the host's cargo cache) so that dependencies compile once.

use super::Ctx;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `cargo vendor --locked`: the crates of the lock file, from crates.io or cargo's cache
/// (the one step of a Rust build that may use the network), each with its checksum file.
pub(super) fn cargo_vendor(src: &Path, out: &Path) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.args(["vendor", "--locked", "--versioned-dirs", "--quiet", "--manifest-path"])
        .arg(src.join("Cargo.toml"))
        .arg(out)
        .stdout(std::process::Stdio::null());
    util::run(&mut cmd).map_err(|e| {
        e.context(
            Fail::new(format!("vendoring the crates of {}", src.join("Cargo.lock").display())).hint(
                "cargo fetches what its cache lacks from crates.io: check the network, or `cargo fetch` there once",
            ),
        )
    })?;
    Ok(())
}

/// The vendored crates at a path that is the same for every store: cargo keys what it
/// compiled in its target directory (`Ctx::cargo_cache`) by the crates' paths, so crates
/// vendored into another store (a build into an empty one) would otherwise be compiled
/// again. A copy named by the vendor store path, made once; its content is that path's.
pub(super) fn stable_vendor(ctx: &Ctx, vendor: &Path) -> Result<PathBuf> {
    let name = vendor.file_name().context("a vendor store path has a name")?;
    let dir = ctx.cargo_cache.join("vendor");
    let stable = dir.join(name);
    if stable.is_dir() {
        return Ok(stable);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.{}", name.to_string_lossy(), std::process::id()));
    let _ = util::remove_tree(&tmp);
    util::copy_tree(vendor, &tmp)?;
    if let Err(e) = fs::rename(&tmp, &stable) {
        let _ = util::remove_tree(&tmp);
        // Another build made it first: its copy is of the same store path.
        if !stable.is_dir() {
            return Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), stable.display()));
        }
    }
    Ok(stable)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn cargo(
    ctx: &Ctx,
    src: &Path,
    dir: &str,
    binary: &str,
    target: &str,
    vendor: &Path,
    out: &Path,
) -> Result<()> {
    let target_dir = ctx.cargo_cache.join(dir);
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    // No host path may leak into the binary: remap the source and registry locations.
    let flags = [
        "-Clinker=rust-lld".to_string(),
        format!("--remap-path-prefix={}=/build/{dir}", src.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
        format!("--remap-path-prefix={}=/vendor", vendor.display()),
    ]
    .join("\x1f");
    let mut cmd = Command::new("cargo");
    // Offline, from the vendored crates only: a rebuild needs no network.
    cmd.args(["build", "--release", "--locked", "--offline", "--target", target, "--bin", binary])
        .arg("--config")
        .arg("source.crates-io.replace-with=\"mobix-vendored\"")
        .arg("--config")
        .arg(format!("source.mobix-vendored.directory={:?}", vendor.display().to_string()))
        .arg("--manifest-path")
        .arg(src.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env_remove("RUSTFLAGS")
        .env("SOURCE_DATE_EPOCH", "1");
    util::run(&mut cmd).map_err(|e| {
        let text = format!("{e:#}");
        if text.contains("target may not be installed") || text.contains("can't find crate for `core`") {
            e.context(
                Fail::new(format!("the Rust target {target} is missing"))
                    .hint(format!("run `rustup target add {target}` (scripts/setup does it)")),
            )
        } else {
            e
        }
    })?;
    fs::create_dir_all(out.join("bin"))?;
    fs::copy(target_dir.join(target).join("release").join(binary), out.join("bin").join(binary))?;
    Ok(())
}
