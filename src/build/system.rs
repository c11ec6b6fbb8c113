//! The generation's toplevel (the directory that names the system: its init, kernel,
//! stage-1, software and `boot.json`) and the device tree QEMU's machine model dumps.

use super::Ctx;
use crate::plan::Planned;
use crate::util;
use anyhow::{Context, Result};
use std::fs;
use std::path::Path;
use std::process::Command;

pub(super) fn toplevel(ctx: &Ctx, planned: &Planned, cmdline: &str, label: &str, out: &Path) -> Result<()> {
    let inp = |n: &str| planned.recipe.inputs.get(n).map(|p| p.phone_path()).with_context(|| format!("no input {n}"));
    fs::create_dir(out)?;
    let link = |target: String, name: &str| std::os::unix::fs::symlink(target, out.join(name));
    link(format!("{}/Image", inp("kernel")?), "kernel")?;
    link(inp("initrd")?, "initrd")?;
    link(format!("{}/bin/mobix-init", inp("init")?), "init")?;
    link(inp("sw")?, "sw")?;
    link(inp("etc")?, "etc")?;
    link(format!("{}/lib/modules", inp("modules")?), "kernel-modules")?;
    if planned.recipe.inputs.contains_key("firmware") {
        link(format!("{}/lib/firmware", inp("firmware")?), "firmware")?;
    }
    let release = fs::read_to_string(ctx.input(planned, "kernel")?.join("release"))?.trim().to_string();
    let boot = mobix_bootctl::contract::BootSpec {
        version: 1,
        label: label.to_string(),
        kernel: format!("{}/Image", inp("kernel")?),
        kernel_release: release,
        initrd: inp("initrd")?,
        init: format!("{}/init", planned.path.phone_path()),
        cmdline: cmdline.to_string(),
        toplevel: planned.path.phone_path(),
    };
    fs::write(out.join("boot.json"), serde_json::to_string_pretty(&boot)? + "\n")?;
    Ok(())
}

pub(super) fn qemu_dtb(machine: &str, cpu: &str, memory_mib: u32, smp: u32, out: &Path) -> Result<()> {
    let dump = out.with_extension("dump");
    // dtb-randomness=off drops the random kaslr-seed/rng-seed QEMU would put in /chosen.
    util::run(
        Command::new("qemu-system-aarch64")
            .arg("-M")
            .arg(format!("{machine},dtb-randomness=off,dumpdtb={}", dump.display()))
            .args(["-cpu", cpu, "-m", &memory_mib.to_string(), "-smp", &smp.to_string()])
            .args(["-nographic", "-nic", "none"]),
    )?;
    let packed = crate::format::fdt::pack(&fs::read(&dump)?).context("packing the device tree QEMU dumped")?;
    fs::write(out, packed)?;
    fs::remove_file(&dump)?;
    Ok(())
}
