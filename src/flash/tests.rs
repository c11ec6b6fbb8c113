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
    let f = |sha: &str, expanded: u64, pieces: Vec<u64>| ImageFacts {
        sha256: sha.into(),
        expanded,
        pieces,
        zeros_after: 0,
    };
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
        erase_state: false,
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
    let r = resolve(&ab_plan(), &facts(), &Options { reboot: true, ..opts() }, &device(Some(Slot::A)), &Flashed::new())
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
    let flashed =
        Flashed::from([("boot_b".into(), "b".into()), ("vbmeta_b".into(), "v".into()), ("system".into(), "s".into())]);
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
    let a = Action::Flash {
        partition: "system".into(),
        image: "system.img".into(),
        pieces: vec![1 << 20, 1 << 20],
        zeros_after: 0,
    };
    assert_eq!(a.describe(), "write system.img to system (2.0 MiB in 2 pieces)");
    let a = Action::Flash {
        partition: "userdata".into(),
        image: "system.img".into(),
        pieces: vec![1 << 20],
        zeros_after: 16 << 20,
    };
    assert_eq!(a.describe(), "write system.img to userdata (1.0 MiB, then 16 MiB of zeros over the state after it)");
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
    let announced = pieces(&path, 48 << 10, false, 0).unwrap().sizes;
    let made = pieces(&path, 48 << 10, true, 0).unwrap();
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
    assert_eq!(pieces(&path, 1 << 20, false, 0).unwrap().sizes, vec![raw.len() as u64]);
    // Zeros cannot follow a raw image that is not whole blocks: they would miss their byte.
    let e = format!("{:#}", pieces(&path, 1 << 20, false, 16 << 20).err().unwrap());
    assert!(e.contains("not a whole number of blocks"), "{e}");
}

/// `--erase-state`: an image that fits whole is still sent sparse, ending with the zeros.
#[test]
fn zeros_after_the_image_make_it_sparse_and_end_it() {
    let dir = tempfile::tempdir().unwrap();
    let raw: Vec<u8> = (0..8 * 4096u32).map(|j| (j * 13 + 1) as u8).collect();
    let path = dir.path().join("system.img");
    fs::write(&path, &raw).unwrap();
    let made = pieces(&path, 1 << 20, true, 16 << 20).unwrap();
    assert_eq!(made.sizes.len(), 1);
    let body = made.rx.recv().unwrap().unwrap();
    let mut back = Vec::new();
    sparse::decode_to(&body[..], &mut back).unwrap();
    assert_eq!(back.len(), raw.len() + (16 << 20));
    assert!(back[..raw.len()] == raw[..] && back[raw.len()..].iter().all(|&b| b == 0));
}

#[test]
fn erase_state_zeros_the_state_after_the_image_and_says_so() {
    let mut plan = ab_plan();
    plan.steps.pop();
    plan.steps.push(Step::Flash { partition: "userdata".into(), slotted: false, image: "system.img".into() });
    let mut facts = facts();
    let sys = facts.get_mut("system.img").unwrap();
    sys.zeros_after = 16 << 20;
    let o = Options { erase_state: true, skip_unchanged: true, ..opts() };
    // No state after the image: refused, saying what erases a partition of its own.
    let e = format!("{:#}", resolve(&plan, &facts, &o, &device(Some(Slot::A)), &Flashed::new()).unwrap_err());
    assert!(e.contains("keeps no state after its system image") && e.contains("nothing was written"), "{e}");
    let beside = FlashPlan { state_after: Some(900 << 20), ..plan.clone() };
    // Never skipped, even when this host flashed the same image there.
    let same = Flashed { state_after: Some(900 << 20), digests: BTreeMap::from([("userdata".into(), "s".into())]) };
    let r = resolve(&beside, &facts, &o, &device(Some(Slot::A)), &same).unwrap();
    assert!(
        r.actions
            .iter()
            .any(|a| matches!(a, Action::Flash { partition, zeros_after: 16777216, .. } if partition == "userdata")),
        "{:?}",
        r.actions
    );
    assert!(
        r.destroys[0].ends_with("the next boot makes a new, empty one (an encrypted one asks for a new PIN)"),
        "{}",
        r.destroys[0]
    );
    // Not without the system image, nor with a system image that does not end where the state starts.
    let only = ["boot".to_string()];
    let e = resolve(&beside, &facts, &Options { only: Some(&only), ..o }, &device(Some(Slot::A)), &same).unwrap_err();
    assert!(format!("{e:#}").contains("does not write the system image"), "{e:#}");
    let moved = FlashPlan { state_after: Some(1 << 30), ..plan };
    let e = resolve(&moved, &facts, &o, &device(Some(Slot::A)), &same).unwrap_err();
    assert!(
        format!("{e:#}")
            .contains("ends at byte 943718400, but the flash plan says the state starts at byte 1073741824"),
        "{e:#}"
    );
}
