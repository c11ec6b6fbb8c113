//! cpio "newc" archives, the container of every initramfs.
//!
//! Pipeline stage: format (pure). Input: an in-memory list of entries; output: archive
//! bytes, and back. No I/O, no knowledge of files or the store.
//!
//! The writer follows AOSP `mkbootfs` conventions so that the same entries always give the
//! same bytes: entries sorted by path, inode numbers from 300000 in that order, uid = gid =
//! 0, nlink = 1, mtime = 0, a `TRAILER!!!` entry, and zero padding to a 256-byte boundary.
//! Layout reference: Linux `Documentation/driver-api/early-userspace/buffer-format.rst`.

use std::collections::BTreeMap;

const MAGIC: &[u8; 6] = b"070701";
const MAGIC_CRC: &[u8; 6] = b"070702";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";
const FIRST_INO: u32 = 300_000;
/// Final archive size is a multiple of this (as mkbootfs does).
const ARCHIVE_ALIGN: usize = 256;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// One archive member. `path` is relative (no leading `/`), components separated by `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// Permission bits only (`0o755`); the file type comes from `kind`.
    pub perm: u32,
    pub kind: Kind,
}

impl Entry {
    pub fn dir(path: impl Into<String>) -> Self {
        Entry { path: path.into(), perm: 0o755, kind: Kind::Dir }
    }
    pub fn file(path: impl Into<String>, perm: u32, data: Vec<u8>) -> Self {
        Entry { path: path.into(), perm, kind: Kind::File(data) }
    }
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Entry { path: path.into(), perm: 0o777, kind: Kind::Symlink(target.into()) }
    }
    fn mode(&self) -> u32 {
        let ty = match self.kind {
            Kind::Dir => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::Symlink(_) => S_IFLNK,
        };
        ty | (self.perm & 0o7777)
    }
    fn data(&self) -> &[u8] {
        match &self.kind {
            Kind::Dir => &[],
            Kind::File(d) => d,
            Kind::Symlink(t) => t.as_bytes(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("entry path {0:?} is not a clean relative path")]
    BadPath(String),
    #[error("entry {0:?} appears twice")]
    Duplicate(String),
    #[error("entry {path:?} has no parent directory entry {parent:?}")]
    MissingParent { path: String, parent: String },
    #[error("entry {path:?} is {size} bytes, more than newc's 4 GiB limit")]
    TooLarge { path: String, size: usize },
    #[error("truncated archive: header at offset {offset} needs {need} bytes, {have} left")]
    Truncated { offset: usize, need: usize, have: usize },
    #[error("bad magic {found:?} at offset {offset} (expected \"070701\")")]
    BadMagic { offset: usize, found: String },
    #[error("field {field} at offset {offset} is not hexadecimal: {found:?}")]
    BadHex { offset: usize, field: &'static str, found: String },
    #[error("entry at offset {offset}: name size {namesize} is invalid")]
    BadNameSize { offset: usize, namesize: u32 },
    #[error("entry {name:?} at offset {offset}: {what} of {size} bytes runs past the end ({len} bytes)")]
    PastEnd { offset: usize, name: String, what: &'static str, size: u64, len: usize },
    #[error("entry {name:?} at offset {offset} has unsupported file type {mode:#o}")]
    UnsupportedType { offset: usize, name: String, mode: u32 },
    #[error("entry {name:?} at offset {offset}: symlink target is not UTF-8")]
    BadSymlink { offset: usize, name: String },
    #[error("entry name at offset {offset} is not UTF-8")]
    BadName { offset: usize },
    #[error("archive has no TRAILER!!! entry")]
    NoTrailer,
}

fn check_path(p: &str) -> Result<(), Error> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.ends_with('/')
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        Err(Error::BadPath(p.to_string()))
    } else {
        Ok(())
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn push_header(out: &mut Vec<u8>, fields: [u32; 13]) {
    out.extend_from_slice(MAGIC);
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
}

/// Writes a deterministic newc archive. Every non-root path needs its parent directory among
/// the entries, so the kernel can create it before its children.
pub fn write(entries: &[Entry]) -> Result<Vec<u8>, Error> {
    let mut sorted: BTreeMap<&str, &Entry> = BTreeMap::new();
    for e in entries {
        check_path(&e.path)?;
        if sorted.insert(e.path.as_str(), e).is_some() {
            return Err(Error::Duplicate(e.path.clone()));
        }
    }
    for (path, _) in sorted.iter() {
        if let Some((parent, _)) = path.rsplit_once('/') {
            match sorted.get(parent) {
                Some(p) if p.kind == Kind::Dir => {}
                _ => return Err(Error::MissingParent { path: path.to_string(), parent: parent.to_string() }),
            }
        }
    }
    let mut out = Vec::new();
    for (i, (path, e)) in sorted.iter().enumerate() {
        let data = e.data();
        let size =
            u32::try_from(data.len()).map_err(|_| Error::TooLarge { path: path.to_string(), size: data.len() })?;
        let namesize = path.len() as u32 + 1;
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check
        push_header(&mut out, [FIRST_INO + i as u32, e.mode(), 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, 0]);
        out.extend_from_slice(path.as_bytes());
        out.push(0);
        pad4(&mut out);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    push_header(&mut out, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, TRAILER.len() as u32 + 1, 0]);
    out.extend_from_slice(TRAILER.as_bytes());
    out.push(0);
    pad4(&mut out);
    while out.len() % ARCHIVE_ALIGN != 0 {
        out.push(0);
    }
    Ok(out)
}

fn hex_field(buf: &[u8], offset: usize, idx: usize, field: &'static str) -> Result<u32, Error> {
    let start = offset + 6 + idx * 8;
    let raw = &buf[start..start + 8];
    let s = std::str::from_utf8(raw).ok();
    s.and_then(|s| u32::from_str_radix(s, 16).ok()).ok_or_else(|| Error::BadHex {
        offset: start,
        field,
        found: String::from_utf8_lossy(raw).into_owned(),
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Reads one newc archive (up to its trailer). Hard links, device nodes and other special
/// files are reported as unsupported: mobix never writes them.
pub fn read(buf: &[u8]) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    let mut off = 0usize;
    loop {
        if buf.len() - off < HEADER_LEN {
            return Err(Error::Truncated { offset: off, need: HEADER_LEN, have: buf.len() - off });
        }
        let magic = &buf[off..off + 6];
        if magic != MAGIC && magic != MAGIC_CRC {
            return Err(Error::BadMagic { offset: off, found: String::from_utf8_lossy(magic).into_owned() });
        }
        let mode = hex_field(buf, off, 1, "c_mode")?;
        let filesize = hex_field(buf, off, 6, "c_filesize")?;
        let namesize = hex_field(buf, off, 11, "c_namesize")?;
        let name_start = off + HEADER_LEN;
        if namesize == 0 {
            return Err(Error::BadNameSize { offset: off, namesize });
        }
        let name_end = name_start.checked_add(namesize as usize).filter(|&e| e <= buf.len()).ok_or(Error::PastEnd {
            offset: off,
            name: String::new(),
            what: "name",
            size: namesize as u64,
            len: buf.len(),
        })?;
        let raw_name = &buf[name_start..name_end - 1];
        if buf[name_end - 1] != 0 || raw_name.contains(&0) {
            return Err(Error::BadNameSize { offset: off, namesize });
        }
        let name = std::str::from_utf8(raw_name).map_err(|_| Error::BadName { offset: off })?.to_string();
        let data_start = align4(name_end);
        let data_end = data_start.checked_add(filesize as usize).filter(|&e| e <= buf.len()).ok_or(Error::PastEnd {
            offset: off,
            name: name.clone(),
            what: "data",
            size: filesize as u64,
            len: buf.len(),
        })?;
        if name == TRAILER {
            return Ok(entries);
        }
        let data = &buf[data_start..data_end];
        let perm = mode & 0o7777;
        let kind = match mode & S_IFMT {
            S_IFDIR => Kind::Dir,
            S_IFREG => Kind::File(data.to_vec()),
            S_IFLNK => Kind::Symlink(
                String::from_utf8(data.to_vec()).map_err(|_| Error::BadSymlink { offset: off, name: name.clone() })?,
            ),
            _ => return Err(Error::UnsupportedType { offset: off, name, mode }),
        };
        let path = name.trim_start_matches("./").to_string();
        entries.push(Entry { path, perm, kind });
        off = align4(data_end);
        if off >= buf.len() {
            return Err(Error::NoTrailer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn sample() -> Vec<Entry> {
        vec![
            Entry::file("init", 0o755, b"\x7fELF fake init".to_vec()),
            Entry::dir("lib"),
            Entry::dir("lib/modules"),
            Entry::file("lib/modules/a.ko", 0o644, vec![7u8; 1001]),
            Entry::symlink("bin", "lib"),
            Entry::dir("dev"),
        ]
    }

    #[test]
    fn round_trip_sorted_and_deterministic() {
        let a = write(&sample()).unwrap();
        let mut rev = sample();
        rev.reverse();
        assert_eq!(a, write(&rev).unwrap(), "input order must not matter");
        assert_eq!(a.len() % 256, 0);
        let back = read(&a).unwrap();
        let mut want = sample();
        want.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(back, want);
        // Golden digest: a change here is a change in the bytes every initramfs gets.
        let digest = format!("{:x}", Sha256::digest(&a));
        assert_eq!(digest, GOLDEN_SAMPLE_SHA256, "cpio writer output changed");
    }

    const GOLDEN_SAMPLE_SHA256: &str = "443879f33aa5957866c5386479609a0ead7633cde3794cac7eb19ac9f9e6b4c1";

    #[test]
    fn header_fields_follow_mkbootfs_conventions() {
        let a = write(&[Entry::file("x", 0o600, b"hi".to_vec())]).unwrap();
        let h = std::str::from_utf8(&a[..HEADER_LEN]).unwrap();
        assert_eq!(&h[0..6], "070701");
        assert_eq!(&h[6..14], "000493E0", "ino starts at 300000");
        assert_eq!(&h[14..22], "00008180", "regular file 0600");
        assert_eq!(&h[22..38], "0000000000000000", "uid/gid 0");
        assert_eq!(&h[38..46], "00000001", "nlink 1");
        assert_eq!(&h[46..54], "00000000", "mtime 0");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(write(&[Entry::dir("/abs")]), Err(Error::BadPath(_))));
        assert!(matches!(write(&[Entry::dir("a/../b")]), Err(Error::BadPath(_))));
        assert!(matches!(write(&[Entry::file("a/b", 0o644, vec![])]), Err(Error::MissingParent { .. })));
        assert!(matches!(write(&[Entry::dir("a"), Entry::dir("a")]), Err(Error::Duplicate(_))));
    }

    #[test]
    fn corrupt_archives_are_errors_not_panics() {
        let good = write(&sample()).unwrap();
        for cut in [0, 5, 109, 110, 200, good.len() - 300] {
            assert!(read(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(read(&bad), Err(Error::BadMagic { .. })));
        let mut bad = good.clone();
        bad[6 + 6 * 8] = b'Z'; // filesize field
        assert!(matches!(read(&bad), Err(Error::BadHex { field: "c_filesize", .. })));
        let mut bad = good;
        bad[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"FFFFFFFF");
        assert!(matches!(read(&bad), Err(Error::PastEnd { .. })));
    }
}
