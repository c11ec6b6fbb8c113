//! Binary caches: a directory of store paths others built, to share builds across a team.
//!
//! Each path is two files: `<hash>-<name>.tar.zst` (the path packed by
//! [`super::archive::pack`], zstd-compressed) and `<hash>-<name>.json`, its metadata: the
//! content hash, the archive's sha256 and size, the references, and ed25519 signatures over
//! all of those (the [`fingerprint`]). An import trusts nothing it was not told to: the
//! metadata must carry a valid signature by a trusted key, the archive must hash to what
//! the signature covers (checked before it is decompressed), and what it unpacks to must
//! hash to the signed content hash. Only then does the path enter the store.

use super::{archive, content_hash, Store, StoreLock, StorePath};
use crate::hash::{sha256_file, Sha256Digest};
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

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
    pub archive: String,
    pub archive_sha256: String,
    pub archive_size: u64,
    pub references: BTreeSet<StorePath>,
    pub signatures: Vec<Signature>,
}

/// What a signature covers: the path, its content, its archive and its references.
pub fn fingerprint(i: &Info) -> String {
    let refs: Vec<String> = i.references.iter().map(|r| r.phone_path()).collect();
    format!("mobix-cache-1;{};{};{};{}", i.path.phone_path(), i.content_sha256, i.archive_sha256, refs.join(","))
}

fn info_file(dir: &Path, p: &StorePath) -> PathBuf {
    dir.join(format!("{}.json", p.base_name()))
}

/// Writes `paths` (each with its whole closure) into the cache `dir`, signed with `key`.
/// Paths already there with the same content are left alone. Returns the paths written.
pub fn export(store: &Store, paths: &[StorePath], dir: &Path, key: &SecretKey) -> Result<Vec<StorePath>> {
    fs::create_dir_all(dir).map_err(|e| util::user_error(e, format!("creating {}", dir.display())))?;
    let closure = store.closure(paths)?;
    let mut written = Vec::new();
    for p in &closure {
        let content = match store.recorded_hash(p)? {
            Some(h) => h,
            None => content_hash(&store.host_path(p)).with_context(|| format!("hashing {p}"))?,
        };
        let info_path = info_file(dir, p);
        if let Ok(old) = read_info(&info_path) {
            if old.content_sha256 == content.hex() && dir.join(&old.archive).exists() {
                continue;
            }
        }
        let archive_name = format!("{}.tar.zst", p.base_name());
        let archive_path = dir.join(&archive_name);
        let tmp = util::tmp_sibling(&archive_path);
        let res = (|| -> Result<()> {
            let f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            let enc = zstd::Encoder::new(f, 9)?;
            let enc = archive::pack(&store.host_path(p), enc)?;
            enc.finish()?.sync_all()?;
            fs::rename(&tmp, &archive_path).with_context(|| format!("writing {}", archive_path.display()))?;
            Ok(())
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e.context(format!("packing {p}")));
        }
        let mut info = Info {
            version: 1,
            path: p.clone(),
            content_sha256: content.hex(),
            archive: archive_name,
            archive_sha256: sha256_file(&archive_path)?.hex(),
            archive_size: fs::metadata(&archive_path)?.len(),
            references: store.references(p)?,
            signatures: Vec::new(),
        };
        let sig = key.key.sign(fingerprint(&info).as_bytes());
        info.signatures.push(Signature { key: key.name.clone(), sig: hex(&sig.to_bytes()) });
        util::write_atomic(&info_path, (serde_json::to_string_pretty(&info)? + "\n").as_bytes())?;
        written.push(p.clone());
    }
    Ok(written)
}

fn read_info(path: &Path) -> Result<Info> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&data).map_err(|e| util::user_error(e, format!("parsing {}", path.display())))
}

/// Checks `info`'s signatures: Ok with the trusted key's name that signed it.
pub fn check_signature(info: &Info, trusted: &[PublicKey], origin: &Path) -> Result<String> {
    let fp = fingerprint(info);
    let mut seen = Vec::new();
    for s in &info.signatures {
        seen.push(s.key.clone());
        let Some(k) = trusted.iter().find(|k| k.name == s.key) else { continue };
        let sig = unhex(&s.sig)
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .ok_or_else(|| Fail::new(format!("{}: signature by {} is malformed", origin.display(), s.key)))?;
        if k.key.verify(fp.as_bytes(), &sig).is_ok() {
            return Ok(k.name.clone());
        }
        return Err(Fail::new(format!(
            "{}: the signature by {} does not match: the metadata was changed after signing",
            origin.display(),
            s.key
        ))
        .hint("do not use this cache entry; export it again from a store you trust")
        .into());
    }
    Err(Fail::new(format!(
        "{}: not signed by a trusted key (signed by: {})",
        origin.display(),
        if seen.is_empty() { "nobody".to_string() } else { seen.join(", ") }
    ))
    .hint("pass --trust FILE.pub with the public key of whoever exported the cache")
    .into())
}

/// Whether the cache at `dir` has `p`.
pub fn has(dir: &Path, p: &StorePath) -> bool {
    info_file(dir, p).exists()
}

/// Imports `p` (and first what it refers to) from the cache `dir` into the store, after
/// checking signature, archive hash and content hash. Ok(false) when the cache lacks it.
pub fn import(store: &Store, lock: &StoreLock, dir: &Path, p: &StorePath, trusted: &[PublicKey]) -> Result<bool> {
    if store.contains(p) {
        return Ok(true);
    }
    let info_path = info_file(dir, p);
    if !info_path.exists() {
        return Ok(false);
    }
    let info = read_info(&info_path)?;
    if &info.path != p {
        return Err(Fail::new(format!("{} describes {}, not {p}", info_path.display(), info.path)).into());
    }
    check_signature(&info, trusted, &info_path)?;
    for r in info.references.iter().filter(|r| *r != p) {
        if !import(store, lock, dir, r, trusted)? {
            return Err(Fail::new(format!("{p} refers to {r}, which the cache {} lacks", dir.display())).into());
        }
    }
    let archive_path = dir.join(
        Path::new(&info.archive).file_name().filter(|n| *n == std::ffi::OsStr::new(&info.archive)).ok_or_else(
            || Fail::new(format!("{}: archive name {:?} is not a file name", info_path.display(), info.archive)),
        )?,
    );
    let got =
        sha256_file(&archive_path).map_err(|e| util::user_error(e, format!("reading {}", archive_path.display())))?;
    if got.hex() != info.archive_sha256 {
        return Err(Fail::new(format!(
            "{} was tampered with or damaged: its sha256 is {}, the signed metadata says {}",
            archive_path.display(),
            got.hex(),
            info.archive_sha256
        ))
        .hint("nothing was added to the store; export the path to the cache again")
        .into());
    }
    let content = Sha256Digest::parse_hex(&info.content_sha256)
        .ok_or_else(|| Fail::new(format!("{}: content_sha256 is not a sha256", info_path.display())))?;
    let work = store.root().join(".mobix/tmp").join(format!("import-{}.{}", p.base_name(), std::process::id()));
    let _ = util::remove_tree(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let res = (|| -> Result<()> {
        let f = fs::File::open(&archive_path)?;
        archive::unpack(zstd::Decoder::new(f)?, &work, archive::AbsoluteLinks::PhoneStore)
            .with_context(|| format!("unpacking {}", archive_path.display()))?;
        let out = work.join(archive::ROOT);
        if fs::symlink_metadata(&out).is_err() {
            return Err(Fail::new(format!("{} holds no `{}` entry", archive_path.display(), archive::ROOT)).into());
        }
        store.add_unpacked(lock, p, &out, &info.references, &content)
    })();
    let _ = util::remove_tree(&work);
    res.with_context(|| format!("importing {p} from {}", dir.display()))?;
    Ok(true)
}

/// Every path the cache at `dir` describes.
pub fn list(dir: &Path) -> Result<Vec<StorePath>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| util::user_error(e, format!("reading {}", dir.display())))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(base) = name.strip_suffix(".json") {
            if let Ok(p) = StorePath::parse(base) {
                v.push(p);
            }
        }
    }
    v.sort();
    Ok(v)
}
