//! The `u-boot` builder: U-Boot cross-compiled from Debian's own source package (input
//! `source`, a `deb-source` path) with Debian's patches, its defconfig and the spec's
//! fragments (`bootloaders/<name>/`). Output: `u-boot.bin` and the final `config`.
//!
//! The configuration goes through the kernel's assembly and report, so an option that a
//! fragment asks for and `olddefconfig` drops fails the build with the unmet dependency.
//! The build runs inside the source tree (not `O=`): U-Boot's Kbuild then names files by
//! relative paths, so the binary does not depend on where the store built it.

use super::{kernel, source, Ctx};
use crate::plan::Planned;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::fs;
use std::path::Path;
use std::process::Command;

/// U-Boot's `ARCH` for 64-bit arm boards.
const ARCH: &str = "arm";

fn make(tree: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("make");
    c.arg("-C").arg(tree).arg(format!("ARCH={ARCH}")).arg(format!("CROSS_COMPILE={}", kernel::CROSS_COMPILE));
    c.args(args).env("SOURCE_DATE_EPOCH", "1").env("LC_ALL", "C").env("TZ", "UTC");
    c
}

pub fn build(ctx: &Ctx, planned: &Planned, defconfig: &str, fragments: &[(String, String)], out: &Path) -> Result<()> {
    let src = ctx.input(planned, "source")?;
    let work = out.parent().context("output has a parent")?.join("work");
    ctx.progress.note("unpacking U-Boot's source and applying Debian's patches");
    let tree = source::unpack(&src, &work)?;
    ctx.progress.note(&format!("configuring U-Boot ({defconfig} + {} fragments)", fragments.len()));
    let (config, report) = kernel::assemble(&tree, &work.join("cfg"), ARCH, defconfig, fragments, "")?;
    if !report.dropped.is_empty() {
        return Err(Fail::new(format!(
            "the U-Boot configuration dropped {} option(s) asked for:\n{}",
            report.dropped.len(),
            report.describe()
        ))
        .hint("enable the options they depend on in the fragment")
        .into());
    }
    // `make … O=` above left the source tree clean; configure it in place.
    fs::write(tree.join(".config"), &config)?;
    util::run(&mut make(&tree, &["olddefconfig"]))?;
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string();
    ctx.progress.note(&format!("building U-Boot (make -j{jobs}, about a minute on 2 cores)"));
    util::run(&mut make(&tree, &[&format!("-j{jobs}"), "u-boot.bin"]))?;
    fs::create_dir(out)?;
    fs::copy(tree.join("u-boot.bin"), out.join("u-boot.bin")).context("copying u-boot.bin")?;
    fs::write(out.join("config"), fs::read_to_string(tree.join(".config"))?)?;
    util::remove_tree(&work)?;
    Ok(())
}
