//! The system's software tree (`sw`): busybox, the packages' files linked into one tree
//! (two packages may not place different files at one path), the overlays on top, and the
//! pinned firmware files.

use super::Ctx;
use crate::plan::Planned;
use crate::store::StorePath;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub(super) fn sw(ctx: &Ctx, planned: &Planned, out: &Path) -> Result<()> {
    let bb = ctx.input(planned, "busybox")?;
    fs::create_dir_all(out.join("bin"))?;
    fs::copy(bb.join("bin/busybox"), out.join("bin/busybox")).context("copying busybox")?;
    std::os::unix::fs::symlink("busybox", out.join("bin/sh"))?;
    let mut owners: Owners =
        ["bin/busybox", "bin/sh"].iter().map(|f| (f.to_string(), ("busybox".to_string(), out.join(f)))).collect();
    // The packages, and the caches made of them (at paths no package holds).
    for (key, p) in planned.recipe.inputs.iter().filter(|(k, _)| k.starts_with("pkg-") || k.starts_with("cache-")) {
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
pub(super) type Owners = BTreeMap<String, (String, PathBuf)>;

/// Links every file of the package at `host` (store path `p`) into the software tree `out`,
/// each as a symlink to its path in the phone's store, directories made real. A place
/// already taken with different content is refused, naming both packages.
pub(super) fn link_package(host: &Path, p: &StorePath, out: &Path, owners: &mut Owners) -> Result<()> {
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
pub(super) fn overlay_inputs(ctx: &Ctx, planned: &Planned) -> Vec<PathBuf> {
    planned
        .recipe
        .inputs
        .iter()
        .filter(|(k, _)| k.starts_with("overlay-"))
        .map(|(_, p)| ctx.store.host_path(p))
        .collect()
}

/// Copies `src` (if it exists) onto `dst`, merging directories and replacing files.
pub(super) fn merge_tree(src: &Path, dst: &Path) -> Result<()> {
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
pub(super) fn firmware(
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

/// The host paths of a cache recipe's package inputs (`pkg-NN`), in order.
fn package_inputs(ctx: &Ctx, planned: &Planned) -> Vec<PathBuf> {
    let packages = planned.recipe.inputs.iter().filter(|(k, _)| k.starts_with("pkg-"));
    packages.map(|(_, p)| ctx.store.host_path(p)).collect()
}

/// The files directly in `dir` (a directory of the software tree) of a cache recipe's
/// package inputs (where a package has it under `usr/`) and overlays (at their top) whose
/// names `wanted` takes, by name: a later input's file of the same name wins, as in the
/// software tree.
fn input_files(
    ctx: &Ctx,
    planned: &Planned,
    dir: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, PathBuf>> {
    let packaged = package_inputs(ctx, planned).into_iter().map(|p| p.join("usr").join(dir));
    let overlaid = overlay_inputs(ctx, planned).into_iter().map(|o| o.join(dir));
    let mut files = BTreeMap::new();
    for d in packaged.chain(overlaid) {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries {
            let name = e?.file_name().to_string_lossy().into_owned();
            if wanted(&name) {
                files.insert(name.clone(), d.join(&name));
            }
        }
    }
    Ok(files)
}

/// Where GLib looks for its settings schemas, under the software tree.
const SCHEMAS: &str = "share/glib-2.0/schemas";

/// `share/glib-2.0/schemas/gschemas.compiled` from the schemas, enumerations and overrides of the package
/// inputs and overlays (an overlay's file of the same name wins, as in the software tree),
/// by the host's `glib-compile-schemas`, as Debian's trigger makes it on a phone's
/// packages. Nothing to compile makes an empty output.
pub(super) fn glib_schemas(ctx: &Ctx, planned: &Planned, out: &Path) -> Result<()> {
    // Schemas, their enumerations (which schemas of enum keys need: without them those
    // schemas are left out), and overrides of defaults.
    let kinds = [".gschema.xml", ".enums.xml", ".gschema.override"];
    let files = input_files(ctx, planned, SCHEMAS, |name| kinds.iter().any(|k| name.ends_with(k)))?;
    fs::create_dir(out)?;
    if files.is_empty() {
        return Ok(());
    }
    let src = out.join(".schemas");
    fs::create_dir(&src)?;
    for (name, from) in &files {
        fs::copy(from, src.join(name)).with_context(|| format!("copying {}", from.display()))?;
    }
    let target = out.join(SCHEMAS);
    fs::create_dir_all(&target)?;
    util::run(std::process::Command::new("glib-compile-schemas").arg("--targetdir").arg(&target).arg(&src))
        .map_err(|e| e.context(format!("compiling the {} GLib settings schemas", files.len())))?;
    util::remove_tree(&src)?;
    Ok(())
}

/// Where GdkPixbuf's loader modules and their cache are, under the software tree.
const PIXBUF_DIR: &str = "lib/aarch64-linux-gnu/gdk-pixbuf-2.0";
const PIXBUF_LOADERS: &str = "lib/aarch64-linux-gnu/gdk-pixbuf-2.0/2.10.0/loaders";

/// `loaders.cache` for the loader modules of the package inputs and overlays, written by the
/// packages' own arm64 `gdk-pixbuf-query-loaders` run in QEMU's user mode over a tree of
/// links to the inputs' libraries (the tree the phone will have, as far as the tool reads
/// it). The cache names each module at its path on the phone.
pub(super) fn pixbuf_loaders(ctx: &Ctx, planned: &Planned, out: &Path) -> Result<()> {
    fs::create_dir(out)?;
    let farm = out.join(".farm");
    fs::create_dir(&farm)?;
    for root in package_inputs(ctx, planned).into_iter().chain(overlay_inputs(ctx, planned)) {
        host_farm(&root, &farm).with_context(|| format!("linking the libraries of {}", root.display()))?;
    }
    std::os::unix::fs::symlink(".", farm.join("usr"))?;
    let mut modules: Vec<String> = Vec::new();
    if let Ok(entries) = fs::read_dir(farm.join(PIXBUF_LOADERS)) {
        for e in entries {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".so") {
                modules.push(format!("/usr/{PIXBUF_LOADERS}/{name}"));
            }
        }
    }
    modules.sort();
    let tool = farm.join(PIXBUF_DIR).join("gdk-pixbuf-query-loaders");
    if !tool.exists() {
        return Err(Fail::new(format!("the system's packages have no /usr/{PIXBUF_DIR}/gdk-pixbuf-query-loaders"))
            .hint("the image loader cache is made with the query tool of libgdk-pixbuf-2.0-0; is the package's pin whole?")
            .into());
    }
    let mut cmd = std::process::Command::new("qemu-aarch64-static");
    cmd.env_clear().env("LC_ALL", "C").arg("-L").arg(&farm).arg(&tool).args(&modules);
    let run = util::run(&mut cmd).map_err(|e| e.context("querying the image loaders in qemu-aarch64-static"))?;
    let cache = String::from_utf8(run.stdout).context("the loader cache is not UTF-8")?;
    // A module the tool could not open is left out with a message: refuse that rather than
    // ship a cache without it.
    if let Some(missing) = modules.iter().find(|m| !cache.contains(&format!("\"{m}\""))) {
        return Err(Fail::new(format!("gdk-pixbuf-query-loaders could not read the image loader {missing}"))
            .hint(String::from_utf8_lossy(&run.stderr).trim().to_string())
            .into());
    }
    util::remove_tree(&farm)?;
    let dst = out.join(PIXBUF_DIR).join("2.10.0/loaders.cache");
    fs::create_dir_all(dst.parent().expect("below out"))?;
    fs::write(&dst, cache)?;
    Ok(())
}

/// Links the libraries of the tree at `root` (its `lib/` and `usr/lib/`, merged) into
/// `farm` by their host paths. A link in the tree is copied as is when relative; an
/// absolute one is pointed into the farm, since the emulator does not translate link
/// targets.
fn host_farm(root: &Path, farm: &Path) -> Result<()> {
    util::walk(root, &mut |rel, m| {
        let place = rel.strip_prefix("usr/").unwrap_or(rel);
        if rel == "usr" || place == "lib" {
            return Ok(true);
        }
        if !place.starts_with("lib/") {
            return Ok(false);
        }
        let dst = farm.join(place);
        if m.is_dir() {
            fs::create_dir_all(&dst)?;
            return Ok(true);
        }
        if fs::symlink_metadata(&dst).is_ok() {
            return Ok(false);
        }
        let target = if m.file_type().is_symlink() {
            let t = fs::read_link(root.join(rel))?;
            match t.strip_prefix("/") {
                Ok(abs) => farm.join(abs.strip_prefix("usr").unwrap_or(abs)),
                Err(_) => t,
            }
        } else {
            root.join(rel)
        };
        std::os::unix::fs::symlink(target, &dst)?;
        Ok(false)
    })?;
    Ok(())
}

/// Where the shared MIME database is, under the software tree; its sources are in `packages/`.
const MIME: &str = "share/mime";

/// The shared MIME database of the package inputs' and overlays' definitions
/// (`share/mime/packages/*.xml`, an overlay's file of the same name winning), compiled by
/// the host's `update-mime-database`; the definitions themselves stay with their packages.
/// No definitions make an empty output.
pub(super) fn mime_database(ctx: &Ctx, planned: &Planned, out: &Path) -> Result<()> {
    let files = input_files(ctx, planned, &format!("{MIME}/packages"), |name| name.ends_with(".xml"))?;
    fs::create_dir(out)?;
    if files.is_empty() {
        return Ok(());
    }
    let db = out.join(MIME);
    fs::create_dir_all(db.join("packages"))?;
    for (name, from) in &files {
        fs::copy(from, db.join("packages").join(name)).with_context(|| format!("copying {}", from.display()))?;
    }
    let mut cmd = std::process::Command::new("update-mime-database");
    cmd.env_clear().env("LC_ALL", "C").env("PKGSYSTEM_ENABLES_FSYNC", "0").arg(&db);
    util::run(&mut cmd)
        .map_err(|e| e.context(format!("compiling the MIME database of {} definitions", files.len())))?;
    util::remove_tree(&db.join("packages"))?;
    Ok(())
}
