//! `mobix store …` and `mobix gc`: looking into the store, checking it, sharing it,
//! cleaning it.

use super::{progress, Global};
use crate::generation;
use crate::publish;
use crate::store::{cache, Store, StorePath};
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// Print the closure of store paths: them and everything they refer to, transitively.
    Closure {
        /// Store paths (`/mobix/store/…`, `<hash>-<name>`, a file inside the store such as an
        /// out directory's image link, or an out directory: its toplevel and images).
        #[arg(required = true)]
        paths: Vec<String>,
        /// Print each path's size too.
        #[arg(long)]
        size: bool,
    },
    /// Show why A depends on B: a chain of references from A to B, with the file in each
    /// path that mentions the next.
    WhyDepends {
        /// The path that (perhaps) depends.
        a: String,
        /// The path depended on.
        b: String,
    },
    /// Rehash store paths (default: all) against the hashes recorded when they were added,
    /// and check their references are present. Exit 1 when something is wrong.
    Verify {
        /// Store paths to check (default: every path in the store).
        paths: Vec<String>,
    },
    /// Delete store paths, whatever refers to them (to repair damaged ones: the next build
    /// realises them again under what needs them). `gc` is the way to free space.
    Delete {
        /// Store paths to delete.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Make a signing key for binary caches: FILE (secret, mode 0600) and FILE.pub.
    Keygen {
        /// Who signs (shown in caches and errors), e.g. `team-ci-1`.
        name: String,
        /// Where the secret key goes (the public key goes to FILE.pub): the file `store push
        /// --key` signs with.
        #[arg(long, value_name = "FILE", alias = "to")]
        key: PathBuf,
    },
    /// Write store paths and their closures to a binary cache, signed, skipping what the
    /// cache has (an out directory: its toplevel and images).
    #[command(alias = "export")]
    Push {
        /// Store paths, files in the store or out directories to push.
        #[arg(required = true)]
        paths: Vec<String>,
        /// The binary cache: a directory (created if missing) or `s3://BUCKET[/PREFIX]?endpoint=URL&region=R`
        /// (credentials as the AWS tools find them). Serve either with any static HTTP server.
        #[arg(long, value_name = "DIR|URL")]
        to: String,
        /// The secret key to sign with (`mobix store keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// List the binary caches builds take paths from (the configuration file's, in the order
    /// they are asked), whether each answers, and the trusted keys.
    Caches {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add store paths and their closures from a binary cache, checking each signature,
    /// archive hash and content hash (default for a directory: every path it has).
    #[command(alias = "import")]
    Pull {
        /// The binary cache: a directory, `https://HOST/PATH` or `s3://BUCKET[/PREFIX]?…`.
        from: String,
        /// Only these paths (and what they refer to); needed for HTTP and S3 caches.
        paths: Vec<String>,
        /// A public key whose signatures are trusted (FILE.pub from `mobix store keygen`);
        /// added to the configuration file's trusted_keys.
        #[arg(long, value_name = "FILE")]
        trust: Vec<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Only report what would be removed.
    #[arg(long)]
    dry_run: bool,
}

/// The store paths an argument names: one, or for an out directory its toplevel and images.
fn resolve_all(store: &Store, args: &[String]) -> Result<Vec<StorePath>> {
    let mut v = Vec::new();
    for s in args {
        let host = Path::new(s);
        if StorePath::parse(s).is_err() && host.join("manifest.json").is_file() {
            let m = publish::load_manifest(host)?;
            v.push(m.toplevel);
            v.extend(m.images.into_values().map(|i| i.store_path));
        } else {
            v.push(resolve(store, s)?);
        }
    }
    v.sort();
    v.dedup();
    Ok(v)
}

/// A store path named on the command line.
fn resolve(store: &Store, s: &str) -> Result<StorePath> {
    if let Ok(p) = StorePath::parse(s) {
        return Ok(p);
    }
    let host = Path::new(s);
    if host.join("manifest.json").is_file() {
        return Ok(publish::load_manifest(host)?.toplevel);
    }
    let real = host.canonicalize().map_err(|e| util::user_error(e, format!("{s} is not a store path")))?;
    let first = real
        .strip_prefix(store.root())
        .ok()
        .and_then(|rel| rel.components().next())
        .and_then(|c| StorePath::parse(&c.as_os_str().to_string_lossy()).ok());
    first.ok_or_else(|| {
        Fail::new(format!("{s} is not a store path, nor inside the store {}", store.root().display()))
            .hint("name /mobix/store/<hash>-<name>, <hash>-<name>, a file in the store, or an out directory")
            .into()
    })
}

fn present(store: &Store, p: &StorePath) -> Result<()> {
    if store.contains(p) {
        Ok(())
    } else {
        Err(Fail::new(format!("{p} is not in the store {}", store.root().display())).into())
    }
}

pub fn cmd_store(g: &Global, c: &StoreCmd) -> Result<ExitCode> {
    let store = super::open_store(g)?;
    match c {
        StoreCmd::Closure { paths, size } => {
            let roots = resolve_all(&store, paths)?;
            for r in &roots {
                present(&store, r)?;
            }
            let mut total = 0;
            for p in store.closure(&roots)? {
                if *size {
                    let n = du(&store.host_path(&p));
                    total += n;
                    println!("{p}\t{}", human(n));
                } else {
                    println!("{p}");
                }
            }
            if *size {
                println!("total\t{}", human(total));
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCmd::WhyDepends { a, b } => {
            let (a, b) = (resolve(&store, a)?, resolve(&store, b)?);
            present(&store, &a)?;
            match chain(&store, &a, &b)? {
                None => {
                    println!("{a} does not depend on {b}");
                    Ok(ExitCode::from(1))
                }
                Some(chain) => {
                    println!("{}", chain[0]);
                    for w in chain.windows(2) {
                        let why = mention(&store, &w[0], &w[1]).unwrap_or_default();
                        println!("└─ {}{}", w[1], if why.is_empty() { String::new() } else { format!("  (in {why})") });
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        StoreCmd::Verify { paths } => {
            let targets = if paths.is_empty() { store.paths()? } else { resolve_all(&store, paths)? };
            for t in &targets {
                present(&store, t)?;
            }
            let bad = store.verify(&targets)?;
            for (p, why) in &bad {
                println!("{p}: {why}");
            }
            if bad.is_empty() {
                progress(&format!("{} store paths verified: content and references intact", targets.len()));
                Ok(ExitCode::SUCCESS)
            } else {
                let damaged: BTreeSet<&StorePath> = bad.iter().map(|b| &b.0).collect();
                let list: Vec<String> = damaged.iter().map(|p| p.base_name()).collect();
                Err(Fail::new(format!("{} of {} store paths failed verification", damaged.len(), targets.len()))
                    .hint(format!(
                        "delete them with `mobix store delete {}`, then build again: the build realises them anew \
                         (or import them from a cache)",
                        list.join(" ")
                    ))
                    .into())
            }
        }
        StoreCmd::Delete { paths } => {
            let targets = resolve_all(&store, paths)?;
            for t in &targets {
                present(&store, t)?;
            }
            let lock = store.lock()?;
            for t in &targets {
                store.remove(&lock, t)?;
                println!("deleted {t}");
            }
            progress(&format!(
                "deleted {} store paths; a build realises them again where something needs them",
                targets.len()
            ));
            Ok(ExitCode::SUCCESS)
        }
        StoreCmd::Keygen { name, key: to } => {
            let key = cache::SecretKey::generate(name)?;
            let public = PathBuf::from(format!("{}.pub", to.display()));
            if to.exists() {
                return Err(Fail::new(format!("{} exists; not overwriting a key", to.display())).into());
            }
            write_private(to, key.to_text().as_bytes())?;
            util::write_atomic(&public, key.public().to_text().as_bytes())?;
            progress(&format!(
                "secret key {} (keep it), public key {} (give it to whoever imports)",
                to.display(),
                public.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        StoreCmd::Push { paths, to, key } => {
            let key = cache::SecretKey::load(key)?;
            let sub = cache::Substituter::parse(to).map_err(Fail::new)?;
            let roots = resolve_all(&store, paths)?;
            for r in &roots {
                present(&store, r)?;
            }
            let t0 = std::time::Instant::now();
            let target = cache::Cache::open_for_push(&sub)?;
            let pushed = cache::push(&store, &roots, &target, &key, &*super::term::TERMINAL)?;
            for p in &pushed.written {
                println!("{p}");
            }
            progress(&format!(
                "pushed {} store paths to {} ({:.1} MiB of archives, signed by {}, {:.1}s); {} were there already",
                pushed.written.len(),
                sub.text,
                pushed.bytes as f64 / (1 << 20) as f64,
                key.name,
                t0.elapsed().as_secs_f64(),
                pushed.present
            ));
            Ok(ExitCode::SUCCESS)
        }
        StoreCmd::Caches { json } => {
            let file = super::settings::config_file();
            if !file.exists() {
                progress(&format!(
                    "no configuration file {}: builds use only the caches given with --substituter",
                    file.display()
                ));
                return Ok(ExitCode::SUCCESS);
            }
            let settings = super::settings::load()?;
            let mut rows = Vec::new();
            for sub in &settings.substituters {
                let (priority, state) = match cache::Cache::open(sub)? {
                    Ok(c) => (Some(c.priority), "ok".to_string()),
                    Err(why) => (None, format!("not used: {why}")),
                };
                rows.push(serde_json::json!({"substituter": sub.text, "priority": priority, "state": state}));
            }
            // The order builds ask them in: by priority, the file's order breaking ties.
            rows.sort_by_key(|r| r["priority"].as_u64().unwrap_or(u64::MAX));
            let keys: Vec<String> = settings.trusted.iter().map(|k| k.name.clone()).collect();
            if *json {
                let v = serde_json::json!({"config": file, "substituters": rows, "trusted_keys": keys});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for r in &rows {
                    let p = r["priority"].as_u64().map_or("-".to_string(), |p| p.to_string());
                    println!(
                        "{p:>4}  {}  {}",
                        r["substituter"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or("")
                    );
                }
                progress(&format!(
                    "{} binary caches and {} trusted keys ({}) in {}",
                    rows.len(),
                    keys.len(),
                    keys.join(", "),
                    file.display()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCmd::Pull { from, paths, trust } => {
            let sub = cache::Substituter::parse(from).map_err(Fail::new)?;
            let mut trusted = trust.iter().map(|f| cache::PublicKey::load(f)).collect::<Result<Vec<_>>>()?;
            trusted.extend(super::settings::load()?.trusted);
            if let cache::Location::Dir(d) = &sub.location {
                if !d.is_dir() {
                    return Err(Fail::new(format!("the binary cache directory {} does not exist", d.display())).into());
                }
            }
            let caches = cache::Caches::open(std::slice::from_ref(&sub), &trusted, &*super::term::TERMINAL)?;
            if caches.is_empty() {
                return Err(Fail::new(format!("cannot pull from {from}: see above")).into());
            }
            let wanted = match paths.is_empty() {
                true => caches.list()?.ok_or_else(|| {
                    Fail::new(format!("name the store paths to pull: {from} cannot be listed (a static HTTP server)"))
                        .hint("`mobix store pull URL /mobix/store/<hash>-<name>…`")
                })?,
                false => paths.iter().map(|s| resolve(&store, s)).collect::<Result<Vec<_>>>()?,
            };
            let lock = store.lock()?;
            let (fetched, asked) = caches.pull(&store, &lock, &wanted)?;
            for p in &fetched.imported {
                println!("{p}");
            }
            if !fetched.failed.is_empty() {
                let why: Vec<String> = fetched.failed.iter().map(|(p, w)| format!("{p}: {w}")).collect();
                return Err(Fail::new(format!(
                    "could not pull {} of {} store paths from {from}:\n  {}",
                    fetched.failed.len(),
                    asked,
                    why.join("\n  ")
                ))
                .hint("what did arrive is in the store; pull again when the cache answers")
                .into());
            }
            progress(&format!(
                "pulled {} store paths from {from} ({:.1} MiB)",
                fetched.imported.len(),
                fetched.bytes as f64 / (1 << 20) as f64
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| util::user_error(e, format!("creating {}", path.display())))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

/// The shortest chain of references from `a` to `b`.
fn chain(store: &Store, a: &StorePath, b: &StorePath) -> Result<Option<Vec<StorePath>>> {
    let mut prev: BTreeMap<StorePath, StorePath> = BTreeMap::new();
    let mut seen = BTreeSet::from([a.clone()]);
    let mut todo = VecDeque::from([a.clone()]);
    while let Some(p) = todo.pop_front() {
        if &p == b {
            let mut chain = vec![p.clone()];
            let mut cur = p;
            while let Some(q) = prev.get(&cur) {
                chain.push(q.clone());
                cur = q.clone();
            }
            chain.reverse();
            return Ok(Some(chain));
        }
        for r in store.references(&p)? {
            if seen.insert(r.clone()) {
                prev.insert(r.clone(), p.clone());
                todo.push_back(r);
            }
        }
    }
    Ok(None)
}

/// The first file (or link) in `from` that mentions `to`'s hash, relative to `from`.
fn mention(store: &Store, from: &StorePath, to: &StorePath) -> Option<String> {
    let root = store.host_path(from);
    let needle = to.hash_part().as_bytes();
    let hit = |p: &Path, m: &std::fs::Metadata| -> bool {
        if m.file_type().is_symlink() {
            std::fs::read_link(p)
                .is_ok_and(|t| memchr::memmem::find(t.as_os_str().as_encoded_bytes(), needle).is_some())
        } else if m.is_file() {
            util::map_file(p).is_ok_and(|d| memchr::memmem::find(&d, needle).is_some())
        } else {
            false
        }
    };
    let m = std::fs::symlink_metadata(&root).ok()?;
    if !m.is_dir() {
        return hit(&root, &m).then(|| ".".to_string());
    }
    let mut found = None;
    let _ = util::walk(&root, &mut |rel, m| {
        if found.is_none() && hit(&root.join(rel), m) {
            found = Some(rel.to_string());
        }
        Ok(found.is_none())
    });
    found
}

/// Bytes a tree takes (file sizes; links and directories count nothing).
fn du(path: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else { return 0 };
    if m.is_file() {
        return m.len();
    }
    let mut n = 0;
    if m.is_dir() {
        let _ = util::walk(path, &mut |_, m| {
            if m.is_file() {
                n += m.len();
            }
            Ok(true)
        });
    }
    n
}

fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// What garbage collection keeps: every device's generations, and what each registered
/// out directory (every build's `--out`, while it exists) links to. Also how many roots
/// the generations gave, and the out directories.
fn gc_roots(store: &Store) -> Result<(Vec<StorePath>, usize, Vec<PathBuf>)> {
    let mut roots = generation::roots(store)?;
    let from_generations = roots.len();
    let outs = store.registered_outs()?;
    for out in &outs {
        if let Ok(m) = publish::load_manifest(out) {
            roots.push(m.toplevel);
            roots.extend(m.images.into_values().map(|i| i.store_path));
        }
    }
    roots.retain(|r| store.contains(r));
    roots.sort();
    roots.dedup();
    Ok((roots, from_generations, outs))
}

pub fn cmd_gc(g: &Global, a: &GcArgs) -> Result<ExitCode> {
    let store = super::open_store(g)?;
    let lock = store.lock()?;
    let (roots, records, outs) = gc_roots(&store)?;
    let live = store.closure(&roots).context("computing what the roots need")?;
    let dead: Vec<StorePath> = store.paths()?.into_iter().filter(|p| !live.contains(p)).collect();
    let mut freed = 0;
    for p in &dead {
        let n = du(&store.host_path(p));
        freed += n;
        println!("{p}\t{}", human(n));
        if !a.dry_run {
            store.remove(&lock, p)?;
        }
    }
    progress(&format!(
        "{} {} store paths ({}); kept {}: what generations ({records} toplevels and boot images) and {} out \
         directories need",
        if a.dry_run { "would remove" } else { "removed" },
        dead.len(),
        human(freed),
        live.len(),
        outs.len()
    ));
    Ok(ExitCode::SUCCESS)
}
