//! Builders: one function per recipe kind, each turning its inputs into one output path.
//!
//! Pipeline stage: store (the work behind realisation). Input: a planned recipe and the
//! host paths of its inputs; output: a file or directory at the temporary location the
//! store hands over. Builders run external tools (apt-get, dpkg-deb, depmod, cargo,
//! qemu, mke2fs, debugfs, e2fsck) through [`crate::util::run`].

mod cc;
pub mod deb;
pub mod images;
mod initramfs;
pub mod kbuild;
pub mod kernel;
pub mod source;
mod uboot;

use crate::plan::{Builder, Plan, Planned};
use crate::store::{Store, StorePath};
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub use initramfs::resolve_modules;

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

/// What a realisation did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub built: Vec<StorePath>,
    /// Taken from a binary cache instead of built.
    pub substituted: Vec<StorePath>,
    /// Archive bytes downloaded from binary caches.
    pub downloaded: u64,
    /// Paths a cache had but could not deliver (it stopped answering): built instead.
    pub built_instead: Vec<StorePath>,
    /// Planned paths that were in the store already (not those substituted here).
    pub present: BTreeSet<StorePath>,
}

/// The variable naming a file to which every realisation appends the base names of the
/// store paths it needed, one per line: `scripts/test` keeps its CI cache to what a run
/// used with it. Unset, nothing is written.
pub const USED_PATHS_ENV: &str = "MOBIX_USED_PATHS";

/// Appends `needed` to the [`USED_PATHS_ENV`] file, in one write (builds running at once
/// append whole lists). A failure to write is said and ignored: it only makes a cache keep
/// less.
fn note_used(ctx: &Ctx, needed: &BTreeSet<StorePath>) {
    let Some(file) = std::env::var_os(USED_PATHS_ENV) else { return };
    let text: String = needed.iter().map(|p| p.base_name() + "\n").collect();
    let wrote = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    if let Err(e) = wrote {
        ctx.progress.note(&format!("warning: {USED_PATHS_ENV}={}: {e}", Path::new(&file).display()));
    }
}

/// What [`walk`] found: every path the targets need, and those a cache will give.
struct Walk {
    needed: BTreeSet<StorePath>,
    found: BTreeMap<StorePath, crate::store::cache::Found>,
}

/// From the targets down: a path in the store needs what it refers to; a path a cache has
/// (unless in `build_anyway`) needs what its metadata says it refers to; any other path
/// needs its recipe's inputs. Caches are asked one level of the walk at a time.
fn walk(
    store: &Store,
    plan: &Plan,
    targets: &[StorePath],
    caches: Option<&crate::store::cache::Caches>,
    build_anyway: &BTreeSet<StorePath>,
) -> Result<Walk> {
    let mut w = Walk { needed: BTreeSet::new(), found: BTreeMap::new() };
    let mut level: Vec<StorePath> = targets.to_vec();
    while !level.is_empty() {
        let new: Vec<StorePath> = level.into_iter().filter(|p| w.needed.insert(p.clone())).collect();
        let ask: Vec<StorePath> =
            new.iter().filter(|p| !store.contains(p) && !build_anyway.contains(*p)).cloned().collect();
        let mut answers = match caches {
            Some(c) if !ask.is_empty() => c.query(&ask)?,
            _ => BTreeMap::new(),
        };
        level = Vec::new();
        for p in new {
            if store.contains(&p) {
                // Present, but its whole closure must be too (a damaged path deleted for
                // repair is realised again, under whatever refers to it).
                level.extend(store.references(&p).unwrap_or_default());
            } else if let Some(f) = answers.remove(&p) {
                level.extend(f.info.references.iter().filter(|r| **r != p).cloned());
                w.found.insert(p, f);
            } else if let Some(r) = plan.get(&p) {
                level.extend(r.recipe.inputs.values().cloned());
            }
        }
    }
    Ok(w)
}

/// Realises `targets` and everything they need, in plan order. From the targets down,
/// a path already in the store or in a binary cache ([`Ctx::substituters`]) needs none of
/// its recipe's inputs: only those recipes run that nothing can stand in for. What caches
/// have is fetched first, several downloads at once; a path the network fails to
/// deliver is built instead, and the run says so.
pub fn realise(ctx: &Ctx, plan: &Plan, targets: &[StorePath]) -> Result<Report> {
    let mut report = Report::default();
    let mut w = walk(ctx.store, plan, targets, None, &BTreeSet::new())?;
    note_used(ctx, &w.needed);
    if w.needed.iter().all(|p| ctx.store.contains(p)) {
        report.present = w.needed.into_iter().filter(|p| plan.get(p).is_some()).collect();
        return Ok(report);
    }
    let lock = ctx.store.lock()?;
    if let Some(caches) = open_caches(ctx)? {
        let done = substitute(ctx, plan, targets, &caches, &lock, &mut report);
        remember_down(ctx, &caches);
        done?;
        w = walk(ctx.store, plan, targets, None, &BTreeSet::new())?;
        note_used(ctx, &w.needed);
    }
    for p in w.needed.iter().filter(|p| plan.get(p).is_none()) {
        if !ctx.store.contains(p) {
            let hint = if plan.existing.contains(p) {
                "it belongs to an older generation: build that generation again, or drop it"
            } else {
                "a present store path refers to it: `mobix store verify` names what is damaged"
            };
            return Err(Fail::new(format!("{p} is needed but not in the store, and this plan cannot build it"))
                .hint(hint)
                .into());
        }
    }
    let order: Vec<&StorePath> = plan.recipes.iter().map(|r| &r.path).filter(|p| w.needed.contains(*p)).collect();
    // The bar counts what is left to do: paths to build.
    let total = order.iter().filter(|p| !ctx.store.contains(p)).count();
    for path in order {
        let done = report.built.len();
        if ctx.store.contains(path) {
            if !report.substituted.contains(path) {
                report.present.insert(path.clone());
            }
            continue;
        }
        let planned = plan.get(path).expect("only planned paths are in the order");
        let candidates = plan.input_closure(&planned.path);
        let t0 = Instant::now();
        let mut announced = false;
        let built = ctx
            .store
            .realise(&lock, &planned.path, &candidates, |out| {
                ctx.progress.note(&format!("building {} ({})", planned.path, planned.recipe.builder.kind()));
                announced = true;
                let label = format!("building {} ({})", planned.recipe.name, planned.recipe.builder.kind());
                let _step = crate::report::step(ctx.progress, &label, done, total);
                build_one(ctx, planned, out)
            })
            .with_context(|| format!("building {}", planned.path))?;
        if built {
            if announced {
                ctx.progress.note(&format!("built {} in {:.1}s", planned.recipe.name, t0.elapsed().as_secs_f64()));
            }
            report.built.push(planned.path.clone());
        } else {
            report.present.insert(planned.path.clone());
        }
    }
    if !report.built_instead.is_empty() {
        let names: Vec<&str> =
            report.built_instead.iter().filter(|p| report.built.contains(p)).map(|p| p.name()).collect();
        ctx.progress.note(&format!(
            "built {} store paths a binary cache had but could not deliver: {}",
            names.len(),
            names.join(", ")
        ));
    }
    Ok(report)
}

/// Splits what the caches have into what they can deliver and what they cannot: a path can
/// only come from a cache with everything it refers to (in the store, or delivered too).
fn deliverable(
    store: &Store,
    mut found: BTreeMap<StorePath, crate::store::cache::Found>,
) -> (BTreeMap<StorePath, crate::store::cache::Found>, Vec<StorePath>) {
    let mut dropped = Vec::new();
    loop {
        let lacking: Vec<StorePath> = found
            .iter()
            .filter(|(p, f)| f.info.references.iter().any(|r| r != *p && !store.contains(r) && !found.contains_key(r)))
            .map(|(p, _)| p.clone())
            .collect();
        if lacking.is_empty() {
            return (found, dropped);
        }
        for p in lacking {
            found.remove(&p);
            dropped.push(p);
        }
    }
}

/// The command's binary caches that can be used (those that did not answer earlier in the
/// command left out); None when there are none.
fn open_caches<'a>(ctx: &'a Ctx) -> Result<Option<crate::store::cache::Caches<'a>>> {
    let subs: Vec<_> = {
        let down = ctx.caches_down.lock().unwrap_or_else(|e| e.into_inner());
        ctx.substituters.iter().filter(|s| !down.contains(&s.text)).cloned().collect()
    };
    if subs.is_empty() {
        return Ok(None);
    }
    let caches = crate::store::cache::Caches::open(&subs, &ctx.trusted, ctx.progress)?;
    if caches.is_empty() {
        remember_down(ctx, &caches);
        return Ok(None);
    }
    Ok(Some(caches))
}

/// Keeps the caches that did not answer out of the command's later realisations.
fn remember_down(ctx: &Ctx, caches: &crate::store::cache::Caches) {
    ctx.caches_down.lock().unwrap_or_else(|e| e.into_inner()).extend(caches.unreachable());
}

/// What [`realise`] would do, from asking the binary caches (nothing is fetched or built).
#[derive(Debug, Default)]
pub struct Preview {
    /// Paths a cache would give, with their archives' sizes.
    pub substitute: BTreeMap<StorePath, u64>,
    /// Planned paths that would be built.
    pub build: BTreeSet<StorePath>,
    /// Planned paths the store has.
    pub present: BTreeSet<StorePath>,
}

/// What realising `targets` would substitute, build and find present: the walk [`realise`]
/// makes, asking the caches as it would (a cache that does not answer is left out).
pub fn preview(ctx: &Ctx, plan: &Plan, targets: &[StorePath]) -> Result<Preview> {
    let caches = open_caches(ctx)?;
    let mut build_anyway = BTreeSet::new();
    loop {
        let w = walk(ctx.store, plan, targets, caches.as_ref(), &build_anyway)?;
        let (found, lacking) = deliverable(ctx.store, w.found);
        if !lacking.is_empty() {
            build_anyway.extend(lacking);
            continue;
        }
        if let Some(c) = &caches {
            remember_down(ctx, c);
        }
        let planned = |p: &&StorePath| plan.get(p).is_some();
        return Ok(Preview {
            build: w
                .needed
                .iter()
                .filter(planned)
                .filter(|p| !ctx.store.contains(p) && !found.contains_key(*p))
                .cloned()
                .collect(),
            present: w.needed.iter().filter(planned).filter(|p| ctx.store.contains(p)).cloned().collect(),
            substitute: found.into_iter().map(|(p, f)| (p, f.info.archive_size)).collect(),
        });
    }
}

/// Takes from the caches every needed path they have (under the store lock). A path the
/// network fails to deliver is built instead: the walk goes again with it (and what refers
/// to it) left to the plan, and asks the caches for its inputs in turn.
fn substitute(
    ctx: &Ctx,
    plan: &Plan,
    targets: &[StorePath],
    caches: &crate::store::cache::Caches,
    lock: &crate::store::StoreLock,
    report: &mut Report,
) -> Result<()> {
    let mut build_anyway = BTreeSet::new();
    loop {
        let w = walk(ctx.store, plan, targets, Some(caches), &build_anyway)?;
        let (found, lacking) = deliverable(ctx.store, w.found);
        if !lacking.is_empty() {
            // Built instead: walk again, asking the caches for their inputs.
            build_anyway.extend(lacking);
            continue;
        }
        if found.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        let f = caches.fetch(ctx.store, lock, &found)?;
        if !f.imported.is_empty() {
            let mut from: BTreeMap<&str, usize> = BTreeMap::new();
            for p in &f.imported {
                *from.entry(caches.name(found[p].cache)).or_default() += 1;
            }
            let from: Vec<String> = from.iter().map(|(c, n)| format!("{n} from {c}")).collect();
            ctx.progress.note(&format!(
                "substituted {} store paths ({}; {:.1} MiB in {:.1}s)",
                f.imported.len(),
                from.join(", "),
                f.bytes as f64 / (1 << 20) as f64,
                t0.elapsed().as_secs_f64()
            ));
        }
        report.substituted.extend(f.imported);
        report.downloaded += f.bytes;
        if f.failed.is_empty() {
            return Ok(());
        }
        if let Some((p, why)) = f.failed.iter().find(|(p, _)| plan.get(p).is_none()) {
            return Err(Fail::new(format!("{p} could not be substituted ({why}), and this plan cannot build it"))
                .hint("it belongs to an older generation: try again when the cache answers")
                .into());
        }
        let names: Vec<&str> = f.failed.iter().map(|(p, _)| p.name()).collect();
        ctx.progress.note(&format!(
            "could not substitute {} store paths ({}): building them: {}",
            names.len(),
            f.failed[0].1,
            names.join(", ")
        ));
        for (p, _) in f.failed {
            report.built_instead.push(p.clone());
            build_anyway.insert(p);
        }
    }
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
        Builder::Initramfs { modules, compression, config, firmware } => {
            initramfs::build(ctx, planned, modules, *compression, config, firmware, out)
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

fn kernel(ctx: &Ctx, planned: &Planned, out: &Path) -> Result<()> {
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

fn kernel_modules(ctx: &Ctx, planned: &Planned, only: Option<&[String]>, out: &Path) -> Result<()> {
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
            initramfs::resolve_modules(&dst, only, "kernel.modules")?.into_iter().collect();
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

fn sw(ctx: &Ctx, planned: &Planned, out: &Path) -> Result<()> {
    let bb = ctx.input(planned, "busybox")?;
    fs::create_dir_all(out.join("bin"))?;
    fs::copy(bb.join("bin/busybox"), out.join("bin/busybox")).context("copying busybox")?;
    std::os::unix::fs::symlink("busybox", out.join("bin/sh"))?;
    let mut owners: Owners =
        ["bin/busybox", "bin/sh"].iter().map(|f| (f.to_string(), ("busybox".to_string(), out.join(f)))).collect();
    for (key, p) in planned.recipe.inputs.iter().filter(|(k, _)| k.starts_with("pkg-")) {
        link_package(&ctx.store.host_path(p), p, out, &mut owners).with_context(|| format!("adding {key} ({p})"))?;
    }
    // Overlays add to the software tree (all but their etc/), later ones winning.
    for ov in overlay_inputs(ctx, planned) {
        for e in fs::read_dir(&ov)? {
            let e = e?;
            if e.file_name() != "etc" {
                merge_tree(&e.path(), &out.join(e.file_name()))?;
            }
        }
    }
    Ok(())
}

/// Where a package's file goes in the software tree: `usr/` merged into the top (Debian's
/// merged /usr), so `usr/bin/tree` is `bin/tree` and libraries from `lib/` and `usr/lib/`
/// meet in `lib/`. `None` for what the tree does not take: a package's `etc/` (its
/// configuration; overlays provide /etc) and mobix's own `share/mobix/depends`.
fn sw_place(rel: &str) -> Option<&str> {
    if rel == "etc" || rel.starts_with("etc/") || rel == "share/mobix/depends" {
        return None;
    }
    Some(rel.strip_prefix("usr/").unwrap_or(rel))
}

/// Who took each place of the software tree: the package's name and the file's host path.
type Owners = BTreeMap<String, (String, PathBuf)>;

/// Links every file of the package at `host` (store path `p`) into the software tree `out`,
/// each as a symlink to its path in the phone's store, directories made real. A place
/// already taken with different content is refused, naming both packages.
fn link_package(host: &Path, p: &StorePath, out: &Path, owners: &mut Owners) -> Result<()> {
    let mut err = None;
    util::walk(host, &mut |rel, m| {
        if rel == "usr" {
            return Ok(true);
        }
        let Some(place) = sw_place(rel) else { return Ok(false) };
        let dst = out.join(place);
        let existing = fs::symlink_metadata(&dst).ok();
        if m.is_dir() {
            // Made when a file goes in (so no empty directories).
            if existing.is_some_and(|e| !e.is_dir()) {
                err = Some(collision(place, owners.get(place), p));
                return Ok(false);
            }
            return Ok(true);
        }
        if existing.is_some() {
            // The same file from two packages is linked once; anything else is a clash.
            let same = owners.get(place).is_some_and(|(_, f)| same_content(f, &host.join(rel)).unwrap_or(false));
            if !same {
                err = Some(collision(place, owners.get(place), p));
            }
            return Ok(false);
        }
        fs::create_dir_all(dst.parent().expect("below out"))?;
        std::os::unix::fs::symlink(format!("{}/{rel}", p.phone_path()), &dst)?;
        owners.insert(place.to_string(), (p.to_string(), host.join(rel)));
        Ok(false)
    })
    .with_context(|| format!("linking {}", host.display()))?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn collision(place: &str, owner: Option<&(String, PathBuf)>, p: &StorePath) -> anyhow::Error {
    let first = owner.map(|(name, _)| name.as_str()).unwrap_or("another package");
    Fail::new(format!("two packages hold /run/current-system/sw/{place} differently: {first} and {p}"))
        .hint("drop one of them from `packages`, or replace the file with an overlay")
        .into()
}

/// Whether two store files are the same: equal link targets, or equal bytes.
fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let (ma, mb) = (fs::symlink_metadata(a)?, fs::symlink_metadata(b)?);
    if ma.file_type().is_symlink() || mb.file_type().is_symlink() {
        return Ok(ma.file_type().is_symlink()
            && mb.file_type().is_symlink()
            && fs::read_link(a)? == fs::read_link(b)?);
    }
    Ok(ma.is_file() && mb.is_file() && ma.len() == mb.len() && fs::read(a)? == fs::read(b)?)
}

/// The host paths of a recipe's overlay inputs, in order.
fn overlay_inputs(ctx: &Ctx, planned: &Planned) -> Vec<PathBuf> {
    planned
        .recipe
        .inputs
        .iter()
        .filter(|(k, _)| k.starts_with("overlay-"))
        .map(|(_, p)| ctx.store.host_path(p))
        .collect()
}

/// Copies `src` (if it exists) onto `dst`, merging directories and replacing files.
fn merge_tree(src: &Path, dst: &Path) -> Result<()> {
    let Ok(m) = fs::symlink_metadata(src) else { return Ok(()) };
    if m.is_dir() {
        if fs::symlink_metadata(dst).is_ok_and(|d| !d.is_dir()) {
            fs::remove_file(dst)?;
        }
        fs::create_dir_all(dst)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dst, fs::Permissions::from_mode(0o755))?;
        for e in fs::read_dir(src)? {
            let e = e?;
            merge_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        Ok(())
    } else {
        if fs::symlink_metadata(dst).is_ok() {
            util::remove_tree(dst)?;
        }
        util::copy_tree(src, dst)
    }
}

/// Copies each pinned firmware file from the package or the user's directory, refusing a
/// missing file or one whose sha256 differs from its pin.
fn firmware(
    ctx: &Ctx,
    planned: &Planned,
    files: &[crate::plan::FirmwareFile],
    directory: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let base = match planned.recipe.inputs.get("package") {
        Some(p) => ctx.store.host_path(p).join("lib/firmware"),
        None => directory.context("firmware comes from a package or a directory")?.to_path_buf(),
    };
    for crate::plan::FirmwareFile { path, sha256: sha, .. } in files {
        let src = base.join(path);
        let got = crate::hash::sha256_file(&src)
            .map_err(|e| util::user_error(e, format!("firmware {path} is not in {}", base.display())))?;
        if got.hex() != *sha {
            return Err(Fail::new(format!(
                "firmware {} does not match its pin: expected sha256 {sha}, got {got}",
                src.display()
            ))
            .hint("nothing was added to the store; if the new file is trusted, update the profile's pin")
            .into());
        }
        let dst = out.join("lib/firmware").join(path);
        fs::create_dir_all(dst.parent().context("a path under lib/firmware")?)?;
        fs::copy(&src, &dst)?;
    }
    fs::create_dir_all(out.join("lib/firmware"))?;
    Ok(())
}

/// `cargo vendor --locked`: the crates of the lock file, from crates.io or cargo's cache
/// (the one step of a Rust build that may use the network), each with its checksum file.
fn cargo_vendor(src: &Path, out: &Path) -> Result<()> {
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
fn stable_vendor(ctx: &Ctx, vendor: &Path) -> Result<PathBuf> {
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
fn cargo(ctx: &Ctx, src: &Path, dir: &str, binary: &str, target: &str, vendor: &Path, out: &Path) -> Result<()> {
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

fn toplevel(ctx: &Ctx, planned: &Planned, cmdline: &str, label: &str, out: &Path) -> Result<()> {
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

fn qemu_dtb(machine: &str, cpu: &str, memory_mib: u32, smp: u32, out: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests;
