//! `mobix.lock`: every fetched input pinned by sha256, like flake.lock. A build whose
//! input does not match its pin fails before anything enters the store.

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
    #[serde(skip)]
    pub file: PathBuf,
}

/// A Debian binary package, pinned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebPin {
    pub package: String,
    pub version: String,
    pub arch: String,
    pub sha256: String,
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

impl Lock {
    pub fn load(repo: &Path) -> Result<Lock> {
        let file = repo.join("mobix.lock");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| crate::util::user_error(e, format!("reading {}", file.display())))?;
        let mut lock: Lock = serde_json::from_str(&text)
            .map_err(|e| crate::util::user_error(e, format!("invalid lock file {}:{}", file.display(), 0)))?;
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
            let ok = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b".+-:~_".contains(&c));
            if !ok(&pin.package) || !ok(&pin.version) || !ok(&pin.arch) {
                return Err(Fail::new(format!(
                    "{}: debs.{name} has a malformed package, version or arch",
                    file.display()
                ))
                .into());
            }
        }
        Ok(lock)
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
