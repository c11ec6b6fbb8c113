//! `mobix generations`: every build with a new toplevel is a new numbered generation of
//! its device; list, show and diff read them back; rollback writes images that boot an
//! older one (and they do, in QEMU); delete forgets one, never the newest.

use std::path::PathBuf;
use std::process::Output;

fn mobix(args: &[&str]) -> Output {
    crate::common::run(
        crate::common::mobix_cmd().args(args).arg("--repo").arg(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    )
}

#[test]
fn builds_become_generations_and_diff_shows_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (s, out) = (store.to_str().unwrap(), tmp.path().join("out"));
    let o = out.to_str().unwrap();
    let minimal = crate::common::minimal();
    assert!(mobix(&["build", "--device", "qemu-aarch64", "--store", s, "--out", o, "--config", &minimal])
        .status
        .success());
    let cfg = tmp.path().join("system.yaml");
    std::fs::write(&cfg, "hostname: pocket\ninit: minimal\ncmdline: [quiet]\n").unwrap();
    let c = cfg.to_str().unwrap();
    assert!(mobix(&["build", "--device", "qemu-aarch64", "--store", s, "--out", o, "--config", c]).status.success());
    // The same system again is not a new generation.
    assert!(mobix(&["build", "--device", "qemu-aarch64", "--store", s, "--out", o, "--config", c]).status.success());
    let list: serde_json::Value = serde_json::from_slice(
        &mobix(&["generations", "list", "--device", "qemu-aarch64", "--store", s, "--out", o, "--json"]).stdout,
    )
    .unwrap();
    let gens = list["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2);
    assert_eq!(gens[1]["generation"], 2);
    let diff: serde_json::Value = serde_json::from_slice(
        &mobix(&["generations", "diff", "--device", "qemu-aarch64", "--store", s, "--out", o, "--json", "1", "2"])
            .stdout,
    )
    .unwrap();
    let names: Vec<&str> = diff["changes"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    // The initrd too: stage-1 knows its boot image's command line.
    assert_eq!(names, ["etc", "initrd", "mobix-system-qemu-aarch64"], "the hostname and cmdline changed, nothing else");
    let show: serde_json::Value = serde_json::from_slice(
        &mobix(&["generations", "show", "--device", "qemu-aarch64", "--store", s, "--out", o, "--json", "2"]).stdout,
    )
    .unwrap();
    assert_eq!(show["boot"]["cmdline"], "console=ttyAMA0 panic=5 quiet");
    assert!(show["closure_bytes"].as_u64().unwrap() > 30_000_000, "the kernel is in the closure");
    let missing = mobix(&["generations", "show", "--device", "qemu-aarch64", "--store", s, "--out", o, "7"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("its generations: 1, 2"));

    // Rollback: the out directory now boots generation 1 by default, and it does.
    let rb = mobix(&["generations", "rollback", "--device", "qemu-aarch64", "--store", s, "--out", o, "--config", c]);
    assert!(rb.status.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["generation"], 1);
    assert_eq!(manifest["toplevel"], gens[0]["toplevel"]);
    let t = mobix(&["test", "--device", "qemu-aarch64", "--store", s, "--out", o, "--config", c, "--json"]);
    assert!(t.status.success(), "the rolled-back images boot");
    let t: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(t["generation"], 1);

    // Delete: never the newest; generation 1, which the phone just booted, only with --force.
    let del = |n: &str, force: bool| {
        let mut a = vec!["generations", "delete", "--device", "qemu-aarch64", "--store", s, "--out", o, n];
        if force {
            a.push("--force");
        }
        mobix(&a)
    };
    let newest = del("2", true);
    assert_eq!(newest.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&newest.stderr).contains("is the newest"));
    let needed = del("1", false);
    assert_eq!(needed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&needed.stderr).contains("the phone needs generation 1"));
    assert!(del("1", true).status.success());
    let list: serde_json::Value = serde_json::from_slice(
        &mobix(&["generations", "list", "--device", "qemu-aarch64", "--store", s, "--out", o, "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(list["generations"].as_array().unwrap().len(), 1);
    // Building again works without it (the ledger still names generation 1).
    assert!(mobix(&["build", "--device", "qemu-aarch64", "--store", s, "--out", o, "--config", c]).status.success());
    let _ = mobix::util::remove_tree(&store);
}
