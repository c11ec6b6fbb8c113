//! Packages in a system: a C program the `cc` builder cross-compiles from Debian's source
//! package (mmc-utils) and a Debian binary package with a dependency listed in the lock
//! (tree, needing libc6). Built in two empty stores with different names from different
//! working directories, the images are byte-identical; the closure holds the packages and
//! what they need; the phone runs both programs as health checks.

use crate::common::{mobix_in as mobix, ok, repo, store_names, tool};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIG: &str = "\
init: minimal
packages: [mmc-utils, tree]
health_checks:
  - name: mmc
    command: [mmc, help]
  - name: tree
    command: [tree, /run/current-system/sw/bin]
";

/// The one store entry whose name holds `contains` (source packages left out).
fn entry(store: &Path, contains: &str) -> PathBuf {
    let names: Vec<String> =
        store_names(store).into_iter().filter(|n| n.contains(contains) && !n.ends_with("-source")).collect();
    assert_eq!(names.len(), 1, "one store entry with {contains:?}: {names:?}");
    store.join(&names[0])
}

#[test]
fn packages_build_reproducibly_and_run_on_the_phone() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("system.yaml");
    fs::write(&cfg, CONFIG).unwrap();
    let cfg = cfg.to_str().unwrap();
    let repo = repo();
    let repo = repo.to_str().unwrap();
    let mut stores = Vec::new();
    // Both from source, whatever binary caches the run has (scripts/test's CI cache): the
    // stores are compared path for path.
    for (cwd, store) in [("one", "store-one"), ("two/deeper", "elsewhere/s")] {
        let cwd = d.path().join(cwd);
        fs::create_dir_all(&cwd).unwrap();
        let store = d.path().join(store);
        let out = cwd.join("out");
        let (s, o) = (store.to_str().unwrap(), out.to_str().unwrap());
        let build = ["build", "--device", "qemu-aarch64", "--repo", repo, "--store", s, "--out", o, "--config", cfg];
        ok(&mobix(&cwd, &[&build[..], &["--no-substitute"]].concat()));
        ok(&mobix(&cwd, &["store", "verify", "--store", s]));
        stores.push((store, out));
    }
    let ((s1, o1), (s2, o2)) = (&stores[0], &stores[1]);
    assert_eq!(store_names(s1), store_names(s2), "both stores hold the same paths");
    for img in ["boot.img", "system.img"] {
        assert!(fs::read(o1.join(img)).unwrap() == fs::read(o2.join(img)).unwrap(), "{img} differs between the stores");
    }

    // The cc builder's program: a static, stripped aarch64 executable (as binutils reads it).
    let mmc = entry(s1, "-mmc-utils-0+").join("bin/mmc");
    let header = tool(Command::new("aarch64-linux-gnu-readelf").arg("-hlS").arg("-W").arg(&mmc));
    assert!(header.contains("AArch64") && header.contains("EXEC"), "{header}");
    assert!(!header.contains("INTERP") && !header.contains(".symtab"), "static and stripped:\n{header}");
    let built_in = d.path().to_str().unwrap().as_bytes();
    assert!(
        !fs::read(&mmc).unwrap().windows(built_in.len()).any(|w| w == built_in),
        "no build directory in the program"
    );

    // The Debian package's closure holds the dependency its lock entry lists.
    let tree = entry(s1, "-tree-2.1.0");
    let s = s1.to_str().unwrap();
    let closure = ok(&mobix(d.path(), &["store", "closure", "--store", s, tree.to_str().unwrap()]));
    assert!(closure.lines().any(|l| l.contains("-libc6-")), "tree's closure holds libc6:\n{closure}");
    // And the system's toplevel holds all three, libc6 through the software tree.
    let top = entry(s1, "-mobix-system-qemu-aarch64");
    let closure = ok(&mobix(d.path(), &["store", "closure", "--store", s, top.to_str().unwrap()]));
    for p in ["-libc6-", "-tree-2.1.0", "-mmc-utils-0+"] {
        assert!(closure.lines().any(|l| l.contains(p)), "the toplevel's closure holds {p}:\n{closure}");
    }
    let libc = entry(s1, "-libc6-");
    let why =
        ok(&mobix(d.path(), &["store", "why-depends", "--store", s, top.to_str().unwrap(), libc.to_str().unwrap()]));
    assert!(why.contains("-sw"), "the toplevel needs libc6 through sw:\n{why}");

    // On the phone: the static program and the dynamically linked Debian one both run
    // (the health checks gate boot-complete).
    ok(&mobix(
        d.path(),
        &[
            "test",
            "--device",
            "qemu-aarch64",
            "--repo",
            repo,
            "--store",
            s,
            "--out",
            o1.to_str().unwrap(),
            "--config",
            cfg,
        ],
    ));
    let log = fs::read_to_string(o1.join("vm/serial.log")).unwrap();
    for check in ["mobix: health check mmc passed", "mobix: health check tree passed", "mobix: boot-complete"] {
        assert!(log.contains(check), "serial log lacks {check:?}:\n{log}");
    }
    assert!(log.contains("-- mmc -> /mobix/store/"), "tree listed sw/bin on the phone:\n{log}");
}
