//! Where a binary cache lives, and how its files are read and written: a directory, a
//! static HTTP server (read only), or an S3 bucket (requests signed with the user's AWS
//! credentials). All three hold the same files under the same keys; nothing here knows
//! what the files mean.
//!
//! Failures come in two kinds. [`Unreachable`] is the network's fault (refused
//! connections, timeouts, 5xx answers, a body cut short): worth retrying, and in the end a
//! reason to build the path instead. Everything else (a refused signature, an unknown
//! bucket, a 403) is the user's to fix and is reported as such.

use crate::hash::{Hasher, Sha256Digest};
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A substituter as the user wrote it (command line, configuration file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituter {
    pub location: Location,
    /// `?priority=N` in the URL: overrides the cache's own (lower is tried first).
    pub priority: Option<u32>,
    /// The text it was parsed from, for messages.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    /// `http://` or `https://`, without a trailing slash.
    Http(String),
    S3(S3Location),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Key prefix inside the bucket, without slashes at either end (may be empty).
    pub prefix: String,
    /// `?endpoint=`: a custom server, addressed path-style. None: AWS, virtual-host style.
    pub endpoint: Option<String>,
    pub region: String,
}

impl Substituter {
    /// Parses `DIR`, `http(s)://HOST/PATH` or `s3://BUCKET[/PREFIX]?endpoint=URL&region=R`,
    /// each with an optional `priority=N` query parameter (not for directories).
    pub fn parse(text: &str) -> Result<Substituter, String> {
        let Some((scheme, _)) = text.split_once("://") else {
            if text.is_empty() {
                return Err("an empty substituter".into());
            }
            return Ok(Substituter { location: Location::Dir(PathBuf::from(text)), priority: None, text: text.into() });
        };
        let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let mut priority = None;
        let mut endpoint = None;
        let mut region = None;
        for (k, v) in url.query_pairs() {
            match (&*k, scheme) {
                ("priority", _) => {
                    priority = Some(v.parse::<u32>().map_err(|_| format!("priority={v} is not a number"))?)
                }
                ("endpoint", "s3") => endpoint = Some(v.trim_end_matches('/').to_string()),
                ("region", "s3") => region = Some(v.to_string()),
                _ => {
                    let known = if scheme == "s3" { "endpoint, region, priority" } else { "priority" };
                    return Err(format!("unknown parameter {k:?} in {text:?} (known: {known})"));
                }
            }
        }
        let location = match scheme {
            "http" | "https" => {
                if url.host_str().is_none() {
                    return Err(format!("{text:?} names no host"));
                }
                let mut base = url.clone();
                base.set_query(None);
                base.set_fragment(None);
                Location::Http(base.as_str().trim_end_matches('/').to_string())
            }
            "s3" => {
                let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or(format!("{text:?} names no bucket"))?;
                if let Some(e) = &endpoint {
                    let u = url::Url::parse(e).map_err(|err| format!("endpoint {e:?} is not a URL: {err}"))?;
                    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                        return Err(format!("endpoint {e:?} must be an http:// or https:// URL"));
                    }
                }
                let region = region
                    .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
                    .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok().filter(|r| !r.is_empty()))
                    .unwrap_or_else(|| "us-east-1".to_string());
                Location::S3(S3Location {
                    bucket: bucket.to_string(),
                    prefix: url.path().trim_matches('/').to_string(),
                    endpoint,
                    region,
                })
            }
            other => {
                return Err(format!("{text:?}: unknown scheme {other}:// (known: http, https, s3, or a directory)"))
            }
        };
        Ok(Substituter { location, priority, text: text.to_string() })
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.location, Location::Dir(_))
    }
}

/// The network failed (after retries): the path can be built instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// Whether `e` (anywhere in its chain) is the network's fault.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Unreachable>())
}

/// A cache's files, by key (`mobix-cache-info`, `<hash>-<name>.json`, `archives/…`).
pub trait Backend: Send + Sync {
    /// The cache as the user named it, for messages.
    fn describe(&self) -> &str;
    /// Opens a file for reading; None when the cache has no such file.
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>>;
    /// Whether the cache has the file.
    fn exists(&self, key: &str) -> Result<bool>;
    /// Writes `file` under `key`, replacing what is there. Callers never replace an
    /// archive (they are named by their hash); metadata is written after its archive.
    fn put(&self, key: &str, file: &Path) -> Result<()>;
    /// The names of the files at the cache's top level (not under `archives/`); None when
    /// the cache cannot be listed (a static HTTP server).
    fn list(&self) -> Result<Option<Vec<String>>> {
        Ok(None)
    }
}

/// Opens the backend for a substituter. HTTP caches are read only.
pub fn open(s: &Substituter) -> Result<Box<dyn Backend>> {
    Ok(match &s.location {
        Location::Dir(d) => Box::new(DirCache { dir: d.clone(), name: d.display().to_string() }),
        #[cfg(feature = "network-caches")]
        Location::Http(base) => Box::new(net::HttpCache::new(base)?),
        #[cfg(feature = "network-caches")]
        Location::S3(loc) => Box::new(net::S3Cache::new(loc, &s.text)?),
        #[cfg(not(feature = "network-caches"))]
        Location::Http(_) | Location::S3(_) => {
            return Err(Fail::new(format!("{}: this mobix was built without HTTP and S3 binary caches", s.text))
                .hint("use a directory cache, or build mobix with its default features (`network-caches`)")
                .into())
        }
    })
}

/// Reads a whole small file (metadata, cache-info), at most 1 MiB.
pub fn get_small(b: &dyn Backend, key: &str) -> Result<Option<Vec<u8>>> {
    retrying(|| {
        let Some(r) = b.get(key)? else { return Ok(None) };
        let mut data = Vec::new();
        r.take(1 << 20).read_to_end(&mut data).map_err(|e| transport(b.describe(), key, &e))?;
        Ok(Some(data))
    })
}

/// Downloads `key` to `to`, hashing as it goes, calling `moved` with each chunk's size
/// (negative when a retry starts over). Stops with an error past `limit` bytes. None when
/// the cache has no such file.
pub fn download(
    b: &dyn Backend,
    key: &str,
    to: &Path,
    limit: u64,
    moved: &(dyn Fn(i64) + Sync),
) -> Result<Option<(Sha256Digest, u64)>> {
    retrying(|| {
        let Some(mut r) = b.get(key)? else { return Ok(None) };
        let mut f = fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut n: u64 = 0;
        let res = (|| -> Result<()> {
            loop {
                let k = match r.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(transport(b.describe(), key, &e)),
                };
                n += k as u64;
                if n > limit {
                    return Err(Fail::new(format!(
                        "{}/{key} is larger than its signed metadata says ({limit} bytes): tampered with or damaged",
                        b.describe()
                    ))
                    .into());
                }
                h.update(&buf[..k]);
                f.write_all(&buf[..k]).with_context(|| format!("writing {}", to.display()))?;
                moved(k as i64);
            }
        })();
        if let Err(e) = res {
            moved(-(n as i64));
            return Err(e);
        }
        f.sync_all()?;
        Ok(Some((h.finish(), n)))
    })
}

/// Runs `f` up to four times while it fails with [`Unreachable`], waiting 0.5 s, 1 s, 2 s
/// between tries.
fn retrying<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut wait = Duration::from_millis(500);
    let mut tries = 1;
    loop {
        match f() {
            Err(e) if is_unreachable(&e) && tries < 4 => {
                std::thread::sleep(wait);
                wait *= 2;
                tries += 1;
            }
            Err(e) if is_unreachable(&e) => return Err(e.context(Unreachable(format!("gave up after {tries} tries")))),
            other => return other,
        }
    }
}

fn transport(cache: &str, key: &str, e: &dyn std::fmt::Display) -> anyhow::Error {
    Unreachable(format!("reading {cache}/{key}: {e}")).into()
}

// ---- a directory ----

struct DirCache {
    dir: PathBuf,
    name: String,
}

impl Backend for DirCache {
    fn describe(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        match fs::File::open(self.dir.join(key)) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(util::user_error(e, format!("reading {}", self.dir.join(key).display()))),
        }
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.dir.join(key).exists())
    }

    fn put(&self, key: &str, file: &Path) -> Result<()> {
        let to = self.dir.join(key);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(|e| util::user_error(e, format!("creating {}", parent.display())))?;
        }
        util::copy_atomic(file, &to, 0o644)?;
        Ok(())
    }

    fn list(&self) -> Result<Option<Vec<String>>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| util::user_error(e, format!("reading {}", self.name)))?;
        let mut v = Vec::new();
        for e in entries {
            let e = e.map_err(|e| util::user_error(e, format!("reading {}", self.name)))?;
            v.push(e.file_name().to_string_lossy().into_owned());
        }
        Ok(Some(v))
    }
}

// The network backends: HTTP and S3 (ureq, rustls, rusty-s3). A mobix built without the
// `network-caches` feature (the USB test's arm64 one, which needs no binary cache) has only
// directories.
#[cfg(feature = "network-caches")]
mod net;
#[cfg(feature = "network-caches")]
pub use net::{parse_listing, Listing};
