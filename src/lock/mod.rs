//! `mobix.lock`: every fetched input pinned by sha256, like flake.lock. A build whose
//! input does not match its pin fails before anything enters the store.
//!
//! `debs` and `sources` are pinned by hand (`mobix lock add`); `apt` is what Debian's own
//! resolver chose for the packages system configs name ([`apt`]), completed by builds as
//! Cargo completes Cargo.lock.

pub mod apt;
pub mod ids;

use crate::hash::Sha256Digest;
use crate::util::Fail;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    #[serde(default)]
    pub debs: BTreeMap<String, DebPin>,
    /// Debian source packages (`apt-get source`), for what mobix builds from Debian's own
    /// sources with Debian's patches (U-Boot).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, SourcePin>,
    /// Debian packages named in system configs, with every package apt resolved for them.
    #[serde(default, skip_serializing_if = "AptLock::is_empty")]
    pub apt: AptLock,
    /// User and group ids handed out so far ([`ids`]): never taken back.
    #[serde(default, skip_serializing_if = "ids::Ids::is_empty")]
    pub ids: ids::Ids,
    #[serde(skip)]
    pub file: PathBuf,
}

/// What apt resolved: the requests and the solution, pinned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AptLock {
    /// What system configs asked for (`htop`, `vim=2:9.0.1378-2`), sorted: where a full
    /// re-resolution (`mobix lock update`) starts.
    pub requested: Vec<String>,
    /// Every package of the solution, by name.
    pub packages: BTreeMap<String, AptPin>,
}

impl AptLock {
    pub fn is_empty(&self) -> bool {
        self.requested.is_empty() && self.packages.is_empty()
    }
}

/// One package of apt's solution, with the sha256 from the signed index and the packages
/// of the solution it depends on (for an alternative, the one apt chose).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AptPin {
    pub version: String,
    pub arch: String,
    /// Its path in the archive (`pool/main/h/htop/htop_3.2.2-2_arm64.deb`).
    pub file: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
}

impl AptPin {
    /// As a binary package pin (what the `deb` builder fetches and unpacks).
    pub fn deb_pin(&self, name: &str) -> DebPin {
        DebPin {
            package: name.to_string(),
            version: self.version.clone(),
            arch: self.arch.clone(),
            sha256: self.sha256.clone(),
            depends: self.depends.clone(),
        }
    }
}

/// A Debian binary package, pinned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebPin {
    pub package: String,
    pub version: String,
    pub arch: String,
    pub sha256: String,
    /// Other `debs` entries this package needs, by name: built with it and referred to by
    /// its store path, so they are in every closure that holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
}

impl DebPin {
    /// The file name `apt-get download` gives this package (the epoch's ':' as `%3a`).
    pub fn file_name(&self) -> String {
        format!("{}_{}_{}.deb", self.package, self.version.replace(':', "%3a"), self.arch)
    }
    /// `package:arch=version`, as apt-get takes it.
    pub fn apt_spec(&self) -> String {
        format!("{}:{}={}", self.package, self.arch, self.version)
    }
    pub fn digest(&self) -> Option<Sha256Digest> {
        Sha256Digest::parse_hex(&self.sha256)
    }
}

/// A Debian source package, pinned by the sha256 of each of its files except the .dsc
/// (whose signature apt does not check for `--download-only`; its contents are the pins).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourcePin {
    pub package: String,
    pub version: String,
    /// File name to sha256: the upstream tarball and the Debian tarball (patches).
    pub files: BTreeMap<String, String>,
}

impl SourcePin {
    /// `package=version`, as `apt-get source` takes it.
    pub fn apt_spec(&self) -> String {
        format!("{}={}", self.package, self.version)
    }
}

/// A dependency cycle reachable from the last entry of `path`, shown as `a -> b -> a`.
fn find_cycle<'a>(debs: &'a BTreeMap<String, DebPin>, path: &mut Vec<&'a str>) -> Option<String> {
    let last = *path.last()?;
    for d in debs.get(last).map(|p| p.depends.as_slice()).unwrap_or_default() {
        if let Some(i) = path.iter().position(|p| p == d) {
            let mut c: Vec<&str> = path[i..].to_vec();
            c.push(d);
            return Some(c.join(" -> "));
        }
        path.push(d);
        if let Some(c) = find_cycle(debs, path) {
            return Some(c);
        }
        path.pop();
    }
    None
}

fn well_formed(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b".+-:~_".contains(&c))
}

impl Lock {
    pub fn load(repo: &Path) -> Result<Lock> {
        let file = repo.join("mobix.lock");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| crate::util::user_error(e, format!("reading {}", file.display())))?;
        let mut lock: Lock = serde_json::from_str(&text).map_err(|e| {
            let at = format!("{}:{}", file.display(), e.line());
            crate::util::user_error(e, format!("invalid lock file {at}"))
        })?;
        lock.file = file.clone();
        if lock.version != 1 {
            return Err(Fail::new(format!(
                "{}: lock version {} is not supported (expected 1)",
                file.display(),
                lock.version
            ))
            .into());
        }
        for (name, pin) in &lock.debs {
            if pin.digest().is_none() {
                return Err(Fail::new(format!(
                    "{}: debs.{name}.sha256 {:?} is not a lowercase hex sha256",
                    file.display(),
                    pin.sha256
                ))
                .into());
            }
            if !well_formed(&pin.package) || !well_formed(&pin.version) || !well_formed(&pin.arch) {
                return Err(Fail::new(format!(
                    "{}: debs.{name} has a malformed package, version or arch",
                    file.display()
                ))
                .into());
            }
        }
        for (name, pin) in &lock.debs {
            for d in &pin.depends {
                if !lock.debs.contains_key(d) {
                    return Err(Fail::new(format!(
                        "{}: debs.{name}.depends names {d:?}, which is not a debs entry",
                        file.display()
                    ))
                    .into());
                }
            }
            // A dependency cycle would have no order to build in.
            let mut path = vec![name.as_str()];
            if let Some(cycle) = find_cycle(&lock.debs, &mut path) {
                return Err(
                    Fail::new(format!("{}: debs depend on each other in a cycle: {cycle}", file.display())).into()
                );
            }
        }
        for (name, pin) in &lock.apt.packages {
            let bad = |what: &str| Fail::new(format!("{}: apt.packages.{name}: {what}", file.display()));
            if Sha256Digest::parse_hex(&pin.sha256).is_none() {
                return Err(bad(&format!("sha256 {:?} is not a lowercase hex sha256", pin.sha256)).into());
            }
            if !well_formed(name) || !well_formed(&pin.version) || !well_formed(&pin.arch) {
                return Err(bad("a malformed name, version or arch").into());
            }
            if let Some(d) = pin.depends.iter().find(|d| !lock.apt.packages.contains_key(*d)) {
                return Err(bad(&format!("depends names {d:?}, which is not an apt.packages entry")).into());
            }
        }
        for (name, pin) in &lock.sources {
            if !well_formed(&pin.package) || !well_formed(&pin.version) {
                return Err(Fail::new(format!(
                    "{}: sources.{name} has a malformed package or version",
                    file.display()
                ))
                .into());
            }
            if pin.files.is_empty() {
                return Err(Fail::new(format!("{}: sources.{name}.files is empty", file.display())).into());
            }
            for (f, sha) in &pin.files {
                if !well_formed(f) || f.contains(':') {
                    return Err(Fail::new(format!(
                        "{}: sources.{name}.files: {f:?} is not a file name",
                        file.display()
                    ))
                    .into());
                }
                if Sha256Digest::parse_hex(sha).is_none() {
                    return Err(Fail::new(format!(
                        "{}: sources.{name}.files.{f} {sha:?} is not a lowercase hex sha256",
                        file.display()
                    ))
                    .into());
                }
            }
        }
        Ok(lock)
    }

    /// Writes the lock back (atomically), in the form it is read.
    pub fn save(&self) -> Result<()> {
        crate::util::write_atomic(&self.file, (serde_json::to_string_pretty(self)? + "\n").as_bytes())
    }

    pub fn source(&self, name: &str) -> Result<&SourcePin> {
        self.sources.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sources.keys().map(|s| s.as_str()).collect();
            Fail::new(format!("{} has no sources entry {name:?}", self.file.display()))
                .hint(format!("pinned source packages: {}", known.join(", ")))
                .into()
        })
    }

    pub fn deb(&self, name: &str) -> Result<&DebPin> {
        self.debs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.debs.keys().map(|s| s.as_str()).collect();
            Fail::new(format!("{} has no debs entry {name:?}", self.file.display()))
                .hint(format!("pinned packages: {}", known.join(", ")))
                .into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_refuses_unknown_and_cyclic_deb_dependencies() {
        let d = tempfile::tempdir().unwrap();
        let pin = |deps: &str| {
            format!(
                r#"{{"package": "p", "version": "1", "arch": "arm64", "sha256": "{}", "depends": [{deps}]}}"#,
                "ab".repeat(32)
            )
        };
        let write = |a: &str, b: &str| {
            std::fs::write(d.path().join("mobix.lock"), format!(r#"{{"version": 1, "debs": {{"a": {a}, "b": {b}}}}}"#))
                .unwrap()
        };
        write(&pin(r#""b""#), &pin(""));
        let l = Lock::load(d.path()).unwrap();
        assert_eq!(l.debs["a"].depends, ["b"]);
        write(&pin(r#""nope""#), &pin(""));
        let e = format!("{:#}", Lock::load(d.path()).unwrap_err());
        assert!(e.contains("debs.a.depends names \"nope\""), "{e}");
        write(&pin(r#""b""#), &pin(r#""a""#));
        let e = format!("{:#}", Lock::load(d.path()).unwrap_err());
        assert!(e.contains("cycle: a -> b -> a"), "{e}");
    }
}
