//! The `cc` builder: a C program from a Debian source package (input `source`, a
//! `deb-source` path), Debian's patches applied, built by its own Makefile with
//! `aarch64-linux-gnu-gcc` and linked statically, so it runs on the phone without a C
//! library beside it. The package spec's `install` files are copied out, ELF files
//! stripped.
//!
//! Reproducibility: the tree is built where the store's temporary directory happens to be,
//! so `-ffile-prefix-map` names it `/build`; `SOURCE_DATE_EPOCH`, the locale and the time
//! zone are fixed; stripping drops the symbol tables (and with them object file names).

use super::{kernel::CROSS_COMPILE, source, Ctx};
use crate::plan::Planned;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

/// ELF machine number of aarch64.
const EM_AARCH64: u16 = 183;
/// Program header type of the interpreter (the dynamic loader's path).
const PT_INTERP: u32 = 3;

/// What an ELF file is, as far as installing it goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Elf {
    /// Not an ELF file (a script, data).
    Not,
    /// A 64-bit little-endian ELF file: its machine and whether it names a loader.
    Elf64 { machine: u16, interp: bool },
    /// Starts like ELF but is not a 64-bit little-endian one, or is cut short.
    Other,
}

/// Reads the ELF header and program headers of `data`.
pub fn elf_kind(data: &[u8]) -> Elf {
    if !data.starts_with(b"\x7fELF") {
        return Elf::Not;
    }
    let bytes = |o: usize, n: usize| data.get(o..o.checked_add(n)?);
    let u16_at = |o: usize| bytes(o, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| bytes(o, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let u64_at = |o: usize| bytes(o, 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    // EI_CLASS 2 (64-bit), EI_DATA 1 (little-endian).
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Elf::Other;
    }
    let (Some(machine), Some(phoff), Some(phentsize), Some(phnum)) = (u16_at(18), u64_at(32), u16_at(54), u16_at(56))
    else {
        return Elf::Other;
    };
    let mut interp = false;
    for i in 0..phnum as u64 {
        let Some(off) = (i.checked_mul(phentsize as u64)).and_then(|o| o.checked_add(phoff)) else {
            return Elf::Other;
        };
        match usize::try_from(off).ok().and_then(u32_at) {
            Some(t) => interp |= t == PT_INTERP,
            None => return Elf::Other,
        }
    }
    Elf::Elf64 { machine, interp }
}

pub fn build(
    ctx: &Ctx,
    planned: &Planned,
    make_args: &[String],
    cflags: &[String],
    install: &BTreeMap<String, String>,
    out: &Path,
) -> Result<()> {
    let name = &planned.recipe.name;
    let src = ctx.input(planned, "source")?;
    let work = out.parent().context("output has a parent")?.join("work");
    ctx.progress.note(&format!("unpacking the source of {name} and applying Debian's patches"));
    let tree = source::unpack(&src, &work)?;
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut flags = vec!["-O2".to_string(), format!("-ffile-prefix-map={}=/build", tree.display())];
    flags.extend(cflags.iter().cloned());
    ctx.progress.note(&format!("building {name} (make {})", make_args.join(" ")));
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&tree)
        .arg(format!("-j{jobs}"))
        .arg(format!("CC={CROSS_COMPILE}gcc"))
        .arg(format!("AR={CROSS_COMPILE}ar"))
        .arg(format!("STRIP={CROSS_COMPILE}strip"))
        .arg(format!("CFLAGS={}", flags.join(" ")))
        .arg("LDFLAGS=-static")
        .args(make_args)
        .env("CROSS_COMPILE", CROSS_COMPILE)
        .env("SOURCE_DATE_EPOCH", "1")
        .env("LC_ALL", "C")
        .env("TZ", "UTC");
    util::run(&mut make).map_err(|e| e.context(Fail::new(format!("building {name}: make failed"))))?;
    fs::create_dir(out)?;
    for (dest, built) in install {
        let from = tree.join(built);
        let data = fs::read(&from).map_err(|e| {
            anyhow::Error::new(e).context(
                Fail::new(format!("building {name}: the build made no {built} (install.{dest})"))
                    .hint("check the package spec's `make` targets and `install` paths"),
            )
        })?;
        let to = out.join(dest);
        fs::create_dir_all(to.parent().expect("a relative path has a parent"))?;
        match elf_kind(&data) {
            Elf::Not => {
                fs::write(&to, &data)?;
                let exec = fs::metadata(&from)?.permissions();
                fs::set_permissions(&to, exec)?;
            }
            Elf::Elf64 { machine: EM_AARCH64, interp: false } => {
                util::run(
                    Command::new(format!("{CROSS_COMPILE}strip")).arg("--strip-all").arg("-o").arg(&to).arg(&from),
                )
                .with_context(|| format!("stripping {built}"))?;
            }
            Elf::Elf64 { machine: EM_AARCH64, interp: true } => {
                return Err(Fail::new(format!("building {name}: {built} is linked dynamically"))
                    .hint("its Makefile ignored LDFLAGS=-static; pass its own variable for linker flags in `make`")
                    .into());
            }
            other => {
                return Err(Fail::new(format!("building {name}: {built} is not an aarch64 program ({other:?})"))
                    .hint("its Makefile ignored CC; pass its own variable for the compiler in `make`")
                    .into());
            }
        }
    }
    util::remove_tree(&work)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16, phdrs: &[u32]) -> Vec<u8> {
        let mut d = vec![0u8; 64 + 56 * phdrs.len()];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[18..20].copy_from_slice(&machine.to_le_bytes());
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, t) in phdrs.iter().enumerate() {
            d[64 + 56 * i..68 + 56 * i].copy_from_slice(&t.to_le_bytes());
        }
        d
    }

    #[test]
    fn elf_kinds() {
        assert_eq!(elf_kind(b"#!/bin/sh\n"), Elf::Not);
        assert_eq!(elf_kind(&elf(183, &[1, 1])), Elf::Elf64 { machine: 183, interp: false });
        assert_eq!(elf_kind(&elf(183, &[6, PT_INTERP, 1])), Elf::Elf64 { machine: 183, interp: true });
        assert_eq!(elf_kind(&elf(62, &[1])), Elf::Elf64 { machine: 62, interp: false });
        // Cut short inside the program headers, 32-bit, and a header whose table points
        // past the end: never a panic.
        let mut short = elf(183, &[1, 1]);
        short.truncate(100);
        assert_eq!(elf_kind(&short), Elf::Other);
        let mut e32 = elf(183, &[]);
        e32[4] = 1;
        assert_eq!(elf_kind(&e32), Elf::Other);
        let mut far = elf(183, &[1]);
        far[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(elf_kind(&far), Elf::Other);
    }
}
