use super::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn qemu_text() -> String {
    std::fs::read_to_string(repo().join("devices/qemu-aarch64/device.yaml")).unwrap()
}

/// Parses an edited copy of the qemu profile and returns (line, key, message, hint).
fn broken(edit: impl Fn(String) -> String) -> (Option<usize>, String, String, Option<String>) {
    let err = parse_device(&edit(qemu_text()), "devices/x/device.yaml").unwrap_err();
    let fail = crate::util::find_fail(&err).expect("a profile error is the user's");
    let pe = err.downcast_ref::<ProfileError>().expect("names file/line/key");
    assert_eq!(pe.file, "devices/x/device.yaml");
    (pe.line, pe.key.clone(), pe.msg.clone(), fail.hint.clone())
}

fn line_containing(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn every_profile_in_the_tree_loads() {
    let all = load_all(repo()).unwrap();
    let names: Vec<String> =
        all.iter().map(|(d, v, _)| v.as_ref().map_or(d.to_string(), |v| format!("{d}/{v}"))).collect();
    assert_eq!(
        names,
        [
            "google-sargo",
            "oneplus-enchilada",
            "qemu-aarch64/debian",
            "qemu-aarch64/tiny",
            "xiaomi-beryllium/tianma",
            "xiaomi-beryllium/ebbg"
        ]
    );
    for (d, v, r) in all {
        r.unwrap_or_else(|e| panic!("{d} {v:?}: {e:#}"));
    }
}

#[test]
fn families_and_variants_merge() {
    let e = load(repo(), "oneplus-enchilada").unwrap();
    assert_eq!(e.device.bootimg.page_size, 4096, "from the family");
    assert_eq!(e.device.system.partition, "userdata", "from the family");
    assert!(e.device.stage1.modules.contains(&"rmi_core".to_string()), "the device's list replaces the family's");
    assert!(e.sources[0].ends_with("devices/families/qcom-sdm845.yaml"));
    let t = load_with(repo(), "xiaomi-beryllium", Selection { variant: Some("tianma"), config: None }).unwrap();
    let b = load_with(repo(), "xiaomi-beryllium", Selection { variant: Some("ebbg"), config: None }).unwrap();
    assert_eq!(t.device.bootimg.dtb.as_ref().unwrap().files, ["qcom/sdm845-xiaomi-beryllium-tianma.dtb"]);
    assert_eq!(b.device.bootimg.dtb.as_ref().unwrap().files, ["qcom/sdm845-xiaomi-beryllium-ebbg.dtb"]);
    assert_ne!(t.device.stage1.modules, b.device.stage1.modules);
    assert!(!t.device.is_ab());
    let err = load(repo(), "xiaomi-beryllium").unwrap_err();
    assert!(crate::util::find_fail(&err).unwrap().hint.as_deref().unwrap().contains("tianma, ebbg"));
    let err = load_with(repo(), "xiaomi-beryllium", Selection { variant: Some("boe"), config: None }).unwrap_err();
    assert!(format!("{err:#}").contains("has no variant boe"));
}

#[test]
fn user_config_overrides_last() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    std::fs::write(&cfg, "hostname: pocket\ncmdline: [quiet]\ndevice:\n  stage1: { compression: xz }\n").unwrap();
    let p = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap();
    assert_eq!(p.system.hostname.as_deref(), Some("pocket"));
    assert_eq!(p.device.stage1.compression, crate::format::compress::Compression::Xz);
    std::fs::write(&cfg, "hostname: pocket\ndevice:\n  bootimg: { page_size: 1000 }\n").unwrap();
    let err = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap_err();
    let pe = err.downcast_ref::<ProfileError>().unwrap();
    assert!(pe.file.ends_with("system.yaml"), "reported where the override was written: {pe:?}");
    assert_eq!((pe.line, pe.key.as_str()), (Some(3), "device.bootimg.page_size"));
}

/// The README's pocket.yaml asks for two emulated CPUs; built for a real phone, the error
/// points at that `qemu:`, not at the phone's profile.
#[test]
fn an_emulated_phone_asked_of_a_real_phone_is_located_in_the_config() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("pocket.yaml");
    std::fs::write(&cfg, "hostname: pocket\ndevice:\n  qemu: { smp: 2 }\n").unwrap();
    let err = load_with(repo(), "oneplus-enchilada", Selection { variant: None, config: Some(&cfg) }).unwrap_err();
    let pe = err.downcast_ref::<ProfileError>().unwrap();
    assert!(pe.file.ends_with("pocket.yaml"), "{pe:?}");
    assert_eq!((pe.line, pe.key.as_str()), (Some(3), "device.qemu"));
    assert!(format!("{err:#}").contains("this profile describes a real phone"), "{err:#}");
}

#[test]
fn qemu_profile_values() {
    let p = load(repo(), "qemu-aarch64").unwrap();
    assert_eq!(p.device.bootimg.base, 0x4000_0000);
    assert!(p.device.is_ab());
    let parts: Vec<String> = p.device.gpt_partitions().into_iter().map(|(n, _)| n).collect();
    assert_eq!(parts, ["misc", "boot_a", "boot_b", "system", "userdata"]);
}

#[test]
fn unknown_key_names_line_key_and_closest() {
    let text = qemu_text();
    let (line, key, msg, hint) = broken(|t| t.replace("  page_size: 4096", "  page_sise: 4096"));
    assert_eq!(line, Some(line_containing(&text, "page_size: 4096")));
    assert_eq!(key, "bootimg.page_sise");
    assert!(msg.contains("unknown field"), "{msg}");
    assert_eq!(hint.as_deref(), Some("did you mean `page_size`?"));
}

#[test]
fn missing_required_key() {
    let (line, key, msg, _) = broken(|t| t.replace("console: ttyAMA0\n", ""));
    assert!(line.is_some());
    assert!(msg.contains("missing field `console`"), "{msg}");
    assert_eq!(key, "console");
}

#[test]
fn wrong_type() {
    let text = qemu_text();
    let (line, key, msg, _) = broken(|t| t.replace("header_version: 2", "header_version: two"));
    assert_eq!(line, Some(line_containing(&text, "header_version: 2")));
    assert_eq!(key, "bootimg.header_version");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn semantic_errors_are_located() {
    let text = qemu_text();
    let (line, key, _, _) = broken(|t| t.replace("page_size: 4096", "page_size: 3000"));
    assert_eq!((line, key.as_str()), (Some(line_containing(&text, "page_size: 4096")), "bootimg.page_size"));
    let (line, key, msg, _) = broken(|t| t.replace("{ name: userdata", "{ name: misc"));
    assert_eq!(key, "storage.partitions[3].name");
    assert_eq!(line, Some(line_containing(&text, "name: userdata")));
    assert!(msg.contains("defined twice"), "{msg}");
    let (_, key, _, _) = broken(|t| t.replace("partition: system", "partition: nope"));
    assert_eq!(key, "system.partition");
    let (_, key, _, _) = broken(|t| t.replace("size: 4GiB", "size: 4GB"));
    assert_eq!(key, "storage.partitions[2].size");
    let (_, key, _, _) = broken(|t| t.replace("base: 0x40000000", "base: 0x140000000"));
    assert_eq!(key, "bootimg.base");
    let (_, key, msg, _) = broken(|t| t.replace("header_version: 2", "header_version: 4"));
    assert_eq!(key, "storage.partitions");
    assert!(msg.contains("needs a vendor_boot partition"), "{msg}");
}

/// The state beside the store: it starts where the system image ends, which needs the
/// image's size and room after it.
#[test]
fn state_beside_the_store_follows_the_system_image() {
    let beside = |t: String, size: &str| {
        t.replace("\n  size: 1GiB\n", "\n")
            .replace("  partition: system\n", &format!("  partition: userdata\n{size}"))
            .replace("{ name: userdata, size: 256MiB }", "{ name: userdata, size: 1GiB }")
    };
    let d = parse_device(&beside(qemu_text(), "  size: 512MiB\n"), "devices/x/device.yaml").unwrap();
    assert_eq!(d.persistent_state_start(), 512 << 20);
    assert_eq!(d.state_offset(), (512 << 20) - crate::format::bootstate::AREA, "the boot-state area ends the image");
    let q = parse_device(&qemu_text(), "devices/x/device.yaml").unwrap();
    assert_eq!(q.persistent_state_start(), 0, "a partition of its own");
    let (_, key, msg, _) = broken(|t| beside(t, ""));
    assert_eq!(key, "state.partition");
    assert!(msg.contains("needs `system.size`"), "{msg}");
    let (_, key, msg, _) = broken(|t| beside(t, "  size: 1000MiB\n"));
    assert_eq!(key, "system.size");
    assert!(msg.contains("less than 64 MiB of userdata"), "{msg}");
}

#[test]
fn unknown_device_lists_known_ones() {
    let err = load(repo(), "no-such-phone").unwrap_err();
    let fail = err.downcast_ref::<Fail>().unwrap();
    assert!(fail.hint.as_deref().unwrap().contains("qemu-aarch64"));
    assert!(load(repo(), "../etc").is_err());
}

#[test]
fn packages_are_specs_or_lock_entries() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    std::fs::write(&cfg, "init: minimal\npackages: [mmc-utils, tree]\n").unwrap();
    let p = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap();
    assert_eq!(p.system.packages, ["mmc-utils", "tree"]);
    // Debian names (with a version or without) are for apt to resolve; a later error about
    // one (apt knows no such package) points where it was named.
    std::fs::write(&cfg, "hostname: x\npackages:\n  - tree\n  - vim=2:9.0.1378-2\n").unwrap();
    let p = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap();
    let err = p.package_error("vim", "no such package".into(), Some("try another".into())).unwrap();
    let pe = err.downcast_ref::<ProfileError>().unwrap();
    assert_eq!((pe.line, pe.key.as_str()), (Some(4), "packages[1]"));
    assert!(p.package_error("htop", String::new(), None).is_none());
    for (text, line, key, says) in [
        ("hostname: x\npackages: [tree, Not_Debian]\n", 2, "packages[1]", "not a package name"),
        ("packages:\n  - tree\n  - tree\n", 2, "packages[1]", "listed twice"),
        ("packages:\n  - htop\n  - htop=3.2.2-2\n", 2, "packages[1]", "htop is listed twice"),
        ("packages: [../etc]\n", 1, "packages[0]", "not a package name"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let err = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap_err();
        let pe = err.downcast_ref::<ProfileError>().unwrap_or_else(|| panic!("{err:#}"));
        assert_eq!(pe.key, key, "{text}");
        assert!(pe.line.is_some_and(|l| l >= line), "{text}: {pe:?}");
        assert!(format!("{err:#}").contains(says), "{text}: {err:#}");
    }
}

#[test]
fn package_specs_are_checked() {
    let spec = super::load_package(repo(), "mmc-utils").unwrap();
    assert_eq!(spec.spec.source, "mmc-utils");
    assert_eq!(spec.spec.install["bin/mmc"], "mmc");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("packages/x");
    std::fs::create_dir_all(&dir).unwrap();
    for (text, key) in [
        ("source: s\ninstall: {}\n", "install"),
        ("source: s\ninstall:\n  ../bin/x: x\n", "install.../bin/x"),
        ("source: s\ninstall:\n  bin/x: /etc/passwd\n", "install.bin/x"),
        ("source: s\nmake: [\"a b\"]\ninstall:\n  bin/x: x\n", "make[0]"),
        ("source: s\nmaek: []\ninstall:\n  bin/x: x\n", "maek"),
    ] {
        std::fs::write(dir.join("package.yaml"), text).unwrap();
        let err = super::load_package(d.path(), "x").unwrap_err();
        let pe = err.downcast_ref::<ProfileError>().unwrap_or_else(|| panic!("{text}: {err:#}"));
        assert_eq!(pe.key, key, "{text}");
        assert!(pe.file.ends_with("packages/x/package.yaml"));
    }
    assert!(format!("{:#}", super::load_package(d.path(), "y").unwrap_err()).contains("no package spec y"));
}

#[test]
fn overlays_bring_their_packages() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    let qemu = r.join("devices/qemu-aarch64");
    std::fs::create_dir_all(&qemu).unwrap();
    std::fs::write(qemu.join("device.yaml"), qemu_text()).unwrap();
    std::fs::copy(repo().join("mobix.lock"), r.join("mobix.lock")).unwrap();
    std::fs::create_dir_all(r.join("overlays/tools/files")).unwrap();
    std::fs::create_dir_all(r.join("packages/mmc-utils")).unwrap();
    std::fs::copy(repo().join("packages/mmc-utils/package.yaml"), r.join("packages/mmc-utils/package.yaml")).unwrap();
    let cfg = r.join("system.yaml");
    std::fs::write(&cfg, "init: minimal\npackages: [tree]\noverlays: [tools]\n").unwrap();
    let load = || load_with(r, "qemu-aarch64", Selection { variant: None, config: Some(&cfg) });
    // No overlay.yaml: only the files.
    assert_eq!(load().unwrap().system.packages, ["tree"]);
    // The overlay's packages follow the system's own, each once.
    std::fs::write(r.join("overlays/tools/overlay.yaml"), "packages: [mmc-utils, tree]\n").unwrap();
    assert_eq!(load().unwrap().system.packages, ["tree", "mmc-utils"]);
    // Its errors name its own file, line and key.
    std::fs::write(r.join("overlays/tools/overlay.yaml"), "# tools\npackages:\n  - mmc-utils\n  - no/such\n").unwrap();
    let err = load().unwrap_err();
    let pe = err.downcast_ref::<ProfileError>().unwrap_or_else(|| panic!("{err:#}"));
    assert!(pe.file.ends_with("overlays/tools/overlay.yaml"), "{pe:?}");
    assert_eq!((pe.line, pe.key.as_str()), (Some(4), "packages[1]"));
    std::fs::write(r.join("overlays/tools/overlay.yaml"), "pakages: [tree]\n").unwrap();
    let err = load().unwrap_err();
    assert_eq!(err.downcast_ref::<ProfileError>().map(|e| e.key.as_str()), Some("pakages"), "{err:#}");
}

#[test]
fn a_partition_name_is_checked_where_it_is_read() {
    let text = qemu_text();
    let (line, key, msg, _) = broken(|t| t.replace("{ name: userdata", "{ name: User-Data"));
    assert_eq!(key, "storage.partitions[3].name");
    assert_eq!(line, Some(line_containing(&text, "name: userdata")));
    assert!(msg.contains("\"User-Data\" is not a partition name"), "{msg}");
    let (_, key, msg, _) = broken(|t| t.replace("partition: system", "partition: \"\""));
    assert_eq!(key, "system.partition");
    assert!(msg.contains("is not a partition name"), "{msg}");
    assert!(PartitionName::try_from("boot_a").is_ok());
    assert!(PartitionName::try_from("x".repeat(32)).is_err());
}

#[test]
fn system_config_errors_say_system_config_and_hint_the_fix() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    let load = || load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap_err();
    for (text, says, hint) in [
        (
            "health_checks: [{name: bad, command: [false]}]\n",
            "invalid type: boolean `false`",
            "YAML reads false as a boolean: quote it to mean the text (\"false\")",
        ),
        ("hostname: 1234\n", "invalid type: integer", "YAML reads 1234 as a number: quote it"),
        ("packages: [Mmc_Utils]\n", "\"Mmc_Utils\" is not a package name", "a Debian package name (`htop`)"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let err = load();
        let fail = crate::util::find_fail(&err).unwrap();
        assert_eq!(fail.msg, format!("invalid system config {}", cfg.display()), "{text}");
        assert!(format!("{err:#}").contains(says), "{text}: {err:#}");
        assert!(fail.hint.as_deref().is_some_and(|h| h.contains(hint)), "{text}: {:?}", fail.hint);
        assert_eq!(format!("{err:#}").matches("invalid system config").count(), 1, "said once: {err:#}");
    }
}

/// Writes `text` as the system config `cfg` and checks that the qemu-aarch64 profile with
/// it is refused at `line` and `key`, saying `says`.
fn refused_at(cfg: &std::path::Path, text: &str, line: usize, key: &str, says: &str) {
    std::fs::write(cfg, text).unwrap();
    let err = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(cfg) }).unwrap_err();
    let pe = err.downcast_ref::<ProfileError>().unwrap_or_else(|| panic!("{err:#}"));
    assert_eq!((pe.line, pe.key.as_str()), (Some(line), key), "{pe}");
    assert!(pe.msg.contains(says), "{pe}");
}

#[test]
fn accounts_ssh_and_services_are_checked_where_written() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8f alice@laptop";
    let ok = format!(
        "init: systemd\nusers:\n  alice:\n    groups: [wheel, friends]\n    authorized_keys: [\"{key}\"]\n\
         groups: [friends]\nssh: {{ enable: true }}\nservices:\n  - {{ name: web, command: [/bin/true], user: alice, \
         after: [network.target], environment: {{ PORT: \"80\" }} }}\n"
    );
    std::fs::write(&cfg, &ok).unwrap();
    let p = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap();
    for base in super::SYSTEMD_BASE.iter().chain(&["openssh-server"]) {
        assert!(p.system.packages.iter().any(|x| x == base), "{base} joins the packages: {:?}", p.system.packages);
    }
    let located = |text: &str, line: usize, key: &str, says: &str| refused_at(&cfg, text, line, key, says);
    located(&ok.replace("init: systemd\n", "init: minimal\n"), 3, "users.alice", "need `init: systemd`");
    located(&ok.replace("wheel, friends", "wheel, enemies"), 4, "users.alice.groups[1]", "no group \"enemies\"");
    located(&ok.replace(key, "AAAA alice"), 5, "users.alice.authorized_keys[0]", "not an OpenSSH public key");
    located(&ok.replace("user: alice", "user: bob"), 9, "services[0].user", "no user \"bob\"");
    located(
        &ok.replace("    authorized_keys", "    hashed_password: hunter2\n    authorized_keys"),
        5,
        "users.alice.hashed_password",
        "never the password itself",
    );
    located(
        &ok.replace("ssh: { enable: true }", "ssh: { enable: true, permit_root_login: maybe }"),
        7,
        "ssh.permit_root_login",
        "maybe",
    );
    let fs = "filesystems:\n  - { mount_point: /srv/x, device: tmpfs, type: tmpfs, options: [size=1m] }\n";
    std::fs::write(&cfg, format!("{ok}{fs}")).unwrap();
    let p = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap();
    assert_eq!(p.system.filesystems[0].options, ["size=1m"]);
    located(&format!("{ok}{}", fs.replace("/srv/x", "/etc/x")), 11, "filesystems[0].mount_point", "mobix's own (/etc)");
    located(&format!("{ok}{}", fs.replace("/srv/x", "srv")), 11, "filesystems[0].mount_point", "not an absolute path");
    located(&format!("{ok}{}", fs.replace("size=1m", "\"a b\"")), 11, "filesystems[0].options[0]", "one option");
    located(
        &format!("{ok}{}", fs.replace("type: tmpfs", "type: \"x y\"")),
        11,
        "filesystems[0].type",
        "not a filesystem type",
    );
    located(&format!("init: minimal\n{fs}"), 3, "filesystems[0]", "need `init: systemd`");
    for (mp, owner) in [("/", "(/)"), ("/var/", "(/var)"), ("/run/x", "(/run)")] {
        located(&format!("{ok}{}", fs.replace("/srv/x", mp)), 11, "filesystems[0].mount_point", owner);
    }
    located(
        &format!("{ok}{}", fs.replace("type: tmpfs", "type: \"\"")),
        11,
        "filesystems[0].type",
        "not a filesystem type",
    );
    // Below /var and /home (on the state partition) is the user's.
    std::fs::write(&cfg, format!("{ok}{}", fs.replace("/srv/x", "/var/lib/big"))).unwrap();
    assert!(load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).is_ok());
}

#[test]
fn the_suggested_login_is_the_first_user_with_a_key_on_the_configs_port() {
    let mut s = SystemConfig::default();
    s.ssh.port = 22;
    assert_eq!(s.ssh_command("172.16.42.1", None, None), "ssh root@172.16.42.1");
    let user = |keys: &[&str]| super::User {
        authorized_keys: keys.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    };
    s.users.insert("bob".into(), user(&[]));
    assert_eq!(s.login_user(), "bob", "no one has a key: the first user");
    s.users.insert("carol".into(), user(&["ssh-ed25519 AAAA carol"]));
    assert_eq!(s.login_user(), "carol");
    s.ssh.port = 2200;
    assert_eq!(s.ssh_command("172.16.42.1", None, None), "ssh -p 2200 carol@172.16.42.1");
    assert_eq!(s.ssh_command("127.0.0.1", Some(2222), None), "ssh -p 2222 carol@127.0.0.1");
    assert_eq!(s.login_keys(), ["ssh-ed25519 AAAA carol"]);
    assert_eq!(
        s.ssh_command("127.0.0.1", Some(2222), Some("~/.ssh/pocket")),
        "ssh -i ~/.ssh/pocket -p 2222 carol@127.0.0.1"
    );
}

/// Issue 30 item 11: a config's mistakes in the user's words: no Rust type names, a unit
/// that is not one named, `device` among the keys an unknown one could have meant.
#[test]
fn config_mistakes_are_said_in_the_users_words() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    let said = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        let err = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap_err();
        let hint = crate::util::find_fail(&err).and_then(|f| f.hint.clone());
        let pe = err.downcast_ref::<ProfileError>().unwrap();
        (pe.key.clone(), pe.msg.clone(), hint)
    };
    let (key, msg, _) = said("boot: {tries: 300}\n");
    assert_eq!(
        (key.as_str(), msg.as_str()),
        ("boot.tries", "invalid value: integer `300`, expected a whole number from 0 to 255")
    );
    let (_, msg, _) = said("generations: {keep: 1.5}\n");
    assert_eq!(msg, "invalid type: floating point `1.5`, expected a whole number from 0 to 4294967295");
    let (key, msg, _) = said("device: {system: {size: 900TiB}}\n");
    assert_eq!(key, "device.system.size");
    assert_eq!(msg, "\"900TiB\" is not a size: TiB is not one of its units (B, KiB, MiB, GiB)");
    let (_, msg, _) = said("device: {system: {size: 99999999999GiB}}\n");
    assert!(msg.ends_with("more bytes than a 64-bit number holds"), "{msg}");
    let (key, msg, hint) = said("devcie: {system: {size: 1GiB}}\n");
    assert_eq!(key, "devcie");
    assert!(msg.ends_with("`ui`, `ui_user`, `state`, `device`"), "{msg}");
    assert_eq!(hint.as_deref(), Some("did you mean `device`?"));
    // A value that merely looks like a type name is left as written.
    assert_eq!(
        super::plain_types("unknown variant `u8`, expected u8"),
        "unknown variant `u8`, expected a whole number from 0 to 255"
    );
    assert_eq!(super::plain_types("integer `1` as u128"), "integer `1`, which is not a whole number of 0 or more");
}

#[test]
fn a_phone_ui_needs_one_user_who_can_unlock_it_and_brings_its_parts() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    let ok = "users:\n  alice:\n    hashed_password: $6$salt$hash\nui: phosh\n";
    std::fs::write(&cfg, ok).unwrap();
    let p = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap();
    assert_eq!(p.system.ui_user(), Some("alice"));
    for pkg in ["phosh-core", "bash"] {
        assert!(p.system.packages.iter().any(|x| x == pkg), "{pkg}: {:?}", p.system.packages);
    }
    // The emulated phone has no modem: no calls and messages.
    assert!(!p.system.packages.iter().any(|x| x == "phosh-phone"), "{:?}", p.system.packages);
    assert_eq!(p.device.renderer, super::Renderer::Software);
    for g in super::UI_GROUPS {
        assert!(p.system.users["alice"].groups.iter().any(|x| x == g), "{g}");
    }
    let check = p.system.health_checks.iter().find(|c| c.name == super::UI_CHECK).expect("the UI's check");
    assert_eq!(check.timeout, super::UI_CHECK_TIMEOUT);
    let located = |text: &str, line: usize, key: &str, says: &str| refused_at(&cfg, text, line, key, says);
    located("users:\n  alice:\n    groups: [wheel]\nui: phosh\n", 2, "users.alice", "`mobix config hash-pin`");
    located("ui: phosh\n", 1, "ui", "declare the phone's owner");
    let two = ok.replace("ui: phosh\n", "  bob:\n    groups: []\nui: phosh\n");
    located(&two, 6, "ui", "name it in `ui_user`");
    located(&format!("{ok}ui_user: carol\n"), 5, "ui_user", "no user \"carol\"");
    located("ui: phosh\ninit: minimal\n", 1, "ui", "needs `init: systemd`");
    located(&format!("{}ui_user: alice\n", ok.replace("ui: phosh\n", "")), 4, "ui_user", "`ui` is none");
    located(&ok.replace("phosh", "plasma"), 4, "ui", "plasma");
    // Two users: the one named runs the UI.
    std::fs::write(&cfg, format!("{two}ui_user: alice\n")).unwrap();
    let p = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap();
    assert_eq!(p.system.ui_user(), Some("alice"));
    assert!(!p.system.users["bob"].groups.iter().any(|g| g == "video"));
}

#[test]
fn an_encrypted_state_brings_cryptsetup_and_is_refused_where_there_is_nothing_to_encrypt() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    let ok = "state:\n  encryption: luks2\n  kdf: { memory_kib: 65536, iter_time_ms: 200 }\n";
    std::fs::write(&cfg, ok).unwrap();
    let p = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap();
    assert_eq!(p.system.state.encryption, super::Encryption::Luks2);
    assert!(p.system.packages.iter().any(|x| x == super::CRYPTSETUP_PACKAGE), "{:?}", p.system.packages);
    let plain = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: None }).unwrap();
    assert!(!plain.system.packages.iter().any(|x| x == super::CRYPTSETUP_PACKAGE));
    let located = |text: &str, line: usize, key: &str, says: &str| refused_at(&cfg, text, line, key, says);
    located("init: minimal\nstate: { encryption: luks2 }\n", 2, "state.encryption", "keeps no state");
    located("state: { encryption: luks2 }\ndevice:\n  state: null\n", 1, "state.encryption", "no `state` partition");
    located("state: { encryption: luks2, kdf: { memory_kib: 1024, iter_time_ms: 5 } }\n", 1, "state.kdf", "32768");
    located("state: { encryption: luks1 }\n", 1, "state.encryption", "luks1");
}

#[test]
fn remote_unlock_brings_dropbear_and_needs_an_encrypted_state_and_roots_keys() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    let root = "users:\n  root: { authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmDx2A2W31qHEdPwX6RnQEsfMrS+INl1DgN1VovX6iq owner@laptop\"] }\n";
    let ok = format!("{root}state:\n  encryption: luks2\n  remote_unlock: true\n");
    std::fs::write(&cfg, &ok).unwrap();
    let p = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap();
    assert!(p.system.state.remote_unlock);
    assert!(p.system.packages.iter().any(|x| x == super::DROPBEAR_PACKAGE), "{:?}", p.system.packages);
    let plain = format!("{root}state:\n  encryption: luks2\n");
    std::fs::write(&cfg, &plain).unwrap();
    let p = load_with(repo(), "qemu-aarch64", Selection { variant: None, config: Some(&cfg) }).unwrap();
    assert!(!p.system.packages.iter().any(|x| x == super::DROPBEAR_PACKAGE), "only when asked for");
    let located = |text: &str, line: usize, key: &str, says: &str| refused_at(&cfg, text, line, key, says);
    located(
        &format!("{root}state: {{ remote_unlock: true }}\n"),
        3,
        "state.remote_unlock",
        "needs `encryption: luks2`",
    );
    located("state:\n  encryption: luks2\n  remote_unlock: true\n", 3, "state.remote_unlock", "root has none");
}
