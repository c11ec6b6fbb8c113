//! `mobix generations`: every build with a new toplevel is a new numbered generation of
//! its device; list, show and diff read them back.

use std::path::PathBuf;
use std::process::{Command, Output};

fn mobix(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_mobix"))
        .args(args)
        .arg("--repo")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap();
    eprintln!("$ mobix {}\n{}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    o
}

#[test]
fn builds_become_generations_and_diff_shows_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (s, out) = (store.to_str().unwrap(), tmp.path().join("out"));
    let o = out.to_str().unwrap();
    assert!(mobix(&["build", "--device", "qemu-aarch64", "--store", s, "--out", o]).status.success());
    let cfg = tmp.path().join("system.yaml");
    std::fs::write(&cfg, "hostname: pocket\ncmdline: [quiet]\n").unwrap();
    let c = cfg.to_str().unwrap();
    assert!(mobix(&["build", "--device", "qemu-aarch64", "--store", s, "--out", o, "--config", c]).status.success());
    // The same system again is not a new generation.
    assert!(mobix(&["build", "--device", "qemu-aarch64", "--store", s, "--out", o, "--config", c]).status.success());
    let list: serde_json::Value = serde_json::from_slice(
        &mobix(&["generations", "list", "--device", "qemu-aarch64", "--store", s, "--json"]).stdout,
    )
    .unwrap();
    let gens = list["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2);
    assert_eq!(gens[1]["generation"], 2);
    let diff: serde_json::Value = serde_json::from_slice(
        &mobix(&["generations", "diff", "--device", "qemu-aarch64", "--store", s, "--json", "1", "2"]).stdout,
    )
    .unwrap();
    let names: Vec<&str> = diff["changes"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["etc", "mobix-system-qemu-aarch64"], "the hostname and cmdline changed, nothing else");
    let show: serde_json::Value = serde_json::from_slice(
        &mobix(&["generations", "show", "--device", "qemu-aarch64", "--store", s, "--json", "2"]).stdout,
    )
    .unwrap();
    assert_eq!(show["boot"]["cmdline"], "console=ttyAMA0 panic=5 quiet");
    assert!(show["closure_bytes"].as_u64().unwrap() > 30_000_000, "the kernel is in the closure");
    let missing = mobix(&["generations", "show", "--device", "qemu-aarch64", "--store", s, "7"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("generations: 1, 2"));
    let _ = mobix::util::remove_tree(&store);
}
