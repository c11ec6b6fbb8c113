//! Generations: the numbered record, per device, of every distinct system built.
//!
//! Pipeline stage: generation. Input: a device and the toplevel a build produced; output:
//! its generation number. Records live in `<store>/.mobix/generations/<device>/<n>.json`,
//! written atomically. A build whose toplevel equals the newest generation's reuses it; a
//! generation is identified by its toplevel, never by its number alone.

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
