use super::*;
use std::path::Path;

/// A boot-state record with generation 1 the default and these entries.
fn record(entries: Vec<crate::format::bootstate::Entry>) -> crate::format::bootstate::Record {
    crate::format::bootstate::Record {
        seq: 1,
        default_gen: 1,
        booted_gen: 0,
        last_good: [0, 0],
        pending_slot: Default::default(),
        entries,
    }
}

fn fixture() -> (Profile, Lock, Inputs) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The minimal system (a build without a config is a systemd one).
    let minimal = repo.join("tests/fixtures/systems/minimal.yaml");
    let sel = crate::profile::Selection { variant: None, config: Some(&minimal) };
    let profile = crate::profile::load_with(repo, "qemu-aarch64", sel).unwrap();
    let lock = Lock::load(repo).unwrap();
    let inputs = Inputs {
        overlays: Vec::new(),
        kernel_from: KernelFrom::Source,
        kernel_spec: None,
        cross_gcc: None,
        prebuilt_kernel: None,
        packages: Vec::new(),
        repo: PathBuf::from("/somewhere/else"),
        init_source: Sha256Digest::of(b"init sources"),
        init_lock: Sha256Digest::of(b"init lock"),
        rustc_version: "rustc 1.95.0".into(),
        qemu_version: "QEMU emulator version 7.2".into(),
        mke2fs_version: "mke2fs 1.47.0".into(),
        mkfs_erofs_version: Some("fsck.erofs 1.5".into()),
        glib_schemas_version: Some("2.74.6".into()),
        aarch64_emulator_version: Some("qemu-aarch64 version 7.2.22".into()),
        mime_database_version: Some("update-mime-database (shared-mime-info) 2.2".into()),
    };
    (profile, lock, inputs)
}

#[test]
fn store_path_is_stable_for_a_fixed_recipe() {
    let r = Recipe {
        name: "etc".into(),
        builder: Builder::Etc { files: BTreeMap::from([("hostname".into(), "x\n".into())]), links: BTreeMap::new() },
        inputs: BTreeMap::new(),
    };
    // Golden: changing how recipes hash renames every store path; do it on purpose only.
    assert_eq!(r.store_path().base_name(), GOLDEN_ETC);
}
const GOLDEN_ETC: &str = "7s4sn79yy93i6mmk6aicv0y76dmyz2nl-etc";

#[test]
fn plan_is_independent_of_where_the_repo_is() {
    let (p, l, mut i) = fixture();
    let a = system(&p, &l, &i).unwrap();
    i.repo = PathBuf::from("/another/checkout");
    let b = system(&p, &l, &i).unwrap();
    assert_eq!(a.toplevel, b.toplevel);
}

#[test]
fn any_input_change_changes_the_toplevel_and_only_dependants() {
    let (p, l, i) = fixture();
    let base = system(&p, &l, &i).unwrap();
    let mut i2 = i.clone();
    i2.init_source = Sha256Digest::of(b"edited init");
    let changed = system(&p, &l, &i2).unwrap();
    assert_ne!(base.toplevel, changed.toplevel);
    assert_ne!(base.initrd, changed.initrd);
    assert_eq!(base.kernel, changed.kernel, "the kernel does not depend on the init");
    let mut p2 = p.clone();
    p2.device.cmdline.push("quiet".into());
    let c2 = system(&p2, &l, &i).unwrap();
    assert_ne!(base.toplevel, c2.toplevel);
    // Stage-1 knows the command line of its boot image (generations built for another are
    // not booted under it), so the initrd changes with it; the kernel does not.
    assert_ne!(base.initrd, c2.initrd);
    assert_eq!(base.kernel, c2.kernel, "the kernel does not depend on the cmdline");
    // A hostname is not part of the boot image: the initrd stays.
    let mut p3 = p.clone();
    p3.system.hostname = Some("elsewhere".into());
    let c3 = system(&p3, &l, &i).unwrap();
    assert_ne!(base.toplevel, c3.toplevel);
    assert_eq!(base.initrd, c3.initrd, "the initrd does not depend on the hostname");
    let mut l2 = l.clone();
    l2.debs.get_mut("busybox").unwrap().sha256 = "0".repeat(64);
    assert_ne!(base.toplevel, system(&p, &l2, &i).unwrap().toplevel);
}

#[test]
fn plan_is_in_dependency_order() {
    let (p, l, i) = fixture();
    let s = system(&p, &l, &i).unwrap();
    let gens = BTreeMap::from([(1, s.toplevel.clone())]);
    // Any valid record will do: the order of the recipes does not depend on it.
    let state = record(Vec::new());
    let (plan, imgs) = images(&p, &s, &gens, &state, &i).unwrap();
    let (boot, system) = (imgs.boot, imgs.system);
    for (idx, r) in plan.recipes.iter().enumerate() {
        for inp in r.recipe.inputs.values() {
            let pos = plan.recipes.iter().position(|q| &q.path == inp).unwrap();
            assert!(pos < idx, "{} before {}", inp, r.path);
        }
    }
    assert!(plan.input_closure(&system).contains(&s.toplevel));
    assert!(plan.input_closure(&boot).contains(&s.initrd));
}

#[test]
fn a_debs_dependencies_are_its_inputs_and_change_its_path() {
    let (p, l, i) = fixture();
    let base = system(&p, &l, &i).unwrap();
    let mut l2 = l.clone();
    l2.debs.get_mut("busybox").unwrap().depends = vec!["linux-image".into()];
    let with = system(&p, &l2, &i).unwrap();
    let bb =
        |s: &SystemPlan| s.plan.recipes.iter().find(|r| r.recipe.name.starts_with("busybox-static")).unwrap().clone();
    let (a, b) = (bb(&base), bb(&with));
    assert!(a.recipe.inputs.is_empty());
    assert_eq!(b.recipe.inputs.keys().collect::<Vec<_>>(), ["dep-linux-image"]);
    assert_ne!(a.path, b.path, "a dependency is part of the recipe");
    assert_ne!(base.toplevel, with.toplevel);
    // Dependencies come before their users in the plan.
    let pos = |name: &str| with.plan.recipes.iter().position(|r| r.recipe.name.starts_with(name)).unwrap();
    assert!(pos("linux-image") < pos("busybox-static"));
}

/// Golden: the whole plan of the qemu-aarch64 profile (system and images) for fixed inputs.
/// Every contract file the host writes for the phone (stage1.json, system.json, the
/// generation entries) is inside these recipes, so moving a type must not rename a path.
#[test]
fn the_qemu_profile_plans_to_golden_store_paths() {
    use crate::format::bootstate::{BadReason, Entry, Status};
    use mobix_bootctl::contract::Slot;
    let (p, l, i) = fixture();
    let s = system(&p, &l, &i).unwrap();
    let gens = BTreeMap::from([(1, s.toplevel.clone())]);
    let state = record(vec![
        Entry {
            generation: 1,
            id: [1; 16],
            kernel_slot: Slot::A,
            tries_left: 0,
            tries_done: 3,
            status: Status::Bad(BadReason::Tries),
        },
        Entry { generation: 2, id: [2; 16], kernel_slot: Slot::A, tries_left: 3, tries_done: 0, status: Status::Trial },
    ]);
    let (_, imgs) = images(&p, &s, &gens, &state, &i).unwrap();
    let got = [s.toplevel.base_name(), s.initrd.base_name(), imgs.boot.base_name(), imgs.system.base_name()];
    assert_eq!(got.map(|n| n.to_string()), GOLDEN_QEMU.map(String::from));
}
// (Last changed when the `deb` and `deb-group` builders' version went to 2: a package's hard
// links are unpacked as symlinks, so every package's store path, and all that holds them,
// changed once. Before that, when stage-1 got the screen.)
const GOLDEN_QEMU: [&str; 4] = [
    "9rpaml0dsr6nv32w88nckcll5bzrrv0y-mobix-system-qemu-aarch64",
    "1scbs3ihhrkm1plkib4s1pfk6mjxj1li-initrd",
    "4zvim8l7fm0w91cr2ikvqwl5rqwccim6-boot.img",
    "pv0wgbcqgc5ykz6zi7kmp094p8f035w8-system.img",
];

/// The phone contract from the host's side: what the plan writes for stage-1 and stage-2
/// reads back through the shared types into what the profile asked for.
#[test]
fn the_plans_contract_files_parse_as_the_phone_reads_them() {
    use mobix_bootctl::contract::{Stage1, SystemSpec};
    let (mut p, l, i) = fixture();
    p.system.health_checks.push(crate::profile::HealthCheck {
        name: "c".into(),
        command: vec!["true".into()],
        timeout: 9,
    });
    p.system.services.push(crate::profile::Service::new("s", &["/bin/sleep", "9"]));
    let s = system(&p, &l, &i).unwrap();
    let etc = s.plan.recipes.iter().find(|r| r.recipe.name == "etc").unwrap();
    let Builder::Etc { files, .. } = &etc.recipe.builder else { panic!("etc is built by the etc builder") };
    let spec: SystemSpec = serde_json::from_str(&files["mobix/system.json"]).unwrap();
    assert_eq!(spec.trial_deadline, p.system.boot.trial_deadline);
    assert_eq!((spec.health_checks[0].name.as_str(), spec.health_checks[0].timeout), ("c", 9));
    assert_eq!(spec.services[0].command, ["/bin/sleep", "9"]);
    let initrd = s.plan.get(&s.initrd).unwrap();
    let Builder::Initramfs { config, .. } = &initrd.recipe.builder else { panic!("the initrd is an initramfs") };
    let written = Stage1 {
        config: (**config).clone(),
        kernel_release: "6.1".into(),
        modules: vec![],
        screen_modules: vec![],
        crypt_modules: vec![],
    };
    let read: Stage1 = serde_json::from_slice(&serde_json::to_vec_pretty(&written).unwrap()).unwrap();
    assert_eq!(read, written);
    assert_eq!(read.config.system_partition, p.device.system.partition.as_str());
}

#[test]
fn a_firmware_file_hashes_as_the_triple_it_always_was() {
    let f = FirmwareFile { path: "qcom/a.mbn".into(), sha256: "ab".repeat(32), stage1: true };
    assert_eq!(serde_json::to_string(&f).unwrap(), format!("[\"qcom/a.mbn\",\"{}\",true]", "ab".repeat(32)));
}

#[test]
fn dependency_cycles_become_one_group_after_what_they_need() {
    let g: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("htop", vec!["libc6", "libtinfo6"]),
        ("libtinfo6", vec!["libc6"]),
        ("libc6", vec!["libgcc-s1"]),
        ("libgcc-s1", vec!["libc6", "gcc-12-base"]),
        ("gcc-12-base", vec![]),
    ]);
    let nodes: BTreeSet<String> = g.keys().map(|s| s.to_string()).collect();
    let edges = |n: &str| g[n].iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let groups = super::strongly_connected(&nodes, &edges);
    assert_eq!(groups, [vec!["gcc-12-base"], vec!["libc6", "libgcc-s1"], vec!["libtinfo6"], vec!["htop"]]);
}

#[test]
fn a_systemd_etc_has_the_locks_ids_and_the_same_files_for_the_same_config() {
    let (mut p, mut l, _) = fixture();
    l.ids = Default::default();
    p.system.init = crate::profile::Init::Systemd;
    p.system.ssh.enable = true;
    let alice = crate::profile::User {
        groups: vec!["wheel".into()],
        authorized_keys: vec!["ssh-ed25519 AAAA alice@laptop".into()],
        ..Default::default()
    };
    p.system.users.insert("alice".into(), alice);
    p.system.services.push(crate::profile::Service::new("hello", &["/bin/sh", "-c", "date >> /var/lib/hello.log"]));
    p.system.health_checks.push(crate::profile::HealthCheck {
        name: "sshd".into(),
        command: vec!["true".into()],
        timeout: 5,
    });
    let e = etc::systemd(&p, &l).unwrap_err();
    assert!(format!("{e:#}").contains("has no id for"), "{e:#}");
    let packages = etc::package_names(&p, &l);
    let (users, groups) = etc::wanted_ids(&p.system, &packages);
    l.ids.complete(&users, &groups).unwrap();
    let a = etc::systemd(&p, &l).unwrap();
    assert_eq!(a, etc::systemd(&p, &l).unwrap(), "identical configs give identical files");
    assert!(a.files["passwd"].contains("alice:x:1000:1000::/home/alice:/bin/sh\n"), "{}", a.files["passwd"]);
    assert!(a.files["group"].contains("wheel:x:999:alice\n"), "{}", a.files["group"]);
    assert!(a.files["shadow"].starts_with("root:!:"), "root is locked: {}", a.files["shadow"]);
    assert!(a.files["shadow"].contains("alice:!:"), "no password given: locked");
    assert_eq!(a.files["ssh/authorized_keys.d/alice"], "ssh-ed25519 AAAA alice@laptop\n");
    assert!(a.files["ssh/sshd_config"].contains("PermitRootLogin prohibit-password\nPasswordAuthentication no\n"));
    assert!(a.files["systemd/system/mobix-check-sshd.service"].contains("Before=boot-complete.target"));
    assert_eq!(
        a.links["systemd/system/boot-complete.target.requires/mobix-check-sshd.service"],
        "../mobix-check-sshd.service"
    );
    assert_eq!(a.links["systemd/system/multi-user.target.wants/hello.service"], "../hello.service");
    assert!(a.files["systemd/system/hello.service"]
        .contains("ExecStart=\"/bin/sh\" \"-c\" \"date >> /var/lib/hello.log\"\nRestart=on-failure\n"));
    assert_eq!(a.copies[0].path, "shadow");
}

/// A deploy decides whether the boot image changes from `SystemPlan::boots` before anything
/// is built: it must say what the toplevel's `boot.json` will (the builder writes the
/// toplevel recipe's `kernel` input's Image, its `initrd` input and its command line).
#[test]
fn a_planned_system_says_what_its_boot_json_will() {
    let (p, l, i) = fixture();
    let s = system(&p, &l, &i).unwrap();
    let top = s.plan.get(&s.toplevel).unwrap();
    let Builder::Toplevel { cmdline, .. } = &top.recipe.builder else { panic!("{:?}", top.recipe.builder) };
    let (kernel, initrd, said) = s.boots();
    assert_eq!(kernel, format!("{}/Image", top.recipe.inputs["kernel"].phone_path()));
    assert_eq!(initrd, top.recipe.inputs["initrd"].phone_path());
    assert_eq!(said, cmdline);
}

#[test]
fn an_encrypted_state_puts_cryptsetup_and_its_modules_in_the_initramfs() {
    let (_, l, i) = fixture();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    std::fs::write(&cfg, "state:\n  encryption: luks2\n  kdf: { memory_kib: 65536, iter_time_ms: 200 }\n").unwrap();
    let sel = crate::profile::Selection { variant: None, config: Some(&cfg) };
    let p = crate::profile::load_with(repo, "qemu-aarch64", sel).unwrap();
    let s = system(&p, &l, &i).unwrap();
    let initrd = s.plan.get(&s.initrd).unwrap();
    let Builder::Initramfs { config, programs, crypt_modules, .. } = &initrd.recipe.builder else {
        panic!("the initrd is an initramfs")
    };
    assert_eq!(programs, &["sbin/cryptsetup"]);
    assert!(crypt_modules.iter().any(|m| m == "dm_crypt"), "{crypt_modules:?}");
    let enc = config.encryption.as_ref().expect("stage-1 is told to open the state");
    assert_eq!(enc.partition, "userdata");
    assert_eq!(enc.kdf, Some(mobix_bootctl::contract::KdfCost { memory_kib: 65536, iter_time_ms: 200 }));
    // cryptsetup's package and the libraries it loads are the initramfs's inputs.
    let pkgs: Vec<&String> = initrd.recipe.inputs.keys().filter(|k| k.starts_with("pkg-")).collect();
    for name in ["pkg-cryptsetup-bin-", "pkg-libcryptsetup12-", "pkg-libc6-"] {
        assert!(pkgs.iter().any(|k| k.starts_with(name)), "{name}: {pkgs:?}");
    }
    let etc = s.plan.recipes.iter().find(|r| r.recipe.name == "etc").unwrap();
    let Builder::Etc { files, .. } = &etc.recipe.builder else { panic!("etc is built by the etc builder") };
    let spec: mobix_bootctl::contract::SystemSpec = serde_json::from_str(&files["mobix/system.json"]).unwrap();
    assert!(spec.state.expect("a state").encrypted);
    // The same system without encryption: no programs, no inputs of packages.
    let plain = system(&crate::profile::load_with(repo, "qemu-aarch64", Default::default()).unwrap(), &l, &i).unwrap();
    let initrd = plain.plan.get(&plain.initrd).unwrap();
    assert!(!initrd.recipe.inputs.keys().any(|k| k.starts_with("pkg-")));
    assert_eq!(enc.offset, 0, "a partition of its own");
    assert!(!crypt_modules.iter().any(|m| m == "loop"), "{crypt_modules:?}");
    // The state after a 1 GiB system image on userdata (the real phones' layout): stage-1
    // is told where it starts, and loads the loop device's module.
    std::fs::write(
        &cfg,
        "state: { encryption: luks2 }\ndevice:\n  storage:\n    partitions:\n      - { name: boot, size: 64MiB }\n\
         \x20     - { name: userdata, size: 1280MiB }\n  system: { partition: userdata, size: 1GiB }\n",
    )
    .unwrap();
    let p = crate::profile::load_with(repo, "qemu-aarch64", sel).unwrap();
    let s = system(&p, &l, &i).unwrap();
    let initrd = s.plan.get(&s.initrd).unwrap();
    let Builder::Initramfs { config, crypt_modules, .. } = &initrd.recipe.builder else {
        panic!("the initrd is an initramfs")
    };
    assert_eq!(config.encryption.as_ref().expect("an encrypted state").offset, 1 << 30);
    assert!(crypt_modules.iter().any(|m| m == "loop"), "{crypt_modules:?}");
}

#[test]
fn remote_unlock_puts_dropbear_and_the_network_card_in_the_initramfs() {
    let (_, l, i) = fixture();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmDx2A2W31qHEdPwX6RnQEsfMrS+INl1DgN1VovX6iq owner@laptop";
    std::fs::write(
        &cfg,
        format!(
            "users:\n  root: {{ authorized_keys: [\"{key}\"] }}\nstate: {{ encryption: luks2, remote_unlock: true }}\n"
        ),
    )
    .unwrap();
    let sel = crate::profile::Selection { variant: None, config: Some(&cfg) };
    let p = crate::profile::load_with(repo, "qemu-aarch64", sel).unwrap();
    let s = system(&p, &l, &i).unwrap();
    let initrd = s.plan.get(&s.initrd).unwrap();
    let Builder::Initramfs { config, programs, crypt_modules, .. } = &initrd.recipe.builder else {
        panic!("the initrd is an initramfs")
    };
    assert_eq!(programs, &["sbin/cryptsetup", "usr/sbin/dropbear", "usr/bin/dropbearkey"]);
    // The emulated phone has no USB gadget: its network card, at QEMU's guest address.
    assert!(crypt_modules.iter().any(|m| m == "virtio_net"), "{crypt_modules:?}");
    let r = config.remote_unlock.as_ref().expect("stage-1 is told to serve the unlock");
    assert_eq!(r.link, mobix_bootctl::contract::UnlockLink::Ethernet { address: "10.0.2.15".into() });
    assert_eq!((r.port, r.authorized_keys.as_slice()), (22, [key.to_string()].as_slice()));
    let pkgs: Vec<&String> = initrd.recipe.inputs.keys().filter(|k| k.starts_with("pkg-")).collect();
    for name in ["pkg-dropbear-bin-", "pkg-libtomcrypt1-", "pkg-cryptsetup-bin-"] {
        assert!(pkgs.iter().any(|k| k.starts_with(name)), "{name}: {pkgs:?}");
    }
    // A phone with a USB network serves it there.
    let p = crate::profile::load_with(repo, "oneplus-enchilada", sel).unwrap();
    let link = super::unlock_link(&p);
    assert_eq!(link, Some(mobix_bootctl::contract::UnlockLink::Usb));
    let modules = super::crypt_modules(&p.device, link.as_ref());
    assert!(!modules.iter().any(|m| m == "virtio_net") && modules.iter().any(|m| m == "loop"), "{modules:?}");
}
