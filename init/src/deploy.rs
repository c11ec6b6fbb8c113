//! `mobix deploy`'s end on the phone, run by the host over ssh as root:
//! `mobix-init phone-status` says what the phone has and how it booted (JSON,
//! `contract::PhoneStatus`); `mobix-init receive` reads a deploy stream on stdin
//! (`stream::DEPLOY_MAGIC`, its frames `stream::DeployFrame`) and makes its generation the trial.
//!
//! What a cut connection or a power loss can leave at any moment: store paths arrive in a
//! directory beside the store and are renamed in only once their content hash matched and
//! the filesystem was synced, so a path in the store is whole; the generation's entry and
//! its trial in the boot-state record are written only after the stream's `end`, the entry
//! by rename, the record by stage-1's two-copy rule and under the lock stage-2's blessing
//! takes. Until then the phone boots what it
//! booted before.
//!
//! A generation with a new boot image (A/B phones only) is installed as an updater
//! installs one: its image is checked against its hash, the inactive slot is marked
//! unbootable in misc, the image written there and read back, the record gains the trial
//! with that slot's kernel and a pending slot switch, and only then is the slot made
//! active in misc, with the bootloader's tries. A kernel that does not come up runs out
//! of those tries, the bootloader returns to the old slot, and stage-1 marks the
//! generation bad (`counting::select`).

use crate::state;
use crate::sys::{self, Result};
use mobix_bootctl::content;
use mobix_bootctl::contract::{BootSpec, Generation, PhoneStatus, Slot, FAILURES_DIR, GENERATIONS_DIR, STORE_DIR};
use mobix_bootctl::record::{self, BLOCK};
use mobix_bootctl::stream::{DeployFrame, GcLine, DEPLOY_MAGIC};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Where paths are unpacked before they enter the store: on the store's filesystem, so
/// that entering is a rename.
const RECEIVING: &str = "/mobix/.receiving";
/// One deploy at a time.
const LOCK: &str = "/run/mobix/deploy.lock";

fn booted() -> Result<state::Boot> {
    state::booted().map_err(|e| format!("{e} (did stage-1 boot this system?)"))
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
        Some(loc) => Some(mobix_bootctl::contract::RecordCopies(sys::read_at(&loc.device, loc.offset, 2 * BLOCK)?)),
        None => None,
    };
    let s = PhoneStatus {
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string(),
        generations: crate::state::read_generations(Path::new(GENERATIONS_DIR))?,
        booted,
        boot_spec,
        store,
        filesystem,
        free_bytes,
        record,
        state: state_kind(),
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

/// How the state mounted at [`mobix_bootctl::contract::STATE_DIR`] is kept: encrypted when
/// its device is the one stage-1 opened.
fn state_kind() -> Option<mobix_bootctl::contract::StateKind> {
    use mobix_bootctl::contract::{StateKind, STATE_DIR};
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let dev = mounts.lines().map(|l| l.split(' ').collect::<Vec<_>>()).find(|f| f.get(1) == Some(&STATE_DIR))?[0];
    let mapped = format!("/dev/mapper/{}", mobix_bootctl::pin::MAPPER_NAME);
    // By device number: the kernel may name the mapper device /dev/dm-N there.
    let rdev = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::rdev(&m)).ok();
    let is_mapped = dev == mapped || rdev(dev).is_some_and(|d| rdev(&mapped) == Some(d));
    Some(if is_mapped { StateKind::Encrypted } else { StateKind::Plain })
}

/// The type of the filesystem mounted at `dir` (from /proc/mounts) and its free bytes.
fn filesystem(dir: &str) -> Result<(mobix_bootctl::contract::Filesystem, u64)> {
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
    Ok((fstype.as_str().into(), st.f_bavail as u64 * st.f_frsize as u64))
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

/// A payload's length as a buffer's, refused past what this phone could hold in memory.
fn payload(len: u64) -> Result<usize> {
    usize::try_from(len)
        .ok()
        .filter(|&n| n <= 1 << 30)
        .ok_or_else(|| format!("the deploy stream announces {len} bytes at once"))
}

pub fn receive() -> Result<()> {
    let boot = booted()?;
    let loc = boot.state.clone().ok_or("this boot has no boot-state record to put a trial in")?;
    let _lock = lock()?;
    let (fstype, _) = filesystem("/mobix")?;
    if !fstype.takes_new_paths() {
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
    let mut boot_image: Option<Vec<u8>> = None;
    let mut in_place = false;
    let entry = loop {
        match DeployFrame::parse(&line(&mut r)?)? {
            DeployFrame::Path { name, content_hash, bytes: len } => {
                enter(&mut r, name.as_str(), &content_hash, len)?;
                received += 1;
                bytes += len;
            }
            DeployFrame::BootImage { bytes: len, sha256, in_place: over } => {
                in_place = over;
                let mut img = vec![0u8; payload(len)?];
                r.read_exact(&mut img).map_err(|e| format!("reading the boot image (the connection was cut?): {e}"))?;
                let got = content::hex(&content::bytes(&img));
                if got != sha256 {
                    return Err(format!("the boot image arrived with sha256 {got}, but the host sent {sha256}"));
                }
                boot_image = Some(img);
            }
            DeployFrame::Generation { bytes: len, tries } => {
                let mut json = vec![0u8; payload(len)?];
                r.read_exact(&mut json).map_err(|e| format!("reading the generation entry: {e}"))?;
                let g: Generation =
                    serde_json::from_slice(&json).map_err(|e| format!("parsing the generation entry: {e}"))?;
                break (g, json, tries);
            }
            DeployFrame::End => return Err("the deploy stream ended before its generation entry".into()),
        }
    };
    if DeployFrame::parse(&line(&mut r)?)? != DeployFrame::End {
        return Err("the deploy stream has no end; nothing of its generation was kept".into());
    }
    let (g, json, tries) = entry;
    if !g.toplevel_is_in_store() || !Path::new(&g.toplevel).join("init").exists() {
        return Err(format!("generation {}'s toplevel {} is not in the phone's store", g.generation, g.toplevel));
    }
    let _turn = state::lock_record();
    let rec = state::read(&loc)?;
    let id = record::id_of(g.toplevel.rsplit('/').next().unwrap_or(""));
    let slot = boot.slot.unwrap_or(Slot::A);
    let Some(img) = boot_image else {
        let next = mobix_bootctl::counting::add_trial(&rec, g.generation, id, slot, tries)?;
        write_file(&Path::new(GENERATIONS_DIR).join(format!("{}.json", g.generation)), &json)?;
        sync("/mobix");
        state::write(&loc, &next)?;
        println!(
            "received {received} store paths ({} KiB); generation {} is the trial ({tries} tries) and the default",
            bytes >> 10,
            g.generation
        );
        return Ok(());
    };
    let Some(running) = boot.slot else {
        if !in_place {
            return Err(
                "a new boot image needs an A/B phone (this boot has no slot), or the host's --kernel-in-place".into()
            );
        }
        return replace_boot_image(&loc, &rec, &g, &json, id, tries, &img, received, bytes);
    };
    if in_place {
        return Err("the host asked to overwrite the running boot image, but this phone has A/B slots".into());
    }
    let other = running.other();
    let misc = sys::find_partition("misc").ok_or("no misc partition to switch slots with")?;
    let part = format!("boot_{}", other.letter());
    let dev = sys::find_partition(&part).ok_or_else(|| format!("no {part} partition"))?;
    let room = partition_bytes(&dev)?;
    if img.len() as u64 > room {
        return Err(format!("the boot image ({} bytes) does not fit {part} ({room} bytes)", img.len()));
    }
    let mut next = mobix_bootctl::counting::add_trial(&rec, g.generation, id, other, tries)?;
    // What booted from the slot before is gone with its image.
    next.last_good[other.index()] = 0;
    next.pending_slot = record::PendingSlot { from: running, to: other, generation: g.generation, valid: true };
    state::make_slot_unbootable(&misc, other)?;
    sys::write_at(&dev, 0, &img)?;
    let back = sys::read_at(&dev, 0, img.len())?;
    if back != img {
        return Err(format!("{part} reads back other than what was written to it; slot {other} stays unbootable"));
    }
    write_file(&Path::new(GENERATIONS_DIR).join(format!("{}.json", g.generation)), &json)?;
    sync("/mobix");
    state::write(&loc, &next)?;
    state::switch_slot(&misc, other)?;
    println!(
        "received {received} store paths ({} KiB) and a boot image ({} KiB, written to {part}); generation {} is \
         the trial ({tries} tries) and the default, slot {other} is active",
        bytes >> 10,
        img.len() >> 10,
        g.generation
    );
    Ok(())
}

/// `--kernel-in-place` on a phone without slots: the generation becomes the trial and the
/// default first, then its boot image goes over the running one. Power lost before that
/// write leaves the old boot image, under which the new generation cannot run, so stage-1
/// boots the one before; lost during it, the phone needs a cable (the host said so).
#[allow(clippy::too_many_arguments)]
fn replace_boot_image(
    loc: &state::Location,
    rec: &record::Record,
    g: &Generation,
    json: &[u8],
    id: [u8; 16],
    tries: u8,
    img: &[u8],
    received: usize,
    bytes: u64,
) -> Result<()> {
    let dev = sys::find_partition("boot").ok_or("no boot partition")?;
    let room = partition_bytes(&dev)?;
    if img.len() as u64 > room {
        return Err(format!("the boot image ({} bytes) does not fit boot ({room} bytes)", img.len()));
    }
    let next = mobix_bootctl::counting::add_trial(rec, g.generation, id, Slot::A, tries)?;
    write_file(&Path::new(GENERATIONS_DIR).join(format!("{}.json", g.generation)), json)?;
    sync("/mobix");
    state::write(loc, &next)?;
    sys::write_at(&dev, 0, img)?;
    if sys::read_at(&dev, 0, img.len())? != img {
        return Err("the boot partition reads back other than what was written to it: flash it with a cable".into());
    }
    println!(
        "received {received} store paths ({} KiB) and a boot image ({} KiB, written over boot); generation {} is \
         the trial ({tries} tries) and the default",
        bytes >> 10,
        img.len() >> 10,
        g.generation
    );
    Ok(())
}

/// The size of a block device, from sysfs (512-byte sectors).
fn partition_bytes(dev: &Path) -> Result<u64> {
    let name = dev.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let p = format!("/sys/class/block/{name}/size");
    let sectors: u64 = std::fs::read_to_string(&p)
        .map_err(|e| format!("reading {p}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("parsing {p}: {e}"))?;
    Ok(sectors * 512)
}

/// `mobix deploy --gc`'s end: reads `generation N` and `path NAME` lines and `end` on
/// stdin, then drops those generations' entries and moves those paths out of the store
/// (into [`RECEIVING`], emptied after). Refused whole, before anything is removed: the
/// booted, default, last good or pending generation, and any path a staying generation's
/// toplevel is or links to. Entries go before paths, so an entry never names a missing
/// toplevel; a path leaves the store by one rename, so none is ever half there.
pub fn gc() -> Result<()> {
    let boot = booted()?;
    let loc = boot.state.clone().ok_or("this boot has no boot-state record to protect generations by")?;
    let _lock = lock()?;
    let mut r = std::io::BufReader::new(std::io::stdin().lock());
    let (mut gens, mut paths) = (Vec::new(), Vec::new());
    loop {
        let l = line(&mut r)?;
        match GcLine::parse(&l)? {
            GcLine::Generation(n) => gens.push(n),
            GcLine::Path(p) => paths.push(p.as_str().to_string()),
            GcLine::End => break,
        }
    }
    let rec = state::read(&loc)?;
    let mut protected = rec.protected();
    protected.push(boot.generation);
    if let Some(g) = gens.iter().find(|g| protected.contains(g)) {
        return Err(format!("generation {g} is booted, the default, last good or pending: it stays"));
    }
    let all = crate::state::read_generations(Path::new(GENERATIONS_DIR))?;
    let mut needed = std::collections::BTreeSet::new();
    for g in all.iter().filter(|g| !gens.contains(&g.generation)) {
        let top = Path::new(&g.toplevel);
        needed.insert(base_of(top));
        for e in std::fs::read_dir(top).into_iter().flatten().flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                if let Some(rest) = t.to_str().and_then(|t| t.strip_prefix(STORE_DIR)) {
                    needed.insert(rest.trim_start_matches('/').split('/').next().unwrap_or("").to_string());
                }
            }
        }
    }
    if let Some(p) = paths.iter().find(|p| needed.contains(*p)) {
        return Err(format!("{p} belongs to a generation that stays; nothing was removed"));
    }
    let (_, free_before) = filesystem("/mobix")?;
    let _rw = Writable::new()?;
    let _ = std::fs::remove_dir_all(RECEIVING);
    std::fs::create_dir_all(RECEIVING).map_err(|e| format!("creating {RECEIVING}: {e}"))?;
    let _clean = Cleanup;
    for g in &gens {
        let f = Path::new(GENERATIONS_DIR).join(format!("{g}.json"));
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {}: {e}", f.display())),
        }
    }
    sync("/mobix");
    let mut removed = 0;
    for p in &paths {
        let from = Path::new(STORE_DIR).join(p);
        if from.symlink_metadata().is_err() {
            continue;
        }
        std::fs::rename(&from, Path::new(RECEIVING).join(p))
            .map_err(|e| format!("moving {p} out of the store: {e}"))?;
        removed += 1;
    }
    sync("/mobix");
    let _ = std::fs::remove_dir_all(RECEIVING);
    sync("/mobix");
    let (_, free_after) = filesystem("/mobix")?;
    println!(
        "dropped {} generations and removed {removed} store paths ({} KiB freed)",
        gens.len(),
        free_after.saturating_sub(free_before) >> 10
    );
    Ok(())
}

fn base_of(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string()
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
