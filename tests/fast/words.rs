//! What the command line offers and says outside a build: the udev rules for USB flashing,
//! options a command does not use, where the out directory is found, and usage errors.

use crate::common::{mobix_in, repo, repo_copy};
use std::fs;

fn text(o: &std::process::Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn the_shipped_udev_rules_are_what_the_profiles_say() {
    let o = mobix_in(&repo(), &["device", "udev-rules"]);
    assert!(o.status.success());
    let (rules, _) = text(&o);
    let shipped = fs::read_to_string(repo().join("udev/51-mobix-fastboot.rules")).unwrap();
    assert_eq!(
        shipped, rules,
        "udev/51-mobix-fastboot.rules is stale: regenerate it with `mobix device udev-rules > udev/51-mobix-fastboot.rules`"
    );
    // Every USB id a profile names has its rule, in the form udev matches (lowercase hex).
    assert!(rules.contains(
        "SUBSYSTEM==\"usb\", ATTR{idVendor}==\"18d1\", ATTR{idProduct}==\"d00d\", MODE=\"0660\", GROUP=\"plugdev\", \
         TAG+=\"uaccess\""
    ));
    assert!(rules.contains("# oneplus-enchilada, xiaomi-beryllium\n"), "{rules}");
}

#[test]
fn a_profile_with_a_new_usb_id_gets_a_rule_for_it() {
    let t = tempfile::tempdir().unwrap();
    repo_copy(t.path());
    let f = t.path().join("devices/google-sargo/device.yaml");
    let y = fs::read_to_string(&f).unwrap();
    fs::write(
        &f,
        y.replace("usb: { vendor_id: 0x18d1, product_id: 0x4ee0 }", "usb: { vendor_id: 0x2717, product_id: 0xFF48 }"),
    )
    .unwrap();
    let (rules, _) = text(&mobix_in(t.path(), &["device", "udev-rules"]));
    assert!(
        rules.contains("# google-sargo\nSUBSYSTEM==\"usb\", ATTR{idVendor}==\"2717\", ATTR{idProduct}==\"ff48\""),
        "{rules}"
    );
    assert!(rules.contains("# qemu-aarch64\n"), "{rules}");
}

#[test]
fn commands_that_use_no_store_neither_offer_nor_take_one() {
    for cmd in [
        &["inspect", "--help"][..],
        &["inspect", "bootimg", "info", "--help"],
        &["doctor", "--help"],
        &["config", "reference", "--help"],
    ] {
        let (help, _) = text(&mobix_in(&repo(), cmd));
        assert!(!help.contains("--store") && !help.contains("--repo"), "{cmd:?}:\n{help}");
    }
    // Issue 30 item 11: the tree without the store, the store without the tree.
    for (cmd, unused) in [
        (&["device", "list", "--help"][..], "--store"),
        (&["device", "import", "deviceinfo", "--help"], "--store"),
        (&["store", "verify", "--help"], "--repo"),
        (&["store", "keygen", "--help"], "--repo"),
        (&["gc", "--help"], "--repo"),
    ] {
        let (help, _) = text(&mobix_in(&repo(), cmd));
        assert!(!help.contains(unused), "{cmd:?} offers {unused}:\n{help}");
    }
    let o = mobix_in(&repo(), &["device", "list", "--store", "/tmp"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    let (build_help, _) = text(&mobix_in(&repo(), &["build", "--help"]));
    assert!(build_help.contains("--store") && build_help.contains("--repo"), "{build_help}");
    // Giving one anyway is a usage error: exit 1, as for any bad input.
    let o = mobix_in(&repo(), &["inspect", "bootimg", "info", "--store", "/tmp", "boot.img"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("--store"), "{}", text(&o).1);
    let o = mobix_in(&repo(), &["doctor", "--repo", "/tmp"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("`mobix doctor` uses no mobix tree"), "{}", text(&o).1);
    let o = mobix_in(&repo(), &["build", "--no-such-option"]);
    assert_eq!(o.status.code(), Some(1), "an unknown option is bad input");
    let o = mobix_in(&repo(), &["--version"]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn the_default_out_directory_is_the_trees_from_any_subdirectory() {
    let t = tempfile::tempdir().unwrap();
    repo_copy(t.path());
    let store = t.path().join("store");
    let sub = t.path().join("devices/qemu-aarch64");
    let o = mobix_in(&sub, &["test", "--device", "qemu-aarch64", "--store", store.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let want = t.path().canonicalize().unwrap().join("out/qemu-aarch64");
    assert!(text(&o).1.contains(&format!("no build found in {}", want.display())), "{}", text(&o).1);
    // No --out was given, and the hint gives none (issue 30 item 11).
    assert!(text(&o).1.contains("hint: run `mobix build --device qemu-aarch64` first\n"), "{}", text(&o).1);
}

/// The front door and the manual link only to files that exist (issue 31: README.md a
/// short front door, the rest in docs/).
#[test]
fn the_readme_and_the_manual_link_only_to_files_that_exist() {
    let root = repo();
    let mut pages = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    assert!(pages.len() > 10, "the manual's pages: {pages:?}");
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').unwrap_or(rest.len())];
            let file = target.split('#').next().unwrap();
            if file.is_empty() || file.contains("://") {
                continue;
            }
            if !page.parent().unwrap().join(file).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to nothing: {broken:#?}");
    let lines = std::fs::read_to_string(root.join("README.md")).unwrap().lines().count();
    assert!(lines <= 220, "README.md is the front door ({lines} lines): the rest belongs in docs/");
}
