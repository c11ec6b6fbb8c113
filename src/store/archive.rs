//! Tar archives in and out of the store.
//!
//! [`unpack`] is the one way an archive (a Debian package's data, a binary cache entry)
//! becomes files: every entry must stay inside the destination. Absolute paths and `..`
//! are refused, so are entries reached through a symlink the archive made earlier (the
//! classic "link, then write through it"), links whose target leaves the destination, hard
//! links to outside, and device nodes, FIFOs and sockets. Each refusal names the entry.
//!
//! [`pack`] writes a store path as a tar stream with everything that is not content
//! removed (sorted entries, no owners, fixed times, modes 0444/0555), so the same path
//! packs to the same bytes on every host.

use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Which absolute symlink targets an archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbsoluteLinks {
    /// None (a package's files: an absolute link would point at the build host).
    Refuse,
    /// Only into the phone's store (`/mobix/store/...`): what store paths refer to each
    /// other by.
    PhoneStore,
    /// Any: a Debian package's links into the phone's root (`/dev/null` for a masked unit,
    /// `/lib/systemd/systemd`). They are kept as written and only resolve on the phone;
    /// nothing on the host follows a link inside a store path.
    PhoneRoot,
}

/// The name every entry of a packed store path starts with (the path itself is `out`).
pub const ROOT: &str = "out";

fn refuse(entry: &Path, why: &str) -> anyhow::Error {
    Fail::new(format!("archive entry {} {why}", entry.display())).into()
}

/// A relative path that stays inside the destination, or an error naming the entry.
fn safe_rel(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(refuse(p, "leaves the destination (absolute or ..)")),
        }
    }
    Ok(out)
}

/// The relative symlink target that leads from a link at `from` to `to`, both relative to
/// the same directory: `usr/bin/b` to `usr/lib/a` is `../lib/a`.
fn relative_link(from: &Path, to: &Path) -> PathBuf {
    let from_dir: Vec<_> = from.parent().map(|p| p.components().collect()).unwrap_or_default();
    let to: Vec<_> = to.components().collect();
    let common = from_dir.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from_dir.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// Whether `target`, a symlink at `rel` (relative to the destination), stays inside it
/// when followed lexically.
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::CurDir => {}
            _ => return false,
        }
    }
    true
}

/// Refuses `rel` if a directory on its way is not a real directory (a symlink the archive
/// made), so nothing is written outside through it.
fn check_parents(dest: &Path, rel: &Path, entry: &Path) -> Result<()> {
    let mut p = dest.to_path_buf();
    let n = rel.components().count();
    for c in rel.components().take(n.saturating_sub(1)) {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Err(refuse(entry, "goes through a symlink")),
            Ok(m) if !m.is_dir() => return Err(refuse(entry, "goes through a file")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(&p)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Unpacks a tar stream into `dest` (a directory that exists): directories, regular files,
/// symlinks. Store paths hold no hard links, and a copy would store the same bytes again (a
/// Debian package may hard-link one 24 MB driver under forty names): a hard link becomes a
/// relative symlink to the file it names, unpacked before it.
pub fn unpack<R: io::Read>(r: R, dest: &Path, links: AbsoluteLinks) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    for entry in ar.entries()? {
        let mut e = entry?;
        // A pax global header (git archive writes one) describes the archive, not a file.
        if e.header().entry_type() == tar::EntryType::XGlobalHeader {
            continue;
        }
        let path = e.path()?.into_owned();
        let rel = safe_rel(&path)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        check_parents(dest, &rel, &path)?;
        let target = dest.join(&rel);
        if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
            return Err(refuse(&path, "appears twice"));
        }
        let mode = e.header().mode().unwrap_or(0o644) & 0o777;
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = fs::File::create(&target)?;
                io::copy(&mut e, &mut f)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o200))?;
            }
            tar::EntryType::Symlink => {
                let link = e.link_name()?.context("symlink without target")?.into_owned();
                let allowed = match links {
                    AbsoluteLinks::PhoneStore => {
                        link.starts_with(super::PHONE_STORE)
                            && safe_rel(link.strip_prefix(super::PHONE_STORE).expect("checked")).is_ok()
                    }
                    AbsoluteLinks::Refuse => false,
                    AbsoluteLinks::PhoneRoot => link.is_absolute(),
                };
                if !allowed && !link_stays_inside(&rel, &link) {
                    return Err(refuse(
                        &path,
                        &format!("is a symlink to {} (outside the destination)", link.display()),
                    ));
                }
                std::os::unix::fs::symlink(&link, &target)?;
            }
            tar::EntryType::Link => {
                let src = safe_rel(&e.link_name()?.context("hard link without target")?)?;
                if fs::symlink_metadata(dest.join(&src)).map(|m| !m.is_file()).unwrap_or(true) {
                    return Err(refuse(&path, "is a hard link to something that is not a file unpacked before it"));
                }
                std::os::unix::fs::symlink(relative_link(&rel, &src), &target)
                    .with_context(|| format!("making hard link {} a symlink", path.display()))?;
            }
            other => {
                return Err(refuse(&path, &format!("is a {other:?}, which a store path may not hold")));
            }
        }
    }
    Ok(())
}

/// Writes the store path at `path` (a file, directory or symlink) as a tar stream whose
/// entries are [`ROOT`] and `out/...`.
pub fn pack<W: io::Write>(path: &Path, w: W) -> Result<W> {
    let mut b = tar::Builder::new(w);
    let mut add = |rel: &str, m: &fs::Metadata| -> Result<()> {
        let full = if rel.is_empty() { path.to_path_buf() } else { path.join(rel) };
        let name = if rel.is_empty() { ROOT.to_string() } else { format!("{ROOT}/{rel}") };
        let mut h = tar::Header::new_gnu();
        h.set_mtime(util::STORE_MTIME as u64);
        h.set_uid(0);
        h.set_gid(0);
        let ft = m.file_type();
        if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            let target = fs::read_link(&full)?;
            b.append_link(&mut h, &name, &target).with_context(|| format!("packing {}", full.display()))?;
        } else if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o555);
            h.set_size(0);
            b.append_data(&mut h, &name, io::empty()).with_context(|| format!("packing {}", full.display()))?;
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if m.permissions().mode() & 0o111 != 0 { 0o555 } else { 0o444 });
            h.set_size(m.len());
            let f = fs::File::open(&full).with_context(|| format!("opening {}", full.display()))?;
            b.append_data(&mut h, &name, f).with_context(|| format!("packing {}", full.display()))?;
        } else {
            anyhow::bail!("{} is a special file; store paths hold none", full.display());
        }
        Ok(())
    };
    let m = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    add("", &m)?;
    if m.is_dir() {
        let mut err = None;
        util::walk(path, &mut |rel, m| {
            if let Err(e) = add(rel, m) {
                err = Some(e);
                return Ok(false);
            }
            Ok(true)
        })
        .with_context(|| format!("walking {}", path.display()))?;
        if let Some(e) = err {
            return Err(e);
        }
    }
    Ok(b.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar holding the given entries, names written raw (as a hostile archive would:
    /// the tar crate's own setters refuse `..`).
    fn hostile(entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                let l = l.as_bytes();
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn refused(entries: &[(&str, tar::EntryType, Option<&str>, &[u8])], links: AbsoluteLinks, names: &str) {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let err = unpack(&hostile(entries)[..], &dest, links).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(names), "{names}: {msg}");
        // Nothing landed beside the destination.
        let beside: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(beside, vec![std::ffi::OsString::from("dest")]);
    }

    #[test]
    fn malicious_archives_are_refused_naming_the_entry() {
        use tar::EntryType::*;
        let r = AbsoluteLinks::Refuse;
        refused(&[("../evil", Regular, None, b"x")], r, "../evil");
        refused(&[("/etc/evil", Regular, None, b"x")], r, "/etc/evil");
        refused(&[("a/../../evil", Regular, None, b"x")], r, "a/../../evil");
        refused(&[("dev/null", Char, None, b"")], r, "dev/null");
        refused(&[("dev/sda", Block, None, b"")], r, "dev/sda");
        refused(&[("fifo", Fifo, None, b"")], r, "fifo");
        // Absolute symlinks, and relative ones that climb out.
        refused(&[("bin/sh", Symlink, Some("/bin/busybox"), b"")], r, "bin/sh");
        refused(&[("up", Symlink, Some("../../etc"), b"")], r, "up");
        refused(&[("a/b/up", Symlink, Some("../../.."), b"")], r, "a/b/up");
        // A link, then a write through it.
        refused(&[("lib", Symlink, Some("."), b""), ("lib/x", Regular, None, b"x")], r, "lib/x");
        // A hard link to outside.
        refused(&[("h", Link, Some("../outside"), b"")], r, "../outside");
        // The phone's store is fine for store paths, nothing else is.
        let p = AbsoluteLinks::PhoneStore;
        refused(&[("etc", Symlink, Some("/etc"), b"")], p, "etc");
        refused(&[("x", Symlink, Some("/mobix/store/../../etc"), b"")], p, "x");
    }

    #[test]
    fn ordinary_archives_unpack() {
        use tar::EntryType::*;
        let d = tempfile::tempdir().unwrap();
        let t = hostile(&[
            // git archive's pax global header (upstream tarballs) is not a file.
            ("pax_global_header", XGlobalHeader, None, b"52 comment=d7b343fd\n"),
            ("./usr/bin/tool", Regular, None, b"#!"),
            ("usr/bin/alias", Symlink, Some("tool"), b""),
            ("usr/lib/up", Symlink, Some("../bin/tool"), b""),
            ("usr/bin/copy", Link, Some("usr/bin/tool"), b""),
            ("./usr/lib/dri/other", Link, Some("./usr/bin/tool"), b""),
            ("top", Symlink, Some("/mobix/store/abc-x"), b""),
        ]);
        let err = unpack(&t[..], d.path(), AbsoluteLinks::Refuse).unwrap_err();
        assert!(format!("{err:#}").contains("top"));
        let d = tempfile::tempdir().unwrap();
        unpack(&t[..], d.path(), AbsoluteLinks::PhoneStore).unwrap();
        // Hard links are symlinks to the one file, relative, so the tree can move.
        assert_eq!(fs::read(d.path().join("usr/bin/copy")).unwrap(), b"#!");
        assert_eq!(fs::read_link(d.path().join("usr/bin/copy")).unwrap(), Path::new("tool"));
        assert_eq!(fs::read_link(d.path().join("usr/lib/dri/other")).unwrap(), Path::new("../../bin/tool"));
        assert_eq!(fs::read(d.path().join("usr/lib/dri/other")).unwrap(), b"#!");
        assert!(!d.path().join("pax_global_header").exists());
        assert_eq!(fs::read_link(d.path().join("usr/lib/up")).unwrap(), Path::new("../bin/tool"));
    }

    #[test]
    fn pack_then_unpack_gives_the_same_tree_and_the_same_bytes_twice() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(src.join("data"), vec![7u8; 10000]).unwrap();
        std::os::unix::fs::symlink("/mobix/store/abc-dep/lib", src.join("lib")).unwrap();
        let a = pack(&src, Vec::new()).unwrap();
        util::normalize_tree(&src).unwrap();
        let b = pack(&src, Vec::new()).unwrap();
        assert_eq!(a, b, "packing depends on nothing but content");
        let dest = d.path().join("dest");
        fs::create_dir(&dest).unwrap();
        unpack(&a[..], &dest, AbsoluteLinks::PhoneStore).unwrap();
        let skip = |_: &str| false;
        assert_eq!(
            crate::hash::sha256_tree(&dest.join(ROOT), &skip).unwrap(),
            crate::hash::sha256_tree(&src, &skip).unwrap()
        );
        // A single file packs too.
        let one = pack(&src.join("data"), Vec::new()).unwrap();
        let dest2 = d.path().join("dest2");
        fs::create_dir(&dest2).unwrap();
        unpack(&one[..], &dest2, AbsoluteLinks::Refuse).unwrap();
        assert_eq!(fs::read(dest2.join(ROOT)).unwrap().len(), 10000);
    }
}
