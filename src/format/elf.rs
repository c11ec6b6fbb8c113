//! What a dynamically linked ELF program needs in order to run: its interpreter (the
//! dynamic loader, `PT_INTERP`) and the shared libraries it names (`DT_NEEDED`), with its
//! own `DT_SONAME` and `DT_RUNPATH`/`DT_RPATH`, read from a 64-bit little-endian ELF file
//! (arm64's and x86-64's). What initramfs-tools' `copy_exec` asks `ldd` for, read from the
//! bytes instead of running the program, which a host cannot do for another architecture.
//!
//! Pipeline stage: format (pure). Layout reference: the System V ABI's ELF-64 object file
//! format (file header 64 bytes; program headers `e_phnum` of `e_phentsize` at `e_phoff`;
//! the dynamic segment an array of (tag, value) pairs of 8 bytes each, ending at
//! `DT_NULL`). String-table offsets in the dynamic segment are virtual addresses, turned
//! into file offsets through the `PT_LOAD` segment holding them.

pub const MAGIC: &[u8; 4] = b"\x7fELF";
/// `e_machine` of arm64 (`EM_AARCH64`).
pub const EM_AARCH64: u16 = 183;
/// `e_machine` of x86-64 (`EM_X86_64`).
pub const EM_X86_64: u16 = 62;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// The dynamic linking facts of one ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Dynamic {
    /// `e_machine` (183: arm64).
    pub machine: u16,
    /// `e_type`: 2 an executable, 3 a shared object (or a position-independent executable).
    pub kind: u16,
    /// The program interpreter (`/lib/ld-linux-aarch64.so.1`); none for a static program or
    /// a library.
    pub interpreter: Option<String>,
    /// The libraries it needs, by soname, in the order the file names them.
    pub needed: Vec<String>,
    /// Its own soname, for a library.
    pub soname: Option<String>,
    /// Directories it asks the loader to search (`DT_RUNPATH`, else `DT_RPATH`), split at `:`.
    pub runpath: Vec<String>,
}

impl Dynamic {
    /// Whether the program is linked statically (no interpreter, no libraries).
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not an ELF file (no \\x7fELF magic at its start)")]
    NotElf,
    #[error("an ELF file of class {0} (only 64-bit, class 2, is read)")]
    Class(u8),
    #[error("a big-endian ELF file (data encoding {0}; only little-endian, 1, is read)")]
    Endian(u8),
    #[error("{what} at offset {offset} with {len} bytes runs past the file's end ({size} bytes)")]
    Truncated { what: &'static str, offset: u64, len: u64, size: usize },
    #[error("program header size {0} (64 expected)")]
    PhentSize(u16),
    #[error("the dynamic segment's string table at address {0:#x} lies in no loaded segment")]
    StrtabUnmapped(u64),
    #[error("string at {offset} of the dynamic string table (of {size} bytes) is unterminated or outside it")]
    BadString { offset: u64, size: u64 },
    #[error("the dynamic segment names strings but has no string table (DT_STRTAB)")]
    NoStrtab,
}

/// The slice `[offset, offset + len)` of `b`, or the error naming `what`.
fn slice<'a>(b: &'a [u8], offset: u64, len: u64, what: &'static str) -> Result<&'a [u8], Error> {
    let bad = Error::Truncated { what, offset, len, size: b.len() };
    let start = usize::try_from(offset).map_err(|_| bad.clone())?;
    let end = start.checked_add(usize::try_from(len).map_err(|_| bad.clone())?).ok_or(bad.clone())?;
    b.get(start..end).ok_or(bad)
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes"))
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// Reads the dynamic linking facts of a 64-bit little-endian ELF file.
pub fn read(b: &[u8]) -> Result<Dynamic, Error> {
    if b.len() < 4 || &b[..4] != MAGIC {
        return Err(Error::NotElf);
    }
    let header = slice(b, 0, 64, "the ELF header")?;
    if header[4] != 2 {
        return Err(Error::Class(header[4]));
    }
    if header[5] != 1 {
        return Err(Error::Endian(header[5]));
    }
    let (kind, machine) = (le16(header, 16), le16(header, 18));
    let (phoff, phentsize, phnum) = (le64(header, 32), le16(header, 54), le16(header, 56));
    if phnum > 0 && phentsize != 56 {
        return Err(Error::PhentSize(phentsize));
    }
    let table = slice(b, phoff, u64::from(phnum) * 56, "the program headers")?;
    let segments: Vec<Segment> = table
        .chunks_exact(56)
        .map(|p| Segment { kind: le32(p, 0), offset: le64(p, 8), vaddr: le64(p, 16), filesz: le64(p, 32) })
        .collect();
    let mut out = Dynamic { machine, kind, ..Dynamic::default() };
    if let Some(interp) = segments.iter().find(|s| s.kind == PT_INTERP) {
        let raw = slice(b, interp.offset, interp.filesz, "the interpreter's name")?;
        let name = raw.split(|&c| c == 0).next().unwrap_or(&[]);
        out.interpreter = Some(String::from_utf8_lossy(name).into_owned());
    }
    let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else { return Ok(out) };
    let entries = slice(b, dynamic.offset, dynamic.filesz - dynamic.filesz % 16, "the dynamic segment")?;
    let mut tags = Vec::new();
    for e in entries.chunks_exact(16) {
        let (tag, value) = (le64(e, 0), le64(e, 8));
        if tag == DT_NULL {
            break;
        }
        tags.push((tag, value));
    }
    let strings: Vec<&(u64, u64)> =
        tags.iter().filter(|(t, _)| matches!(*t, DT_NEEDED | DT_SONAME | DT_RPATH | DT_RUNPATH)).collect();
    if strings.is_empty() {
        return Ok(out);
    }
    let strtab = tags.iter().find(|(t, _)| *t == DT_STRTAB).map(|&(_, v)| v).ok_or(Error::NoStrtab)?;
    let strsz = tags.iter().find(|(t, _)| *t == DT_STRSZ).map(|&(_, v)| v);
    // The loaded segment holding the table gives its place in the file.
    let load = segments
        .iter()
        .find(|s| s.kind == PT_LOAD && strtab >= s.vaddr && strtab - s.vaddr < s.filesz)
        .ok_or(Error::StrtabUnmapped(strtab))?;
    let table_off = load.offset.checked_add(strtab - load.vaddr).ok_or(Error::StrtabUnmapped(strtab))?;
    let room = load.filesz - (strtab - load.vaddr);
    let size = strsz.map_or(room, |s| s.min(room));
    let table = slice(b, table_off, size, "the dynamic string table")?;
    let string = |offset: u64| -> Result<String, Error> {
        let bad = Error::BadString { offset, size };
        let rest = usize::try_from(offset).ok().and_then(|o| table.get(o..)).ok_or(bad.clone())?;
        let end = rest.iter().position(|&c| c == 0).ok_or(bad)?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let mut rpath = Vec::new();
    for &&(tag, value) in &strings {
        let s = string(value)?;
        match tag {
            DT_NEEDED => out.needed.push(s),
            DT_SONAME => out.soname = Some(s),
            DT_RUNPATH => out.runpath = s.split(':').filter(|d| !d.is_empty()).map(String::from).collect(),
            _ => rpath = s.split(':').filter(|d| !d.is_empty()).map(String::from).collect(),
        }
    }
    // DT_RUNPATH wins where both are present (the loader ignores DT_RPATH then).
    if out.runpath.is_empty() && !tags.iter().any(|(t, _)| *t == DT_RUNPATH) {
        out.runpath = rpath;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF: header, two program headers (PT_LOAD of the whole file, PT_DYNAMIC),
    /// optionally PT_INTERP, a dynamic segment and its string table.
    fn tiny(interp: Option<&str>, needed: &[&str], soname: Option<&str>) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut add = |s: &str| {
            let o = strtab.len() as u64;
            strtab.extend_from_slice(s.as_bytes());
            strtab.push(0);
            o
        };
        let mut dynamic: Vec<(u64, u64)> = needed.iter().map(|n| (DT_NEEDED, add(n))).collect();
        if let Some(s) = soname {
            dynamic.push((DT_SONAME, add(s)));
        }
        let phnum = if interp.is_some() { 3 } else { 2 };
        let base = 0x400000u64;
        let interp_off = 64 + 56 * phnum as u64;
        let interp_bytes: Vec<u8> = interp.map(|i| [i.as_bytes(), &[0]].concat()).unwrap_or_default();
        let strtab_off = interp_off + interp_bytes.len() as u64;
        let dyn_off = strtab_off + strtab.len() as u64;
        dynamic.push((DT_STRTAB, base + strtab_off));
        dynamic.push((DT_STRSZ, strtab.len() as u64));
        dynamic.push((DT_NULL, 0));
        let total = dyn_off + 16 * dynamic.len() as u64;
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(MAGIC);
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&3u16.to_le_bytes());
        b[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let ph = |kind: u32, off: u64, size: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&(base + off).to_le_bytes());
            p[32..40].copy_from_slice(&size.to_le_bytes());
            p
        };
        b.extend(ph(PT_LOAD, 0, total));
        b.extend(ph(PT_DYNAMIC, dyn_off, 16 * dynamic.len() as u64));
        if interp.is_some() {
            b.extend(ph(PT_INTERP, interp_off, interp_bytes.len() as u64));
        }
        b.extend(&interp_bytes);
        b.extend(&strtab);
        for (t, v) in dynamic {
            b.extend(t.to_le_bytes());
            b.extend(v.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_the_interpreter_libraries_and_soname() {
        let b = tiny(Some("/lib/ld-linux-aarch64.so.1"), &["libcryptsetup.so.12", "libc.so.6"], None);
        let d = read(&b).unwrap();
        assert_eq!(d.machine, EM_AARCH64);
        assert_eq!(d.interpreter.as_deref(), Some("/lib/ld-linux-aarch64.so.1"));
        assert_eq!(d.needed, ["libcryptsetup.so.12", "libc.so.6"]);
        assert!(!d.is_static());
        let lib = read(&tiny(None, &["libc.so.6"], Some("libpopt.so.0"))).unwrap();
        assert_eq!(lib.soname.as_deref(), Some("libpopt.so.0"));
        assert_eq!(lib.interpreter, None);
    }

    #[test]
    fn damaged_files_are_refused_with_what_is_wrong() {
        assert_eq!(read(b"#!/bin/sh\n"), Err(Error::NotElf));
        let good = tiny(Some("/lib/ld.so"), &["libc.so.6"], None);
        let mut b = good.clone();
        b[4] = 1;
        assert_eq!(read(&b), Err(Error::Class(1)));
        let mut b = good.clone();
        b[5] = 2;
        assert_eq!(read(&b), Err(Error::Endian(2)));
        // Every truncation is an error or a smaller truth, never a panic.
        for n in 0..good.len() {
            let _ = read(&good[..n]);
        }
        assert!(matches!(read(&good[..100]), Err(Error::Truncated { .. })));
    }
}
