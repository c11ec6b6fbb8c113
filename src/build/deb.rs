//! The `deb` builder: an arm64 Debian package fetched with the ordinary client
//! (`apt-get download`) into a download cache, checked against its pinned sha256, and
//! unpacked into the store without running any of its scripts.

use super::Ctx;
use crate::hash::sha256_file;
use crate::store::lock::DebPin;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
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
        (ctx.progress)(&format!("cached {} does not match its pin; downloading again", file.display()));
        fs::remove_file(&file)?;
    }
    (ctx.progress)(&format!("downloading {} with apt-get", pin.apt_spec()));
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
        .hint("nothing was added to the store; if the new package is trusted, update the pin")
        .into());
    }
    fs::rename(&got_file, &file)?;
    let _ = fs::remove_dir_all(&partial);
    Ok(file)
}

pub fn build(ctx: &Ctx, pin: &DebPin, out: &Path) -> Result<()> {
    let file = fetch(ctx, pin)?;
    fs::create_dir(out)?;
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| util::user_error(e, "running dpkg-deb (package dpkg)"))?;
    let stdout = child.stdout.take().expect("piped");
    let res = unpack_tar(stdout, out).with_context(|| format!("unpacking {}", file.display()));
    let status = child.wait_with_output()?;
    res?;
    if !status.status.success() {
        anyhow::bail!("dpkg-deb --fsys-tarfile {} failed: {}", file.display(), String::from_utf8_lossy(&status.stderr));
    }
    Ok(())
}

/// A relative path that stays inside the destination, or an error naming the entry.
fn safe_rel(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(
                    Fail::new(format!("archive entry {} leaves the destination (absolute or ..)", p.display())).into()
                )
            }
        }
    }
    Ok(out)
}

/// Unpacks a tar stream into `dest`: directories, regular files and symlinks. Hard links
/// become copies (store paths hold none); device nodes and absolute or `..` paths are
/// refused with the entry's name.
pub fn unpack_tar<R: io::Read>(r: R, dest: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut ar = tar::Archive::new(r);
    for entry in ar.entries()? {
        let mut e = entry?;
        let path = e.path()?.into_owned();
        let rel = safe_rel(&path)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        let mode = e.header().mode().unwrap_or(0o644) & 0o777;
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mut f = fs::File::create(&target)?;
                io::copy(&mut e, &mut f)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o200))?;
            }
            tar::EntryType::Symlink => {
                let link = e.link_name()?.context("symlink without target")?.into_owned();
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(&link, &target)?;
            }
            tar::EntryType::Link => {
                let src = e.link_name()?.context("hard link without target")?.into_owned();
                let src = dest.join(safe_rel(&src)?);
                fs::copy(&src, &target).with_context(|| format!("copying hard link {}", path.display()))?;
            }
            other => {
                return Err(Fail::new(format!(
                    "archive entry {} is a {other:?}, which a store path may not hold",
                    path.display()
                ))
                .into())
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(path: &str, ty: tar::EntryType, link: Option<&str>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_size(0);
        h.set_mode(0o644);
        // set_path refuses '..'; write the raw name as a hostile archive would.
        let name = path.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn refuses_escaping_and_special_entries() {
        for (p, ty) in [
            ("../evil", tar::EntryType::Regular),
            ("/etc/evil", tar::EntryType::Regular),
            ("dev/null", tar::EntryType::Char),
        ] {
            let d = tempfile::tempdir().unwrap();
            let err = unpack_tar(&tar_with(p, ty, None)[..], d.path()).unwrap_err();
            assert!(format!("{err:#}").contains(p.trim_start_matches('/')), "{p}: {err:#}");
        }
        let d = tempfile::tempdir().unwrap();
        unpack_tar(&tar_with("ok/link", tar::EntryType::Symlink, Some("../x"))[..], d.path()).unwrap();
        assert_eq!(fs::read_link(d.path().join("ok/link")).unwrap(), Path::new("../x"));
    }
}
