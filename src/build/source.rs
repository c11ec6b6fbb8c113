//! The `deb-source` builder: a Debian source package fetched with the ordinary client
//! (`apt-get source --download-only`), each file checked against its pin in `mobix.lock`;
//! the store path holds the tarballs as fetched. Builders that use it unpack them and apply
//! Debian's patches themselves ([`unpack`]).
//!
//! The machine's apt is not configured for sources, so mobix keeps a private apt state in
//! its download cache: `deb-src` lines for the same mirrors and suites apt already uses,
//! its own lists, and no change to the system's configuration.

use super::Ctx;
use crate::hash::{sha256_file, Sha256Digest};
use crate::lock::SourcePin;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `deb` lines of the host's apt configuration as (URI, suites, components), from
/// one-line `.list` files and deb822 `.sources` files.
pub fn host_apt_sources(list: &str, deb822: &[String]) -> Vec<(String, Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    for line in list.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut w = line.split_whitespace().peekable();
        if w.next() != Some("deb") {
            continue;
        }
        if w.peek().is_some_and(|t| t.starts_with('[')) {
            // Options: skip to the token that closes them.
            for t in w.by_ref() {
                if t.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (w.next(), w.next()) else { continue };
        out.push((uri.to_string(), vec![suite.to_string()], w.map(String::from).collect()));
    }
    for text in deb822 {
        for stanza in text.split("\n\n") {
            let field = |k: &str| -> Vec<String> {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
                    .map(|v| v.split_whitespace().map(String::from).collect())
                    .unwrap_or_default()
            };
            if !field("Types").iter().any(|t| t == "deb") || field("Enabled").iter().any(|e| e == "no") {
                continue;
            }
            for uri in field("URIs") {
                out.push((uri, field("Suites"), field("Components")));
            }
        }
    }
    out
}

/// The private apt state (`<downloads>/apt-src`), its lists fetched once per day at most.
pub(crate) fn apt_options(ctx: &Ctx) -> Result<Vec<String>> {
    let base = ctx.downloads.join("apt-src");
    let lists = base.join("lists");
    let cache = base.join("cache");
    fs::create_dir_all(lists.join("partial"))?;
    fs::create_dir_all(cache.join("archives/partial"))?;
    let mut list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let mut deb822 = Vec::new();
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in names {
            let text = fs::read_to_string(&p).unwrap_or_default();
            match p.extension().and_then(|e| e.to_str()) {
                Some("list") => list.push_str(&format!("\n{text}")),
                Some("sources") => deb822.push(text),
                _ => {}
            }
        }
    }
    let entries = host_apt_sources(&list, &deb822);
    if entries.is_empty() {
        return Err(Fail::new("apt has no `deb` sources configured, so mobix cannot tell which mirror to use")
            .hint("configure a Debian mirror in /etc/apt/sources.list(.d)")
            .into());
    }
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let text: String = entries
        .iter()
        .map(|(uri, suites, comps)| {
            suites
                .iter()
                .map(|s| format!("deb-src [signed-by={keyring}] {uri} {s} {}\n", comps.join(" ")))
                .collect::<String>()
        })
        .collect();
    let sources = base.join("sources.list");
    let changed = fs::read_to_string(&sources).ok().as_deref() != Some(text.as_str());
    util::write_atomic(&sources, text.as_bytes())?;
    let opts = vec![
        format!("-o=Dir::Etc::SourceList={}", sources.display()),
        "-o=Dir::Etc::SourceParts=/dev/null".to_string(),
        format!("-o=Dir::State::Lists={}", lists.display()),
        format!("-o=Dir::Cache={}", cache.display()),
    ];
    let stamp = base.join("updated");
    let fresh = fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() < 24 * 3600));
    if changed || !fresh {
        ctx.progress.note("updating the private apt source lists");
        // apt drops privileges to _apt for downloads; let it write there.
        let _ = Command::new("chown").arg("-R").arg("_apt").arg(&lists).stderr(Stdio::null()).status();
        util::run(Command::new("apt-get").args(&opts).args(["-q", "update"])).map_err(|e| {
            e.context(Fail::new("updating apt's source lists failed").hint("check the network and the mirror"))
        })?;
        fs::write(&stamp, b"")?;
    }
    Ok(opts)
}

/// The files of a pinned source package in the download cache, fetched if missing, each
/// checked against its pin.
pub fn fetch(ctx: &Ctx, pin: &SourcePin) -> Result<Vec<PathBuf>> {
    let dir = ctx.downloads.join("sources");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let want = |f: &str| Sha256Digest::parse_hex(&pin.files[f]).context("lock entries are validated");
    let mut missing = false;
    for f in pin.files.keys() {
        let p = dir.join(f);
        if p.exists() && sha256_file(&p)? != want(f)? {
            ctx.progress.note(&format!("cached {} does not match its pin; downloading again", p.display()));
            fs::remove_file(&p)?;
        }
        missing |= !p.exists();
    }
    if missing {
        let opts = apt_options(ctx)?;
        ctx.progress.note(&format!("downloading the source of {} with apt-get", pin.apt_spec()));
        let partial = ctx.downloads.join(format!(".partial-src-{}", std::process::id()));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)?;
        let _ = Command::new("chown").arg("_apt").arg(&partial).stderr(Stdio::null()).status();
        let res = util::run(
            Command::new("apt-get")
                .args(&opts)
                .args(["-q", "source", "--download-only"])
                .arg(pin.apt_spec())
                .current_dir(&partial),
        );
        if let Err(e) = res {
            let _ = fs::remove_dir_all(&partial);
            return Err(e.context(Fail::new(format!("downloading the source of {} failed", pin.apt_spec())).hint(
                "if the archive no longer has this version, pin a current one in mobix.lock (`apt-get source \
                 --download-only` shows the files and their hashes are in the .dsc)",
            )));
        }
        for f in pin.files.keys() {
            let got_file = partial.join(f);
            let got = sha256_file(&got_file)
                .with_context(|| format!("apt-get source did not produce {}", got_file.display()));
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    let _ = fs::remove_dir_all(&partial);
                    return Err(e);
                }
            };
            if got != want(f)? {
                let _ = fs::remove_dir_all(&partial);
                return Err(Fail::new(format!(
                    "{f} does not match its pin in mobix.lock: expected sha256 {}, got {got}",
                    pin.files[f]
                ))
                .hint("nothing was added to the store; if the new source is trusted, update the pin")
                .into());
            }
            fs::rename(&got_file, dir.join(f))?;
            ctx.fetched_one();
        }
        let _ = fs::remove_dir_all(&partial);
    }
    Ok(pin.files.keys().map(|f| dir.join(f)).collect())
}

pub fn build(ctx: &Ctx, pin: &SourcePin, out: &Path) -> Result<()> {
    let files = fetch(ctx, pin)?;
    fs::create_dir(out)?;
    for f in files {
        fs::copy(&f, out.join(f.file_name().expect("a file name")))?;
    }
    Ok(())
}

/// Unpacks a (compressed) tarball into `dest` with the store's safe unpacker: an entry
/// that would land outside `dest` (absolute, `..`, through or as an escaping link) fails
/// the build, naming the entry.
fn untar(file: &Path, dest: &Path) -> Result<()> {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let tool = match name.rsplit('.').next() {
        Some("gz" | "tgz") => "gzip",
        Some("xz") => "xz",
        Some("bz2") => "bzip2",
        Some("zst") => "zstd",
        Some("tar") => "cat",
        _ => {
            return Err(Fail::new(format!(
                "{} is not a tarball mobix can unpack (tar, gz, xz, bz2, zst)",
                file.display()
            ))
            .into())
        }
    };
    let mut cmd = Command::new(tool);
    cmd.args(if tool == "cat" { &[][..] } else { &["-dc"][..] }).arg(file);
    super::unpack_piped(&mut cmd, file, dest, crate::store::archive::AbsoluteLinks::Refuse)
}

/// Unpacks a `deb-source` store path into `dest` the way `dpkg-source -x` does for the
/// "3.0 (quilt)" format: the upstream tarball, then `debian/` from the Debian tarball, then
/// every patch of `debian/patches/series` in order. Returns the tree.
pub fn unpack(src: &Path, dest: &Path) -> Result<PathBuf> {
    let mut orig = None;
    let mut debian = None;
    for e in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let p = e?.path();
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        if n.contains(".orig.tar.") {
            orig = Some(p);
        } else if n.contains(".debian.tar.") {
            debian = Some(p);
        }
    }
    let (Some(orig), Some(debian)) = (orig, debian) else {
        return Err(Fail::new(format!("{} lacks an .orig.tar.* or a .debian.tar.* file", src.display())).into());
    };
    // The upstream tarball's one top directory is the tree (tar's --strip-components=1);
    // a tarball without one is the tree itself.
    let top = dest.join("orig");
    fs::create_dir_all(&top)?;
    untar(&orig, &top)?;
    let entries: Vec<PathBuf> = fs::read_dir(&top)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    let tree = dest.join("src");
    match entries.as_slice() {
        [one] if fs::symlink_metadata(one)?.is_dir() => fs::rename(one, &tree)?,
        _ => fs::rename(&top, &tree)?,
    }
    let _ = fs::remove_dir(&top);
    // As dpkg-source does: the Debian tarball's debian/ replaces any the upstream one had.
    util::remove_tree(&tree.join("debian"))?;
    untar(&debian, &tree)?;
    let series = tree.join("debian/patches/series");
    let list = fs::read_to_string(&series).unwrap_or_default();
    for name in list.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()) {
        let patch = tree.join("debian/patches").join(name.split_whitespace().next().unwrap_or(name));
        let f = fs::File::open(&patch).with_context(|| format!("opening {}", patch.display()))?;
        util::run(
            Command::new("patch")
                .args(["-p1", "-s", "-f", "--no-backup-if-mismatch"])
                .current_dir(&tree)
                .stdin(Stdio::from(f)),
        )
        .with_context(|| format!("applying Debian's patch {name}"))?;
    }
    Ok(tree)
}

/// The newest version of `pin`'s source package the mirror has, pinned by the checksums
/// in apt's signed index (the .dsc left out, as in every pin).
pub fn candidate(ctx: &Ctx, pin: &SourcePin) -> Result<SourcePin> {
    let opts = apt_options(ctx)?;
    let out = util::run(Command::new("apt-cache").args(&opts).args(["showsrc", &pin.package]))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut best: Option<SourcePin> = None;
    for stanza in text.split("\n\n") {
        let field = |k: &str| stanza.lines().find_map(|l| l.strip_prefix(&format!("{k}: ")).map(str::trim));
        if field("Package") != Some(pin.package.as_str()) {
            continue;
        }
        let Some(version) = field("Version") else { continue };
        let mut files = std::collections::BTreeMap::new();
        let mut in_sums = false;
        for l in stanza.lines() {
            if l.starts_with("Checksums-Sha256:") {
                in_sums = true;
                continue;
            }
            if in_sums {
                let Some(rest) = l.strip_prefix(' ') else { break };
                let parts: Vec<&str> = rest.split_whitespace().collect();
                if let [sha, _size, name] = parts[..] {
                    if !name.ends_with(".dsc") {
                        files.insert(name.to_string(), sha.to_string());
                    }
                }
            }
        }
        let newer = match &best {
            None => true,
            Some(b) => Command::new("dpkg")
                .args(["--compare-versions", version, "gt", &b.version])
                .status()
                .is_ok_and(|s| s.success()),
        };
        if newer && !files.is_empty() {
            best = Some(SourcePin { package: pin.package.clone(), version: version.to_string(), files });
        }
    }
    best.ok_or_else(|| {
        Fail::new(format!("the mirror has no source package {}", pin.package))
            .hint("check the name in mobix.lock and apt's sources")
            .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_apt_source_formats() {
        let list = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main contrib\n\
                    deb-src http://m.example/debian bookworm main\ndeb http://sec.example/ bookworm-security main\n";
        let deb822 = vec!["Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
                           Components: main\n\nTypes: deb\nEnabled: no\nURIs: http://off.example/\nSuites: x\n\
                           Components: main\n"
            .to_string()];
        let got = host_apt_sources(list, &deb822);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                ("http://m.example/debian".into(), s(&["bookworm"]), s(&["main", "contrib"])),
                ("http://sec.example/".into(), s(&["bookworm-security"]), s(&["main"])),
                ("http://deb.debian.org/debian".into(), s(&["bookworm", "bookworm-updates"]), s(&["main"])),
            ]
        );
    }

    /// tar ends at its zero blocks, but the decompressor may have more to write (record
    /// padding): it must be read to the end, not killed by a closed pipe.
    #[test]
    fn a_tarball_with_a_long_tail_after_its_end_unpacks() {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "t/hello", &b"hello"[..]).unwrap();
        let mut data = b.into_inner().unwrap();
        data.extend(vec![0u8; 1 << 20]);
        let file = tmp.path().join("x.tar");
        fs::write(&file, &data).unwrap();
        let dest = tmp.path().join("d");
        fs::create_dir(&dest).unwrap();
        untar(&file, &dest).unwrap();
        assert_eq!(fs::read(dest.join("t/hello")).unwrap(), b"hello");
    }
}
