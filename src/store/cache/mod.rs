//! Binary caches: store paths others built, shared through a directory, a static HTTP
//! server or an S3 bucket, so a team builds each path once.
//!
//! A cache is a tree of files, the same wherever it lives ([`remote`] reads and writes
//! them):
//! - `mobix-cache-info`: `StoreDir: /mobix/store` and `Priority: N` (lower is asked
//!   first), what a client checks before trusting anything else there;
//! - `<hash>-<name>.json` per store path, its [`Info`]: content hash, archive name, hash,
//!   size and compression, references, and ed25519 signatures over all but the size (the
//!   [`fingerprint`]);
//! - `archives/<sha256>.tar.zst`: the path packed by [`archive::pack`], named by its own
//!   hash. An archive is never replaced or deleted: metadata a client read a minute ago
//!   still points to bytes that exist.
//!
//! Nothing is trusted that was not signed by a trusted key; an archive must hash to what
//! the signature covers (checked while it downloads, before it is decompressed), and what
//! it unpacks to must hash to the signed content hash. Only then does a path enter the
//! store. [`substitute`] does this for many paths at once; [`push`] writes them.

pub mod remote;
mod substitute;

pub use remote::{is_unreachable, Location, Substituter};
pub use substitute::{Caches, Fetched, Found};

use super::{archive, content_hash, Store, StorePath, PHONE_STORE};
use crate::hash::{Hasher, Sha256Digest};
use crate::report::Reporter;
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use ed25519_dalek::{Signer, Verifier};
use remote::Backend;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const SECRET_TAG: &str = "mobix-secret-key-1";
const PUBLIC_TAG: &str = "mobix-public-key-1";

/// A signing key: its name (who signed) and the ed25519 key.
pub struct SecretKey {
    pub name: String,
    key: ed25519_dalek::SigningKey,
}

/// A key whose signatures are trusted.
#[derive(Clone)]
pub struct PublicKey {
    pub name: String,
    key: ed25519_dalek::VerifyingKey,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 100 && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.@".contains(&c))
}

impl SecretKey {
    /// A new key from the kernel's random source.
    pub fn generate(name: &str) -> Result<SecretKey> {
        if !valid_key_name(name) {
            return Err(Fail::new(format!("{name:?} is not a key name (letters, digits, - _ . @)")).into());
        }
        let mut seed = [0u8; 32];
        fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed)).context("reading /dev/urandom")?;
        Ok(SecretKey { name: name.to_string(), key: ed25519_dalek::SigningKey::from_bytes(&seed) })
    }

    /// The file text: `mobix-secret-key-1 NAME HEX`.
    pub fn to_text(&self) -> String {
        format!("{SECRET_TAG} {} {}\n", self.name, hex(&self.key.to_bytes()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    pub fn load(path: &Path) -> Result<SecretKey> {
        let text = fs::read_to_string(path).map_err(|e| util::user_error(e, format!("reading {}", path.display())))?;
        let bad = || Fail::new(format!("{} is not a mobix secret key (`{SECRET_TAG} NAME HEX`)", path.display()));
        let mut it = text.split_whitespace();
        if it.next() != Some(SECRET_TAG) {
            return Err(bad().hint("make one with `mobix store keygen NAME --to FILE`").into());
        }
        let name = it.next().filter(|n| valid_key_name(n)).ok_or_else(bad)?;
        let bytes: [u8; 32] = it.next().and_then(unhex).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
        Ok(SecretKey { name: name.to_string(), key: ed25519_dalek::SigningKey::from_bytes(&bytes) })
    }
}

impl PublicKey {
    /// The file text: `mobix-public-key-1 NAME HEX`.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_TAG} {} {}\n", self.name, hex(self.key.as_bytes()))
    }

    pub fn parse(text: &str, origin: &str) -> Result<PublicKey> {
        let bad = || Fail::new(format!("{origin} is not a mobix public key (`{PUBLIC_TAG} NAME HEX`)"));
        let mut it = text.split_whitespace();
        if it.next() != Some(PUBLIC_TAG) {
            return Err(bad().hint("`mobix store keygen` writes one beside the secret key (FILE.pub)").into());
        }
        let name = it.next().filter(|n| valid_key_name(n)).ok_or_else(bad)?;
        let bytes: [u8; 32] = it.next().and_then(unhex).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        Ok(PublicKey { name: name.to_string(), key })
    }

    pub fn load(path: &Path) -> Result<PublicKey> {
        let text = fs::read_to_string(path).map_err(|e| util::user_error(e, format!("reading {}", path.display())))?;
        PublicKey::parse(&text, &path.display().to_string())
    }
}

/// One signature in a path's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signature {
    pub key: String,
    pub sig: String,
}

/// `<hash>-<name>.json` in a cache.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Info {
    pub version: u32,
    pub path: StorePath,
    /// [`content_hash`] of the path, hex.
    pub content_sha256: String,
    /// The archive's key in the cache (`archives/<sha256>.tar.zst`).
    pub archive: String,
    pub archive_sha256: String,
    pub archive_size: u64,
    /// How the archive is compressed (`zstd`: the only one so far).
    #[serde(default = "zstd")]
    pub compression: String,
    pub references: BTreeSet<StorePath>,
    pub signatures: Vec<Signature>,
}

fn zstd() -> String {
    "zstd".to_string()
}

/// What a signature covers: the path, its content, its archive and its references.
pub fn fingerprint(i: &Info) -> String {
    let refs: Vec<String> = i.references.iter().map(|r| r.phone_path()).collect();
    format!("mobix-cache-1;{};{};{};{}", i.path.phone_path(), i.content_sha256, i.archive_sha256, refs.join(","))
}

/// The cache's root file.
pub const CACHE_INFO: &str = "mobix-cache-info";
/// The priority of a cache whose info names none (lower is asked first).
pub const DEFAULT_PRIORITY: u32 = 50;

/// `mobix-cache-info`: `Key: value` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    pub store_dir: String,
    pub priority: u32,
}

impl CacheInfo {
    pub fn parse(text: &str) -> Result<CacheInfo, String> {
        let mut store_dir = None;
        let mut priority = DEFAULT_PRIORITY;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (k, v) = line.split_once(':').ok_or_else(|| format!("{line:?} is not `Key: value`"))?;
            match k.trim() {
                "StoreDir" => store_dir = Some(v.trim().to_string()),
                "Priority" => {
                    priority = v.trim().parse().map_err(|_| format!("Priority {:?} is not a number", v.trim()))?
                }
                _ => {} // later additions; an older mobix reads on
            }
        }
        Ok(CacheInfo { store_dir: store_dir.ok_or("no StoreDir line")?, priority })
    }

    pub fn to_text(&self) -> String {
        format!("StoreDir: {}\nPriority: {}\n", self.store_dir, self.priority)
    }
}

fn info_key(p: &StorePath) -> String {
    format!("{}.json", p.base_name())
}

fn archive_key(sha256: &Sha256Digest) -> String {
    format!("archives/{}.tar.zst", sha256.hex())
}

/// Whether a metadata file's archive key stays inside the cache (no `..`, not absolute).
fn key_inside(key: &str) -> bool {
    !key.is_empty() && Path::new(key).components().all(|c| matches!(c, Component::Normal(_)))
}

/// An opened cache: where it is, how to reach it, what its info file says.
pub struct Cache {
    /// As the user named it.
    pub name: String,
    backend: Box<dyn Backend>,
    pub priority: u32,
}

/// Why a cache cannot be used now.
#[derive(Debug)]
pub struct Unusable {
    pub why: String,
    /// It did not answer (rather than answering that it is no cache yet).
    pub unreachable: bool,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl Cache {
    /// Opens a cache to read from. Ok(Err(why)) when it cannot be used now (unreachable,
    /// not a cache yet): the caller goes on without it. A refusal (wrong credentials, a
    /// cache for another store directory) is an error.
    pub fn open(sub: &Substituter) -> Result<Result<Cache, Unusable>> {
        let backend = remote::open(sub)?;
        let text = match remote::get_small(&*backend, CACHE_INFO) {
            Ok(Some(t)) => t,
            Ok(None) => {
                let why = format!("it has no {CACHE_INFO}: nothing was pushed to it yet");
                return Ok(Err(Unusable { why, unreachable: false }));
            }
            Err(e) if is_unreachable(&e) => return Ok(Err(Unusable { why: format!("{e:#}"), unreachable: true })),
            Err(e) => return Err(e.context(format!("opening the binary cache {}", sub.text))),
        };
        let info = check_info(sub, &text)?;
        Ok(Ok(Cache { name: sub.text.clone(), backend, priority: sub.priority.unwrap_or(info.priority) }))
    }

    /// Opens a cache to push to, writing its info file when it has none.
    pub fn open_for_push(sub: &Substituter) -> Result<Cache> {
        let backend = remote::open(sub)?;
        let ctx = || format!("opening the binary cache {}", sub.text);
        let info = match remote::get_small(&*backend, CACHE_INFO).with_context(ctx)? {
            Some(text) => check_info(sub, &text)?,
            None => {
                let info = CacheInfo {
                    store_dir: PHONE_STORE.to_string(),
                    priority: sub.priority.unwrap_or(DEFAULT_PRIORITY),
                };
                let tmp = tempfile_in_tmp(info.to_text().as_bytes())?;
                backend.put(CACHE_INFO, tmp.path()).with_context(ctx)?;
                info
            }
        };
        Ok(Cache { name: sub.text.clone(), backend, priority: info.priority })
    }

    /// Every path the cache describes (its top-level `<hash>-<name>.json` files); None when
    /// it cannot be listed (a static HTTP server).
    pub fn list(&self) -> Result<Option<Vec<StorePath>>> {
        let Some(names) = self.backend.list()? else { return Ok(None) };
        Ok(Some(names.iter().filter_map(|n| StorePath::parse(n.strip_suffix(".json")?).ok()).collect()))
    }

    /// The metadata of `p`, if the cache has it.
    pub fn info(&self, p: &StorePath) -> Result<Option<Info>> {
        let key = info_key(p);
        let Some(data) = remote::get_small(&*self.backend, &key)? else { return Ok(None) };
        let info = Info::parse(&data, &format!("{}/{key}", self.name))?;
        if &info.path != p {
            return Err(Fail::new(format!("{}/{key} describes {}, not {p}", self.name, info.path)).into());
        }
        Ok(Some(info))
    }
}

impl Info {
    /// Parses a metadata file (`origin` names it in errors): JSON whose archive key stays
    /// inside the cache and whose compression this mobix reads. The signature is
    /// [`check_signature`]'s to check.
    pub fn parse(data: &[u8], origin: &str) -> Result<Info> {
        let info: Info =
            serde_json::from_slice(data).map_err(|e| Fail::new(format!("{origin} is not cache metadata: {e}")))?;
        if !key_inside(&info.archive) {
            return Err(Fail::new(format!("{origin}: archive {:?} is not a key in the cache", info.archive)).into());
        }
        if info.compression != "zstd" {
            return Err(Fail::new(format!(
                "{origin}: archive compression {:?} is not one this mobix reads (zstd)",
                info.compression
            ))
            .into());
        }
        Ok(info)
    }
}

fn check_info(sub: &Substituter, text: &[u8]) -> Result<CacheInfo> {
    let info = CacheInfo::parse(&String::from_utf8_lossy(text))
        .map_err(|e| Fail::new(format!("{}/{CACHE_INFO} is not a mobix cache info file: {e}", sub.text)))?;
    if info.store_dir != PHONE_STORE {
        return Err(
            Fail::new(format!("{} holds store paths for {}, not {PHONE_STORE}", sub.text, info.store_dir)).into()
        );
    }
    Ok(info)
}

/// A small file with `data` for a backend to copy (removed when dropped).
fn tempfile_in_tmp(data: &[u8]) -> Result<TempFile> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path =
        std::env::temp_dir().join(format!("mobix-cache-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(TempFile(path))
}

/// A file removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Checks `info`'s signatures: Ok with the trusted key's name that signed it.
pub fn check_signature(info: &Info, trusted: &[PublicKey], origin: &str) -> Result<String> {
    let fp = fingerprint(info);
    let mut seen = Vec::new();
    for s in &info.signatures {
        seen.push(s.key.clone());
        let Some(k) = trusted.iter().find(|k| k.name == s.key) else { continue };
        let sig = unhex(&s.sig)
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .ok_or_else(|| Fail::new(format!("{origin}: signature by {} is malformed", s.key)))?;
        if k.key.verify(fp.as_bytes(), &sig).is_ok() {
            return Ok(k.name.clone());
        }
        return Err(Fail::new(format!(
            "{origin}: the signature by {} does not match: the metadata was changed after signing",
            s.key
        ))
        .hint("do not use this cache entry; push it again from a store you trust")
        .into());
    }
    Err(Fail::new(format!(
        "{origin}: not signed by a trusted key (signed by: {})",
        if seen.is_empty() { "nobody".to_string() } else { seen.join(", ") }
    ))
    .hint("trust the key of whoever pushed to the cache: --trust FILE.pub, or trusted_keys in mobix's config file")
    .into())
}

/// Unpacks the downloaded archive `file` of `info.path` into `work` (on the store's
/// filesystem), checking it against the signed metadata: its sha256 (`got`, computed by
/// the download) before anything is decompressed, then the unpacked content's hash. Needs
/// no lock, so several run at once; what it returns is added by [`Store::add_checked`].
/// The caller removes `work`.
pub fn unpack_archive(
    info: &Info,
    file: &Path,
    got: &Sha256Digest,
    origin: &str,
    work: &Path,
) -> Result<crate::store::CheckedOutput> {
    let p = &info.path;
    if got.hex() != info.archive_sha256 {
        return Err(Fail::new(format!(
            "{origin}/{} (the archive of {p}) was tampered with or damaged: its sha256 is {}, the signed metadata says {}",
            info.archive,
            got.hex(),
            info.archive_sha256
        ))
        .hint("nothing was added to the store; push the path to the cache again")
        .into());
    }
    let content = Sha256Digest::parse_hex(&info.content_sha256)
        .ok_or_else(|| Fail::new(format!("{origin}/{}: content_sha256 is not a sha256", info_key(p))))?;
    (|| {
        let _ = util::remove_tree(work);
        fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
        let f = fs::File::open(file)?;
        archive::unpack(zstd::Decoder::new(f)?, work, archive::AbsoluteLinks::PhoneRoot)
            .with_context(|| format!("unpacking {origin}/{}", info.archive))?;
        let out = work.join(archive::ROOT);
        if fs::symlink_metadata(&out).is_err() {
            return Err(Fail::new(format!("{origin}/{} holds no `{}` entry", info.archive, archive::ROOT)).into());
        }
        Store::check_unpacked(p, &out, &content)
    })()
    .with_context(|| format!("importing {p} from {origin}"))
}

/// The store paths of `set` in an order where each comes after what it refers to (within
/// the set), by `refs`.
pub fn references_first(set: &BTreeSet<StorePath>, refs: impl Fn(&StorePath) -> BTreeSet<StorePath>) -> Vec<StorePath> {
    fn visit(
        p: &StorePath,
        set: &BTreeSet<StorePath>,
        refs: &dyn Fn(&StorePath) -> BTreeSet<StorePath>,
        seen: &mut BTreeSet<StorePath>,
        out: &mut Vec<StorePath>,
    ) {
        if !seen.insert(p.clone()) {
            return;
        }
        for r in refs(p).iter().filter(|r| *r != p && set.contains(*r)) {
            visit(r, set, refs, seen, out);
        }
        out.push(p.clone());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in set {
        visit(p, set, &refs, &mut seen, &mut out);
    }
    out
}

/// What a push did.
#[derive(Debug, Default)]
pub struct Pushed {
    /// Paths whose metadata was written.
    pub written: Vec<StorePath>,
    /// Paths the cache had already.
    pub present: usize,
    /// Archive bytes uploaded (archives the cache had are not sent again).
    pub bytes: u64,
}

/// Writes `roots` and their closures to `cache`, signed with `key`, skipping what it has.
/// Archives go first, several at once; each path's metadata follows once its archive and
/// its references' metadata are there, so whatever metadata a client finds, the files it
/// points to exist.
pub fn push(
    store: &Store,
    roots: &[StorePath],
    cache: &Cache,
    key: &SecretKey,
    progress: &dyn Reporter,
) -> Result<Pushed> {
    let closure = store.closure(roots)?;
    let order = references_first(&closure, |p| store.references(p).unwrap_or_default());
    let tmp = store.root().join(".mobix/tmp").join(format!("push-{}", std::process::id()));
    let _ = util::remove_tree(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<usize, Result<Option<Packed>>>> = Default::default();
    let workers = 4.min(order.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = order.get(i) else { break };
                let r = push_archive(store, p, cache, key, &tmp);
                let failed = r.is_err();
                results.lock().unwrap_or_else(|e| e.into_inner()).insert(i, r);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                let label = format!("pushing to {}", cache.name);
                progress.event(crate::report::Event::StepStarted { label: &label, done: n, total: order.len() });
                if failed {
                    next.store(order.len(), Ordering::Relaxed);
                }
            });
        }
    });
    progress.event(crate::report::Event::StepFinished);
    let _ = util::remove_tree(&tmp);
    let mut pushed = Pushed::default();
    for (i, r) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match r.with_context(|| format!("pushing {} to {}", order[i], cache.name))? {
            None => pushed.present += 1,
            Some((info, bytes)) => {
                let data = serde_json::to_string_pretty(&info)? + "\n";
                let f = tempfile_in_tmp(data.as_bytes())?;
                cache
                    .backend
                    .put(&info_key(&info.path), f.path())
                    .with_context(|| format!("pushing {} to {}", info.path, cache.name))?;
                pushed.bytes += bytes;
                pushed.written.push(info.path);
            }
        }
    }
    Ok(pushed)
}

/// A path's signed metadata, and the archive bytes sent for it.
type Packed = (Info, u64);

/// Packs and uploads `p`'s archive unless the cache has the path; returns its signed
/// metadata (None: the cache has it) and the bytes sent.
fn push_archive(store: &Store, p: &StorePath, cache: &Cache, key: &SecretKey, tmp: &Path) -> Result<Option<Packed>> {
    if let Some(old) = cache.info(p)? {
        // Its archive is there: the path is, and its metadata stays as it is. (Metadata
        // whose archive is gone points nowhere: only then is it written again.)
        if cache.backend.exists(&old.archive)? {
            return Ok(None);
        }
    }
    // What is packed is hashed again: a path changed since it was added would otherwise
    // go out under its old hash, and every pull of it would fail.
    let content = content_hash(&store.host_path(p)).with_context(|| format!("hashing {p}"))?;
    if let Some(recorded) = store.recorded_hash(p)? {
        if recorded != content {
            return Err(Fail::new(format!(
                "{p} changed since it was added to the store: its content hashes to {}, recorded {}",
                content.hex(),
                recorded.hex()
            ))
            .hint(format!("nothing of it was pushed; `mobix store delete {p}` and a build make it again"))
            .into());
        }
    }
    let file = tmp.join(format!("{}.tar.zst", p.base_name()));
    let sha = {
        let f = fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
        let tee = HashingWriter { to: std::io::BufWriter::new(f), hasher: Hasher::new() };
        let enc = zstd::Encoder::new(tee, 9)?;
        let enc = archive::pack(&store.host_path(p), enc).with_context(|| format!("packing {p}"))?;
        let mut tee = enc.finish()?;
        tee.to.flush()?;
        tee.hasher.finish()
    };
    let size = fs::metadata(&file)?.len();
    let akey = archive_key(&sha);
    let mut sent = 0;
    // Named by its hash: one that is there has these very bytes, and is never replaced.
    if !cache.backend.exists(&akey)? {
        cache.backend.put(&akey, &file)?;
        sent = size;
    }
    let _ = fs::remove_file(&file);
    let mut info = Info {
        version: 2,
        path: p.clone(),
        content_sha256: content.hex(),
        archive: akey,
        archive_sha256: sha.hex(),
        archive_size: size,
        compression: zstd(),
        references: store.references(p)?,
        signatures: Vec::new(),
    };
    let sig = key.key.sign(fingerprint(&info).as_bytes());
    info.signatures.push(Signature { key: key.name.clone(), sig: hex(&sig.to_bytes()) });
    Ok(Some((info, sent)))
}

/// Hashes and counts what passes through to a writer.
struct HashingWriter<W: Write> {
    to: W,
    hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.to.write(buf)?;
        self.hasher.update(&buf[..k]);
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.to.flush()
    }
}
