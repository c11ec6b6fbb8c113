//! Generations: the numbered record, per device, of every distinct system built.
//!
//! Pipeline stage: generation. Input: a device and the toplevel a build produced; output:
//! its generation number. Records live in `<store>/.mobix/generations/<device>/<n>.json`,
//! written atomically. A build whose toplevel equals the newest generation's reuses it; a
//! generation is identified by its toplevel, never by its number alone.

/// Boot counting, shared with the on-phone init (init/bootctl).
pub use mobix_bootctl::counting as boot;

use crate::profile::Codename;
use crate::store::{Store, StorePath};
use crate::util;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub generation: u32,
    pub device: String,
    pub toplevel: StorePath,
    /// Seconds since the epoch when the generation was first built.
    pub created: u64,
    pub label: String,
}

fn dir(store: &Store, device: &Codename) -> PathBuf {
    store.root().join(".mobix/generations").join(device.as_str())
}

/// Every recorded generation of `device`, by number.
pub fn list(store: &Store, device: &Codename) -> Result<BTreeMap<u32, Record>> {
    let d = dir(store, device);
    let mut out = BTreeMap::new();
    let rd = match fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", d.display())),
    };
    for e in rd {
        let p = e?.path();
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

/// The generation for `toplevel`: the newest one if it has that toplevel, else a new one.
/// Returns the record and whether it is new.
pub fn record(store: &Store, device: &Codename, toplevel: &StorePath, label: &str) -> Result<(Record, bool)> {
    let all = list(store, device)?;
    if let Some((_, newest)) = all.iter().next_back() {
        if &newest.toplevel == toplevel {
            return Ok((newest.clone(), false));
        }
    }
    let n = all.keys().next_back().map_or(1, |n| n + 1);
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let rec = Record {
        generation: n,
        device: device.to_string(),
        toplevel: toplevel.clone(),
        created,
        label: label.to_string(),
    };
    let path = dir(store, device).join(format!("{n}.json"));
    util::write_atomic(&path, (serde_json::to_string_pretty(&rec)? + "\n").as_bytes())?;
    Ok((rec, true))
}

/// `YYYY-MM-DD HH:MM` (UTC) of seconds since the epoch.
pub fn utc_minutes(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
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
    let host = store.host_path(p);
    let mut n = std::fs::symlink_metadata(&host).map(|m| if m.is_file() { m.len() } else { 0 }).unwrap_or(0);
    let _ = util::walk(&host, &mut |_, m| {
        if m.is_file() {
            n += m.len();
        }
        Ok(true)
    });
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Sha256Digest;

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
        let dev = Codename::new("phone").unwrap();
        let (r1, new1) = record(&store, &dev, &sp("a", "sys"), "first").unwrap();
        let (r1b, new1b) = record(&store, &dev, &sp("a", "sys"), "first").unwrap();
        let (r2, new2) = record(&store, &dev, &sp("b", "sys"), "second").unwrap();
        assert_eq!((r1.generation, new1, r1b.generation, new1b, r2.generation, new2), (1, true, 1, false, 2, true));
        assert_eq!(list(&store, &dev).unwrap().len(), 2);
    }
}
