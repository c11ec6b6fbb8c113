use super::*;

#[test]
fn slots_name_and_number_themselves_one_way() {
    for s in Slot::BOTH {
        assert_eq!(Slot::from_index(s.index()), Some(s));
        assert_eq!(Slot::parse(s.suffix()), Some(s));
        assert_eq!(Slot::parse(&s.letter().to_string()), Some(s));
        assert_eq!(s.other().other(), s);
    }
    assert_eq!((Slot::from_index(2), Slot::parse("c")), (None, None));
    assert_eq!(Slot::B.to_string(), "b");
}

#[test]
fn a_service_from_an_older_host_restarts_always_and_the_wire_names_stay() {
    let old: Service = serde_json::from_str(r#"{"name": "s", "command": ["/bin/x"]}"#).unwrap();
    assert_eq!(old.restart, Restart::Always);
    let later: Service =
        serde_json::from_str(r#"{"name": "s", "command": ["/bin/x"], "restart": "on-failure"}"#).unwrap();
    assert_eq!(later.restart, Restart::OnFailure);
    assert!(serde_json::from_str::<Service>(r#"{"name": "s", "command": [], "restart": "sometimes"}"#).is_err());
    let b: Booted = serde_json::from_str(
        r#"{"generation": 1, "toplevel": "/mobix/store/t", "mode": "degraded", "state": null, "slot": null}"#,
    )
    .unwrap();
    assert_eq!(b.mode, BootMode::Degraded);
}

#[test]
fn an_old_entry_without_a_kernel_runs_under_any_boot_image() {
    let g = Generation {
        generation: 2,
        toplevel: format!("/mobix/store/{}-y", "x".repeat(32)),
        kernel: "".into(),
        cmdline: "".into(),
        created: 0,
    };
    let cfg = Stage1Config {
        system_partition: "system".into(),
        filesystem: "ext4".into(),
        console: "ttyAMA0".into(),
        state_offset: 0,
        kernel: "/mobix/store/k-kernel/Image".into(),
        cmdline: "console=ttyAMA0".into(),
        menu_timeout_ms: 0,
        menu_idle_s: 30,
        menu_key: MenuKey::VolumeDown,
        device: String::new(),
        usb_network: None,
        encryption: None,
        remote_unlock: None,
    };
    assert!(g.runs_under(&cfg));
    let other = Generation { kernel: "/mobix/store/o-kernel/Image".into(), ..g.clone() };
    assert!(!other.runs_under(&cfg));
    let same = Generation { kernel: cfg.kernel.clone(), cmdline: "quiet".into(), ..g.clone() };
    assert!(!same.runs_under(&cfg), "another command line is another boot image");
    assert!(g.toplevel_is_in_store());
    assert!(!Generation { toplevel: "/mobix/store/../etc".into(), ..g.clone() }.toplevel_is_in_store());
    assert!(!Generation { toplevel: "/mobix/storex/y".into(), ..g.clone() }.toplevel_is_in_store());
    assert!(!Generation { toplevel: "/mobix/store/x-y".into(), ..g }.toplevel_is_in_store(), "no store hash");
}

#[test]
fn filesystems_cross_as_their_kernel_names_and_unknown_ones_stay_readable() {
    for (fs, wire) in [
        (Filesystem::Ext4, "\"ext4\""),
        (Filesystem::Erofs, "\"erofs\""),
        (Filesystem::Other("f2fs".into()), "\"f2fs\""),
    ] {
        assert_eq!(serde_json::to_string(&fs).unwrap(), wire);
        assert_eq!(serde_json::from_str::<Filesystem>(wire).unwrap(), fs);
    }
    assert!(Filesystem::Ext4.takes_new_paths());
    assert!(!Filesystem::Erofs.takes_new_paths() && !Filesystem::Other("f2fs".into()).takes_new_paths());
}

#[test]
fn record_copies_cross_as_hex_and_give_the_record_by_the_two_copy_rule() {
    use crate::record::{Record, BLOCK};
    let rec = Record { seq: 4, default_gen: 2, booted_gen: 2, ..Record::default() };
    let block = rec.encode().unwrap();
    let copies = RecordCopies(block.iter().chain(block.iter()).copied().collect());
    let wire = serde_json::to_string(&copies).unwrap();
    // As phones have always sent it: lowercase hex of both blocks.
    assert_eq!(wire.len(), 2 + 4 * BLOCK);
    assert_eq!(&wire[1..9], &crate::content::hex(&block[..4]));
    let back: RecordCopies = serde_json::from_str(&wire).unwrap();
    assert_eq!(back, copies);
    assert_eq!(back.record().map(|r| r.default_gen), Some(2));
    let mut torn = copies.clone();
    torn.0[10] ^= 0xff;
    assert_eq!(torn.record().map(|r| r.seq), Some(4), "the other copy");
    assert_eq!(RecordCopies(block.to_vec()).record(), None, "one block is not both copies");
    assert!(serde_json::from_str::<RecordCopies>("\"0g\"").is_err());
    assert!(serde_json::from_str::<RecordCopies>("\"abc\"").is_err());
}

fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) -> String {
    // The host writes pretty JSON; the phone parses it.
    let text = serde_json::to_string_pretty(v).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, v);
    text
}

fn stage1() -> Stage1 {
    Stage1 {
        config: Stage1Config {
            system_partition: "system".into(),
            filesystem: "erofs".into(),
            console: "ttyAMA0".into(),
            state_offset: 1 << 30,
            kernel: "/mobix/store/k-kernel/Image".into(),
            cmdline: "console=ttyAMA0 quiet".into(),
            menu_timeout_ms: 1500,
            menu_idle_s: 20,
            menu_key: MenuKey::VolumeUp,
            device: "QEMU aarch64 phone".into(),
            usb_network: Some(UsbNetwork { vendor_id: 0x18d1, product_id: 0xd001, product: "p".into() }),
            encryption: Some(Encryption {
                partition: "userdata".into(),
                offset: 1 << 30,
                kdf: Some(KdfCost { memory_kib: 65536, iter_time_ms: 500 }),
            }),
            remote_unlock: Some(RemoteUnlock {
                authorized_keys: vec!["ssh-ed25519 AAAAC3Nz owner@laptop".into()],
                link: UnlockLink::Usb,
                port: 22,
            }),
        },
        kernel_release: "6.1.0-18-arm64".into(),
        modules: vec!["/lib/modules/6.1.0-18-arm64/kernel/fs/erofs/erofs.ko".into()],
        screen_modules: vec!["/lib/modules/6.1.0-18-arm64/kernel/drivers/gpu/drm/virtio/virtio-gpu.ko".into()],
        crypt_modules: vec!["/lib/modules/6.1.0-18-arm64/kernel/drivers/md/dm-crypt.ko".into()],
    }
}

#[test]
fn every_contract_file_round_trips() {
    let s1 = round_trip(&stage1());
    // stage1.json is flat: the config's fields, then the initramfs's own.
    assert!(s1.find("\"system_partition\"").unwrap() < s1.find("\"kernel_release\"").unwrap(), "{s1}");
    round_trip(&Generation {
        generation: 7,
        toplevel: "/mobix/store/t-mobix-system".into(),
        kernel: "/mobix/store/k-kernel/Image".into(),
        cmdline: "console=ttyAMA0".into(),
        created: 1_796_601_600,
    });
    round_trip(&BootSpec {
        version: 1,
        label: "mobix on QEMU".into(),
        kernel: "/mobix/store/k-kernel/Image".into(),
        kernel_release: "6.1.0-18-arm64".into(),
        initrd: "/mobix/store/i-initrd".into(),
        init: "/mobix/store/n-init/bin/mobix-init".into(),
        cmdline: "console=ttyAMA0".into(),
        toplevel: "/mobix/store/t-mobix-system".into(),
    });
    let sys = round_trip(&SystemSpec {
        health_checks: vec![HealthCheck { name: "ok".into(), command: vec!["true".into()], timeout: 5 }],
        services: vec![Service { name: "s".into(), command: vec!["/bin/sh".into()], restart: Restart::Always }],
        trial_deadline: 120,
        ..SystemSpec::default()
    });
    assert!(sys.find("health_checks") < sys.find("trial_deadline"), "{sys}");
    assert!(!sys.contains("init") && !sys.contains("restart") && !sys.contains("state"), "as before: {sys}");
    assert!(!sys.contains("privileged"), "written only when there are any: {sys}");
    let systemd = round_trip(&SystemSpec {
        init: Init::Systemd,
        copies: vec![EtcCopy { path: "shadow".into(), mode: 0o640, gid: 42 }],
        privileged: vec![Privileged { path: "sbin/unix_chkpwd".into(), mode: 0o2755, gid: 42 }],
        state: Some(StateSpec { partition: "userdata".into(), offset: 0, encrypted: false }),
        services: vec![Service { name: "s".into(), command: vec!["/bin/true".into()], restart: Restart::No }],
        ..SystemSpec::default()
    });
    assert!(systemd.contains("\"init\": \"systemd\"") && systemd.contains("\"restart\": \"no\""), "{systemd}");
    assert!(!systemd.contains("offset"), "a state partition of its own is written as before: {systemd}");
    let beside = round_trip(&SystemSpec {
        init: Init::Systemd,
        state: Some(StateSpec { partition: "userdata".into(), offset: 2 << 30, encrypted: false }),
        ..SystemSpec::default()
    });
    assert!(beside.contains("\"offset\": 2147483648"), "{beside}");
    let booted = round_trip(&Booted {
        generation: 3,
        toplevel: "/mobix/store/t-mobix-system".into(),
        mode: BootMode::Trial,
        state: Some(RecordLocation { device: "/dev/vda4".into(), offset: 4096 }),
        slot: Some(Slot::B),
        clock: BootClock { stage1_start_ms: 990, stage1_done_ms: 2400, activated_ms: 2900 },
        fallback: Some(FallbackNotice {
            from: 4,
            title: "Generation 4 failed".into(),
            text: "Generation 4 did not come up on any of its 3 tries. Booting generation 3, the last one that booted good on this phone.".into(),
        }),
        unlock_host_key: Some("ssh-ed25519 AAAAC3Nz root@mobix".into()),
    });
    assert!(booted.contains("\"slot\": 1"), "the slot is its index on the wire: {booted}");
    assert!(booted.contains("\"mode\": \"trial\""), "the mode is its name on the wire: {booted}");
    for (mode, word) in [
        (BootMode::Trial, "trial"),
        (BootMode::Good, "good"),
        (BootMode::Degraded, "degraded"),
        (BootMode::Manual, "manual"),
    ] {
        assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{word}\""));
        assert_eq!(mode.to_string(), word, "the console's word is the wire's");
    }
}

/// Files as hosts and stage-1s before the shared types wrote them still parse.
#[test]
fn files_written_before_the_shared_types_parse() {
    let old_stage1 = r#"{"system_partition": "system", "filesystem": "ext4", "console": "ttyAMA0",
        "state_offset": 4096, "kernel": "/mobix/store/k/Image", "menu_timeout_ms": 0,
        "kernel_release": "6.1", "modules": []}"#;
    let s: Stage1 = serde_json::from_str(old_stage1).unwrap();
    assert_eq!((s.config.cmdline.as_str(), s.config.state_offset), ("", 4096));
    let g: Generation = serde_json::from_str(r#"{"generation": 2, "toplevel": "/mobix/store/x"}"#).unwrap();
    assert_eq!((g.generation, g.kernel.as_str()), (2, ""));
    let sys: SystemSpec = serde_json::from_str(r#"{"services": []}"#).unwrap();
    assert_eq!((sys.trial_deadline, sys.health_checks.len()), (300, 0));
    let c: HealthCheck = serde_json::from_str(r#"{"name": "x", "command": ["true"]}"#).unwrap();
    assert_eq!(c.timeout, 60);
    let b: Booted = serde_json::from_str(
        r#"{"generation": 1, "toplevel": "/mobix/store/t", "mode": "good", "state": null, "slot": 0}"#,
    )
    .unwrap();
    assert_eq!(b.slot, Some(Slot::A));
    assert!(serde_json::from_str::<Booted>(
        r#"{"generation": 1, "toplevel": "/mobix/store/t", "mode": "good", "state": null, "slot": 2}"#
    )
    .is_err());
}

#[test]
fn a_remote_unlock_reply_is_found_after_what_a_person_reads() {
    for r in [
        UnlockReply::Open,
        UnlockReply::Wrong { failures: 3, wait_s: 5 },
        UnlockReply::Refused("the phone is not asking for a PIN".into()),
    ] {
        let out = format!("Enter the PIN\nsomething said first\n{}\n", r.line());
        assert_eq!(UnlockReply::find(&out), Some(r.clone()), "{out}");
    }
    assert_eq!(UnlockReply::find("UNLOCK-WRONG failures=x wait_s=1"), None);
    assert_eq!(UnlockReply::find("no reply here\n"), None);
    assert_eq!(UnlockReply::Refused("a\nb".into()).line(), "UNLOCK-REFUSED a b", "one line");
}

#[test]
fn remote_unlock_is_written_only_where_asked_for() {
    let link = serde_json::to_string(&UnlockLink::Ethernet { address: QEMU_GUEST_ADDRESS.into() }).unwrap();
    assert_eq!(link, r#"{"ethernet":{"address":"10.0.2.15"}}"#);
    assert_eq!(serde_json::to_string(&UnlockLink::Usb).unwrap(), r#""usb""#);
}
