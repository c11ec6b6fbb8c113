//! The boot-state record on the phone (two copies in the last 64 KiB of the system
//! partition) and the A/B metadata in misc: reading and writing them on the block devices.
//! The rules themselves are mobix-bootctl's, the same code the host uses.

use crate::sys::{self, Result};
use mobix_bootctl::contract::Slot;
use mobix_bootctl::misc::{BootloaderControl, CONTROL_OFFSET, CONTROL_SIZE};
use mobix_bootctl::record::{self, Record, BLOCK};
use std::path::Path;

/// Where the record lives: a block device and the byte offset of its state area.
pub use mobix_bootctl::contract::RecordLocation as Location;

/// The record from the valid copy with the highest sequence number; None if both copies
/// are corrupt (or unreadable), with the reason.
pub fn read(loc: &Location) -> std::result::Result<Record, String> {
    let both = sys::read_at(&loc.device, loc.offset, 2 * BLOCK)?;
    let (a, b) = both.split_at(BLOCK);
    match record::read_pair(a, b).0 {
        Some(r) => Ok(r),
        None => {
            let why = |x: &[u8]| Record::decode(x).err().map(|e| e.to_string()).unwrap_or_default();
            Err(format!("both copies are invalid (A: {}; B: {})", why(a), why(b)))
        }
    }
}

/// Where the userspace writers of the record (stage-2's blessing, `mobix-bless`, a
/// deploy's receiver) take turns, each holding it across its read, change and write.
/// Stage-1 runs before any of them and alone.
const RECORD_LOCK: &str = "/run/mobix/record.lock";

/// Holds [`RECORD_LOCK`] while it lives (None: no /run/mobix to lock in, as when nothing
/// else can run either).
pub struct RecordLock(#[allow(dead_code)] Option<std::fs::File>);

/// Waits for [`RECORD_LOCK`].
pub fn lock_record() -> RecordLock {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(RECORD_LOCK).ok();
    if let Some(f) = &f {
        // SAFETY: a valid open descriptor.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    }
    RecordLock(f)
}

/// Persists `rec` with the next sequence number to both copies, the older one first: a
/// crash during either write leaves one valid copy, old or new.
pub fn write(loc: &Location, rec: &Record) -> Result<()> {
    let block = rec.encode().map_err(|e| format!("encoding the boot-state record: {e}"))?;
    let current = sys::read_at(&loc.device, loc.offset, 2 * BLOCK)?;
    let (_, older) = record::read_pair(&current[..BLOCK], &current[BLOCK..]);
    for copy in [older, 1 - older] {
        sys::write_at(&loc.device, loc.offset + (copy * BLOCK) as u64, &block)?;
    }
    Ok(())
}

/// Marks `slot` successful in misc's `bootloader_control`, as the boot_control HAL does,
/// so the bootloader stops counting its tries. Returns what it did, for the console.
pub fn mark_slot_successful(misc: &Path, slot: Slot) -> Result<String> {
    let raw = sys::read_at(misc, CONTROL_OFFSET as u64, CONTROL_SIZE)?;
    let mut ctl = BootloaderControl::decode(raw[..].try_into().expect("32 bytes"));
    if !ctl.crc_ok() {
        return Ok("misc holds no valid A/B metadata; nothing marked".into());
    }
    let letter = slot.letter();
    if ctl.slot_info.get(slot.index()).is_some_and(|s| s.successful_boot) {
        return Ok(format!("slot {letter} was already marked successful"));
    }
    ctl.mark_successful(slot).map_err(|e| format!("marking slot {letter}: {e}"))?;
    sys::write_at(misc, CONTROL_OFFSET as u64, &ctl.encode())?;
    Ok(format!("slot {letter} marked successful in misc"))
}

/// Makes `slot` the active one in misc (as the boot_control HAL's setActiveBootSlot does:
/// highest priority, fresh tries, its successful bit kept).
pub fn switch_slot(misc: &Path, slot: Slot) -> Result<()> {
    edit_misc(misc, |ctl| ctl.set_active(slot).map_err(|e| format!("setting slot {slot} active: {e}")))
}

/// Marks `slot` unbootable in misc (as the boot_control HAL's setSlotAsUnbootable does,
/// and as an updater does before it writes the slot): no tries, not successful, so a
/// half-written boot image is never tried.
pub fn make_slot_unbootable(misc: &Path, slot: Slot) -> Result<()> {
    edit_misc(misc, |ctl| ctl.set_unbootable(slot).map_err(|e| format!("marking slot {slot} unbootable: {e}")))
}

/// Reads misc's A/B metadata, applies `change` and writes it back (refused when misc
/// holds none that is valid).
fn edit_misc(misc: &Path, change: impl FnOnce(&mut BootloaderControl) -> Result<()>) -> Result<()> {
    let raw = sys::read_at(misc, CONTROL_OFFSET as u64, CONTROL_SIZE)?;
    let mut ctl = BootloaderControl::decode(raw[..].try_into().expect("32 bytes"));
    if !ctl.crc_ok() {
        return Err("misc holds no valid A/B metadata".into());
    }
    change(&mut ctl)?;
    sys::write_at(misc, CONTROL_OFFSET as u64, &ctl.encode())
}

/// What stage-1 decided, handed to stage-2 and `mobix-bless` in [`BOOT_FILE`].
pub use mobix_bootctl::contract::{Booted as Boot, BOOTED_FILE as BOOT_FILE};

/// [`BOOT_FILE`] read and parsed: the one reader of what stage-1 decided for this boot.
pub fn booted() -> std::result::Result<Boot, String> {
    let bytes = std::fs::read(BOOT_FILE).map_err(|e| format!("reading {BOOT_FILE}: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parsing {BOOT_FILE}: {e}"))
}

/// The generation manifests in `dir` (`/mobix/generations`), skipping unreadable ones.
pub fn read_generations(dir: &Path) -> Result<Vec<mobix_bootctl::contract::Generation>> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        match std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<mobix_bootctl::contract::Generation>(&b).ok())
        {
            Some(g) if g.toplevel_is_in_store() => out.push(g),
            _ => crate::console::say(&format!("ignoring unreadable generation entry {}", p.display())),
        }
    }
    Ok(out)
}
