//! The pipeline as a library: a whole build of the qemu-aarch64 system and its images,
//! driven through `mobix::pipeline` without the binary, into the shared test store.

use mobix::build::Ctx;
use mobix::format::bootimg::BootImage;
use mobix::pipeline::{self, Pipeline};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[test]
fn a_build_through_the_library_matches_its_dry_run() {
    let repo = crate::common::repo();
    // The minimal system the other tests build in the shared store too.
    let minimal = PathBuf::from(crate::common::minimal());
    let sel = mobix::profile::Selection { variant: None, config: Some(&minimal) };
    let profile = mobix::profile::load_with(&repo, "qemu-aarch64", sel).unwrap();
    let lock = mobix::lock::Lock::load(&repo).unwrap();
    let store = mobix::store::Store::open(&crate::common::shared_store()).unwrap();
    let inputs = pipeline::host_facts(&repo, &profile, mobix::plan::KernelFrom::default_for(&profile), &store).unwrap();
    let lines = std::sync::Mutex::new(Vec::new());
    let progress = |m: &str| lines.lock().unwrap().push(m.to_string());
    let ctx = Ctx {
        store: &store,
        downloads: crate::common::cache_dir().join("downloads"),
        apt_root: crate::common::cache_dir().join("apt"),
        cargo_cache: crate::common::cache_dir().join("cargo-target"),
        progress: &progress,
        substituters: Vec::new(),
        trusted: Vec::new(),
        fetched: Default::default(),
        caches_down: Default::default(),
    };
    let pipe = Pipeline { ctx: &ctx, profile: &profile, lock: &lock, inputs: &inputs };

    let out = tempfile::tempdir().unwrap();
    let dry = pipe.dry_run(out.path()).unwrap();
    // Every arrow is a value that prints as JSON.
    let json = serde_json::to_value(&dry).unwrap();
    assert_eq!(json["toplevel"], serde_json::json!(dry.toplevel));
    assert!(dry.recipes.iter().any(|r| r.builder == "boot-image"), "{json:#}");

    // Built without recording a generation: the shared store's generations stay as the
    // other tests left them.
    let gens_before = mobix::generation::list(&store, &pipe.lineage(out.path())).unwrap().len();
    let imgs = pipe.build_unrecorded(1, &|_| {}, &BTreeMap::new(), &|g| {
        mobix::generation::initial_state(g, 1, profile.system.boot.tries, None)
    });
    let imgs = imgs.unwrap();
    assert_eq!(mobix::generation::list(&store, &pipe.lineage(out.path())).unwrap().len(), gens_before);
    assert_eq!(imgs.toplevel, dry.toplevel, "the dry run planned the toplevel the build made");
    assert!(dry.images.contains(&imgs.boot), "boot.img does not depend on the generations carried");
    for p in imgs.all() {
        assert!(store.contains(&p), "{p} was realised");
    }
    let boot = std::fs::read(store.host_path(&imgs.boot).join("boot.img")).unwrap();
    let parsed = BootImage::parse(&boot).unwrap();
    assert!(parsed.cmdline.contains("console="), "{}", parsed.cmdline);
    crate::common::tool(std::process::Command::new("unpack_bootimg").args([
        "--boot_img",
        store.host_path(&imgs.boot).join("boot.img").to_str().unwrap(),
        "--out",
        tempfile::tempdir().unwrap().path().to_str().unwrap(),
    ]));
    assert!(lines.lock().unwrap().iter().all(|l| !l.is_empty()));
}
