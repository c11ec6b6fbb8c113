use super::sw::link_package;
use super::*;
use std::collections::BTreeMap;

/// A package at `<store>/<hash>-<name>` with `files` (path, content; `@target` is a symlink).
fn package(store: &Path, hash: &str, name: &str, files: &[(&str, &str)]) -> StorePath {
    let p = StorePath::new(hash.into(), name).unwrap();
    for (rel, content) in files {
        let f = store.join(p.base_name()).join(rel);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        match content.strip_prefix('@') {
            Some(t) => std::os::unix::fs::symlink(t, &f).unwrap(),
            None => fs::write(&f, content).unwrap(),
        }
    }
    p
}

#[test]
fn packages_link_into_the_software_tree() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let out = d.path().join("sw");
    fs::create_dir_all(out.join("bin")).unwrap();
    let h = |c: char| c.to_string().repeat(32);
    let libc = package(
        &store,
        &h('a'),
        "libc",
        &[
            ("lib/aarch64-linux-gnu/libc.so.6", "libc"),
            ("lib/ld-linux-aarch64.so.1", "@aarch64-linux-gnu/ld.so"),
            ("usr/share/doc/libc/copyright", "c"),
            ("etc/ld.so.conf.d/x.conf", "x"),
        ],
    );
    let tree = package(
        &store,
        &h('b'),
        "tree",
        &[("usr/bin/tree", "elf"), ("share/mobix/depends", "/mobix/store/..."), ("usr/share/doc/libc/copyright", "c")],
    );
    let mut owners = BTreeMap::new();
    link_package(&store.join(libc.base_name()), &libc, &out, &mut owners).unwrap();
    link_package(&store.join(tree.base_name()), &tree, &out, &mut owners).unwrap();
    let link = |rel: &str| fs::read_link(out.join(rel)).unwrap().to_string_lossy().into_owned();
    assert_eq!(link("bin/tree"), format!("{}/usr/bin/tree", tree.phone_path()));
    assert_eq!(link("lib/ld-linux-aarch64.so.1"), format!("{}/lib/ld-linux-aarch64.so.1", libc.phone_path()));
    // The same file in two packages is one link (the first's).
    assert_eq!(link("share/doc/libc/copyright"), format!("{}/usr/share/doc/libc/copyright", libc.phone_path()));
    assert!(!out.join("etc").exists() && !out.join("share/mobix").exists() && !out.join("usr").exists());

    // A path two packages hold differently is refused, naming both.
    let other = package(&store, &h('c'), "other", &[("bin/tree", "another tree")]);
    let err = link_package(&store.join(other.base_name()), &other, &out, &mut owners).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("sw/bin/tree") && msg.contains("-tree") && msg.contains("-other"), "{msg}");
    // A file where a package has a directory, too.
    let clash = package(&store, &h('d'), "clash", &[("usr/lib", "a file")]);
    let err = link_package(&store.join(clash.base_name()), &clash, &out, &mut owners).unwrap_err();
    assert!(format!("{err:#}").contains("sw/lib"), "{err:#}");
}
