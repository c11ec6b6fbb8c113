//! Generations: the numbered record of every distinct system built for one phone.
//!
//! Pipeline stage: generation. Input: a lineage (a device and the out directory its phone
//! is flashed from) and the toplevel a build produced; output: its generation number.
//! Records live in `<store>/.mobix/generations/<device>/out-<key>/<n>.json` (the key names
//! the out directory's absolute path; the directory's `out` file says which), written
//! atomically, beside the lineage's last known phone record (`phone-state.bin`). A build
//! whose toplevel equals the newest generation's reuses it; a generation is identified by
//! its toplevel, never by its number alone. Builds into another out directory (a test
//! system, another config) are another lineage: numbered on their own, never carried by
//! this one's images.

/// Boot counting, shared with the on-phone init (init/bootctl).
pub use mobix_bootctl::counting as boot;

use crate::format::bootstate;
use crate::profile::Codename;
use crate::store::{Store, StorePath};
use crate::util;
use anyhow::{Context, Result};
use mobix_bootctl::contract::Slot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub generation: u32,
    pub device: String,
    pub toplevel: StorePath,
    /// Seconds since the epoch when the generation was first built.
    pub created: u64,
    pub label: String,
    /// The boot.img store path the last build of this generation made (what a rollback to
    /// it flashes); absent in records older than rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_image: Option<StorePath>,
    /// The system config file the generation was built from, as given (None: the default
    /// system); absent in records older than lineages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// One phone's line of generations: a device and the out directory it is flashed (or
/// emulated) from. Numbers, the generations an image carries and the phone's last known
/// record are kept per lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    device: Codename,
    out: PathBuf,
}

impl Lineage {
    /// The lineage of `device` built into `out` (made absolute, and canonical where it
    /// exists, so that `out/x` and `./out/x` are one lineage).
    pub fn of(device: &Codename, out: &Path) -> Lineage {
        let abs = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
        let out = fs::canonicalize(&abs).unwrap_or(abs);
        Lineage { device: device.clone(), out }
    }

    pub fn device(&self) -> &Codename {
        &self.device
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    fn key(&self) -> String {
        let h = crate::hash::Sha256Digest::of(self.out.as_os_str().as_encoded_bytes()).hex();
        format!("out-{}", &h[..16])
    }
}

fn device_dir(store: &Store, device: &Codename) -> PathBuf {
    store.root().join(".mobix/generations").join(device.as_str())
}

fn dir(store: &Store, lin: &Lineage) -> PathBuf {
    device_dir(store, &lin.device).join(lin.key())
}

/// Where the lineage's records are read from: its own directory, or, while no lineage of
/// the device has one yet, the device's records from before lineages (which the first
/// lineage to write adopts, [`adopt_legacy`]).
fn read_dir_of(store: &Store, lin: &Lineage) -> PathBuf {
    let own = dir(store, lin);
    if own.exists() || legacy_records(store, &lin.device).is_none_or(|v| v.is_empty()) {
        own
    } else {
        device_dir(store, &lin.device)
    }
}

/// The generation numbers recorded in the device's directory itself, before generations
/// were kept per lineage; None while some lineage of the device has its own directory.
fn legacy_records(store: &Store, device: &Codename) -> Option<Vec<u32>> {
    let d = device_dir(store, device);
    let mut nums = Vec::new();
    for e in fs::read_dir(&d).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("out-") && e.path().is_dir() {
            return None;
        }
        if let Some(n) = name.strip_suffix(".json").and_then(|n| n.parse::<u32>().ok()) {
            nums.push(n);
        }
    }
    nums.sort_unstable();
    Some(nums)
}

/// Moves the device's records from before lineages into `lin`, the first lineage to write
/// (each file renamed, so an interruption leaves every record in one place or the other,
/// and the reader takes the lineage directory once it exists). Returns the numbers moved.
pub fn adopt_legacy(store: &Store, _lock: &crate::store::StoreLock, lin: &Lineage) -> Result<Vec<u32>> {
    let Some(nums) = legacy_records(store, &lin.device).filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let (from, to) = (device_dir(store, &lin.device), dir(store, lin));
    let staging = from.join(format!(".{}.partial", lin.key()));
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let names = nums.iter().map(|n| format!("{n}.json")).chain(["phone-state.bin".to_string()]);
    for name in names {
        match fs::rename(from.join(&name), staging.join(&name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("moving {} into {}", name, staging.display())),
        }
    }
    write_out_file(&staging, lin)?;
    fs::rename(&staging, &to).with_context(|| format!("renaming {} to {}", staging.display(), to.display()))?;
    Ok(nums)
}

fn write_out_file(d: &Path, lin: &Lineage) -> Result<()> {
    util::write_atomic(&d.join("out"), format!("{}\n", lin.out.display()).as_bytes())
}

/// The lineage's directory, made (with its `out` file, and adopting the records from
/// before lineages) on its first write.
fn writable_dir(store: &Store, lock: &crate::store::StoreLock, lin: &Lineage) -> Result<PathBuf> {
    let d = dir(store, lin);
    if !d.exists() {
        adopt_legacy(store, lock, lin)?;
        if !d.exists() {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            write_out_file(&d, lin)?;
        }
    }
    Ok(d)
}

/// Every recorded generation of the lineage, by number.
pub fn list(store: &Store, lin: &Lineage) -> Result<BTreeMap<u32, Record>> {
    list_in(&read_dir_of(store, lin))
}

fn list_in(d: &Path) -> Result<BTreeMap<u32, Record>> {
    let mut out = BTreeMap::new();
    let rd = match fs::read_dir(d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", d.display())),
    };
    for e in rd {
        let p = e?.path();
        if p.is_dir() {
            continue;
        }
        let Some(n) = p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let rec: Record =
            serde_json::from_str(&text).with_context(|| format!("parsing generation record {}", p.display()))?;
        out.insert(n, rec);
    }
    Ok(out)
}

/// The device's lineages in the store with their generations' count: each out directory
/// (as its `out` file names it) and how many it has.
pub fn lineages(store: &Store, device: &Codename) -> Result<Vec<(PathBuf, usize)>> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(device_dir(store, device)) else { return Ok(out) };
    for e in rd.flatten() {
        let d = e.path();
        if !(d.is_dir() && e.file_name().to_string_lossy().starts_with("out-")) {
            continue;
        }
        let Ok(name) = fs::read_to_string(d.join("out")) else { continue };
        out.push((PathBuf::from(name.trim_end()), list_in(&d)?.len()));
    }
    out.sort();
    Ok(out)
}

/// What every lineage's generations keep alive: each record's toplevel and boot image.
pub fn roots(store: &Store) -> Result<Vec<StorePath>> {
    let base = store.root().join(".mobix/generations");
    let mut out = Vec::new();
    let rd = match fs::read_dir(&base) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", base.display())),
    };
    for e in rd {
        let device_dir = e?.path();
        if !device_dir.is_dir() {
            continue;
        }
        // The records from before lineages, and each lineage's.
        let mut dirs = vec![device_dir.clone()];
        for l in fs::read_dir(&device_dir).with_context(|| format!("reading {}", device_dir.display()))? {
            let l = l?.path();
            if l.is_dir() && l.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("out-")) {
                dirs.push(l);
            }
        }
        for d in dirs {
            for rec in list_in(&d)?.into_values() {
                out.push(rec.toplevel);
                out.extend(rec.boot_image);
            }
        }
    }
    Ok(out)
}

/// Records a build of `toplevel` (from `config`) as [`next`] says. Holding the store lock,
/// so that two builds on one store never take the same number.
pub fn record(
    store: &Store,
    lock: &crate::store::StoreLock,
    lin: &Lineage,
    toplevel: &StorePath,
    label: &str,
    config: Option<&str>,
) -> Result<(Record, bool)> {
    let (rec, new) = next(store, lin, toplevel, label, config)?;
    if new {
        write(store, lock, lin, &rec)?;
    }
    Ok((rec, new))
}

/// The generation a build of `toplevel` is: the newest one if it has this toplevel
/// (`false`), else a new one numbered after it (`true`), not yet written.
pub fn next(
    store: &Store,
    lin: &Lineage,
    toplevel: &StorePath,
    label: &str,
    config: Option<&str>,
) -> Result<(Record, bool)> {
    let all = list(store, lin)?;
    if let Some((_, newest)) = all.iter().next_back() {
        if &newest.toplevel == toplevel {
            return Ok((newest.clone(), false));
        }
    }
    let n = all.keys().next_back().map_or(1, |n| n + 1);
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let rec = Record {
        generation: n,
        device: lin.device.to_string(),
        toplevel: toplevel.clone(),
        created,
        label: label.to_string(),
        boot_image: None,
        config: config.map(str::to_string),
    };
    Ok((rec, true))
}

fn write(store: &Store, lock: &crate::store::StoreLock, lin: &Lineage, rec: &Record) -> Result<()> {
    let path = writable_dir(store, lock, lin)?.join(format!("{}.json", rec.generation));
    util::write_atomic(&path, (serde_json::to_string_pretty(rec)? + "\n").as_bytes())
}

/// What a new generation built from `config` should tell its builder about the lineage:
/// its newest generation came from another config (both are carried, and the phone falls
/// back only to one that booted good on it).
pub fn config_change(all: &BTreeMap<u32, Record>, new: &Record) -> Option<String> {
    let (n, newest) = all.range(..new.generation).next_back()?;
    if newest.config == new.config {
        return None;
    }
    let name = |c: &Option<String>| c.as_deref().map_or("the default system".to_string(), |c| c.to_string());
    Some(format!(
        "generation {} is built from {}, generation {n} of this out directory from {}: the image carries both \
         (after a failed trial the phone falls back only to a generation that booted good on it); \
         `--out DIR` keeps a test system's generations apart",
        new.generation,
        name(&new.config),
        name(&newest.config)
    ))
}

/// Remembers which boot.img a build of generation `rec` made.
pub fn set_boot_image(
    store: &Store,
    lock: &crate::store::StoreLock,
    lin: &Lineage,
    rec: &Record,
    boot: &StorePath,
) -> Result<()> {
    if rec.boot_image.as_ref() == Some(boot) {
        return Ok(());
    }
    write(store, lock, lin, &Record { boot_image: Some(boot.clone()), ..rec.clone() })
}

/// Why generation `n` may not be deleted, if it may not: the newest (builds compare with
/// it, and numbers must not be reused) never; one the phone needs (`protected`) only
/// with `force`.
pub fn refuse_delete(all: &BTreeMap<u32, Record>, n: u32, protected: &[u32], force: bool) -> Option<String> {
    if !all.contains_key(&n) {
        return Some(format!("there is no generation {n}"));
    }
    if all.keys().next_back() == Some(&n) {
        return Some(format!("generation {n} is the newest; the next build compares with it"));
    }
    if protected.contains(&n) && !force {
        return Some(format!(
            "the phone needs generation {n} (it booted it, defaults to it or last found it good, as the host last saw)"
        ));
    }
    None
}

/// Forgets generation `n` (its record; the store paths stay until garbage collection).
pub fn delete(store: &Store, lock: &crate::store::StoreLock, lin: &Lineage, n: u32) -> Result<()> {
    let path = writable_dir(store, lock, lin)?.join(format!("{n}.json"));
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

/// Where a rollback starts: the generation the phone last booted (else the one it boots by
/// default), as the host last read it off the phone, when that generation is known here;
/// else `built`, the out directory's last build. With words saying which.
pub fn rollback_from(
    all: &BTreeMap<u32, Record>,
    built: u32,
    known: Option<&bootstate::Record>,
) -> (u32, &'static str) {
    let phone = known.and_then(|k| [k.booted_gen, k.default_gen].into_iter().find(|n| *n != 0 && all.contains_key(n)));
    match phone {
        Some(n) => (n, "the generation the phone last booted"),
        None => (built, "the out directory's last build (the phone's record was never read back)"),
    }
}

/// The generation a rollback from `current` goes to: the newest older one the phone found
/// good, else (nothing older known good) the newest older one it has not found bad.
pub fn rollback_target(all: &BTreeMap<u32, Record>, current: u32, known: Option<&bootstate::Record>) -> Option<u32> {
    let has = |n: u32, f: &dyn Fn(bootstate::Status) -> bool| {
        known.is_some_and(|k| k.entries.iter().any(|e| e.generation == n && f(e.status)))
    };
    let older = || all.keys().rev().copied().filter(|&n| n < current);
    older().find(|&n| has(n, &|s| s == bootstate::Status::Good)).or_else(|| older().find(|&n| !has(n, &|s| s.is_bad())))
}

/// The generations a new system image carries, from `all` (toplevels by number): the
/// newest `keep`, the `pinned` ones, and `protected` (what the phone booted, defaults to,
/// last found good or is switching to, as far as the host knows), where they exist.
pub fn carried(
    all: &BTreeMap<u32, StorePath>,
    keep: u32,
    pinned: &[u32],
    protected: &[u32],
) -> BTreeMap<u32, StorePath> {
    let newest = all.keys().rev().take(keep as usize);
    newest.chain(pinned.iter().chain(protected).filter(|n| all.contains_key(n))).map(|n| (*n, all[n].clone())).collect()
}

/// Toplevels by number, as [`carried`] takes them.
pub fn toplevels(all: &BTreeMap<u32, Record>) -> BTreeMap<u32, StorePath> {
    all.iter().map(|(n, r)| (*n, r.toplevel.clone())).collect()
}

/// What the phone must never lose, from the record the host last read off it.
pub fn protected(state: &bootstate::Record) -> Vec<u32> {
    state.protected()
}

/// How the phone last reported a generation: its status and the roles it plays.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Standing {
    /// `trial`, `good` or `bad`.
    pub status: &'static str,
    /// Why a bad one is bad: `tries` (its tries ran out: a crash, a hang, a failed health
    /// check), `kernel` (its kernel did not come up), `user` (marked by hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tries_left: Option<u8>,
    /// The generation the phone booted last.
    pub booted: bool,
    /// What the phone boots when nobody chooses.
    pub default: bool,
}

impl Standing {
    /// `good, booted, default`; `bad (tries)`; `trial (2 tries left)`.
    pub fn words(&self) -> String {
        let mut w = match (self.status, self.bad_reason, self.tries_left) {
            ("bad", Some(r), _) => format!("bad ({r})"),
            ("trial", _, Some(t)) => format!("trial ({t} tries left)"),
            (s, _, _) => s.to_string(),
        };
        for (on, role) in [(self.booted, "booted"), (self.default, "default")] {
            if on {
                w.push_str(", ");
                w.push_str(role);
            }
        }
        w
    }
}

/// Whether the phone, as its record `state` says, fell back from `newest` (the newest
/// generation built for it): that one is bad there and another one booted. In words, for
/// `mobix generations list` after a test or a deploy; None otherwise.
pub fn fell_back(state: Option<&bootstate::Record>, newest: Option<u32>) -> Option<String> {
    let (k, newest) = (state?, newest?);
    let e = k.entries.iter().find(|e| e.generation == newest)?;
    let bootstate::Status::Bad(reason) = e.status else { return None };
    if k.booted_gen == newest || k.booted_gen == 0 {
        return None;
    }
    let why = match reason {
        bootstate::BadReason::Tries => format!("did not come up on any of its {} tries", e.tries_done),
        bootstate::BadReason::Kernel => "has a kernel that did not start (the bootloader went back)".to_string(),
        bootstate::BadReason::User => "was marked bad by hand".to_string(),
        bootstate::BadReason::Unspecified => "is marked bad".to_string(),
    };
    Some(format!("the phone fell back: generation {newest} {why}; it boots generation {}", k.booted_gen))
}

/// Generation `n` (with toplevel `top`) as the phone's record `state` has it; None when the
/// record does not know it (never on that phone, or the host never read it back).
pub fn standing(state: &bootstate::Record, n: u32, top: &StorePath) -> Option<Standing> {
    let id = bootstate::id_of(top.base_name().as_str());
    let e = state.entries.iter().find(|e| e.generation == n && e.id == id)?;
    Some(Standing {
        status: e.status.name(),
        bad_reason: match e.status {
            bootstate::Status::Bad(r) => Some(r.name()),
            _ => None,
        },
        tries_left: (e.status == bootstate::Status::Trial).then_some(e.tries_left),
        booted: state.booted_gen == n,
        default: state.default_gen == n,
    })
}

/// The boot-state record a fresh system image starts with. `current` becomes the default;
/// a generation the host knows from the phone's record (`known`, same number and identity)
/// keeps its status there; the others start as trials: `current` with `tries`, older ones
/// with one try (nobody has seen them pass on this phone).
pub fn initial_state(
    carried: &BTreeMap<u32, StorePath>,
    current: u32,
    tries: u8,
    known: Option<&bootstate::Record>,
) -> bootstate::Record {
    use bootstate::{Entry, Status};
    let mut entries: Vec<Entry> = carried
        .iter()
        .rev()
        .take(bootstate::MAX_ENTRIES)
        .map(|(n, top)| {
            let id = bootstate::id_of(top.base_name().as_str());
            let seen = known.and_then(|k| k.entries.iter().find(|e| e.generation == *n && e.id == id));
            match seen {
                Some(e) if e.status != Status::Trial || e.tries_left > 0 => *e,
                _ => Entry {
                    generation: *n,
                    id,
                    kernel_slot: Slot::A,
                    tries_left: if *n == current { tries } else { 1 },
                    tries_done: 0,
                    status: Status::Trial,
                },
            }
        })
        .collect();
    entries.sort_by_key(|e| e.generation);
    let kept = |g: u32| if entries.iter().any(|e| e.generation == g) { g } else { 0 };
    let last_good = known.map_or([0, 0], |k| [kept(k.last_good[0]), kept(k.last_good[1])]);
    bootstate::Record {
        seq: known.map_or(1, |k| k.seq + 1),
        default_gen: current,
        booted_gen: 0,
        last_good,
        pending_slot: Default::default(),
        entries,
    }
}

/// The boot-state record last read off the lineage's (emulated) phone, if any.
pub fn ledger(store: &Store, lin: &Lineage) -> Result<Option<bootstate::Record>> {
    let p = read_dir_of(store, lin).join("phone-state.bin");
    match fs::read(&p) {
        Ok(b) => Ok(Some(bootstate::Record::decode(&b).with_context(|| format!("reading {}", p.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Remembers the record read off the lineage's phone, so its next image keeps what it
/// learned.
pub fn save_ledger(
    store: &Store,
    lock: &crate::store::StoreLock,
    lin: &Lineage,
    state: &bootstate::Record,
) -> Result<()> {
    let block = state.encode()?;
    util::write_atomic(&writable_dir(store, lock, lin)?.join("phone-state.bin"), &block)
}

/// `YYYY-MM-DD HH:MM` (UTC) of seconds since the epoch.
pub fn utc_minutes(secs: u64) -> String {
    let rem = secs % 86400;
    let (y, m, d) = mobix_bootctl::screen::civil_date(secs / 86400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

/// One store path's change between two generations' closures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    pub name: String,
    pub before: Option<StorePath>,
    pub after: Option<StorePath>,
    pub before_size: u64,
    pub after_size: u64,
}

/// What changed from closure `a` to closure `b`: store paths added, removed, and changed
/// (the same name with another hash). `size` gives a path's size in bytes.
pub fn diff(
    a: &std::collections::BTreeSet<StorePath>,
    b: &std::collections::BTreeSet<StorePath>,
    size: &dyn Fn(&StorePath) -> u64,
) -> Vec<Change> {
    let by_name = |s: &std::collections::BTreeSet<StorePath>| -> BTreeMap<String, StorePath> {
        s.iter().map(|p| (p.name().to_string(), p.clone())).collect()
    };
    let (na, nb) = (by_name(a), by_name(b));
    let names: std::collections::BTreeSet<&String> = na.keys().chain(nb.keys()).collect();
    let mut out = Vec::new();
    for n in names {
        let (x, y) = (na.get(n), nb.get(n));
        if x != y {
            out.push(Change {
                name: n.clone(),
                before: x.cloned(),
                after: y.cloned(),
                before_size: x.map_or(0, size),
                after_size: y.map_or(0, size),
            });
        }
    }
    out
}

/// Bytes a store path takes (its files' sizes).
pub fn path_size(store: &Store, p: &StorePath) -> u64 {
    path_sum(store, p, &|m| if m.is_file() { m.len() } else { 0 })
}

/// Blocks of `block` bytes a store path takes in a filesystem: each file rounded up, one
/// for each directory and link.
pub fn path_blocks(store: &Store, p: &StorePath, block: u64) -> u64 {
    path_sum(store, p, &|m| if m.is_file() { m.len().div_ceil(block) } else { 1 })
}

/// `f` summed over a store path and everything in it.
fn path_sum(store: &Store, p: &StorePath, f: &dyn Fn(&std::fs::Metadata) -> u64) -> u64 {
    let host = store.host_path(p);
    let mut n = std::fs::symlink_metadata(&host).map(|m| f(&m)).unwrap_or(0);
    let _ = util::walk(&host, &mut |_, m| {
        n += f(m);
        Ok(true)
    });
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Sha256Digest;

    #[test]
    fn a_generations_standing_is_what_the_phone_record_says() {
        use bootstate::{BadReason, Entry, Status};
        let top = |c: char| StorePath::new(c.to_string().repeat(32), "mobix-system").unwrap();
        let entry = |generation, c, status, tries_left| Entry {
            generation,
            id: bootstate::id_of(top(c).base_name().as_str()),
            kernel_slot: Slot::A,
            tries_left,
            tries_done: 0,
            status,
        };
        let state = bootstate::Record {
            seq: 3,
            default_gen: 1,
            booted_gen: 1,
            last_good: [1, 0],
            pending_slot: Default::default(),
            entries: vec![
                entry(1, 'a', Status::Good, 0),
                entry(2, 'b', Status::Bad(BadReason::Tries), 0),
                entry(3, 'c', Status::Trial, 2),
            ],
        };
        let words = |n, c| standing(&state, n, &top(c)).map(|s| s.words());
        assert_eq!(words(1, 'a').as_deref(), Some("good, booted, default"));
        assert_eq!(words(2, 'b').as_deref(), Some("bad (tries)"));
        assert_eq!(words(3, 'c').as_deref(), Some("trial (2 tries left)"));
        assert_eq!(words(3, 'd'), None, "another toplevel under the same number is another generation");
        assert_eq!(words(4, 'c'), None);
        // 2, the newest built here, failed and 1 booted: said; 3 newest (a trial), not.
        let mut two = state.clone();
        two.entries[1].tries_done = 3;
        assert_eq!(
            fell_back(Some(&two), Some(2)).as_deref(),
            Some("the phone fell back: generation 2 did not come up on any of its 3 tries; it boots generation 1")
        );
        assert_eq!(fell_back(Some(&state), Some(3)), None);
        assert_eq!(fell_back(Some(&state), Some(1)), None);
        assert_eq!(fell_back(None, Some(2)), None);
    }

    /// Issue 30: with the phone on generation 3 (good) and 4 bad, the out directory's
    /// last build being 2, a rollback went "from 2 to 1", a trial generation.
    #[test]
    fn a_rollback_counts_from_what_the_phone_booted_to_the_newest_good_before_it() {
        use bootstate::{BadReason, Entry, Status};
        let all: BTreeMap<u32, Record> = (1..=4)
            .map(|n| {
                let toplevel = sp(&n.to_string(), "mobix-system");
                (
                    n,
                    Record {
                        generation: n,
                        device: "d".into(),
                        toplevel,
                        created: 0,
                        label: String::new(),
                        boot_image: None,
                        config: None,
                    },
                )
            })
            .collect();
        let entry = |generation, status| Entry {
            generation,
            id: [0; 16],
            kernel_slot: Slot::A,
            tries_left: 0,
            tries_done: 0,
            status,
        };
        let phone = bootstate::Record {
            seq: 9,
            default_gen: 3,
            booted_gen: 3,
            last_good: [3, 0],
            pending_slot: Default::default(),
            entries: vec![
                entry(1, Status::Trial),
                entry(2, Status::Good),
                entry(3, Status::Good),
                entry(4, Status::Bad(BadReason::Tries)),
            ],
        };
        let (from, why) = rollback_from(&all, 2, Some(&phone));
        assert_eq!((from, why), (3, "the generation the phone last booted"));
        assert_eq!(rollback_target(&all, from, Some(&phone)), Some(2));
        // A trial generation is passed over for an older good one.
        let mut later = phone.clone();
        later.entries[1].status = Status::Trial;
        later.entries[0].status = Status::Good;
        assert_eq!(rollback_target(&all, 3, Some(&later)), Some(1));
        // Nothing older known good: the newest older one not found bad.
        later.entries[0].status = Status::Bad(BadReason::Tries);
        assert_eq!(rollback_target(&all, 3, Some(&later)), Some(2));
        // Never read off the phone: from the last build.
        assert_eq!(rollback_from(&all, 2, None).0, 2);
        assert_eq!(rollback_target(&all, 2, None), Some(1));
    }

    fn sp(seed: &str, name: &str) -> StorePath {
        StorePath::new(Sha256Digest::of(seed.as_bytes()).store_hash(), name).unwrap()
    }

    #[test]
    fn diff_lists_added_removed_and_changed() {
        let a = [sp("1", "kernel"), sp("2", "etc"), sp("3", "old-tool")].into_iter().collect();
        let b = [sp("1", "kernel"), sp("4", "etc"), sp("5", "new-tool")].into_iter().collect();
        let d = diff(&a, &b, &|p| p.name().len() as u64);
        let summary: Vec<(&str, bool, bool)> =
            d.iter().map(|c| (c.name.as_str(), c.before.is_some(), c.after.is_some())).collect();
        assert_eq!(summary, [("etc", true, true), ("new-tool", false, true), ("old-tool", true, false)]);
        assert_eq!(d[1].after_size, 8);
    }

    fn recs(n: u32) -> BTreeMap<u32, StorePath> {
        (1..=n).map(|g| (g, sp(&g.to_string(), "sys"))).collect()
    }

    #[test]
    fn carries_the_newest_the_pinned_and_what_the_phone_needs() {
        let all = recs(10);
        let c = carried(&all, 3, &[2, 99], &[1, 5]);
        assert_eq!(c.keys().copied().collect::<Vec<_>>(), [1, 2, 5, 8, 9, 10]);
    }

    #[test]
    fn a_fresh_record_keeps_what_the_phone_learned() {
        use bootstate::Status;
        let all = recs(4);
        let first = initial_state(&carried(&all, 2, &[], &[]), 4, 3, None);
        let st: Vec<(u32, Status, u8)> = first.entries.iter().map(|e| (e.generation, e.status, e.tries_left)).collect();
        assert_eq!(st, [(3, Status::Trial, 1), (4, Status::Trial, 3)]);
        assert_eq!((first.default_gen, first.seq), (4, 1));
        // The phone found 4 good and 3 bad; generation 5 is built next.
        let mut phone = first.clone();
        phone.entries[0].status = Status::Bad(bootstate::BadReason::Tries);
        phone.entries[1].status = Status::Good;
        phone.last_good = [4, 0];
        phone.booted_gen = 4;
        phone.seq = 9;
        let all = recs(5);
        let next = initial_state(&carried(&all, 2, &[], &protected(&phone)), 5, 3, Some(&phone));
        let st: Vec<(u32, Status, u8)> = next.entries.iter().map(|e| (e.generation, e.status, e.tries_left)).collect();
        assert_eq!(st, [(4, Status::Good, 3), (5, Status::Trial, 3)]);
        assert_eq!((next.default_gen, next.last_good, next.seq), (5, [4, 0], 10));
        // A generation with the same number but another toplevel is not the one the phone knew.
        let mut other = recs(5);
        other.insert(4, sp("rebuilt", "sys"));
        let next = initial_state(&carried(&other, 2, &[], &[]), 5, 3, Some(&phone));
        assert_eq!((next.entries[0].status, next.entries[0].tries_left), (Status::Trial, 1));
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(utc_minutes(0), "1970-01-01 00:00");
        assert_eq!(utc_minutes(1_795_300_000), "2026-11-21 22:26");
        assert_eq!(utc_minutes(951_782_400), "2000-02-29 00:00");
    }

    #[test]
    fn records_number_distinct_toplevels() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let dev = Lineage::of(&Codename::new("phone").unwrap(), &d.path().join("out"));
        let lock = store.lock().unwrap();
        assert!(next(&store, &dev, &sp("a", "sys"), "first", None).unwrap().1);
        assert!(list(&store, &dev).unwrap().is_empty(), "next records nothing");
        let (r1, new1) = record(&store, &lock, &dev, &sp("a", "sys"), "first", None).unwrap();
        let (r1b, new1b) = record(&store, &lock, &dev, &sp("a", "sys"), "first", None).unwrap();
        let (r2, new2) = record(&store, &lock, &dev, &sp("b", "sys"), "second", None).unwrap();
        assert_eq!((r1.generation, new1, r1b.generation, new1b, r2.generation, new2), (1, true, 1, false, 2, true));
        assert_eq!(list(&store, &dev).unwrap().len(), 2);
    }

    /// Issue 30: a test system built into another out directory is another lineage: its
    /// own numbers, its own phone record, never in this lineage's list; the store keeps
    /// both alive.
    #[test]
    fn each_out_directory_is_its_own_lineage() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("store")).unwrap();
        let phone = Codename::new("phone").unwrap();
        let main = Lineage::of(&phone, &d.path().join("out/phone"));
        let tiny = Lineage::of(&phone, &d.path().join("out/tiny"));
        assert_eq!(main, Lineage::of(&phone, &d.path().join("out/./phone")), "one lineage, however spelt");
        let lock = store.lock().unwrap();
        record(&store, &lock, &main, &sp("a", "sys"), "", Some("pocket.yaml")).unwrap();
        record(&store, &lock, &main, &sp("b", "sys"), "", Some("pocket.yaml")).unwrap();
        let (t, _) = record(&store, &lock, &tiny, &sp("c", "sys"), "", Some("tiny.yaml")).unwrap();
        assert_eq!(t.generation, 1, "numbered on its own");
        let (m3, _) = next(&store, &main, &sp("d", "sys"), "", Some("pocket.yaml")).unwrap();
        assert_eq!(m3.generation, 3);
        assert_eq!(list(&store, &main).unwrap().keys().copied().collect::<Vec<_>>(), [1, 2]);
        let state = bootstate::Record { seq: 7, ..Default::default() };
        save_ledger(&store, &lock, &tiny, &state).unwrap();
        assert_eq!(ledger(&store, &main).unwrap(), None, "the test phone's record is its own");
        assert_eq!(ledger(&store, &tiny).unwrap().unwrap().seq, 7);
        assert_eq!(roots(&store).unwrap().len(), 3);
        let out = fs::read_to_string(dir(&store, &tiny).join("out")).unwrap();
        assert_eq!(out.trim_end(), tiny.out().display().to_string());
    }

    #[test]
    fn the_first_lineage_adopts_the_records_from_before_lineages() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("store")).unwrap();
        let phone = Codename::new("phone").unwrap();
        let old = device_dir(&store, &phone);
        fs::create_dir_all(&old).unwrap();
        for n in [1u32, 2] {
            let r = Record {
                generation: n,
                device: "phone".into(),
                toplevel: sp(&n.to_string(), "sys"),
                created: 0,
                label: String::new(),
                boot_image: None,
                config: None,
            };
            fs::write(old.join(format!("{n}.json")), serde_json::to_string(&r).unwrap()).unwrap();
        }
        fs::write(old.join("phone-state.bin"), bootstate::Record { seq: 3, ..Default::default() }.encode().unwrap())
            .unwrap();
        let main = Lineage::of(&phone, &d.path().join("out/phone"));
        let other = Lineage::of(&phone, &d.path().join("out/other"));
        // Read before anything is written: every lineage sees them, and nothing moves.
        assert_eq!(list(&store, &other).unwrap().len(), 2);
        assert_eq!(ledger(&store, &main).unwrap().unwrap().seq, 3);
        assert!(old.join("1.json").exists());
        let lock = store.lock().unwrap();
        let (r3, _) = record(&store, &lock, &main, &sp("x", "sys"), "", None).unwrap();
        assert_eq!(r3.generation, 3, "numbering goes on from the adopted records");
        assert_eq!(list(&store, &main).unwrap().keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(ledger(&store, &main).unwrap().unwrap().seq, 3);
        assert!(list(&store, &other).unwrap().is_empty(), "adopted by the first lineage to write, once");
        assert!(!old.join("1.json").exists() && !old.join("phone-state.bin").exists());
        assert_eq!(roots(&store).unwrap().len(), 3);
    }

    #[test]
    fn a_change_of_config_in_a_lineage_is_said() {
        let rec = |n: u32, c: Option<&str>| Record {
            generation: n,
            device: "phone".into(),
            toplevel: sp(&n.to_string(), "sys"),
            created: 1,
            label: String::new(),
            boot_image: None,
            config: c.map(str::to_string),
        };
        let all: BTreeMap<u32, Record> = [(1, rec(1, Some("pocket.yaml")))].into();
        assert_eq!(config_change(&all, &rec(2, Some("pocket.yaml"))), None);
        let words = config_change(&all, &rec(2, Some("tiny.yaml"))).unwrap();
        assert!(
            words.starts_with(
                "generation 2 is built from tiny.yaml, generation 1 of this out directory from pocket.yaml"
            ),
            "{words}"
        );
        assert!(config_change(&all, &rec(2, None)).unwrap().contains("from the default system"));
    }
}
