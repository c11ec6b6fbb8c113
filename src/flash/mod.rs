//! Flashing a build onto its phone with fastboot.
//!
//! Pipeline stage: flash. Input: the out directory of a build (manifest, flash plan,
//! images) and a fastboot device; output: the images written, and on A/B phones the
//! flashed slot made active only after every write succeeded, so that a failed or
//! interrupted flash leaves the phone booting what it booted before.
//!
//! [`protocol`] is the sans-IO core; [`client`] drives it over a transport ([`usb`],
//! [`tcp`], [`udp`]). The emulated phone's side of the protocol lives in `vm::fastboot`.

pub mod client;
pub mod protocol;
pub mod tcp;
pub mod udp;
pub mod usb;

use crate::format::sparse;
use crate::publish::{FlashPlan, Step};
use crate::report::{Event, Reporter};
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use client::Client;
use mobix_bootctl::contract::Slot;
use protocol::Command;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which slot(s) of an A/B phone to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotChoice {
    /// The slot the phone is not running: what it boots now stays intact until the end.
    Inactive,
    A,
    B,
    All,
}

pub struct Options<'a> {
    pub slot: SlotChoice,
    /// Flash only these partitions (names as in the flash plan, without slot suffix).
    pub only: Option<&'a [String]>,
    pub skip_unchanged: bool,
    pub dry_run: bool,
    /// Flash even if the device reports another product.
    pub force: bool,
    /// Make the written slot active even though `only` limits the flash to some
    /// partitions (a whole flash does so by itself).
    pub set_active: bool,
    /// Reboot the phone when done.
    pub reboot: bool,
}

/// An image of the build: its file and digest.
pub struct Image {
    pub path: PathBuf,
    pub sha256: String,
}

/// What happened to one partition.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub partition: String,
    pub action: &'static str,
    pub image: Option<String>,
    /// Bytes sent to the device (all pieces).
    pub bytes: u64,
    pub pieces: usize,
    pub seconds: f64,
    /// Skipped: the same image was flashed there last time (--skip-unchanged).
    pub skipped: bool,
}

/// What `mobix flash` did (or, with --dry-run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: u32,
    pub device: String,
    /// How the phone was reached (`usb:SERIAL`, `tcp:…`, `udp:…`).
    pub transport: String,
    /// What --skip-unchanged keys its memory on: the phone's serial number where it
    /// reports one, else the transport.
    pub phone: String,
    pub product: Option<String>,
    pub max_download_size: u64,
    pub current_slot: Option<char>,
    /// The slots written.
    pub slots: Vec<char>,
    /// What the device did not say and was assumed.
    pub assumed: Vec<String>,
    pub steps: Vec<Done>,
    /// The slot made active at the end, if any.
    pub set_active: Option<char>,
    pub dry_run: bool,
    /// What the flash does (with --dry-run: would do), in words, in order.
    pub actions: Vec<String>,
    /// What it destroys (with --dry-run: would destroy), in words.
    pub destroys: Vec<String>,
    /// Every command sent (with --dry-run: the ones that would be sent after the getvars).
    pub commands: Vec<String>,
}

/// What this host last flashed to one phone: the digest per partition, and the byte
/// mobix's state began at after the system image. One JSON object: the digests keyed by
/// partition (all that older files hold), and `mobix:state-after` (no partition is named
/// so: partition names have no ':').
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Flashed {
    #[serde(rename = "mobix:state-after", default, skip_serializing_if = "Option::is_none")]
    pub state_after: Option<u64>,
    #[serde(flatten)]
    pub digests: BTreeMap<String, String>,
}

impl Flashed {
    pub fn new() -> Flashed {
        Flashed::default()
    }
}

impl<const N: usize> From<[(String, String); N]> for Flashed {
    fn from(digests: [(String, String); N]) -> Flashed {
        Flashed { state_after: None, digests: BTreeMap::from(digests) }
    }
}

/// Where the digests flashed to the phone `key` are kept, in `dir` (one file per phone, so
/// that flashing two phones at once does not lose either's record).
fn flashed_file(dir: &Path, key: &str) -> PathBuf {
    let safe: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    dir.join(format!("{safe}.json"))
}

pub fn load_flashed(path: &Path) -> Result<Flashed> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Flashed::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save_flashed(path: &Path, f: &Flashed) -> Result<()> {
    util::write_atomic(path, (serde_json::to_string_pretty(f)? + "\n").as_bytes())
}

/// The expanded size of an image file (a sparse image's partition size, else its length).
pub fn expanded_size(path: &Path) -> Result<u64> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 4];
    let is_sparse = f.read_exact(&mut magic).is_ok() && u32::from_le_bytes(magic) == sparse::MAGIC;
    if is_sparse {
        f.rewind()?;
        let (h, _) =
            sparse::read_header(&mut f).map_err(|e| util::user_error(e, format!("reading {}", path.display())))?;
        Ok(h.block_size as u64 * h.total_blocks as u64)
    } else {
        Ok(f.metadata()?.len())
    }
}

/// The pieces an image is sent in: the file itself when it fits `max`, else sparse pieces
/// of at most `max` bytes, cut as fastboot cuts them. Their sizes are known at once; the
/// bytes come from a thread that makes each piece while the one before it is sent and
/// written, so the device never waits for the host to cut the next one.
struct Pieces {
    sizes: Vec<u64>,
    rx: std::sync::mpsc::Receiver<Result<Vec<u8>>>,
}

/// (With `make` false, only their sizes: nothing is read but the sparse index.)
fn pieces(path: &Path, max: u64, make: bool) -> Result<Pieces> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    if len <= max {
        if !make {
            return Ok(Pieces { sizes: vec![len], rx });
        }
        let mut b = Vec::with_capacity(len as usize);
        (&f).read_to_end(&mut b).with_context(|| format!("reading {}", path.display()))?;
        tx.send(Ok(b)).expect("the receiver is alive");
        return Ok(Pieces { sizes: vec![len], rx });
    }
    // SAFETY: images are read-only store files (or the user's own), not changed while flashing.
    let map = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("mapping {}", path.display()))?;
    let is_sparse = map.len() >= 4 && u32::from_le_bytes(map[..4].try_into().expect("4 bytes")) == sparse::MAGIC;
    let shown = path.display().to_string();
    let bad = |e: sparse::Error| util::user_error(e, format!("splitting {shown}"));
    let layout = if is_sparse {
        sparse::Layout::from_sparse(std::io::Cursor::new(&map[..])).map_err(bad)?
    } else {
        // A raw image whose size is not a multiple of the block size gets a padded tail
        // block (the stock client's pieces are broken then; these are not).
        sparse::Layout::from_raw_slice(&map, 4096, sparse::Zeros::Fill).map_err(bad)?
    };
    let split = layout.split(u32::try_from(max).unwrap_or(u32::MAX)).map_err(bad)?;
    let sizes = split.iter().map(|p| p.sparse_len()).collect();
    if !make {
        return Ok(Pieces { sizes, rx });
    }
    std::thread::spawn(move || {
        for piece in split {
            let mut b = Vec::with_capacity(piece.sparse_len() as usize);
            let r = piece
                .write_slice(&map, &mut b)
                .map(|_| b)
                .map_err(|e| util::user_error(e, format!("splitting {shown}")));
            if tx.send(r).is_err() {
                return;
            }
        }
    });
    Ok(Pieces { sizes, rx })
}

/// Refuses a device whose `product` is not one the build is for (unless `force`); notes in
/// `assumed` what was let through or not checked. Pure.
pub fn check_product(plan: &FlashPlan, product: Option<&str>, force: bool, assumed: &mut Vec<String>) -> Result<()> {
    match product {
        Some(p) if plan.products.iter().any(|w| w == p) => {}
        Some(p) if force => {
            assumed.push(format!("product: the device says {p:?}, the build is for {:?}; --force", plan.products))
        }
        Some(p) => {
            return Err(Fail::new(format!(
                "the device is a {p:?}, but this build is for {} (product {})",
                plan.device,
                plan.products.join(" or ")
            ))
            .hint("use the build for this phone, or pass --force if the profile's fastboot_products is wrong")
            .into())
        }
        None => assumed.push("product: the device does not report it, so its identity was not checked".into()),
    }
    Ok(())
}

/// `fastboot boot`: sends a boot image and starts it from RAM, flashing nothing.
pub fn boot(client: &mut Client, plan: &FlashPlan, image: &Path, force: bool, progress: &dyn Fn(&str)) -> Result<()> {
    if plan.steps.iter().any(|s| matches!(s, Step::Flash { partition, .. } if partition == "vendor_boot")) {
        return Err(Fail::new(format!(
            "{}'s boot image is split over boot.img and vendor_boot.img (header version 3 or 4); `fastboot boot` \
             sends one image",
            plan.device
        ))
        .hint("flash it instead (`mobix flash`)")
        .into());
    }
    let mut assumed = Vec::new();
    let product = client.getvar("product")?.map(|p| p.trim().to_string());
    check_product(plan, product.as_deref(), force, &mut assumed)?;
    for a in &assumed {
        progress(&format!("assumed: {a}"));
    }
    let bytes = fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    if let Some(max) = client.getvar("max-download-size")?.as_deref().and_then(protocol::parse_number) {
        if bytes.len() as u64 > max {
            return Err(Fail::new(format!(
                "{} ({} bytes) is larger than the device's max-download-size ({max} bytes)",
                image.display(),
                bytes.len()
            ))
            .hint("a boot from RAM cannot be split; flash it instead (`mobix flash --only boot`)")
            .into());
        }
    }
    client.download(&bytes, &mut |_| {})?;
    client.command(&Command::Boot)?;
    Ok(())
}

/// The start of a misc partition that makes `slot` active: an empty bootloader message,
/// then fresh A/B metadata (the slot at priority 15 with 7 tries, the other at 14), for
/// bootloaders whose fastboot has no working `set_active` (U-Boot 2023.01). The other
/// slot's successful mark is not kept: its next boot proves it again.
fn misc_switch(slot: Slot) -> Result<Vec<u8>> {
    use crate::format::misc;
    let mut c = misc::BootloaderControl::fresh(2, slot.index(), 7).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut img = vec![0u8; misc::CONTROL_OFFSET + misc::CONTROL_SIZE];
    img[misc::CONTROL_OFFSET..].copy_from_slice(&c.encode());
    Ok(img)
}

/// Ends a byte transfer's progress when dropped (also when the transfer fails).
struct BytesFinished<'a>(&'a dyn Reporter);

impl Drop for BytesFinished<'_> {
    fn drop(&mut self) {
        self.0.event(Event::BytesFinished);
    }
}

/// What the device said about itself before anything is decided: the probe's result.
#[derive(Debug, Clone, Default)]
pub struct DeviceFacts {
    /// How the phone was reached (`usb:SERIAL`, `tcp:…`, `udp:…`).
    pub transport: String,
    pub product: Option<String>,
    pub max_download_size: Option<u64>,
    /// Whether the device reported `slot-count` (U-Boot 2023.01 does not, nor can it
    /// `set_active`).
    pub slot_count_reported: bool,
    pub current_slot: Option<Slot>,
    pub serialno: Option<String>,
    /// `unlocked`: whether the bootloader says it accepts flashing (None: not reported).
    pub unlocked: Option<bool>,
    /// `partition-size` of each partition asked about (None: not reported).
    pub partition_sizes: BTreeMap<String, Option<u64>>,
}

/// An image of the build, as the resolver sees it.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub sha256: String,
    /// Its size once written (a sparse image's partition size).
    pub expanded: u64,
    /// The sizes of the pieces it is sent in for the device's max-download-size.
    pub pieces: Vec<u64>,
}

/// One thing the flash does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Erase {
        partition: String,
    },
    Flash {
        partition: String,
        image: String,
        pieces: Vec<u64>,
    },
    /// `--skip-unchanged`: this host flashed the same image there last time.
    Skip {
        partition: String,
        image: String,
    },
    /// Make `slot` active: by `set_active`, or where the device cannot, by writing misc.
    SetActive {
        slot: Slot,
        via_misc: bool,
    },
    Reboot,
}

impl Action {
    /// The action in words, for `--dry-run` ("would …") and progress.
    pub fn describe(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        match self {
            Action::Erase { partition } => format!("erase {partition}"),
            Action::Flash { partition, image, pieces } => {
                let total: u64 = pieces.iter().sum();
                let how = if pieces.len() == 1 { String::new() } else { format!(" in {} pieces", pieces.len()) };
                format!("write {image} to {partition} ({:.1} MiB{how})", mib(total))
            }
            Action::Skip { partition, image } => format!("skip {partition}: {image} is unchanged since the last flash"),
            Action::SetActive { slot, via_misc: false } => format!("make slot {slot} active (set_active)"),
            Action::SetActive { slot, via_misc: true } => {
                format!("make slot {slot} active by writing A/B metadata to misc (the device has no set_active)")
            }
            Action::Reboot => "reboot the phone".into(),
        }
    }

    fn writes(&self) -> bool {
        matches!(self, Action::Erase { .. } | Action::Flash { .. })
    }
}

/// The flash resolved for one device: what to do, in order, and what was assumed.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub actions: Vec<Action>,
    pub assumed: Vec<String>,
    pub current: Option<Slot>,
    /// The slots written.
    pub slots: Vec<Slot>,
    pub max_download_size: u64,
    /// What --skip-unchanged keys its memory on: the phone's serial number where it
    /// reports one, else the transport.
    pub phone: String,
    /// What the flash destroys, in words (said before the first write).
    pub destroys: Vec<String>,
    /// The plan's `state_after`: remembered once the system image is written.
    pub state_after: Option<u64>,
}

impl Resolution {
    /// The slot the flash makes active, if it does.
    pub fn switch(&self) -> Option<Slot> {
        self.actions.iter().find_map(|a| match a {
            Action::SetActive { slot, .. } => Some(*slot),
            _ => None,
        })
    }
}

/// What a flash without a reported max-download-size sends at once.
pub const ASSUMED_MAX_DOWNLOAD: u64 = 256 << 20;

/// The slots a flash writes, for the device's current slot.
pub fn slots_to_write(plan: &FlashPlan, choice: SlotChoice, current: Option<Slot>) -> Result<Vec<Slot>> {
    if !plan.ab {
        if choice != SlotChoice::Inactive {
            return Err(Fail::new(format!("{} has no A/B slots; --slot does not apply", plan.device)).into());
        }
        return Ok(Vec::new());
    }
    Ok(match choice {
        SlotChoice::Inactive => vec![current.unwrap_or(Slot::A).other()],
        SlotChoice::A => vec![Slot::A],
        SlotChoice::B => vec![Slot::B],
        SlotChoice::All => Slot::BOTH.to_vec(),
    })
}

/// One partition of the plan, with its full name: an image to write, or None to erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub partition: String,
    pub image: Option<String>,
}

/// The plan's steps for `slots`, full partition names, filtered by `--only`.
pub fn targets(plan: &FlashPlan, only: Option<&[String]>, slots: &[Slot]) -> Result<Vec<Target>> {
    if let Some(only) = only {
        for o in only {
            if !plan
                .steps
                .iter()
                .any(|s| matches!(s, Step::Flash { partition, .. } | Step::Erase { partition } if partition == o))
            {
                return Err(Fail::new(format!("--only {o}: the flash plan has no partition {o}")).into());
            }
        }
    }
    let mut todo = Vec::new();
    for step in &plan.steps {
        let (base, slotted, image) = match step {
            Step::Erase { partition } => (partition.clone(), false, None),
            Step::Flash { partition, slotted, image } => (partition.clone(), *slotted, Some(image.clone())),
        };
        if only.is_some_and(|only| !only.contains(&base)) {
            continue;
        }
        if slotted {
            for s in slots {
                todo.push(Target { partition: format!("{base}{}", s.suffix()), image: image.clone() });
            }
        } else {
            todo.push(Target { partition: base, image });
        }
    }
    Ok(todo)
}

/// Decides the whole flash from what the device said: refuses another product (unless
/// `force`), an image larger than its partition, an `--only` the plan does not have;
/// skips unchanged images; and makes the written slot active last, and only when
/// something was written and the flash is whole (or `set_active` asks for it). Pure.
pub fn resolve(
    plan: &FlashPlan,
    images: &BTreeMap<String, ImageFacts>,
    opts: &Options,
    dev: &DeviceFacts,
    flashed: &Flashed,
) -> Result<Resolution> {
    let mut assumed = Vec::new();
    check_product(plan, dev.product.as_deref(), opts.force, &mut assumed)?;
    let max_download_size = match dev.max_download_size {
        Some(n) if n > 0 => n,
        _ => {
            assumed.push("max-download-size: not reported; 256 MiB assumed".into());
            ASSUMED_MAX_DOWNLOAD
        }
    };
    if plan.ab && !dev.slot_count_reported {
        assumed.push(
            "slot-count: not reported; the profile's two slots assumed, and a slot switch is written to misc \
             (the A/B metadata bootloaders read) instead of sent as set_active"
                .into(),
        );
    }
    if plan.ab && dev.current_slot.is_none() {
        assumed.push("current-slot: not reported; slot a assumed".into());
    }
    let current = plan.ab.then(|| dev.current_slot.unwrap_or(Slot::A));
    let slots = slots_to_write(plan, opts.slot, current)?;
    let todo = targets(plan, opts.only, &slots)?;
    // Every image must fit its partition before a byte is sent.
    for t in &todo {
        let Some(name) = &t.image else { continue };
        let img = images.get(name).with_context(|| format!("the build has no {name}"))?;
        match dev.partition_sizes.get(&t.partition).copied().flatten() {
            Some(size) if img.expanded > size => {
                return Err(Fail::new(format!(
                    "{name} ({} bytes) does not fit partition {} ({size} bytes); nothing was written",
                    img.expanded, t.partition
                ))
                .hint("check the profile's partition sizes against the phone (`fastboot getvar all`)")
                .into())
            }
            Some(_) => {}
            None => assumed
                .push(format!("partition-size:{}: not reported; the image was not checked against it", t.partition)),
        }
    }
    let mut actions: Vec<Action> = todo
        .into_iter()
        .map(|t| match t.image {
            None => Action::Erase { partition: t.partition },
            Some(image) => {
                let img = &images[&image];
                if opts.skip_unchanged && flashed.digests.get(&t.partition) == Some(&img.sha256) {
                    Action::Skip { partition: t.partition, image }
                } else {
                    Action::Flash { partition: t.partition, image, pieces: img.pieces.clone() }
                }
            }
        })
        .collect();
    let wrote = actions.iter().any(Action::writes);
    match dev.unlocked {
        Some(false) if wrote && !opts.force => {
            return Err(Fail::new(format!(
                "the bootloader of this {} is locked (`getvar unlocked` says no): it refuses to flash; nothing \
                 was written",
                plan.device
            ))
            .hint(
                "unlock it first: `fastboot flashing unlock` (older phones: `fastboot oem unlock`), confirmed on \
                 the phone; unlocking erases all data on it. --force tries anyway",
            )
            .into())
        }
        Some(false) if wrote => assumed.push("unlocked: the device says no; --force tries anyway".into()),
        None if wrote => assumed.push("unlocked: not reported; the bootloader was assumed to accept flashing".into()),
        _ => {}
    }
    let whole = opts.only.is_none() || opts.set_active;
    if let (Some(c), [s]) = (current, slots.as_slice()) {
        if *s != c && wrote && whole {
            actions.push(Action::SetActive { slot: *s, via_misc: !dev.slot_count_reported });
        }
    }
    if opts.reboot {
        actions.push(Action::Reboot);
    }
    let destroys = destroys(&actions, plan.state_after, flashed.state_after);
    Ok(Resolution {
        actions,
        assumed,
        current,
        slots,
        max_download_size,
        phone: phone_key(dev),
        destroys,
        state_after: plan.state_after,
    })
}

/// What `actions` destroy, in words: the owner's data on userdata (Android's only, where
/// mobix's state follows the system image from byte `state_after`, unless the image this
/// host flashed before ended elsewhere, at `was`: then mobix's state goes too), erased
/// partitions, and what the written slot held before. Pure.
pub fn destroys(actions: &[Action], state_after: Option<u64>, was: Option<u64>) -> Vec<String> {
    let mut out = Vec::new();
    let mut erased = Vec::new();
    let mut per_slot: BTreeMap<char, Vec<&str>> = BTreeMap::new();
    for a in actions {
        let (partition, erase) = match a {
            Action::Erase { partition } => (partition.as_str(), true),
            Action::Flash { partition, .. } => (partition.as_str(), false),
            _ => continue,
        };
        let base = partition.strip_suffix("_a").or_else(|| partition.strip_suffix("_b"));
        if let (Some(at), false, true) = (state_after, erase, partition == "userdata") {
            let state = match was {
                Some(w) if w != at => format!(
                    "and so is mobix's own state (/home, /var): it followed the {} MiB system image this host flashed \
                     before, and `system.size` now ends the image at {} MiB",
                    w >> 20,
                    at >> 20
                ),
                _ => "mobix's own state after them (/home, /var) is kept".to_string(),
            };
            out.push(format!(
                "userdata's first {} MiB are overwritten: what Android stored there (apps' data, photos, files) is \
                 lost; {state}",
                at >> 20
            ));
        } else if partition == "userdata" || base == Some("userdata") {
            out.push(format!(
                "{partition} is {}: everything stored on the phone (apps' data, photos, files) is lost",
                if erase { "erased" } else { "overwritten" }
            ));
        } else if erase {
            erased.push(partition);
        } else if let Some(base) = base {
            per_slot.entry(partition.chars().last().expect("a suffix")).or_default().push(base);
        }
    }
    if !erased.is_empty() {
        let both = erased.len() > 1;
        out.push(format!(
            "{} {} erased: an Android on {} will not boot until {} flashed back",
            erased.join(" and "),
            if both { "are" } else { "is" },
            if both { "either slot" } else { "that slot" },
            if both { "they are" } else { "it is" }
        ));
    }
    for (slot, parts) in per_slot {
        out.push(format!(
            "slot {slot}'s {} {} replaced: what slot {slot} held before (often the stock Android of the last \
             update) is gone",
            parts.join(", "),
            if parts.len() > 1 { "are" } else { "is" }
        ));
    }
    out
}

/// Asks the device what [`resolve`] needs: its variables, then the size of every
/// partition the flash could write.
pub fn probe(client: &mut Client, plan: &FlashPlan, opts: &Options) -> Result<DeviceFacts> {
    let num = |v: Option<String>| v.as_deref().and_then(protocol::parse_number);
    let mut dev = DeviceFacts {
        transport: client.name(),
        product: client.getvar("product")?.map(|p| p.trim().to_string()),
        max_download_size: num(client.getvar("max-download-size")?),
        ..Default::default()
    };
    if plan.ab {
        dev.slot_count_reported = client.getvar("slot-count")?.is_some();
        dev.current_slot = (client.getvar("current-slot")?.as_deref())
            .and_then(protocol::parse_slot)
            .and_then(|c| Slot::parse(&c.to_string()));
    }
    dev.serialno = client.getvar("serialno")?;
    dev.unlocked = match client.getvar("unlocked")?.as_deref().map(str::trim) {
        Some("yes" | "true" | "1") => Some(true),
        Some("no" | "false" | "0") => Some(false),
        _ => None,
    };
    let current = plan.ab.then(|| dev.current_slot.unwrap_or(Slot::A));
    // A wrong --slot or --only is reported by resolve; ask about nothing then.
    if let Ok(slots) = slots_to_write(plan, opts.slot, current) {
        for t in targets(plan, opts.only, &slots).unwrap_or_default() {
            if t.image.is_some() {
                let size = num(client.getvar(&format!("partition-size:{}", t.partition))?);
                dev.partition_sizes.insert(t.partition, size);
            }
        }
    }
    Ok(dev)
}

/// Runs the flash plan of a build against a connected device: probe, resolve, then (unless
/// a dry run) execute.
pub fn run(
    client: &mut Client,
    plan: &FlashPlan,
    images: &BTreeMap<String, Image>,
    opts: &Options,
    flashed_dir: &Path,
    progress: &dyn Reporter,
) -> Result<Report> {
    let dev = probe(client, plan, opts)?;
    let facts = image_facts(images, &dev)?;
    let flashed_path = flashed_file(flashed_dir, &phone_key(&dev));
    let mut flashed = load_flashed(&flashed_path)?;
    let res = resolve(plan, &facts, opts, &dev, &flashed)?;
    let mut report = report_of(plan, &dev, &res, opts);
    if opts.dry_run {
        report.commands = client.sent.clone();
        for a in &res.actions {
            report.commands.extend(commands_of(a)?);
        }
        return Ok(report);
    }
    for d in &res.destroys {
        progress.note(&format!("this flash destroys: {d}"));
    }
    execute(client, &res, images, &flashed_path, &mut flashed, &mut report, progress)?;
    report.commands = client.sent.clone();
    Ok(report)
}

/// The images as [`resolve`] sees them, cut for the device's max-download-size.
fn image_facts(images: &BTreeMap<String, Image>, dev: &DeviceFacts) -> Result<BTreeMap<String, ImageFacts>> {
    let max = dev.max_download_size.filter(|n| *n > 0).unwrap_or(ASSUMED_MAX_DOWNLOAD);
    let mut facts = BTreeMap::new();
    for (name, img) in images {
        let f = ImageFacts {
            sha256: img.sha256.clone(),
            expanded: expanded_size(&img.path)?,
            pieces: pieces(&img.path, max, false)?.sizes,
        };
        facts.insert(name.clone(), f);
    }
    Ok(facts)
}

fn report_of(plan: &FlashPlan, dev: &DeviceFacts, res: &Resolution, opts: &Options) -> Report {
    Report {
        version: 1,
        device: plan.device.clone(),
        transport: dev.transport.clone(),
        phone: res.phone.clone(),
        product: dev.product.clone(),
        max_download_size: res.max_download_size,
        current_slot: res.current.map(Slot::letter),
        slots: res.slots.iter().map(|s| s.letter()).collect(),
        assumed: res.assumed.clone(),
        steps: Vec::new(),
        set_active: res.switch().map(Slot::letter),
        dry_run: opts.dry_run,
        actions: res.actions.iter().map(Action::describe).collect(),
        destroys: res.destroys.clone(),
        commands: Vec::new(),
    }
}

/// The phone a flash preview assumes when none is connected: the profile's product, its
/// slots with slot a current, unlocked, nothing reported about partition sizes.
pub fn assumed_phone(plan: &FlashPlan) -> DeviceFacts {
    DeviceFacts {
        transport: "no phone".into(),
        product: plan.products.first().cloned(),
        max_download_size: None,
        slot_count_reported: plan.ab,
        current_slot: plan.ab.then_some(Slot::A),
        serialno: None,
        unlocked: Some(true),
        partition_sizes: BTreeMap::new(),
    }
}

/// `mobix flash --dry-run` without a phone: the flash plan resolved against
/// [`assumed_phone`] (with nothing flashed before), what that assumes said first in
/// `assumed`. Sends nothing.
pub fn preview(plan: &FlashPlan, images: &BTreeMap<String, Image>, opts: &Options) -> Result<Report> {
    let dev = assumed_phone(plan);
    let facts = image_facts(images, &dev)?;
    let res = resolve(plan, &facts, opts, &dev, &Flashed::new())?;
    let mut report = report_of(plan, &dev, &res, opts);
    report.dry_run = true;
    let slots = if plan.ab { ", slot a current (so slot b is written)" } else { "" };
    report.assumed.insert(
        0,
        format!(
            "no phone: a preview for a phone that is what the profile says ({}{slots}, bootloader unlocked); \
             a connected phone's answers can change it (its product, current slot, partition sizes)",
            plan.products.first().map_or("any product".to_string(), |p| format!("product {p}"))
        ),
    );
    for a in &res.actions {
        report.commands.extend(commands_of(a)?);
    }
    Ok(report)
}

fn phone_key(dev: &DeviceFacts) -> String {
    match dev.serialno.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => format!("serialno:{s}"),
        None => dev.transport.clone(),
    }
}

/// The protocol commands an action sends (for the dry run's `commands`).
fn commands_of(a: &Action) -> Result<Vec<String>> {
    Ok(match a {
        Action::Erase { partition } => vec![Command::Erase(partition.clone()).show()],
        Action::Flash { partition, pieces, .. } => pieces
            .iter()
            .flat_map(|size| [Command::Download(*size as u32).show(), Command::Flash(partition.clone()).show()])
            .collect(),
        Action::Skip { partition, .. } => vec![format!("# {partition} unchanged: skipped")],
        Action::SetActive { slot, via_misc: false } => vec![Command::SetActive(slot.letter()).show()],
        Action::SetActive { slot, via_misc: true } => {
            vec![Command::Download(misc_switch(*slot)?.len() as u32).show(), Command::Flash("misc".into()).show()]
        }
        Action::Reboot => vec![Command::Reboot.show()],
    })
}

/// Carries out a resolution in order. A failed write stops the flash before any slot
/// switch (those come last) and says what was and was not written.
fn execute(
    client: &mut Client,
    res: &Resolution,
    images: &BTreeMap<String, Image>,
    flashed_path: &Path,
    flashed: &mut Flashed,
    report: &mut Report,
    progress: &dyn Reporter,
) -> Result<()> {
    let mut written: Vec<String> = Vec::new();
    let fail_note = |written: &[String], left: &[Action]| {
        let not: Vec<&str> = left
            .iter()
            .filter_map(|a| match a {
                Action::Erase { partition } | Action::Flash { partition, .. } => Some(partition.as_str()),
                _ => None,
            })
            .collect();
        let kept = match res.current {
            Some(c) => format!("; no slot was switched, so the phone still boots slot {c}"),
            None => String::new(),
        };
        format!(
            "written: {}; not written: {}{kept}",
            if written.is_empty() { "nothing".to_string() } else { written.join(", ") },
            not.join(", ")
        )
    };
    for (i, a) in res.actions.iter().enumerate() {
        let t0 = Instant::now();
        match a {
            Action::Erase { partition } | Action::Flash { partition, .. } => {
                match write_one(client, a, images, res.max_download_size, progress) {
                    Ok(d) => {
                        progress.note(&d.summary());
                        match a {
                            Action::Flash { image, .. } => {
                                if image == crate::plan::ImageName::System.file_name() {
                                    flashed.state_after = res.state_after;
                                }
                                flashed.digests.insert(partition.clone(), images[image].sha256.clone())
                            }
                            _ => flashed.digests.remove(partition),
                        };
                        save_flashed(flashed_path, flashed)?;
                        written.push(partition.clone());
                        report.steps.push(d);
                    }
                    Err(e) => {
                        // What this partition holds now is unknown: forget its digest.
                        if flashed.digests.remove(partition).is_some() {
                            let _ = save_flashed(flashed_path, flashed);
                        }
                        let note = fail_note(&written, &res.actions[i..]);
                        return Err(e.context(Fail::new(format!("flashing {partition} failed ({note})")).hint(
                            "run the same `mobix flash` again to retry; nothing switches slots until every write \
                             succeeds",
                        )));
                    }
                }
            }
            Action::Skip { partition, image } => {
                progress.note(&format!("{partition}: unchanged since the last flash, skipped"));
                report.steps.push(Done {
                    partition: partition.clone(),
                    action: "flash",
                    image: Some(image.clone()),
                    bytes: 0,
                    pieces: 0,
                    seconds: t0.elapsed().as_secs_f64(),
                    skipped: true,
                });
            }
            Action::SetActive { slot, via_misc } => {
                let failed = "every image is written, but making the new slot active failed";
                if *via_misc {
                    let img = misc_switch(*slot)?;
                    client.download(&img, &mut |_| {}).context(failed)?;
                    client.command(&Command::Flash("misc".into())).context(failed)?;
                } else {
                    client.command(&Command::SetActive(slot.letter())).context(failed)?;
                }
                progress.note(&format!(
                    "slot {slot} is now active (it was {})",
                    res.current.map_or("?".to_string(), |c| c.to_string())
                ));
            }
            Action::Reboot => {
                client.command(&Command::Reboot)?;
                progress.note("rebooting the phone");
            }
        }
    }
    Ok(())
}

/// Erases or writes one partition.
fn write_one(
    client: &mut Client,
    a: &Action,
    images: &BTreeMap<String, Image>,
    max_download: u64,
    progress: &dyn Reporter,
) -> Result<Done> {
    let t0 = Instant::now();
    match a {
        Action::Erase { partition } => {
            client.command(&Command::Erase(partition.clone()))?;
            Ok(Done {
                partition: partition.clone(),
                action: "erase",
                image: None,
                bytes: 0,
                pieces: 0,
                seconds: t0.elapsed().as_secs_f64(),
                skipped: false,
            })
        }
        Action::Flash { partition, image, .. } => {
            let img = &images[image];
            let parts = pieces(&img.path, max_download, true)?;
            let total: u64 = parts.sizes.iter().sum();
            let mut sent = 0u64;
            let label = format!("{image} to {partition}");
            let finish = BytesFinished(progress);
            for _ in 0..parts.sizes.len() {
                let p = parts.rx.recv().context("the thread cutting the image's pieces died")??;
                let base = sent;
                client.download(&p, &mut |n| {
                    progress.event(Event::Bytes { label: &label, done: base + n, total });
                })?;
                sent += p.len() as u64;
                client.command(&Command::Flash(partition.clone()))?;
            }
            drop(finish);
            Ok(Done {
                partition: partition.clone(),
                action: "flash",
                image: Some(image.clone()),
                bytes: total,
                pieces: parts.sizes.len(),
                seconds: t0.elapsed().as_secs_f64(),
                skipped: false,
            })
        }
        _ => unreachable!("write_one is called for erases and flashes"),
    }
}

impl Done {
    fn summary(&self) -> String {
        let secs = self.seconds.max(1e-3);
        match self.action {
            "erase" => format!("erased {}", self.partition),
            _ => format!(
                "flashed {} to {}: {} bytes in {} piece(s), {:.1}s ({:.1} MB/s)",
                self.image.as_deref().unwrap_or("?"),
                self.partition,
                self.bytes,
                self.pieces,
                self.seconds,
                self.bytes as f64 / secs / 1e6
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ab_plan() -> FlashPlan {
        FlashPlan {
            version: 1,
            device: "phone".into(),
            products: vec!["sdm845".into()],
            ab: true,
            state_after: None,
            steps: vec![
                Step::Erase { partition: "dtbo_a".into() },
                Step::Flash { partition: "boot".into(), slotted: true, image: "boot.img".into() },
                Step::Flash { partition: "vbmeta".into(), slotted: true, image: "vbmeta.img".into() },
                Step::Flash { partition: "system".into(), slotted: false, image: "system.img".into() },
            ],
        }
    }

    fn facts() -> BTreeMap<String, ImageFacts> {
        let f = |sha: &str, expanded: u64, pieces: Vec<u64>| ImageFacts { sha256: sha.into(), expanded, pieces };
        BTreeMap::from([
            ("boot.img".to_string(), f("b", 30 << 20, vec![30 << 20])),
            ("vbmeta.img".to_string(), f("v", 4096, vec![4096])),
            ("system.img".to_string(), f("s", 900 << 20, vec![200 << 20, 200 << 20, 100 << 20])),
        ])
    }

    fn device(current: Option<Slot>) -> DeviceFacts {
        DeviceFacts {
            transport: "tcp:127.0.0.1:5554".into(),
            product: Some("sdm845".into()),
            max_download_size: Some(256 << 20),
            slot_count_reported: true,
            current_slot: current,
            serialno: Some("abc".into()),
            unlocked: Some(true),
            partition_sizes: BTreeMap::from([
                ("boot_a".into(), Some(64 << 20)),
                ("boot_b".into(), Some(64 << 20)),
                ("system".into(), Some(1 << 30)),
            ]),
        }
    }

    fn opts() -> Options<'static> {
        Options {
            slot: SlotChoice::Inactive,
            only: None,
            skip_unchanged: false,
            dry_run: false,
            force: false,
            reboot: false,
            set_active: false,
        }
    }

    fn partitions(r: &Resolution) -> Vec<String> {
        r.actions
            .iter()
            .map(|a| match a {
                Action::Erase { partition } => format!("erase {partition}"),
                Action::Flash { partition, .. } => format!("flash {partition}"),
                Action::Skip { partition, .. } => format!("skip {partition}"),
                Action::SetActive { slot, via_misc } => {
                    format!("set_active {slot}{}", if *via_misc { " (misc)" } else { "" })
                }
                Action::Reboot => "reboot".into(),
            })
            .collect()
    }

    #[test]
    fn the_inactive_slot_is_written_and_made_active_after_every_write() {
        let r =
            resolve(&ab_plan(), &facts(), &Options { reboot: true, ..opts() }, &device(Some(Slot::A)), &Flashed::new())
                .unwrap();
        assert_eq!(
            partitions(&r),
            ["erase dtbo_a", "flash boot_b", "flash vbmeta_b", "flash system", "set_active b", "reboot"]
        );
        assert_eq!((r.current, r.slots.as_slice(), r.switch()), (Some(Slot::A), &[Slot::B][..], Some(Slot::B)));
        assert_eq!(r.phone, "serialno:abc");
        // vbmeta_b's size was not reported: assumed, not refused.
        assert!(r.assumed.iter().any(|a| a.starts_with("partition-size:vbmeta_b")), "{:?}", r.assumed);
    }

    #[test]
    fn a_locked_bootloader_is_refused_before_anything_is_written() {
        let locked = DeviceFacts { unlocked: Some(false), ..device(Some(Slot::A)) };
        let e = resolve(&ab_plan(), &facts(), &opts(), &locked, &Flashed::new()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("is locked") && msg.contains("nothing was written"), "{msg}");
        assert!(util::find_fail(&e).and_then(|f| f.hint.as_deref()).is_some_and(|h| h.contains("flashing unlock")));
        // --force tries anyway, and says so; a device that does not say is assumed unlocked.
        let r = resolve(&ab_plan(), &facts(), &Options { force: true, ..opts() }, &locked, &Flashed::new()).unwrap();
        assert!(r.assumed.iter().any(|a| a.starts_with("unlocked: the device says no")), "{:?}", r.assumed);
        let silent = DeviceFacts { unlocked: None, ..device(Some(Slot::A)) };
        let r = resolve(&ab_plan(), &facts(), &opts(), &silent, &Flashed::new()).unwrap();
        assert!(r.assumed.iter().any(|a| a.starts_with("unlocked: not reported")), "{:?}", r.assumed);
    }

    #[test]
    fn the_flash_record_reads_older_files_and_keeps_where_the_state_began() {
        let old: Flashed = serde_json::from_str(r#"{"boot_b": "b1", "userdata": "u1"}"#).unwrap();
        assert_eq!(old, Flashed::from([("boot_b".into(), "b1".into()), ("userdata".into(), "u1".into())]));
        let new = Flashed { state_after: Some(2 << 30), ..old };
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""mobix:state-after":2147483648"#), "{text}");
        assert_eq!(serde_json::from_str::<Flashed>(&text).unwrap(), new);
    }

    #[test]
    fn what_a_flash_destroys_is_said_in_words() {
        let mut plan = ab_plan();
        plan.steps.insert(1, Step::Erase { partition: "dtbo_b".into() });
        plan.steps.push(Step::Flash { partition: "userdata".into(), slotted: false, image: "system.img".into() });
        let r = resolve(&plan, &facts(), &opts(), &device(Some(Slot::A)), &Flashed::new()).unwrap();
        assert_eq!(
            r.destroys,
            [
                "userdata is overwritten: everything stored on the phone (apps' data, photos, files) is lost",
                "dtbo_a and dtbo_b are erased: an Android on either slot will not boot until they are flashed back",
                "slot b's boot, vbmeta are replaced: what slot b held before (often the stock Android of the last \
                 update) is gone",
            ]
        );
        // The store on userdata with the state after it: Android's data goes, mobix's stays.
        let beside = FlashPlan { state_after: Some(2 << 30), ..plan.clone() };
        let r = resolve(&beside, &facts(), &opts(), &device(Some(Slot::A)), &Flashed::new()).unwrap();
        assert_eq!(
            r.destroys[0],
            "userdata's first 2048 MiB are overwritten: what Android stored there (apps' data, photos, files) is \
             lost; mobix's own state after them (/home, /var) is kept"
        );
        // The same when this host flashed an image of that size before; another size moves
        // the state, and says so.
        let same = Flashed { state_after: Some(2 << 30), ..Flashed::new() };
        let r = resolve(&beside, &facts(), &opts(), &device(Some(Slot::A)), &same).unwrap();
        assert!(r.destroys[0].ends_with("(/home, /var) is kept"), "{}", r.destroys[0]);
        let smaller = Flashed { state_after: Some(1 << 30), ..Flashed::new() };
        let r = resolve(&beside, &facts(), &opts(), &device(Some(Slot::A)), &smaller).unwrap();
        assert_eq!(
            r.destroys[0],
            "userdata's first 2048 MiB are overwritten: what Android stored there (apps' data, photos, files) is \
             lost; and so is mobix's own state (/home, /var): it followed the 1024 MiB system image this host \
             flashed before, and `system.size` now ends the image at 2048 MiB"
        );
        // Skipped images destroy nothing.
        let flashed = Flashed::from([("boot_b".into(), "b".into()), ("vbmeta_b".into(), "v".into())]);
        let o = Options { skip_unchanged: true, only: Some(&["boot".to_string()]), ..opts() };
        let r = resolve(&plan, &facts(), &o, &device(Some(Slot::A)), &flashed).unwrap();
        assert!(r.destroys.is_empty(), "{:?}", r.destroys);
    }

    #[test]
    fn nothing_written_switches_nothing() {
        let flashed = Flashed::from([
            ("boot_b".into(), "b".into()),
            ("vbmeta_b".into(), "v".into()),
            ("system".into(), "s".into()),
        ]);
        let o = Options { skip_unchanged: true, only: None, ..opts() };
        let mut plan = ab_plan();
        plan.steps.remove(0);
        let r = resolve(&plan, &facts(), &o, &device(Some(Slot::A)), &flashed).unwrap();
        assert_eq!(partitions(&r), ["skip boot_b", "skip vbmeta_b", "skip system"]);
        assert_eq!(r.switch(), None);
        // One changed image is a write: then the slot switches, after it.
        let flashed = Flashed::from([("boot_b".into(), "old".into()), ("system".into(), "s".into())]);
        let r = resolve(&plan, &facts(), &o, &device(Some(Slot::A)), &flashed).unwrap();
        assert_eq!(partitions(&r), ["flash boot_b", "flash vbmeta_b", "skip system", "set_active b"]);
    }

    #[test]
    fn a_partial_flash_switches_only_when_asked() {
        let only = ["boot".to_string()];
        let o = Options { only: Some(&only), ..opts() };
        let r = resolve(&ab_plan(), &facts(), &o, &device(Some(Slot::A)), &Flashed::new()).unwrap();
        assert_eq!(partitions(&r), ["flash boot_b"]);
        let o = Options { only: Some(&only), set_active: true, ..opts() };
        let r = resolve(&ab_plan(), &facts(), &o, &device(Some(Slot::A)), &Flashed::new()).unwrap();
        assert_eq!(partitions(&r), ["flash boot_b", "set_active b"]);
        let nope = ["recovery".to_string()];
        let e = resolve(&ab_plan(), &facts(), &Options { only: Some(&nope), ..opts() }, &device(None), &Flashed::new());
        assert!(format!("{:#}", e.unwrap_err()).contains("the flash plan has no partition recovery"));
    }

    #[test]
    fn writing_the_running_slot_or_both_switches_nothing() {
        let r = resolve(
            &ab_plan(),
            &facts(),
            &Options { slot: SlotChoice::B, ..opts() },
            &device(Some(Slot::B)),
            &Flashed::new(),
        )
        .unwrap();
        assert_eq!(r.switch(), None);
        let r = resolve(
            &ab_plan(),
            &facts(),
            &Options { slot: SlotChoice::All, ..opts() },
            &device(Some(Slot::A)),
            &Flashed::new(),
        )
        .unwrap();
        assert_eq!(
            partitions(&r),
            ["erase dtbo_a", "flash boot_a", "flash boot_b", "flash vbmeta_a", "flash vbmeta_b", "flash system"]
        );
    }

    #[test]
    fn a_device_without_slot_count_gets_its_switch_through_misc_and_slot_a_assumed() {
        let mut d = device(None);
        d.slot_count_reported = false;
        d.product = None;
        d.max_download_size = None;
        let r = resolve(&ab_plan(), &facts(), &opts(), &d, &Flashed::new()).unwrap();
        assert_eq!(r.actions.last(), Some(&Action::SetActive { slot: Slot::B, via_misc: true }));
        assert_eq!(r.max_download_size, ASSUMED_MAX_DOWNLOAD);
        assert_eq!(r.assumed.len(), 5, "{:#?}", r.assumed);
    }

    #[test]
    fn refusals_come_before_anything_is_written() {
        let mut d = device(Some(Slot::A));
        d.product = Some("walleye".into());
        let e = format!("{:#}", resolve(&ab_plan(), &facts(), &opts(), &d, &Flashed::new()).unwrap_err());
        assert!(e.contains("the device is a \"walleye\""), "{e}");
        let r = resolve(&ab_plan(), &facts(), &Options { force: true, ..opts() }, &d, &Flashed::new()).unwrap();
        assert!(r.assumed.iter().any(|a| a.contains("--force")));
        let mut d = device(Some(Slot::A));
        d.partition_sizes.insert("system".into(), Some(512 << 20));
        let e = format!("{:#}", resolve(&ab_plan(), &facts(), &opts(), &d, &Flashed::new()).unwrap_err());
        assert!(e.contains("does not fit partition system") && e.contains("nothing was written"), "{e}");
        let mut plan = ab_plan();
        plan.ab = false;
        let e = resolve(&plan, &facts(), &Options { slot: SlotChoice::B, ..opts() }, &device(None), &Flashed::new());
        assert!(format!("{:#}", e.unwrap_err()).contains("has no A/B slots"));
    }

    #[test]
    fn actions_read_as_words() {
        let a =
            Action::Flash { partition: "system".into(), image: "system.img".into(), pieces: vec![1 << 20, 1 << 20] };
        assert_eq!(a.describe(), "write system.img to system (2.0 MiB in 2 pieces)");
        assert_eq!(Action::SetActive { slot: Slot::B, via_misc: false }.describe(), "make slot b active (set_active)");
    }

    /// The sizes a dry run prints are the sizes of the pieces a flash sends, and the pieces
    /// put back together are the image.
    #[test]
    fn pieces_are_cut_as_announced_and_cover_the_image() {
        let dir = tempfile::tempdir().unwrap();
        // A raw image of 41 blocks and a bit: data, zeros, data, a short tail.
        let mut raw = Vec::new();
        for i in 0..41u32 {
            if (10..30).contains(&i) {
                raw.extend(std::iter::repeat_n(0u8, 4096));
            } else {
                raw.extend((0..4096u32).map(|j| (i * 7 + j * 13) as u8));
            }
        }
        raw.extend_from_slice(b"tail");
        let path = dir.path().join("raw.img");
        fs::write(&path, &raw).unwrap();
        let announced = pieces(&path, 48 << 10, false).unwrap().sizes;
        let made = pieces(&path, 48 << 10, true).unwrap();
        assert!(announced.len() > 1, "{announced:?}");
        let bodies: Vec<Vec<u8>> = (0..made.sizes.len()).map(|_| made.rx.recv().unwrap().unwrap()).collect();
        assert_eq!(bodies.iter().map(|b| b.len() as u64).collect::<Vec<_>>(), announced);
        assert!(bodies.iter().all(|b| b.len() <= 48 << 10));
        // Written one over the other, don't-care left alone, they give the padded image.
        let mut disk = vec![0u8; raw.len().div_ceil(4096) * 4096];
        for b in &bodies {
            sparse::decode(&b[..], |op| {
                match op {
                    sparse::Op::Data { offset, data } => {
                        disk[offset as usize..offset as usize + data.len()].copy_from_slice(data)
                    }
                    sparse::Op::Fill { offset, len, value } => {
                        for (i, byte) in disk[offset as usize..(offset + len) as usize].iter_mut().enumerate() {
                            *byte = value.to_le_bytes()[i % 4];
                        }
                    }
                    sparse::Op::DontCare { .. } => {}
                }
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(&disk[..raw.len()], &raw[..]);
        // An image that fits is sent whole.
        assert_eq!(pieces(&path, 1 << 20, false).unwrap().sizes, vec![raw.len() as u64]);
    }
}
