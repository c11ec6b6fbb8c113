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
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use client::Client;
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
    /// Every command sent (with --dry-run: the ones that would be sent after the getvars).
    pub commands: Vec<String>,
}

/// The digests this host last flashed to one phone, per partition.
pub type Flashed = BTreeMap<String, String>;

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

/// Refuses a device whose `product` is not one the build is for (unless `force`); notes
/// it as assumed when the device does not say. Returns what it said.
pub fn check_product(
    client: &mut Client,
    plan: &FlashPlan,
    force: bool,
    assumed: &mut Vec<String>,
    progress: &dyn Fn(&str),
) -> Result<Option<String>> {
    let product = client.getvar("product")?.map(|p| p.trim().to_string());
    match &product {
        Some(p) if plan.products.iter().any(|w| w == p) => {}
        Some(p) if force => {
            progress(&format!("warning: the device says product {p:?}, the build is for {:?}; --force", plan.products))
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
    Ok(product)
}

/// `fastboot boot`: sends a boot image and starts it from RAM, flashing nothing.
pub fn boot(client: &mut Client, plan: &FlashPlan, image: &Path, force: bool, progress: &dyn Fn(&str)) -> Result<()> {
    let mut assumed = Vec::new();
    check_product(client, plan, force, &mut assumed, progress)?;
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
fn misc_switch(slot: char) -> Result<Vec<u8>> {
    use crate::format::misc;
    let index = match slot {
        'a' => 0,
        'b' => 1,
        _ => anyhow::bail!("no slot {slot}"),
    };
    let mut c = misc::BootloaderControl::fresh(2, index, 7).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut img = vec![0u8; misc::CONTROL_OFFSET + misc::CONTROL_SIZE];
    img[misc::CONTROL_OFFSET..].copy_from_slice(&c.encode());
    Ok(img)
}

/// One write the plan makes, resolved for the device.
struct Resolved {
    partition: String,
    /// None for an erase.
    image: Option<String>,
}

/// Runs the flash plan of a build against a connected device.
#[allow(clippy::too_many_arguments)]
pub fn run(
    client: &mut Client,
    plan: &FlashPlan,
    images: &BTreeMap<String, Image>,
    opts: &Options,
    flashed_dir: &Path,
    progress: &dyn Fn(&str),
) -> Result<Report> {
    let mut assumed = Vec::new();
    let product = check_product(client, plan, opts.force, &mut assumed, progress)?;
    let max_download = match client.getvar("max-download-size")?.as_deref().and_then(protocol::parse_number) {
        Some(n) if n > 0 => n,
        _ => {
            assumed.push("max-download-size: not reported; 256 MiB assumed".into());
            256 << 20
        }
    };
    let mut slots_reported = true;
    let (current, slots) = if plan.ab {
        if client.getvar("slot-count")?.is_none() {
            slots_reported = false;
            assumed.push(
                "slot-count: not reported; the profile's two slots assumed, and a slot switch is written to misc \
                 (the A/B metadata bootloaders read) instead of sent as set_active"
                    .into(),
            );
        }
        let current = match client.getvar("current-slot")?.as_deref().and_then(protocol::parse_slot) {
            Some(c) => c,
            None => {
                assumed.push("current-slot: not reported; slot a assumed".into());
                'a'
            }
        };
        let slots = match opts.slot {
            SlotChoice::Inactive => vec![if current == 'a' { 'b' } else { 'a' }],
            SlotChoice::A => vec!['a'],
            SlotChoice::B => vec!['b'],
            SlotChoice::All => vec!['a', 'b'],
        };
        (Some(current), slots)
    } else {
        if opts.slot != SlotChoice::Inactive {
            return Err(Fail::new(format!("{} has no A/B slots; --slot does not apply", plan.device)).into());
        }
        (None, Vec::new())
    };
    // Resolve the plan: full partition names, the --only filter.
    let mut todo = Vec::new();
    for step in &plan.steps {
        let (base, slotted, image) = match step {
            Step::Erase { partition } => (partition.clone(), false, None),
            Step::Flash { partition, slotted, image } => (partition.clone(), *slotted, Some(image.clone())),
        };
        if opts.only.is_some_and(|only| !only.contains(&base)) {
            continue;
        }
        if slotted {
            for s in &slots {
                todo.push(Resolved { partition: format!("{base}_{s}"), image: image.clone() });
            }
        } else {
            todo.push(Resolved { partition: base, image });
        }
    }
    if let Some(only) = opts.only {
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
    // Every image must fit its partition before a byte is sent.
    for r in &todo {
        let Some(name) = &r.image else { continue };
        let img = images.get(name).with_context(|| format!("the build has no {name}"))?;
        let need = expanded_size(&img.path)?;
        match client.getvar(&format!("partition-size:{}", r.partition))?.as_deref().and_then(protocol::parse_number) {
            Some(size) if need > size => {
                return Err(Fail::new(format!(
                    "{name} ({need} bytes) does not fit partition {} ({size} bytes); nothing was written",
                    r.partition
                ))
                .hint("check the profile's partition sizes against the phone (`fastboot getvar all`)")
                .into())
            }
            Some(_) => {}
            None => assumed
                .push(format!("partition-size:{}: not reported; the image was not checked against it", r.partition)),
        }
    }
    // What --skip-unchanged remembers is per phone: its serial number where it has one.
    let key = match client.getvar("serialno")?.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) {
        Some(s) => format!("serialno:{s}"),
        None => client.name(),
    };
    let flashed_path = flashed_file(flashed_dir, &key);
    let flashed_path = flashed_path.as_path();
    let mut flashed = load_flashed(flashed_path)?;
    let mut report = Report {
        version: 1,
        device: plan.device.clone(),
        transport: client.name(),
        phone: key.clone(),
        product,
        max_download_size: max_download,
        current_slot: current,
        slots: slots.clone(),
        assumed,
        steps: Vec::new(),
        set_active: None,
        dry_run: opts.dry_run,
        commands: Vec::new(),
    };
    let switch = match (current, slots.as_slice()) {
        (Some(c), [s]) if *s != c => Some(*s),
        _ => None,
    };
    if opts.dry_run {
        report.commands = client.sent.clone();
        for r in &todo {
            match &r.image {
                None => report.commands.push(Command::Erase(r.partition.clone()).show()),
                Some(name) => {
                    let img = &images[name];
                    let unchanged = flashed.get(&r.partition) == Some(&img.sha256);
                    if opts.skip_unchanged && unchanged {
                        report.commands.push(format!("# {} unchanged: skipped", r.partition));
                        continue;
                    }
                    for size in pieces(&img.path, max_download, false)?.sizes {
                        report.commands.push(Command::Download(size as u32).show());
                        report.commands.push(Command::Flash(r.partition.clone()).show());
                    }
                }
            }
        }
        if let Some(s) = switch {
            if slots_reported {
                report.commands.push(Command::SetActive(s).show());
            } else {
                report.commands.push(Command::Download(misc_switch(s)?.len() as u32).show());
                report.commands.push(Command::Flash("misc".into()).show());
            }
            report.set_active = Some(s);
        }
        if opts.reboot {
            report.commands.push(Command::Reboot.show());
        }
        return Ok(report);
    }
    let mut written: Vec<String> = Vec::new();
    let fail_note = |written: &[String], r: &Resolved, left: &[Resolved]| {
        let not: Vec<&str> =
            std::iter::once(r.partition.as_str()).chain(left.iter().map(|x| x.partition.as_str())).collect();
        let kept = match current {
            Some(c) => format!("; set_active was not sent, so the phone still boots slot {c}"),
            None => String::new(),
        };
        format!(
            "written: {}; not written: {}{kept}",
            if written.is_empty() { "nothing".to_string() } else { written.join(", ") },
            not.join(", ")
        )
    };
    for (i, r) in todo.iter().enumerate() {
        let t0 = Instant::now();
        let res: Result<Done> = (|| match &r.image {
            None => {
                client.command(&Command::Erase(r.partition.clone()))?;
                Ok(Done {
                    partition: r.partition.clone(),
                    action: "erase",
                    image: None,
                    bytes: 0,
                    pieces: 0,
                    seconds: t0.elapsed().as_secs_f64(),
                    skipped: false,
                })
            }
            Some(name) => {
                let img = &images[name];
                if opts.skip_unchanged && flashed.get(&r.partition) == Some(&img.sha256) {
                    return Ok(Done {
                        partition: r.partition.clone(),
                        action: "flash",
                        image: Some(name.clone()),
                        bytes: 0,
                        pieces: 0,
                        seconds: 0.0,
                        skipped: true,
                    });
                }
                let parts = pieces(&img.path, max_download, true)?;
                let total: u64 = parts.sizes.iter().sum();
                let mut sent = 0u64;
                let mut last_shown = Instant::now();
                for _ in 0..parts.sizes.len() {
                    let p = parts.rx.recv().context("the thread cutting the image's pieces died")??;
                    let base = sent;
                    client.download(&p, &mut |n| {
                        if last_shown.elapsed().as_secs_f64() > 1.0 {
                            last_shown = Instant::now();
                            let secs = t0.elapsed().as_secs_f64().max(1e-3);
                            progress(&format!(
                                "  {}: {} of {} bytes ({:.1} MB/s)",
                                r.partition,
                                base + n,
                                total,
                                (base + n) as f64 / secs / 1e6
                            ));
                        }
                    })?;
                    sent += p.len() as u64;
                    client.command(&Command::Flash(r.partition.clone()))?;
                }
                Ok(Done {
                    partition: r.partition.clone(),
                    action: "flash",
                    image: Some(name.clone()),
                    bytes: total,
                    pieces: parts.sizes.len(),
                    seconds: t0.elapsed().as_secs_f64(),
                    skipped: false,
                })
            }
        })();
        match res {
            Ok(d) => {
                let secs = d.seconds.max(1e-3);
                progress(&match (d.action, d.skipped) {
                    ("erase", _) => format!("erased {}", d.partition),
                    (_, true) => format!("{}: unchanged since the last flash, skipped", d.partition),
                    _ => format!(
                        "flashed {} to {}: {} bytes in {} piece(s), {:.1}s ({:.1} MB/s)",
                        d.image.as_deref().unwrap_or("?"),
                        d.partition,
                        d.bytes,
                        d.pieces,
                        d.seconds,
                        d.bytes as f64 / secs / 1e6
                    ),
                });
                if let Some(name) = &r.image {
                    if !d.skipped {
                        flashed.insert(r.partition.clone(), images[name].sha256.clone());
                        save_flashed(flashed_path, &flashed)?;
                    }
                } else if flashed.remove(&r.partition).is_some() {
                    save_flashed(flashed_path, &flashed)?;
                }
                if !d.skipped {
                    written.push(d.partition.clone());
                }
                report.steps.push(d);
            }
            Err(e) => {
                // What this partition holds now is unknown: forget its digest.
                if flashed.remove(&r.partition).is_some() {
                    let _ = save_flashed(flashed_path, &flashed);
                }
                let note = fail_note(&written, r, &todo[i + 1..]);
                return Err(e.context(Fail::new(format!("flashing {} failed ({note})", r.partition)).hint(
                    "run the same `mobix flash` again to retry; nothing switches slots until every write succeeds",
                )));
            }
        }
    }
    if let Some(s) = switch {
        let failed = "every image is written, but making the new slot active failed";
        if slots_reported {
            client.command(&Command::SetActive(s)).context(failed)?;
        } else {
            let img = misc_switch(s)?;
            client.download(&img, &mut |_| {}).context(failed)?;
            client.command(&Command::Flash("misc".into())).context(failed)?;
        }
        progress(&format!("slot {s} is now active (it was {})", current.unwrap_or('?')));
        report.set_active = Some(s);
    }
    if opts.reboot {
        client.command(&Command::Reboot)?;
        progress("rebooting the phone");
    }
    report.commands = client.sent.clone();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

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
