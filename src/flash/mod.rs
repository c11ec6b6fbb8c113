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
mod resolve;
pub mod tcp;
pub mod udp;
pub mod usb;

pub use resolve::*;

use crate::format::sparse;
use crate::publish::{FlashPlan, Step};
use crate::report::{Event, Reporter};
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use client::Client;
use mobix_bootctl::contract::{slot_letter, Slot};
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
    /// Where the state follows the system image on its partition: write zeros over its
    /// first [`ERASED_STATE_BYTES`] too, so the next boot starts with an empty state (an
    /// encrypted one asks for a new PIN).
    pub erase_state: bool,
}

/// What `--erase-state` zeroes after the system image: the head of mobix's state, 16 MiB,
/// as much as a LUKS2 volume keeps before its data (its headers and key slots: without
/// them nothing of an old encrypted state can be read again) and more than a filesystem's
/// superblock; stage-1 and stage-2 then find it blank and make a new state.
pub const ERASED_STATE_BYTES: u64 = 16 << 20;

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
    #[serde(serialize_with = "slot_letter::option")]
    pub current_slot: Option<Slot>,
    /// The slots written.
    #[serde(serialize_with = "slot_letter::list")]
    pub slots: Vec<Slot>,
    /// What the device did not say and was assumed.
    pub assumed: Vec<String>,
    pub steps: Vec<Done>,
    /// The slot made active at the end, if any.
    #[serde(serialize_with = "slot_letter::option")]
    pub set_active: Option<Slot>,
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

/// (With `make` false, only their sizes: nothing is read but the sparse index.) With
/// `zeros_after`, the image is followed by that many bytes of zeros (a FILL chunk).
fn pieces(path: &Path, max: u64, make: bool, zeros_after: u64) -> Result<Pieces> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    if len <= max && zeros_after == 0 {
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
    if zeros_after > 0 && (layout.total_blocks as u64 * layout.block_size as u64) != expanded_size(path)? {
        // A raw image padded to whole blocks: zeros after the padding would miss the byte
        // they were meant for.
        anyhow::bail!("{shown} is not a whole number of blocks: zeros cannot follow it exactly");
    }
    let layout = layout.then_zeros(zeros_after).map_err(bad)?;
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
    let mut c = misc::BootloaderControl::fresh(2, slot, 7).map_err(|e| anyhow::anyhow!("{e}"))?;
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
        dev.current_slot = (client.getvar("current-slot")?.as_deref()).and_then(|s| Slot::parse(s.trim()));
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
    let facts = image_facts(images, &dev, plan, opts)?;
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

/// The images as [`resolve`] sees them, cut for the device's max-download-size (the
/// system image with the erased state's zeros after it, for `--erase-state` where the
/// state follows it).
fn image_facts(
    images: &BTreeMap<String, Image>,
    dev: &DeviceFacts,
    plan: &FlashPlan,
    opts: &Options,
) -> Result<BTreeMap<String, ImageFacts>> {
    let max = dev.max_download_size.filter(|n| *n > 0).unwrap_or(ASSUMED_MAX_DOWNLOAD);
    let mut facts = BTreeMap::new();
    for (name, img) in images {
        let system = name == crate::plan::ImageName::System.file_name();
        let zeros_after = if opts.erase_state && system && plan.state_after.is_some() { ERASED_STATE_BYTES } else { 0 };
        let f = ImageFacts {
            sha256: img.sha256.clone(),
            expanded: expanded_size(&img.path)?,
            pieces: pieces(&img.path, max, false, zeros_after)?.sizes,
            zeros_after,
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
        current_slot: res.current,
        slots: res.slots.clone(),
        assumed: res.assumed.clone(),
        steps: Vec::new(),
        set_active: res.switch(),
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
    let facts = image_facts(images, &dev, plan, opts)?;
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

pub(super) fn phone_key(dev: &DeviceFacts) -> String {
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
        Action::SetActive { slot, via_misc: false } => vec![Command::SetActive(*slot).show()],
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
                    client.command(&Command::SetActive(*slot)).context(failed)?;
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
        Action::Flash { partition, image, zeros_after, .. } => {
            let img = &images[image];
            let parts = pieces(&img.path, max_download, true, *zeros_after)?;
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
mod tests;
