//! `mobix deploy`'s end on the phone, run by the host over ssh as root:
//! `mobix-init phone-status` says what the phone has and how it booted (JSON,
//! `contract::PhoneStatus`); `mobix-init receive` reads a deploy stream on stdin
//! (`contract::DEPLOY_MAGIC`) and makes its generation the trial.
//!
//! What a cut connection or a power loss can leave at any moment: store paths arrive in a
//! directory beside the store and are renamed in only once their content hash matched and
//! the filesystem was synced, so a path in the store is whole; the generation's entry and
//! its trial in the boot-state record are written only after the stream's `end`, the entry
//! by rename, the record by stage-1's two-copy rule and under the lock stage-2's blessing
//! takes. Until then the phone boots what it
//! booted before.

use crate::state;
use crate::sys::{self, Result};
use mobix_bootctl::content;
use mobix_bootctl::contract::{
    BootSpec, Generation, PhoneStatus, DEPLOY_MAGIC, FAILURES_DIR, GENERATIONS_DIR, STORE_DIR,
};
use mobix_bootctl::record::{self, BLOCK};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Where paths are unpacked before they enter the store: on the store's filesystem, so
/// that entering is a rename.
const RECEIVING: &str = "/mobix/.receiving";
/// One deploy at a time.
const LOCK: &str = "/run/mobix/deploy.lock";

fn booted() -> Result<state::Boot> {
    crate::stage2::booted().ok_or_else(|| format!("no readable {} (did stage-1 boot this system?)", state::BOOT_FILE))
}

pub fn status() -> Result<()> {
    let booted = booted()?;
    let boot_json = format!("{}/boot.json", booted.toplevel);
    let boot_spec: BootSpec =
        serde_json::from_slice(&std::fs::read(&boot_json).map_err(|e| format!("reading {boot_json}: {e}"))?)
            .map_err(|e| format!("parsing {boot_json}: {e}"))?;
    let mut store: Vec<String> = std::fs::read_dir(STORE_DIR)
        .map_err(|e| format!("reading {STORE_DIR}: {e}"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    store.sort();
    let (filesystem, free_bytes) = filesystem("/mobix")?;
    let record = match &booted.state {
        Some(loc) => {
            Some(sys::read_at(&loc.device, loc.offset, 2 * BLOCK)?.iter().map(|b| format!("{b:02x}")).collect())
        }
        None => None,
    };
    let s = PhoneStatus {
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string(),
        generations: crate::stage1::read_generations(Path::new(GENERATIONS_DIR))?,
        booted,
        boot_spec,
        store,
        filesystem,
        free_bytes,
        record,
        failures: std::fs::read_dir(FAILURES_DIR)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let e = e.ok()?;
                let n: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((n, std::fs::read_to_string(e.path()).ok()?.trim().to_string()))
            })
            .collect(),
    };
    println!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
    Ok(())
}

/// The type of the filesystem mounted at `dir` (from /proc/mounts) and its free bytes.
fn filesystem(dir: &str) -> Result<(String, u64)> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| format!("reading /proc/mounts: {e}"))?;
    let fstype = mounts
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(1) == Some(&dir)).then(|| f.get(2).unwrap_or(&"").to_string())
        })
        .ok_or_else(|| format!("{dir} is not mounted"))?;
    let c = std::ffi::CString::new(dir).expect("no NUL");
    // SAFETY: an all-zero statvfs is a valid value; `c` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!("statvfs {dir}: {}", std::io::Error::last_os_error()));
    }
    Ok((fstype, st.f_bavail as u64 * st.f_frsize as u64))
}

/// The system filesystem, writable while this lives (ext4 only: erofs cannot be written).
struct Writable;

impl Writable {
    fn new() -> Result<Writable> {
        sys::mount("", "/mobix", None, libc::MS_REMOUNT, None)
            .map_err(|e| format!("making the system filesystem writable: {e}"))?;
        Ok(Writable)
    }
}

impl Drop for Writable {
    fn drop(&mut self) {
        sync("/mobix");
        if let Err(e) = sys::mount("", "/mobix", None, libc::MS_REMOUNT | libc::MS_RDONLY, None) {
            eprintln!("mobix-init: warning: the system filesystem stays writable until the next boot: {e}");
        }
    }
}

fn sync(dir: &str) {
    if let Ok(f) = std::fs::File::open(dir) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor.
        unsafe { libc::syncfs(f.as_raw_fd()) };
    }
}

/// Removes [`RECEIVING`] however `receive` ends (before the filesystem goes read-only).
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(RECEIVING);
    }
}

/// An exclusive lock on [`LOCK`], held while this lives.
struct Locked(#[allow(dead_code)] std::fs::File);

fn lock() -> Result<Locked> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .map_err(|e| format!("opening {LOCK}: {e}"))?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err("another deploy is running on this phone".into());
    }
    Ok(Locked(f))
}

fn line(r: &mut impl BufRead) -> Result<String> {
    let mut l = String::new();
    r.read_line(&mut l).map_err(|e| format!("reading the deploy stream: {e}"))?;
    if !l.ends_with('\n') {
        return Err(
            "the deploy stream ended early (the connection was cut?); nothing of its generation was kept".into()
        );
    }
    l.pop();
    Ok(l)
}

fn number<T: std::str::FromStr>(s: Option<&str>, what: &str) -> Result<T> {
    s.and_then(|s| s.parse().ok()).ok_or_else(|| format!("the deploy stream has no valid {what}"))
}

pub fn receive() -> Result<()> {
    let boot = booted()?;
    let loc = boot.state.clone().ok_or("this boot has no boot-state record to put a trial in")?;
    let _lock = lock()?;
    let (fstype, _) = filesystem("/mobix")?;
    if fstype != "ext4" {
        return Err(format!(
            "the system filesystem is {fstype}, which cannot take new store paths; flash a new system image instead"
        ));
    }
    let stdin = std::io::stdin();
    let mut r = std::io::BufReader::with_capacity(1 << 20, stdin.lock());
    if line(&mut r)? != DEPLOY_MAGIC {
        return Err(format!("not a deploy stream (it does not start with {DEPLOY_MAGIC:?}): host and phone disagree"));
    }
    let _rw = Writable::new()?;
    // What a cut connection left half-unpacked goes at the next receive at the latest.
    let _ = std::fs::remove_dir_all(RECEIVING);
    std::fs::create_dir_all(RECEIVING).map_err(|e| format!("creating {RECEIVING}: {e}"))?;
    let _clean = Cleanup;
    let (mut received, mut bytes) = (0usize, 0u64);
    let entry = loop {
        let l = line(&mut r)?;
        let mut f = l.split(' ');
        match f.next() {
            Some("path") => {
                let base = f.next().unwrap_or("").to_string();
                let want = f.next().unwrap_or("").to_string();
                let len: u64 = number(f.next(), "path length")?;
                if base.is_empty() || base.contains('/') || base.starts_with('.') {
                    return Err(format!("the deploy stream names a bad store path {base:?}"));
                }
                enter(&mut r, &base, &want, len)?;
                received += 1;
                bytes += len;
            }
            Some("generation") => {
                let len: usize = number(f.next(), "generation length")?;
                let tries: u8 = number(f.next(), "number of tries")?;
                let mut json = vec![0u8; len];
                r.read_exact(&mut json).map_err(|e| format!("reading the generation entry: {e}"))?;
                let g: Generation =
                    serde_json::from_slice(&json).map_err(|e| format!("parsing the generation entry: {e}"))?;
                break (g, json, tries);
            }
            _ => return Err(format!("unexpected line in the deploy stream: {l:?}")),
        }
    };
    if line(&mut r)? != "end" {
        return Err("the deploy stream has no end; nothing of its generation was kept".into());
    }
    let (g, json, tries) = entry;
    if !g.toplevel_is_in_store() || !Path::new(&g.toplevel).join("init").exists() {
        return Err(format!("generation {}'s toplevel {} is not in the phone's store", g.generation, g.toplevel));
    }
    let _turn = state::lock_record();
    let rec = state::read(&loc)?;
    let id = record::id_of(g.toplevel.rsplit('/').next().unwrap_or(""));
    let slot = boot.slot.map_or(0, |s| s.index() as u8);
    let next = mobix_bootctl::counting::add_trial(&rec, g.generation, id, slot, tries)?;
    write_file(&Path::new(GENERATIONS_DIR).join(format!("{}.json", g.generation)), &json)?;
    sync("/mobix");
    state::write(&loc, &next)?;
    println!(
        "received {received} store paths ({} KiB); generation {} is the trial ({tries} tries) and the default",
        bytes >> 10,
        g.generation
    );
    Ok(())
}

/// Prints `<content hash> <base name>` for each store path named (all of them when none
/// is), so the host can check the phone's store against its own record.
pub fn store_hash(names: &[String]) -> Result<()> {
    let mut names = names.to_vec();
    if names.is_empty() {
        names = std::fs::read_dir(STORE_DIR)
            .map_err(|e| format!("reading {STORE_DIR}: {e}"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
    }
    let mut out = std::io::stdout().lock();
    for n in names {
        if n.contains('/') {
            return Err(format!("{n:?} is not a store path's name"));
        }
        let h = content::store_path(&Path::new(STORE_DIR).join(&n)).map_err(|e| format!("hashing {n}: {e}"))?;
        writeln!(out, "{} {n}", content::hex(&h)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Reads one path's tar (`len` bytes) and puts it into the store if its content hashes to
/// `want`; a path the store has already is read past.
fn enter(r: &mut impl BufRead, base: &str, want: &str, len: u64) -> Result<()> {
    let dest = Path::new(STORE_DIR).join(base);
    let mut part = r.take(len);
    if dest.symlink_metadata().is_ok() {
        std::io::copy(&mut part, &mut std::io::sink()).map_err(|e| format!("reading {base}: {e}"))?;
        return Ok(());
    }
    let tmp = PathBuf::from(RECEIVING).join(base);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let mut ar = tar::Archive::new(&mut part);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(false);
    ar.unpack(&tmp).map_err(|e| format!("unpacking {base}: {e}"))?;
    std::io::copy(&mut part, &mut std::io::sink()).map_err(|e| format!("reading {base}: {e}"))?;
    if part.limit() != 0 {
        return Err(format!("the deploy stream ended inside {base} (the connection was cut?)"));
    }
    let out = tmp.join("out");
    let got = content::store_path(&out).map_err(|e| format!("hashing {base}: {e}"))?;
    if content::hex(&got) != want {
        return Err(format!("{base} arrived with content hash {}, but the host sent {want}", content::hex(&got)));
    }
    sync("/mobix");
    std::fs::rename(&out, &dest).map_err(|e| format!("moving {base} into the store: {e}"))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// Writes `data` to `path` by a synced temporary file and a rename.
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming {} into place: {e}", path.display()))
}
