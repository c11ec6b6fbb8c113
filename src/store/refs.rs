//! Finding references between store paths by scanning a build output for the hash parts
//! of candidate paths, as Nix does: whatever the output mentions, it depends on.

use super::{StorePath, HASH_LEN};
use crate::hash::NIX32_ALPHABET;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::Path;

fn is_hash_char(c: u8) -> bool {
    NIX32_ALPHABET.contains(&c)
}

/// Marks in `found` every candidate hash occurring in `data`. A window of 32 hash
/// characters is looked up; on a non-hash byte the scan jumps past it (Nix's scanner).
fn scan(data: &[u8], table: &HashMap<&[u8], &StorePath>, found: &mut BTreeSet<StorePath>) {
    let mut i = 0;
    while i + HASH_LEN <= data.len() {
        let mut j = HASH_LEN;
        let mut jumped = false;
        while j > 0 {
            if !is_hash_char(data[i + j - 1]) {
                i += j;
                jumped = true;
                break;
            }
            j -= 1;
        }
        if jumped {
            continue;
        }
        if let Some(p) = table.get(&data[i..i + HASH_LEN]) {
            found.insert((*p).clone());
        }
        i += 1;
    }
}

/// The candidates whose hash part occurs in the file contents or symlink targets under `out`.
pub fn scan_references(
    out: &Path,
    candidates: &BTreeSet<StorePath>,
    this: &StorePath,
) -> io::Result<BTreeSet<StorePath>> {
    let mut found = BTreeSet::new();
    let table: HashMap<&[u8], &StorePath> =
        candidates.iter().filter(|c| *c != this).map(|c| (c.hash_part().as_bytes(), c)).collect();
    if table.is_empty() {
        return Ok(found);
    }
    let mut scan_path = |p: &Path, m: &fs::Metadata| -> io::Result<()> {
        if m.file_type().is_symlink() {
            scan(fs::read_link(p)?.as_os_str().as_encoded_bytes(), &table, &mut found);
        } else if m.is_file() {
            let mut f = fs::File::open(p)?;
            // Overlap reads by HASH_LEN - 1 bytes so no hash is cut in two.
            let mut buf = vec![0u8; (1 << 20) + HASH_LEN];
            let mut keep = 0;
            loop {
                let n = f.read(&mut buf[keep..])?;
                if n == 0 {
                    break;
                }
                let len = keep + n;
                scan(&buf[..len], &table, &mut found);
                keep = (HASH_LEN - 1).min(len);
                buf.copy_within(len - keep..len, 0);
            }
        }
        Ok(())
    };
    let m = fs::symlink_metadata(out)?;
    scan_path(out, &m)?;
    if m.is_dir() {
        crate::util::walk(out, &mut |rel, m| {
            scan_path(&out.join(rel), m)?;
            Ok(true)
        })?;
    }
    Ok(found)
}
