//! The content-addressed store: `<dir>/<hash>-<name>`, where the hash comes from the
//! recipe that builds the path, so a path is known before it is built.
//!
//! Pipeline stage: store. Input: a [`crate::plan::Plan`]; output: realised paths. This is
//! the only module that creates store paths. A build runs in a temporary directory under
//! `<dir>/.mobix/tmp` and is renamed into place only when complete and normalised, so an
//! interrupted build never leaves a store path behind. One process at a time builds in a
//! store (an exclusive `flock` on `<dir>/.mobix/lock`). Each path's references and content
//! hash are recorded (`.mobix/refs/`, `.mobix/hashes/`) before it appears, so
//! [`Store::verify`] can rehash it later; [`archive`] moves paths in and out as tar
//! streams, [`cache`] as signed binary cache entries.
//!
//! On the phone the store is mounted at [`PHONE_STORE`]; outputs refer to each other by
//! that absolute path, wherever the host keeps its store directory.

pub mod archive;
pub mod cache;
mod refs;

use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use refs::scan_references;

/// Where the store lives on the phone (and in every path an output refers to).
pub const PHONE_STORE: &str = "/mobix/store";

/// A store path's identity: 32-character hash and a name. Displays as its phone path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    hash: String,
    name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("store path name {0:?} is invalid (letters, digits, and + - . _ ? =; not starting with '.'; at most 200)")]
    BadName(String),
    #[error("{0:?} is not a store path (expected {PHONE_STORE}/<32-char hash>-<name>)")]
    NotStorePath(String),
}

pub const HASH_LEN: usize = mobix_bootctl::stream::HASH_LEN;

impl StorePath {
    pub fn new(hash: String, name: &str) -> Result<Self, StorePathError> {
        // The one rule of `mobix_bootctl::stream::StoreName`, which the phone applies too.
        if !mobix_bootctl::stream::name_ok(name) {
            return Err(StorePathError::BadName(name.to_string()));
        }
        if !mobix_bootctl::stream::hash_ok(&hash) {
            return Err(StorePathError::NotStorePath(format!("{hash}-{name}")));
        }
        Ok(StorePath { hash, name: name.to_string() })
    }

    /// Parses `<hash>-<name>` (a directory entry) or `/mobix/store/<hash>-<name>`.
    pub fn parse(s: &str) -> Result<Self, StorePathError> {
        let base = s.strip_prefix(PHONE_STORE).and_then(|r| r.strip_prefix('/')).unwrap_or(s);
        if base.contains('/') || base.len() < HASH_LEN + 2 || base.as_bytes()[HASH_LEN] != b'-' {
            return Err(StorePathError::NotStorePath(s.to_string()));
        }
        StorePath::new(base[..HASH_LEN].to_string(), &base[HASH_LEN + 1..])
            .map_err(|_| StorePathError::NotStorePath(s.to_string()))
    }

    pub fn hash_part(&self) -> &str {
        &self.hash
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `<hash>-<name>`: the entry in the store directory.
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.hash, self.name)
    }
    /// `/mobix/store/<hash>-<name>`: how outputs and the phone refer to it.
    pub fn phone_path(&self) -> String {
        format!("{PHONE_STORE}/{}", self.base_name())
    }
}

impl std::fmt::Display for StorePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.phone_path())
    }
}

impl serde::Serialize for StorePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.phone_path())
    }
}

impl<'de> serde::Deserialize<'de> for StorePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StorePath::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A store directory on the host.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    /// Told when the store waits for another process.
    reporter: &'static dyn crate::report::Reporter,
}

/// An unpacked output whose content hash matched its signed metadata
/// ([`Store::check_unpacked`]), ready to be added with [`Store::add_checked`].
#[derive(Debug)]
pub struct CheckedOutput {
    path: StorePath,
    out: PathBuf,
    digest: crate::hash::Sha256Digest,
}

/// Held while building: other mobix processes wait for it.
pub struct StoreLock {
    _file: util::FileLock,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        let meta = root.join(".mobix");
        for d in [meta.join("tmp"), meta.join("refs"), meta.join("hashes")] {
            fs::create_dir_all(&d)
                .map_err(|e| util::user_error(e, format!("creating the store directory {}", d.display())))?;
        }
        let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
        Ok(Store { root, reporter: &crate::report::Silent })
    }

    /// Where this store's notes go.
    pub fn reporter(&self) -> &'static dyn crate::report::Reporter {
        self.reporter
    }

    /// The same store, telling `reporter` when it waits for another mobix process.
    pub fn with_reporter(self, reporter: &'static dyn crate::report::Reporter) -> Store {
        Store { reporter, ..self }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `p` lives on this host.
    pub fn host_path(&self, p: &StorePath) -> PathBuf {
        self.root.join(p.base_name())
    }

    pub fn contains(&self, p: &StorePath) -> bool {
        fs::symlink_metadata(self.host_path(p)).is_ok()
    }

    /// Takes the store's build lock, waiting for another mobix process if it holds it.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join(".mobix/lock");
        let file = util::FileLock::take(&path, || {
            (self.reporter)
                .note(&format!("waiting for another mobix process to release the store lock {}", path.display()))
        })?;
        // With the lock held, no build is running: leftovers of interrupted ones can go.
        let tmp = self.root.join(".mobix/tmp");
        let (mut count, mut bytes) = (0, 0u64);
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let mut size = e.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = util::walk(&e.path(), &mut |_, m| {
                    size += m.len();
                    Ok(true)
                });
                if util::remove_tree(&e.path()).is_ok() {
                    (count, bytes) = (count + 1, bytes + size);
                }
            }
        }
        if count > 0 {
            self.reporter.note(&format!(
                "removed what {count} interrupted build(s) left in {} ({:.1} MiB)",
                tmp.display(),
                bytes as f64 / (1 << 20) as f64
            ));
        }
        Ok(StoreLock { _file: file })
    }

    /// Builds `path` with `build` unless it is already in the store. `build` gets the
    /// temporary location to create the output at (a file or a directory). The output is
    /// normalised, scanned for references among `candidates` and renamed into place.
    /// Returns whether a build ran. Needs the store lock.
    pub fn realise(
        &self,
        _lock: &StoreLock,
        path: &StorePath,
        candidates: &BTreeSet<StorePath>,
        build: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<bool> {
        if self.contains(path) {
            return Ok(false);
        }
        let work = self.root.join(".mobix/tmp").join(format!("{}.{}", path.base_name(), std::process::id()));
        let _ = util::remove_tree(&work);
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let guard = TmpGuard(work.clone());
        let out = work.join("out");
        build(&out)?;
        if fs::symlink_metadata(&out).is_err() {
            anyhow::bail!("the builder of {path} produced no output");
        }
        util::normalize_tree(&out).with_context(|| format!("normalising the output of {path}"))?;
        let refs =
            scan_references(&out, candidates, path).with_context(|| format!("scanning {path} for references"))?;
        let digest = content_hash(&out).with_context(|| format!("hashing the output of {path}"))?;
        self.add_finished(path, &out, &refs, &digest)?;
        drop(guard);
        Ok(true)
    }

    /// Moves a finished, normalised output into the store, after recording its references
    /// and content hash (so a path in the store always has both).
    fn add_finished(
        &self,
        path: &StorePath,
        out: &Path,
        refs: &BTreeSet<StorePath>,
        digest: &crate::hash::Sha256Digest,
    ) -> Result<()> {
        let refs_text: String = refs.iter().map(|r| format!("{}\n", r.phone_path())).collect();
        util::write_atomic(&self.refs_file(path), refs_text.as_bytes())?;
        util::write_atomic(&self.hash_file(path), format!("{}\n", digest.hex()).as_bytes())?;
        fs::rename(out, self.host_path(path)).with_context(|| format!("moving the output of {path} into the store"))?;
        Ok(())
    }

    /// Checks an unpacked archive at `out` (a binary cache entry) against the content hash
    /// its signed metadata gives, after normalising it as a build's output is. Needs no
    /// lock: several imports check at once, then [`Store::add_checked`] adds each.
    pub fn check_unpacked(path: &StorePath, out: &Path, want: &crate::hash::Sha256Digest) -> Result<CheckedOutput> {
        util::normalize_tree(out).with_context(|| format!("normalising {path}"))?;
        let got = content_hash(out).with_context(|| format!("hashing {path}"))?;
        if &got != want {
            return Err(Fail::new(format!(
                "{path}: its unpacked content hashes to {}, but its signed metadata says {}",
                got.hex(),
                want.hex()
            ))
            .into());
        }
        Ok(CheckedOutput { path: path.clone(), out: out.to_path_buf(), digest: got })
    }

    /// Adds a checked output with its references, which must be in the store already.
    /// Needs the store lock.
    pub fn add_checked(&self, _lock: &StoreLock, checked: CheckedOutput, refs: &BTreeSet<StorePath>) -> Result<()> {
        let CheckedOutput { path, out, digest } = checked;
        for r in refs {
            if !self.contains(r) {
                return Err(Fail::new(format!("{path} refers to {r}, which is not in the store")).into());
            }
        }
        self.add_finished(&path, &out, refs, &digest)
    }

    fn hash_file(&self, p: &StorePath) -> PathBuf {
        self.root.join(".mobix/hashes").join(p.base_name())
    }

    /// The content hash recorded when `p` was added (None for paths an older mobix built).
    pub fn recorded_hash(&self, p: &StorePath) -> Result<Option<crate::hash::Sha256Digest>> {
        match fs::read_to_string(self.hash_file(p)) {
            Ok(t) => Ok(Some(
                crate::hash::Sha256Digest::parse_hex(t.trim())
                    .with_context(|| format!("{} is not a sha256", self.hash_file(p).display()))?,
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.hash_file(p).display())),
        }
    }

    /// Every path in the store.
    pub fn paths(&self) -> Result<Vec<StorePath>> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.root).with_context(|| format!("reading {}", self.root.display()))? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            if let Ok(p) = StorePath::parse(&name) {
                v.push(p);
            }
        }
        v.sort();
        Ok(v)
    }

    /// Rehashes `paths` and checks their references are present: what is wrong with each.
    pub fn verify(&self, paths: &[StorePath]) -> Result<Vec<(StorePath, String)>> {
        let mut bad = Vec::new();
        for p in paths {
            let host = self.host_path(p);
            let Some(want) = self.recorded_hash(p)? else {
                bad.push((p.clone(), "no recorded content hash (added by an older mobix): rebuild it".into()));
                continue;
            };
            match content_hash(&host) {
                Ok(got) if got == want => {}
                Ok(got) => {
                    bad.push((p.clone(), format!("content changed: hashes to {}, recorded {}", got.hex(), want.hex())))
                }
                Err(e) => bad.push((p.clone(), format!("cannot be read: {e}"))),
            }
            match self.references(p) {
                Ok(refs) => {
                    for r in refs.iter().filter(|r| !self.contains(r)) {
                        bad.push((p.clone(), format!("refers to {r}, which is missing")));
                    }
                }
                Err(e) => bad.push((p.clone(), format!("{e:#}"))),
            }
        }
        Ok(bad)
    }

    /// Removes `p` (the caller holds the lock and knows nothing rooted needs it): first
    /// renamed out of sight, so a crash never leaves half a path under its name.
    pub fn remove(&self, _lock: &StoreLock, p: &StorePath) -> Result<()> {
        let host = self.host_path(p);
        let trash = self.root.join(".mobix/tmp").join(format!("gc-{}", p.base_name()));
        let _ = util::remove_tree(&trash);
        fs::rename(&host, &trash).with_context(|| format!("moving {} out of the store", host.display()))?;
        for f in [self.refs_file(p), self.hash_file(p)] {
            let _ = fs::remove_file(f);
        }
        util::remove_tree(&trash).with_context(|| format!("removing {}", trash.display()))
    }

    /// Remembers an out directory as a garbage-collection root (its manifest's paths).
    pub fn register_out(&self, out: &Path) -> Result<()> {
        let out = out.canonicalize().with_context(|| format!("resolving {}", out.display()))?;
        let dir = self.root.join(".mobix/outs");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = crate::hash::Sha256Digest::of(out.as_os_str().as_encoded_bytes()).hex();
        let link = dir.join(&key[..32]);
        if fs::read_link(&link).is_ok_and(|t| t == out) {
            return Ok(()); // registered already: nothing to write
        }
        util::symlink_atomic(&out, &link)
    }

    /// The out directories registered as roots that still exist.
    pub fn registered_outs(&self) -> Result<Vec<PathBuf>> {
        let dir = self.root.join(".mobix/outs");
        let mut v = Vec::new();
        let Ok(rd) = fs::read_dir(&dir) else { return Ok(v) };
        for e in rd {
            let link = e?.path();
            match fs::read_link(&link) {
                Ok(target) if target.is_dir() => v.push(target),
                // The out directory is gone: so is the root.
                _ => {
                    let _ = fs::remove_file(&link);
                }
            }
        }
        v.sort();
        Ok(v)
    }

    fn refs_file(&self, p: &StorePath) -> PathBuf {
        self.root.join(".mobix/refs").join(p.base_name())
    }

    /// The store paths `p` refers to (recorded when it was built).
    pub fn references(&self, p: &StorePath) -> Result<BTreeSet<StorePath>> {
        let f = self.refs_file(p);
        let text =
            fs::read_to_string(&f).with_context(|| format!("reading the references of {p} ({})", f.display()))?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| StorePath::parse(l).map_err(|e| anyhow::anyhow!("{}: {e}", f.display())))
            .collect()
    }

    /// `roots` and everything they refer to, transitively.
    pub fn closure(&self, roots: &[StorePath]) -> Result<BTreeSet<StorePath>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<StorePath> = roots.to_vec();
        while let Some(p) = todo.pop() {
            if !self.contains(&p) {
                return Err(Fail::new(format!("{p} is not in the store {}", self.root.display())).into());
            }
            if seen.insert(p.clone()) {
                todo.extend(self.references(&p)?);
            }
        }
        Ok(seen)
    }
}

/// What a store path holds, hashed: its type, and for a directory every entry's relative
/// path, type, executable bit, contents and link target (timestamps and owners do not
/// count). What `mobix store verify` compares and binary caches sign.
pub fn content_hash(path: &Path) -> io::Result<crate::hash::Sha256Digest> {
    // The phone's receiver computes it with the same code.
    mobix_bootctl::content::store_path(path).map(crate::hash::Sha256Digest::from_bytes)
}

/// Removes a build's temporary directory however the build ends (error, panic).
struct TmpGuard(PathBuf);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        let _ = util::remove_tree(&self.0);
    }
}

#[cfg(test)]
mod tests;
