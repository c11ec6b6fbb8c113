use super::*;
use mobix_bootctl::contract::Slot;

/// ssh's own failures say what failed, on which phone, and what to do; the internal
/// command is not the message (issue 30).
#[test]
fn ssh_failures_are_said_in_words() {
    let t = Target::parse("ssh://root@127.0.0.1:22239").unwrap();
    let said = |code, err: &str| {
        let f = failure(&t, "/run/current-system/init phone-status", code, err);
        (f.msg.clone(), f.hint.clone().unwrap_or_default())
    };
    let (m, h) = said(Some(255), "ssh: connect to host 127.0.0.1 port 22239: Connection refused\n");
    assert_eq!(m, "cannot log in to root@127.0.0.1:22239 over ssh: connection refused");
    assert!(h.contains("is the phone running") && h.contains("--ssh-port 22239"), "{h}");
    let (m, h) = said(Some(255), "root@127.0.0.1: Permission denied (publickey).\n");
    assert_eq!(m, "cannot log in to root@127.0.0.1:22239 over ssh: the phone refused the key");
    assert!(h.contains("users: root: authorized_keys") && h.contains("-i"), "{h}");
    let (m, h) = said(Some(255), "Host key verification failed.\n");
    assert!(m.ends_with("the phone's host key is not known to ssh"), "{m}");
    assert!(h.contains("ssh -p 22239 root@127.0.0.1 true"), "{h}");
    let changed =
        "@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@\nHost key verification failed.\n";
    let (m, h) = said(Some(255), changed);
    assert!(m.ends_with("the phone's host key changed since ssh last saw it"), "{m}");
    assert!(h.contains("ssh-keygen -R '[127.0.0.1]:22239'"), "{h}");
    let (m, _) = said(Some(255), "ssh: connect to host 10.0.0.9 port 22: Connection timed out\n");
    assert!(m.ends_with("over ssh: connection timed out"), "{m}");
    let (m, _) = said(Some(1), "error: no such subcommand\n");
    assert_eq!(m, "the phone's mobix program failed on root@127.0.0.1:22239 (phone-status): error: no such subcommand");
    assert!(!said(Some(255), "x\n").0.contains("/run/current-system"));
}
use bootstate::{BadReason, Entry, Record, Status};

#[test]
fn targets_are_ssh_addresses_with_a_user() {
    let t = Target::parse("ssh://root@127.0.0.1:2222").unwrap();
    assert_eq!((t.user.as_str(), t.host.as_str(), t.port), ("root", "127.0.0.1", Some(2222)));
    assert_eq!(Target::parse("ssh://root@phone.lan").unwrap().port, None);
    assert_eq!(Target::parse("ssh://root@[fe80::1]:22").unwrap().host, "fe80::1");
    for bad in ["root@phone", "ssh://phone", "ssh://root@phone:x", "ssh://@phone"] {
        let e = Target::parse(bad).unwrap_err().to_string();
        assert!(e.starts_with(&format!("--to {bad:?}")), "{e}");
    }
}

fn spec(kernel: &str, cmdline: &str) -> BootSpec {
    BootSpec {
        version: 1,
        label: "x".into(),
        kernel: kernel.into(),
        kernel_release: "6.1".into(),
        initrd: "/mobix/store/i-initramfs/initrd".into(),
        init: "/init".into(),
        cmdline: cmdline.into(),
        toplevel: "/mobix/store/t-system".into(),
    }
}

fn sp(h: &str, n: &str) -> StorePath {
    StorePath::new(h.repeat(32), n).unwrap()
}

#[test]
fn only_what_the_phone_lacks_is_sent_and_a_boot_image_change_is_named_in_words() {
    // Named so that the name order (a, b, c) is not the references-first order.
    let (a, b, top) = (sp("c", "busybox"), sp("b", "tree"), sp("a", "system"));
    let closure: BTreeSet<StorePath> = [a.clone(), b.clone(), top.clone()].into();
    let has = vec![a.base_name(), "zzz-old".to_string()];
    // The toplevel ("c…") refers to tree ("b…"), which refers to itself and busybox.
    let refs = |p: &StorePath| -> BTreeSet<StorePath> {
        match p.name() {
            "system" => [b.clone()].into(),
            "tree" => [a.clone(), b.clone()].into(),
            _ => BTreeSet::new(),
        }
    };
    let sizes = |p: &StorePath| if p == &b { 100 } else { 7 };
    let p = plan(3, &top, &closure, &refs, &sizes, &has, None);
    assert_eq!(p.send.iter().map(|s| s.0.clone()).collect::<Vec<_>>(), [b.clone(), top.clone()]);
    assert_eq!((p.send_bytes, p.present, p.boot_image_change), (107, 1, None));
    let running = spec("k", "c");
    assert_eq!(boot_change(&running, "k", &running.initrd, "c"), None);
    assert_eq!(
        boot_change(&running, "k", &running.initrd, "c quiet").unwrap(),
        "its kernel command line (c -> c quiet)"
    );
    assert_eq!(
        boot_change(&running, "k2", "i2", "c").unwrap(),
        format!("its kernel (k -> k2); its initramfs (stage-1) ({} -> i2)", running.initrd)
    );
}

fn rec(status: Status, booted: u32) -> Record {
    let e =
        |g, status| Entry { generation: g, id: [0; 16], kernel_slot: Slot::A, tries_left: 0, tries_done: 0, status };
    Record {
        seq: 3,
        default_gen: 2,
        booted_gen: booted,
        last_good: [2, 0],
        pending_slot: Default::default(),
        entries: vec![e(2, Status::Good), e(3, status)],
    }
}

#[test]
fn the_outcome_is_read_from_the_phones_record() {
    assert_eq!(judge(3, 3, Some(&rec(Status::Good, 3)), None), Outcome::Good { generation: 3 });
    assert_eq!(judge(3, 3, Some(&rec(Status::Trial, 3)), None), Outcome::Pending { generation: 3, booted: 3 });
    let bad = rec(Status::Bad(BadReason::Tries), 2);
    match judge(3, 2, Some(&bad), None) {
        Outcome::FellBack { booted: 2, reason, .. } => assert!(reason.contains("health check"), "{reason}"),
        o => panic!("{o:?}"),
    }
    match judge(3, 2, Some(&bad), Some("health check doomed failed (exit status: 1)")) {
        Outcome::FellBack { reason, .. } => {
            assert_eq!(reason, "health check doomed failed (exit status: 1), on every one of its tries")
        }
        o => panic!("{o:?}"),
    }
    // A trial the phone has not booted yet (still starting) is pending, not a failure.
    assert_eq!(judge(3, 2, Some(&rec(Status::Trial, 2)), None), Outcome::Pending { generation: 3, booted: 2 });
}

fn phone(gens: &[u32], store: &[&str], booted: u32) -> PhoneStatus {
    PhoneStatus {
        boot_id: "b".into(),
        booted: mobix_bootctl::contract::Booted {
            generation: booted,
            toplevel: format!("/mobix/store/t{booted}"),
            mode: mobix_bootctl::contract::BootMode::Good,
            state: None,
            slot: None,
            clock: Default::default(),
            fallback: None,
            unlock_host_key: None,
        },
        boot_spec: spec("k", ""),
        generations: gens
            .iter()
            .map(|&g| Generation {
                generation: g,
                toplevel: format!("/mobix/store/t{g}"),
                kernel: String::new(),
                cmdline: String::new(),
                created: 0,
            })
            .collect(),
        store: store.iter().map(|s| s.to_string()).collect(),
        filesystem: "ext4".into(),
        free_bytes: 0,
        record: None,
        failures: Default::default(),
        state: None,
    }
}

/// Issue 30 item 7: a system the phone already found bad is said so before it is sent.
#[test]
fn a_deploy_of_a_system_that_failed_on_the_phone_is_warned_of() {
    let (good, bad) = (sp("a", "mobix-system-x"), sp("b", "mobix-system-x"));
    let mut r = rec(Status::Bad(BadReason::Tries), 2);
    r.entries[0].id = bootstate::id_of(good.base_name().as_str());
    r.entries[1].id = bootstate::id_of(bad.base_name().as_str());
    let block = r.encode().unwrap();
    let mut p = phone(&[2, 3], &[], 2);
    p.record = Some(mobix_bootctl::contract::RecordCopies(block.iter().chain(block.iter()).copied().collect()));
    p.failures.insert(3, "health check ping failed\n".into());
    assert_eq!(failed_before(&p, &good), None, "a good one is not warned of");
    assert_eq!(
        failed_before(&p, &bad).unwrap(),
        "this system already failed on the phone as generation 3 (bad: tries: health check ping failed); \
         deployed again it gets another trial, and the phone falls back again if it fails"
    );
    p.record = None;
    assert_eq!(failed_before(&p, &bad), None, "no record, nothing known");
}

#[test]
fn a_deploy_keeps_the_phones_layout() {
    let mut p = phone(&[1], &[], 1);
    // A phone that reports no record location (the minimal init) has nothing to keep.
    assert_eq!(layout_change(&p, 5 << 20), None);
    let at = (512 << 20) - bootstate::AREA;
    p.booted.state = Some(mobix_bootctl::contract::RecordLocation { device: "/dev/vda".into(), offset: at });
    assert_eq!(layout_change(&p, at), None);
    let why = layout_change(&p, (1024 << 20) - bootstate::AREA).unwrap();
    assert!(why.starts_with("the phone's system image is 512 MiB and this system's is 1024 MiB"), "{why}");
}

#[test]
fn garbage_is_what_no_staying_generation_needs_and_the_fallbacks_stay() {
    // 1 good (last good of slot a), 2 good, 3 bad, 4 booted and the default; 5 gone
    // from the record; a path from a cut deploy.
    let mut r = rec(Status::Good, 4);
    r.entries = vec![
        Entry { generation: 1, id: [1; 16], kernel_slot: Slot::A, tries_left: 0, tries_done: 1, status: Status::Good },
        Entry { generation: 2, id: [2; 16], kernel_slot: Slot::A, tries_left: 0, tries_done: 1, status: Status::Good },
        Entry {
            generation: 3,
            id: [3; 16],
            kernel_slot: Slot::A,
            tries_left: 0,
            tries_done: 3,
            status: Status::Bad(BadReason::Tries),
        },
        Entry { generation: 4, id: [4; 16], kernel_slot: Slot::A, tries_left: 0, tries_done: 1, status: Status::Good },
    ];
    r.default_gen = 4;
    r.last_good = [1, 0];
    let s = phone(&[1, 2, 3, 4, 5], &[".receiving", "half", "only3", "shared", "t1", "t2", "t3", "t4", "t5"], 4);
    let closure = |t: &str| -> Result<BTreeSet<String>> {
        let t = t.rsplit('/').next().unwrap().to_string();
        let mut c: BTreeSet<String> = [t.clone(), "shared".to_string()].into();
        if t == "t3" {
            c.insert("only3".into());
        }
        Ok(c)
    };
    let g = gc(&s, Some(&r), None, &closure).unwrap();
    assert_eq!(g.drop_generations, [3, 5]);
    assert_eq!(g.keep_generations, [1, 2, 4]);
    assert_eq!(g.remove, ["half", "only3", "t3", "t5"]);
    // Keeping two: the protected ones (4 booted and default, 1 last good) fill it.
    let g = gc(&s, Some(&r), Some(2), &closure).unwrap();
    assert_eq!((g.drop_generations, g.keep_generations), (vec![2, 3, 5], vec![1, 4]));
    // Keeping three: the newest other good one too.
    let g = gc(&s, Some(&r), Some(3), &closure).unwrap();
    assert_eq!(g.keep_generations, [1, 2, 4]);
    // No record, no collection; a closure the host cannot know, no collection.
    assert!(gc(&s, None, None, &closure).is_err());
    let unknown = |_: &str| -> Result<BTreeSet<String>> { anyhow::bail!("not in this host's store") };
    assert!(gc(&s, Some(&r), None, &unknown).is_err());
}

/// Issue 31: what the phone must refuse is decided before the build, from the phone's
/// status, the profile and the planned boot image alone.
#[test]
fn refusals_need_nothing_built() {
    use mobix_bootctl::contract::{Filesystem, RecordLocation, Slot};
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let sel = crate::profile::Selection { variant: None, config: None };
    let profile = crate::profile::load_with(repo, "qemu-aarch64", sel).unwrap();
    let opts = |kernel_in_place| Options {
        no_reboot: false,
        dry_run: false,
        timeout: Duration::from_secs(1),
        kernel_in_place,
        pin: None,
    };
    let words = |r: Result<()>| format!("{:#}", r.unwrap_err());
    let mut p = phone(&[1], &[], 1);
    p.booted.state = Some(RecordLocation { device: "/dev/vda2".into(), offset: profile.device.state_offset() });
    p.booted.slot = Some(Slot::A);
    refuse(&p, &profile, &opts(false), None).unwrap();
    refuse(&p, &profile, &opts(false), Some("its kernel (k -> k2)")).unwrap();

    let mut moved = p.clone();
    moved.booted.state.as_mut().unwrap().offset += 1 << 20;
    assert!(words(refuse(&moved, &profile, &opts(false), None)).contains("`system.size` changed"));

    let mut erofs = p.clone();
    erofs.filesystem = Filesystem::Erofs;
    assert!(words(refuse(&erofs, &profile, &opts(false), None)).contains("is erofs, which cannot take new store paths"));

    let mut no_slots = p.clone();
    no_slots.booted.slot = None;
    refuse(&no_slots, &profile, &opts(false), None).unwrap();
    let w = words(refuse(&no_slots, &profile, &opts(false), Some("its kernel (k -> k2)")));
    assert!(w.contains("has no A/B slots to put it in"), "{w}");
    refuse(&no_slots, &profile, &opts(true), Some("its kernel (k -> k2)")).unwrap();

    // The state kept otherwise than the phone keeps it: never formatted over, never
    // left unopenable. A phone that does not say (older) is not refused.
    use mobix_bootctl::contract::StateKind;
    let mut encrypted = profile.clone();
    encrypted.system.state.encryption = crate::profile::Encryption::Luks2;
    let mut plain_phone = p.clone();
    plain_phone.state = Some(StateKind::Plain);
    refuse(&plain_phone, &profile, &opts(false), None).unwrap();
    let w = words(refuse(&plain_phone, &encrypted, &opts(false), None));
    assert!(w.contains("plain filesystem; this system wants it encrypted"), "{w}");
    let mut locked_phone = p.clone();
    locked_phone.state = Some(StateKind::Encrypted);
    refuse(&locked_phone, &encrypted, &opts(false), None).unwrap();
    assert!(words(refuse(&locked_phone, &profile, &opts(false), None)).contains("the phone's state is encrypted"));
    refuse(&p, &encrypted, &opts(false), None).unwrap();

    p.free_bytes = 3 << 20;
    let w = words(room(&p, 0));
    assert!(w.contains("has 3 MiB free, too little for 0 MiB of new store paths"), "{w}");
    p.free_bytes = 100 << 20;
    room(&p, 80 << 20).unwrap();
    assert!(words(room(&p, 95 << 20)).contains("too little for 95 MiB"));
}

#[test]
fn an_encrypted_phones_owner_is_told_who_types_the_pin() {
    let opts = |pin: Option<&str>| Options {
        no_reboot: false,
        dry_run: false,
        timeout: Duration::from_secs(600),
        kernel_in_place: false,
        pin: pin.map(str::to_string),
    };
    let target = Target::parse("ssh://root@172.16.42.1").unwrap();
    let mut p = phone(&[1], &[], 1);
    let words = |o: &Options, p: &PhoneStatus| flow::unlock_words(o, p, &target);
    let typed = words(&opts(None), &p);
    assert!(typed.contains("type it there; mobix waits up to 600s"), "{typed}");
    let unsent = words(&opts(Some("1357")), &p);
    assert!(unsent.contains("--pin-file cannot be sent") && unsent.contains("remote_unlock: true"), "{unsent}");
    p.booted.unlock_host_key = Some("ssh-ed25519 AAAAC3Nz".into());
    let sent = words(&opts(Some("1357")), &p);
    assert!(sent.contains("mobix sends the PIN of --pin-file to its stage-1 over ssh"), "{sent}");
    assert!(!sent.contains("1357"), "the PIN is never said: {sent}");
    let either = words(&opts(None), &p);
    assert!(either.contains("`ssh root@172.16.42.1`") && either.contains("--pin-file"), "{either}");
}
