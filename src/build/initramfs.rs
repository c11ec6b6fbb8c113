//! The `initramfs` builder: stage-1's init, the kernel modules the profile lists (with
//! their dependencies, in load order), programs from Debian packages with the libraries
//! they load (cryptsetup for an encrypted state) and stage-1's configuration, as a
//! deterministic gzip-compressed cpio archive.

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

/// The module lists of an initramfs, by who loads them when.
pub struct Modules<'a> {
    /// Stage-1's, loaded first.
    pub stage1: &'a [String],
    /// The screen's, loaded by its thread.
    pub screen: &'a [String],
    /// An encrypted state's, loaded before it is opened.
    pub crypt: &'a [String],
}

/// The initramfs: stage-1's init, the modules (stage-1's, then the screen's and the
/// encrypted state's: those not already in an earlier list, each with its dependencies),
/// firmware, `programs` of the package inputs with their libraries, stage1.json.
#[allow(clippy::too_many_arguments)]
pub fn build(
    ctx: &Ctx,
    planned: &Planned,
    modules: Modules,
    compression: Compression,
    config: &Stage1Config,
    firmware: &[String],
    programs: &[String],
    out: &Path,
) -> Result<()> {
    let init = ctx.input(planned, "init")?;
    let mods = ctx.input(planned, "modules")?;
    let release = fs::read_to_string(mods.join("release"))?.trim().to_string();
    let moddir = mods.join("lib/modules").join(&release);
    let order = resolve_modules(&moddir, modules.stage1, "stage1.modules")?;
    let screen_order: Vec<String> = resolve_modules(&moddir, modules.screen, "stage1.screen_modules")?
        .into_iter()
        .filter(|m| !order.contains(m))
        .collect();
    let crypt_order: Vec<String> = resolve_modules(&moddir, modules.crypt, "state.encryption")?
        .into_iter()
        .filter(|m| !order.contains(m) && !screen_order.contains(m))
        .collect();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for d in ["dev", "proc", "sys", "run", "tmp", "sysroot"] {
        entries.insert(d.into(), Entry::dir(d));
    }
    let init_bin = fs::read(init.join("bin/mobix-init")).context("reading the stage-1 init binary")?;
    entries.insert("init".into(), Entry::file("init", 0o755, init_bin));
    let mut lists: [Vec<String>; 3] = Default::default();
    let each = (order.iter().map(|r| (r, 0)))
        .chain(screen_order.iter().map(|r| (r, 1)))
        .chain(crypt_order.iter().map(|r| (r, 2)));
    for (rel, list) in each {
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
        lists[list].push(format!("/{path}"));
    }
    if !programs.is_empty() {
        let roots: Vec<std::path::PathBuf> = (planned.recipe.inputs.iter())
            .filter(|(k, _)| k.starts_with("pkg-"))
            .map(|(_, p)| ctx.store.host_path(p))
            .collect();
        let files = program_closure(&roots, programs)?;
        check_programs(&files, programs, &out.with_extension("programs"))?;
        for (path, (mode, data)) in files {
            add_parents(&mut entries, &path);
            entries.insert(path.clone(), Entry::file(path, mode, data));
        }
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
    let [in_ramfs, screen_in_ramfs, crypt_in_ramfs] = lists;
    let json = Stage1 {
        config: config.clone(),
        kernel_release: release,
        modules: in_ramfs,
        screen_modules: screen_in_ramfs,
        crypt_modules: crypt_in_ramfs,
    };
    let cfg = STAGE1_FILE.trim_start_matches('/');
    add_parents(&mut entries, cfg);
    entries.insert(cfg.into(), Entry::file(cfg, 0o644, serde_json::to_vec_pretty(&json)?));
    let archive = cpio::write(&entries.into_values().collect::<Vec<_>>())?;
    fs::write(out, crate::format::compress::compress(&archive, compression)?)?;
    Ok(())
}

/// Where the packages put the libraries a program loads, searched in this order (Debian's
/// multiarch directories first, as its loader does).
const LIBRARY_DIRS: &[&str] = &["lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib"];

/// Libraries a library loads by name at run time rather than by `DT_NEEDED`: glibc's
/// threads unwind with libgcc_s (without it a program that ends a thread aborts, as
/// cryptsetup's argon2 does).
const LOADED_AT_RUN_TIME: &[(&str, &str)] = &[("libc.so.6", "libgcc_s.so.1")];

/// The files `programs` (paths in the package trees `roots`) need in the initramfs, by their
/// path there: each program in `bin/` under its own name, the loader at the path the
/// programs name, and every library they load (by `DT_NEEDED`, read with
/// [`crate::format::elf`], to the end of the chain) in `lib/aarch64-linux-gnu/` under its
/// soname. Links in the packages are followed within the packages; what is copied is the
/// file's bytes.
fn program_closure(roots: &[std::path::PathBuf], programs: &[String]) -> Result<BTreeMap<String, (u32, Vec<u8>)>> {
    use crate::format::elf;
    let mut files = BTreeMap::new();
    let mut queue: Vec<(String, Vec<u8>)> = Vec::new();
    for p in programs {
        let data = read_in(roots, p)?.ok_or_else(|| {
            Fail::new(format!("no package of the initramfs has {p}"))
                .hint("the program's package is an input of the initramfs recipe (`pkg-<name>`)")
        })?;
        let name = p.rsplit('/').next().unwrap_or(p);
        queue.push((p.clone(), data.clone()));
        files.insert(format!("bin/{name}"), (0o755, data));
    }
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some((what, data)) = queue.pop() {
        let dynamic = elf::read(&data).with_context(|| format!("reading {what} as an ELF file"))?;
        if let Some(interp) = &dynamic.interpreter {
            let rel = interp.trim_start_matches('/').to_string();
            if let std::collections::btree_map::Entry::Vacant(v) = files.entry(rel.clone()) {
                let bytes = read_in(roots, &rel)?
                    .ok_or_else(|| Fail::new(format!("{what} names the loader {interp}, which no package has")))?;
                v.insert((0o755, bytes));
            }
        }
        let at_run_time = LOADED_AT_RUN_TIME.iter().filter(|(by, _)| dynamic.needed.iter().any(|n| n == by));
        let wanted: Vec<String> =
            dynamic.needed.iter().cloned().chain(at_run_time.map(|(_, lib)| lib.to_string())).collect();
        for soname in &wanted {
            // The loader itself (libc names it by its soname): already in place.
            let loader = dynamic.interpreter.as_deref().is_some_and(|i| i.rsplit('/').next() == Some(soname.as_str()));
            if loader || !seen.insert(soname.clone()) {
                continue;
            }
            let found = LIBRARY_DIRS.iter().find_map(|d| read_in(roots, &format!("{d}/{soname}")).transpose());
            let bytes = found.transpose()?.ok_or_else(|| {
                Fail::new(format!("{what} needs {soname}, which no package of the initramfs has"))
                    .hint(format!("looked in {} of each package", LIBRARY_DIRS.join(", ")))
            })?;
            files.insert(format!("lib/aarch64-linux-gnu/{soname}"), (0o755, bytes.clone()));
            queue.push((soname.clone(), bytes));
        }
    }
    Ok(files)
}

/// The bytes of `rel` in the first of `roots` that has it, links followed across the roots
/// (as they would resolve in the software tree); None where none has it.
fn read_in(roots: &[std::path::PathBuf], rel: &str) -> Result<Option<Vec<u8>>> {
    let mut rel = rel.trim_start_matches('/').to_string();
    'follow: for _ in 0..32 {
        for root in roots {
            let p = root.join(&rel);
            let Ok(m) = fs::symlink_metadata(&p) else { continue };
            if m.file_type().is_symlink() {
                let target = fs::read_link(&p)?;
                let target = target.to_string_lossy();
                rel = if let Some(abs) = target.strip_prefix('/') {
                    abs.to_string()
                } else {
                    let parent = Path::new(&rel).parent().unwrap_or(Path::new(""));
                    normalise(&parent.join(&*target).to_string_lossy())
                };
                continue 'follow;
            }
            if m.is_file() {
                return Ok(Some(fs::read(&p).with_context(|| format!("reading {}", p.display()))?));
            }
        }
        return Ok(None);
    }
    anyhow::bail!("{rel}: links nest more than 32 deep")
}

/// `a/b/../c` as `a/c` (a path inside the packages: `..` never climbs above their root).
fn normalise(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out.join("/")
}

/// Runs each program with `--version` (or what it answers to instead) in QEMU's user mode
/// over the initramfs's files: the build fails here, not on the phone, when a library it
/// loads is missing. `dir` (beside the output, removed after) holds them.
fn check_programs(files: &BTreeMap<String, (u32, Vec<u8>)>, programs: &[String], dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = crate::util::remove_tree(dir);
    for (path, (mode, data)) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("a file in a directory"))?;
        fs::write(&p, data)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
    }
    for prog in programs {
        let name = prog.rsplit('/').next().unwrap_or(prog);
        let mut cmd = std::process::Command::new("qemu-aarch64-static");
        cmd.env_clear().env("LC_ALL", "C").arg("-L").arg(dir).arg(dir.join("bin").join(name));
        match name {
            // dropbear says its version with -V; dropbearkey has none, so it makes a key.
            "dropbear" => cmd.arg("-V"),
            "dropbearkey" => cmd.args(["-t", "ed25519", "-f"]).arg(dir.join("check-key")),
            _ => cmd.arg("--version"),
        };
        crate::util::run(&mut cmd).map_err(|e| {
            e.context(format!("running the initramfs's {name} in qemu-aarch64-static (a missing library?)"))
        })?;
    }
    crate::util::remove_tree(dir)?;
    Ok(())
}
