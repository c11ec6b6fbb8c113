//! The `initramfs` builder: stage-1's init, the kernel modules the profile lists (with
//! their dependencies, in load order) and stage-1's configuration, as a deterministic
//! gzip-compressed cpio archive.

use super::Ctx;
use crate::format::compress::Compression;
use crate::format::cpio::{self, Entry};
use crate::plan::{Planned, Stage1Config};
use crate::util::Fail;
use anyhow::{Context, Result};
use mobix_bootctl::contract::{Stage1, STAGE1_FILE};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Resolves module names to `.ko` paths (relative to `lib/modules/<release>`) in load
/// order: soft pre-dependencies (modules.softdep, names through modules.alias) and hard
/// dependencies (modules.dep) before each module, each module once.
pub fn resolve_modules(moddir: &Path, wanted: &[String], key: &str) -> Result<Vec<String>> {
    let read =
        |n: &str| fs::read_to_string(moddir.join(n)).with_context(|| format!("reading {}/{n}", moddir.display()));
    let norm = |s: &str| s.replace('-', "_");
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new(); // name -> (path, dep paths)
    let mut by_path: BTreeMap<String, String> = BTreeMap::new();
    for line in read("modules.dep")?.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let name = Path::new(path).file_name().and_then(|f| f.to_str()).unwrap_or("");
        let name = norm(name.split('.').next().unwrap_or(""));
        by_path.insert(path.to_string(), name.clone());
        deps.insert(name, (path.to_string(), rest.split_whitespace().map(String::from).collect()));
    }
    let mut aliases: BTreeMap<String, String> = BTreeMap::new();
    for line in read("modules.alias")?.lines() {
        let mut w = line.split_whitespace();
        if let (Some("alias"), Some(a), Some(m)) = (w.next(), w.next(), w.next()) {
            aliases.entry(norm(a)).or_insert_with(|| norm(m));
        }
    }
    let mut softpre: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Ok(text) = read("modules.softdep") {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(m) = w.next() else { continue };
            let mut pre = false;
            for t in w {
                match t {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    _ if pre => softpre.entry(norm(m)).or_default().push(norm(t)),
                    _ => {}
                }
            }
        }
    }
    let builtin: BTreeSet<String> = read("modules.builtin")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Path::new(l).file_name()?.to_str()?.split('.').next().map(norm))
        .collect();
    let resolve_name = |n: &str| -> Option<String> {
        let n = norm(n);
        if deps.contains_key(&n) {
            Some(n)
        } else {
            aliases.get(&n).filter(|m| deps.contains_key(*m)).cloned()
        }
    };
    let r = Resolver { deps: &deps, by_path: &by_path, softpre: &softpre, resolve: &resolve_name };
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for w in wanted {
        match resolve_name(w) {
            Some(m) => r.visit(&m, &mut done, &mut order, 0)?,
            None if builtin.contains(&norm(w)) => {}
            None => {
                return Err(Fail::new(format!("{key}: {w:?} is neither a module of this kernel nor built in"))
                    .hint(format!("see {}/modules.dep for the kernel's modules", moddir.display()))
                    .into())
            }
        }
    }
    Ok(order)
}

struct Resolver<'a> {
    /// Module name to its path and the paths of its hard dependencies (modules.dep).
    deps: &'a BTreeMap<String, (String, Vec<String>)>,
    by_path: &'a BTreeMap<String, String>,
    softpre: &'a BTreeMap<String, Vec<String>>,
    resolve: &'a dyn Fn(&str) -> Option<String>,
}

impl Resolver<'_> {
    /// Appends `name`'s dependencies, then `name`, to `order` (each module once).
    fn visit(&self, name: &str, done: &mut BTreeSet<String>, order: &mut Vec<String>, depth: usize) -> Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        anyhow::ensure!(depth < 64, "module dependencies of {name} nest too deeply (a cycle?)");
        done.insert(name.to_string());
        let (path, hard) = &self.deps[name];
        for s in self.softpre.get(name).into_iter().flatten() {
            // A soft dependency that is missing or built in is not an error (modprobe agrees).
            if let Some(m) = (self.resolve)(s) {
                self.visit(&m, done, order, depth + 1)?;
            }
        }
        // modules.dep lists the deepest dependency last; load in reverse.
        for d in hard.iter().rev() {
            let m = self.by_path.get(d).with_context(|| format!("modules.dep: {d} (needed by {name}) has no entry"))?;
            self.visit(m, done, order, depth + 1)?;
        }
        order.push(path.clone());
        Ok(())
    }
}

fn add_parents(entries: &mut BTreeMap<String, Entry>, path: &str) {
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        entries.entry(parent.to_string()).or_insert_with(|| Entry::dir(parent));
        p = parent;
    }
}

/// The initramfs: stage-1's init, `modules` (stage-1's, then the screen's: those of the
/// second list not already in the first, each with its dependencies), firmware, stage1.json.
pub fn build(
    ctx: &Ctx,
    planned: &Planned,
    modules: (&[String], &[String]),
    compression: Compression,
    config: &Stage1Config,
    firmware: &[String],
    out: &Path,
) -> Result<()> {
    let init = ctx.input(planned, "init")?;
    let mods = ctx.input(planned, "modules")?;
    let release = fs::read_to_string(mods.join("release"))?.trim().to_string();
    let moddir = mods.join("lib/modules").join(&release);
    let order = resolve_modules(&moddir, modules.0, "stage1.modules")?;
    let screen_order: Vec<String> = resolve_modules(&moddir, modules.1, "stage1.screen_modules")?
        .into_iter()
        .filter(|m| !order.contains(m))
        .collect();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for d in ["dev", "proc", "sys", "run", "tmp", "sysroot"] {
        entries.insert(d.into(), Entry::dir(d));
    }
    let init_bin = fs::read(init.join("bin/mobix-init")).context("reading the stage-1 init binary")?;
    entries.insert("init".into(), Entry::file("init", 0o755, init_bin));
    let mut in_ramfs = Vec::new();
    let mut screen_in_ramfs = Vec::new();
    for (rel, screen) in order.iter().map(|r| (r, false)).chain(screen_order.iter().map(|r| (r, true))) {
        // Compressed modules (Debian's 6.12 ships .ko.xz) go in decompressed, so stage-1
        // loads plain .ko files whatever the kernel's module decompression support.
        let raw = fs::read(moddir.join(rel)).with_context(|| format!("reading module {rel}"))?;
        let (rel, data) = match rel.rsplit_once(".ko.") {
            Some((stem, _)) => (
                format!("{stem}.ko"),
                crate::format::compress::decompress(&raw, 256 << 20)
                    .with_context(|| format!("decompressing module {rel}"))?,
            ),
            None => (rel.clone(), raw),
        };
        let path = format!("lib/modules/{release}/{rel}");
        add_parents(&mut entries, &path);
        entries.insert(path.clone(), Entry::file(path.clone(), 0o644, data));
        if screen { &mut screen_in_ramfs } else { &mut in_ramfs }.push(format!("/{path}"));
    }
    // The firmware stage-1 needs, where the kernel's loader looks for it.
    if !firmware.is_empty() {
        let fw = ctx.input(planned, "firmware")?;
        for path in firmware {
            let dst = format!("lib/firmware/{path}");
            add_parents(&mut entries, &dst);
            let data =
                fs::read(fw.join("lib/firmware").join(path)).with_context(|| format!("reading firmware {path}"))?;
            entries.insert(dst.clone(), Entry::file(dst, 0o644, data));
        }
    }
    let json =
        Stage1 { config: config.clone(), kernel_release: release, modules: in_ramfs, screen_modules: screen_in_ramfs };
    let cfg = STAGE1_FILE.trim_start_matches('/');
    add_parents(&mut entries, cfg);
    entries.insert(cfg.into(), Entry::file(cfg, 0o644, serde_json::to_vec_pretty(&json)?));
    let archive = cpio::write(&entries.into_values().collect::<Vec<_>>())?;
    fs::write(out, crate::format::compress::compress(&archive, compression)?)?;
    Ok(())
}
