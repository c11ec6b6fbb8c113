//! Overlays: file trees from overlays/<name>/files/ that the system config lists. Their
//! etc/ merges into /etc (over generated files), the rest into the software tree.

use crate::common::store_entry;
use crate::common::{mobix_in as mobix, repo_copy};

use std::fs;

#[test]
fn overlays_layer_files_onto_the_system() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    repo_copy(t);
    for (name, file, text) in [
        ("greeting", "etc/motd", "hello from an overlay\n"),
        ("greeting", "bin/hello", "#!/bin/sh\necho hello\n"),
        ("shell", "etc/profile", "export PS1='phone# '\n"),
        ("shell", "etc/motd", "the later overlay wins\n"),
    ] {
        let p = t.join("overlays").join(name).join("files").join(file);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    fs::write(t.join("system.yaml"), "init: minimal\noverlays: [greeting, shell]\n").unwrap();
    let store = t.join("store");
    let s = store.to_str().unwrap();
    let o = mobix(t, &["build", "--device", "qemu-aarch64", "--config", "system.yaml", "--store", s, "--out", "out"]);
    assert!(o.status.success());
    let etc = store_entry(&store, "-etc");
    assert_eq!(fs::read_to_string(etc.join("motd")).unwrap(), "the later overlay wins\n");
    assert_eq!(
        fs::read_to_string(etc.join("profile")).unwrap(),
        "export PS1='phone# '\n",
        "overlays override generated files"
    );
    assert!(etc.join("passwd").is_file(), "generated files stay");
    let sw = store_entry(&store, "-sw");
    assert_eq!(fs::read_to_string(sw.join("bin/hello")).unwrap(), "#!/bin/sh\necho hello\n");
    assert!(sw.join("bin/busybox").is_file());
    assert!(!sw.join("etc").exists(), "etc/ goes to /etc, not the software tree");
    let test = mobix(t, &["test", "--device", "qemu-aarch64", "--config", "system.yaml", "--out", "out"]);
    assert!(test.status.success());
    // An overlay that does not exist is an error at its line in the config.
    fs::write(t.join("system.yaml"), "hostname: x\noverlays: [greeting, nope]\ninit: minimal\n").unwrap();
    let o = mobix(t, &["build", "--device", "qemu-aarch64", "--config", "system.yaml", "--store", s, "--out", "out"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("system.yaml:2: key `overlays[1]`: no overlay \"nope\""), "{err}");
    let _ = mobix::util::remove_tree(&store);
}
