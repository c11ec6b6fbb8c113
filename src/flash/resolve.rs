//! The flash decided before a byte is sent: from what the phone said of itself (its
//! variables, its partitions' sizes) and the build's images, every action in order, what
//! it destroys, and what is refused. Pure: `probe` asks, `execute` writes.

use super::{check_product, phone_key, Flashed, Options, SlotChoice};
use crate::publish::{FlashPlan, Step};
use crate::util::Fail;
use anyhow::{Context, Result};
use mobix_bootctl::contract::Slot;
use std::collections::BTreeMap;

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
    /// Bytes of zeros written after it (`--erase-state`), counted in `pieces`.
    pub zeros_after: u64,
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
        /// Zeros written after the image (`--erase-state`: the state's head).
        zeros_after: u64,
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
            Action::Flash { partition, image, pieces, zeros_after } => {
                let total: u64 = pieces.iter().sum();
                let how = if pieces.len() == 1 { String::new() } else { format!(" in {} pieces", pieces.len()) };
                let zeros = match zeros_after {
                    0 => String::new(),
                    z => format!(", then {:.0} MiB of zeros over the state after it", mib(*z)),
                };
                format!("write {image} to {partition} ({:.1} MiB{how}{zeros})", mib(total))
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
    if opts.erase_state {
        check_erase_state(plan, images, &todo)?;
    }
    // Every image must fit its partition before a byte is sent.
    for t in &todo {
        let Some(name) = &t.image else { continue };
        let img = images.get(name).with_context(|| format!("the build has no {name}"))?;
        match dev.partition_sizes.get(&t.partition).copied().flatten() {
            Some(size) if img.expanded + img.zeros_after > size => {
                let zeros = match img.zeros_after {
                    0 => String::new(),
                    z => format!(" and the {} MiB of zeros after it", z >> 20),
                };
                return Err(Fail::new(format!(
                    "{name} ({} bytes){zeros} does not fit partition {} ({size} bytes); nothing was written",
                    img.expanded, t.partition
                ))
                .hint("check the profile's partition sizes against the phone (`fastboot getvar all`)")
                .into());
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
                // Zeros to write after it are never skipped.
                if opts.skip_unchanged && img.zeros_after == 0 && flashed.digests.get(&t.partition) == Some(&img.sha256)
                {
                    Action::Skip { partition: t.partition, image }
                } else {
                    Action::Flash {
                        partition: t.partition,
                        image,
                        pieces: img.pieces.clone(),
                        zeros_after: img.zeros_after,
                    }
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

/// `--erase-state` needs the state after the system image, and the system image in the
/// flash, ending where the state starts. Pure.
fn check_erase_state(plan: &FlashPlan, images: &BTreeMap<String, ImageFacts>, todo: &[Target]) -> Result<()> {
    let system = crate::plan::ImageName::System.file_name();
    let Some(at) = plan.state_after else {
        return Err(Fail::new(format!(
            "--erase-state: {}'s build keeps no state after its system image (the state has a partition of its \
             own, or the system keeps none); nothing was written",
            plan.device
        ))
        .hint("a state partition of its own is erased with `fastboot erase userdata`; flash without --erase-state")
        .into());
    };
    if !todo.iter().any(|t| t.image.as_deref() == Some(system)) {
        return Err(Fail::new("--erase-state: the flash does not write the system image, which the zeros follow")
            .hint("leave the system partition in --only")
            .into());
    }
    match images.get(system) {
        Some(img) if img.expanded == at => Ok(()),
        Some(img) => Err(Fail::new(format!(
            "--erase-state: {system} ends at byte {}, but the flash plan says the state starts at byte {at}; \
             nothing was written",
            img.expanded
        ))
        .hint("build again: the out directory's images and flash plan are not from one build")
        .into()),
        None => Err(anyhow::anyhow!("the build has no {system}")),
    }
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
        let (partition, erase, zeros_after) = match a {
            Action::Erase { partition } => (partition.as_str(), true, 0),
            Action::Flash { partition, zeros_after, .. } => (partition.as_str(), false, *zeros_after),
            _ => continue,
        };
        let base = partition.strip_suffix("_a").or_else(|| partition.strip_suffix("_b"));
        if let (Some(at), false, true) = (state_after, erase, partition == "userdata") {
            let state = match was {
                _ if zeros_after > 0 => "and so is mobix's own state after them (/home, /var): --erase-state writes \
                     zeros over its start, and the next boot makes a new, empty one (an encrypted one asks for a new \
                     PIN)"
                    .to_string(),
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
