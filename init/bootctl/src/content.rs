//! What a store path holds, hashed the same way on the host and on the phone: the host
//! records it when a path enters its store (and `mobix store verify` and binary caches
//! check it), the phone's receiver checks every path a deploy sends against it before the
//! path enters the phone's store.
//!
//! The one module of this crate that reads files: both sides must walk a tree identically,
//! so the walk lives here too.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read};
use std::path::Path;

/// sha256 of bytes in memory (a deploy's boot image).
pub fn bytes(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// sha256 of a file's bytes.
pub fn file(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Hashes a directory tree by content: relative paths in byte order, file type, the
/// executable bit, file contents and symlink targets. Timestamps, owners and the tree's own
/// location do not count. Entries for which `skip` returns true (relative path, `/`
/// separated) are left out with everything below them. Names must be UTF-8.
pub fn tree(root: &Path, skip: &dyn Fn(&str) -> bool) -> io::Result<[u8; 32]> {
    let mut entries = Vec::new();
    collect(root, "", skip, &mut entries)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (rel, meta) in entries {
        use std::os::unix::fs::PermissionsExt;
        let p = root.join(&rel);
        h.update(rel.as_bytes());
        h.update(b"\0");
        let ty = meta.file_type();
        if ty.is_symlink() {
            h.update(b"l");
            h.update(fs::read_link(&p)?.as_os_str().as_encoded_bytes());
        } else if ty.is_dir() {
            h.update(b"d");
        } else {
            h.update(if meta.permissions().mode() & 0o111 != 0 { b"x" } else { b"f" });
            h.update(file(&p)?);
        }
        h.update(b"\0");
    }
    Ok(h.finalize().into())
}

fn collect(
    root: &Path,
    rel: &str,
    skip: &dyn Fn(&str) -> bool,
    out: &mut Vec<(String, fs::Metadata)>,
) -> io::Result<()> {
    let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
    for e in fs::read_dir(&dir)? {
        let name = e?.file_name();
        let name = name.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("non-UTF-8 file name in {}", dir.display()))
        })?;
        let child = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        if skip(&child) {
            continue;
        }
        let meta = fs::symlink_metadata(root.join(&child))?;
        let is_dir = meta.is_dir();
        out.push((child.clone(), meta));
        if is_dir {
            collect(root, &child, skip, out)?;
        }
    }
    Ok(())
}

/// A store path's content hash: its type, and for a directory [`tree`] of it, for a file
/// its executable bit and bytes, for a symlink its target.
pub fn store_path(path: &Path) -> io::Result<[u8; 32]> {
    use std::os::unix::fs::PermissionsExt;
    let m = fs::symlink_metadata(path)?;
    let mut h = Sha256::new();
    if m.file_type().is_symlink() {
        h.update(b"symlink\0");
        h.update(fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else if m.is_dir() {
        h.update(b"directory\0");
        h.update(tree(path, &|_| false)?);
    } else {
        h.update(if m.permissions().mode() & 0o111 != 0 { b"executable\0" } else { b"regular\0\0\0\0" });
        h.update(file(path)?);
    }
    Ok(h.finalize().into())
}

/// Lowercase hex, as the host writes content hashes.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
