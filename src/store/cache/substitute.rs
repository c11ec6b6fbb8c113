//! Substitution: asking caches which paths they have, then downloading and importing many
//! at once. The store's importer (one thread) takes each archive as soon as it and what it
//! refers to have arrived, while the downloads go on.

use super::remote::{self, Substituter};
use super::{check_signature, references_first, unpack_archive, Cache, Info, PublicKey};
use crate::report::{Event, Reporter};
use crate::store::{CheckedOutput, Store, StoreLock, StorePath};
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

/// A path whose download ended: unpacked and checked, lost by the cache, or failed.
enum Arrival {
    /// Unpacked and checked against its signed metadata; the archive's size.
    Checked(CheckedOutput, u64),
    /// The cache listed it but no longer has its archive.
    Lost,
    /// The download failed (the network: see [`remote::is_unreachable`]).
    Download(anyhow::Error),
    /// The archive or its content is not what the signed metadata says.
    Import(anyhow::Error),
}

/// How many downloads run at once, and how many metadata questions.
const DOWNLOADS: usize = 4;
const QUERIES: usize = 8;

/// A path a cache has, with its checked metadata.
#[derive(Debug, Clone)]
pub struct Found {
    /// Index into [`Caches`] (priority order).
    pub cache: usize,
    pub info: Info,
}

/// What [`Caches::fetch`] did.
#[derive(Debug, Default)]
pub struct Fetched {
    pub imported: Vec<StorePath>,
    /// Paths the network failed to deliver, with why; also the paths referring to them.
    pub failed: Vec<(StorePath, String)>,
    pub bytes: u64,
}

/// The usable caches of a run, in priority order.
pub struct Caches<'a> {
    caches: Vec<Cache>,
    /// Set when a cache stopped answering: it is asked nothing more in this run.
    down: Vec<AtomicBool>,
    /// Caches skipped when opened because they did not answer.
    unreachable: Vec<String>,
    trusted: &'a [PublicKey],
    progress: &'a dyn Reporter,
    answers: Mutex<BTreeMap<StorePath, Option<Found>>>,
}

impl<'a> Caches<'a> {
    /// Opens `subs` (skipping, with a note, those that cannot be used now) and orders them by
    /// priority, the given order breaking ties.
    pub fn open(subs: &[Substituter], trusted: &'a [PublicKey], progress: &'a dyn Reporter) -> Result<Caches<'a>> {
        let mut caches = Vec::new();
        let mut unreachable = Vec::new();
        for s in subs {
            match Cache::open(s)? {
                Ok(c) => caches.push(c),
                Err(why) => {
                    progress.note(&format!("not using the binary cache {}: {why}", s.text));
                    if why.unreachable {
                        unreachable.push(s.text.clone());
                    }
                }
            }
        }
        caches.sort_by_key(|c| c.priority);
        if !caches.is_empty() && trusted.is_empty() {
            return Err(Fail::new(format!(
                "no key is trusted, so nothing from the binary cache {} can be used",
                caches[0].name
            ))
            .hint("pass --trust FILE.pub, or list the key under trusted_keys in mobix's config file")
            .into());
        }
        let down = caches.iter().map(|_| AtomicBool::new(false)).collect();
        Ok(Caches { caches, down, unreachable, trusted, progress, answers: Default::default() })
    }

    /// The caches (by their text as given) that did not answer in this run: a later run of
    /// the same command leaves them out rather than waiting for them again.
    pub fn unreachable(&self) -> Vec<String> {
        let down = self.caches.iter().zip(&self.down).filter(|(_, d)| d.load(Ordering::Relaxed));
        self.unreachable.iter().cloned().chain(down.map(|(c, _)| c.name.clone())).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.caches[i].name
    }

    fn mark_down(&self, i: usize, why: &anyhow::Error) {
        if !self.down[i].swap(true, Ordering::Relaxed) {
            self.progress.note(&format!(
                "the binary cache {} stopped answering ({why:#}): building what it would have given",
                self.caches[i].name
            ));
        }
    }

    /// The first cache (by priority) that has `p`, its metadata signed by a trusted key.
    fn ask(&self, p: &StorePath) -> Result<Option<Found>> {
        for (i, c) in self.caches.iter().enumerate() {
            if self.down[i].load(Ordering::Relaxed) {
                continue;
            }
            match c.info(p) {
                Ok(None) => continue,
                Ok(Some(info)) => {
                    check_signature(&info, self.trusted, &format!("{}/{}.json", c.name, p.base_name()))?;
                    return Ok(Some(Found { cache: i, info }));
                }
                Err(e) if remote::is_unreachable(&e) => self.mark_down(i, &e),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Which of `paths` the caches have, asking several at once (answers are remembered for
    /// the run).
    pub fn query(&self, paths: &[StorePath]) -> Result<BTreeMap<StorePath, Found>> {
        let todo: Vec<&StorePath> = {
            let a = self.answers.lock().unwrap_or_else(|e| e.into_inner());
            paths.iter().filter(|p| !a.contains_key(*p)).collect()
        };
        let next = AtomicUsize::new(0);
        let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..QUERIES.min(todo.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = todo.get(i) else { break };
                    match self.ask(p) {
                        Ok(f) => {
                            self.answers.lock().unwrap_or_else(|e| e.into_inner()).insert((*p).clone(), f);
                        }
                        Err(e) => {
                            failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                            next.store(todo.len(), Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        let a = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        Ok(paths.iter().filter_map(|p| Some((p.clone(), a.get(p)?.clone()?))).collect())
    }

    /// Downloads `found` several at once, unpacking and checking each archive in the thread
    /// that downloaded it, and adds each path to the store (references first) as soon as it
    /// and what it refers to are in. A path the network fails to deliver is left out (with the
    /// paths that refer to it) and reported in [`Fetched::failed`]; anything else that
    /// goes wrong (a tampered archive) stops the fetch with an error, nothing of that path
    /// in the store.
    pub fn fetch(&self, store: &Store, lock: &StoreLock, found: &BTreeMap<StorePath, Found>) -> Result<Fetched> {
        let set: BTreeSet<StorePath> = found.keys().cloned().collect();
        let order = references_first(&set, |p| found[p].info.references.clone());
        let tmp = store.root().join(".mobix/tmp").join(format!("fetch-{}", std::process::id()));
        let _ = util::remove_tree(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let total: u64 = order.iter().map(|p| found[p].info.archive_size).sum();
        let label = format!("downloading {} store paths", order.len());
        let moved = AtomicI64::new(0);
        let last_shown = AtomicI64::new(-1);
        let on_bytes = |n: i64| {
            let now = moved.fetch_add(n, Ordering::Relaxed) + n;
            // A bar update per 256 KiB is plenty.
            let shown = now >> 18;
            if last_shown.swap(shown, Ordering::Relaxed) != shown {
                self.progress.event(Event::Bytes { label: &label, done: now.max(0) as u64, total });
            }
        };
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let mut fetched = Fetched::default();
        let result = std::thread::scope(|s| -> Result<()> {
            let (tx, rx) = mpsc::channel();
            for _ in 0..DOWNLOADS.min(order.len()) {
                let tx = tx.clone();
                let (order, next, stop, tmp, on_bytes) = (&order, &next, &stop, &tmp, &on_bytes);
                s.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Some(p) = order.get(i) else { break };
                    let f = &found[p];
                    let cache = &self.caches[f.cache];
                    let file = tmp.join(format!("{}.tar.zst", p.base_name()));
                    let r = if self.down[f.cache].load(Ordering::Relaxed) {
                        Err(remote::Unreachable(format!("{} stopped answering", cache.name)).into())
                    } else {
                        remote::download(&*cache.backend, &f.info.archive, &file, f.info.archive_size, on_bytes)
                    };
                    let arrival = match r {
                        Ok(Some((sha, n))) => {
                            let work = tmp.join(format!("{}.unpacked", p.base_name()));
                            let checked = unpack_archive(&f.info, &file, &sha, &cache.name, &work);
                            let _ = std::fs::remove_file(&file);
                            match checked {
                                Ok(c) => Arrival::Checked(c, n),
                                Err(e) => Arrival::Import(e),
                            }
                        }
                        Ok(None) => Arrival::Lost,
                        Err(e) => Arrival::Download(e),
                    };
                    if tx.send((i, arrival)).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            let mut arrived: BTreeMap<usize, Arrival> = BTreeMap::new();
            let mut failed: BTreeSet<StorePath> = BTreeSet::new();
            let mut at = 0;
            let res = (|| -> Result<()> {
                for (i, arrival) in rx.iter() {
                    arrived.insert(i, arrival);
                    while let Some(arrival) = arrived.remove(&at) {
                        let p = &order[at];
                        let f = &found[p];
                        let cache = &self.caches[f.cache].name;
                        at += 1;
                        if let Some(q) = f.info.references.iter().find(|q| failed.contains(*q)) {
                            failed.insert(p.clone());
                            fetched
                                .failed
                                .push((p.clone(), format!("it refers to {}, which did not arrive", q.name())));
                            continue;
                        }
                        match arrival {
                            Arrival::Checked(checked, n) => {
                                store
                                    .add_checked(lock, checked, &f.info.references)
                                    .with_context(|| format!("importing {p} from {cache}"))?;
                                fetched.bytes += n;
                                fetched.imported.push(p.clone());
                            }
                            Arrival::Import(e) => return Err(e),
                            Arrival::Lost => {
                                failed.insert(p.clone());
                                fetched
                                    .failed
                                    .push((p.clone(), format!("{cache} lost {} since it listed it", f.info.archive)));
                            }
                            Arrival::Download(e) if remote::is_unreachable(&e) => {
                                self.mark_down(f.cache, &e);
                                failed.insert(p.clone());
                                fetched.failed.push((p.clone(), format!("{e:#}")));
                            }
                            Arrival::Download(e) => return Err(e.context(format!("substituting {p} from {cache}"))),
                        }
                    }
                }
                Ok(())
            })();
            if res.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            res
        });
        self.progress.event(Event::BytesFinished);
        let _ = util::remove_tree(&tmp);
        result?;
        Ok(fetched)
    }

    /// Every path the caches describe, in order; None when one of them cannot be listed (a
    /// static HTTP server).
    pub fn list(&self) -> Result<Option<Vec<StorePath>>> {
        let mut all = BTreeSet::new();
        for c in &self.caches {
            let Some(paths) = c.list()? else { return Ok(None) };
            all.extend(paths);
        }
        Ok(Some(all.into_iter().collect()))
    }

    /// Fetches `wanted` and what they refer to (what the store lacks of it). An error names
    /// the first path no cache has. Returns the fetch and how many paths it was asked for.
    pub fn pull(&self, store: &Store, lock: &StoreLock, wanted: &[StorePath]) -> Result<(Fetched, usize)> {
        let mut found = BTreeMap::new();
        let mut level: Vec<StorePath> = wanted.iter().filter(|p| !store.contains(p)).cloned().collect();
        while !level.is_empty() {
            let answers = self.query(&level)?;
            let mut next = BTreeSet::new();
            for p in level {
                let f = answers.get(&p).ok_or_else(|| {
                    let names: Vec<&str> = self.caches.iter().map(|c| c.name.as_str()).collect();
                    Fail::new(format!("no binary cache has {p} (asked {})", names.join(", ")))
                })?;
                next.extend(
                    f.info.references.iter().filter(|r| !store.contains(r) && !found.contains_key(*r)).cloned(),
                );
                found.insert(p, f.clone());
            }
            level = next.into_iter().filter(|p| !found.contains_key(p)).collect();
        }
        Ok((self.fetch(store, lock, &found)?, found.len()))
    }
}
