//! The store as users meet it: incremental rebuilds the plan predicts, binary caches that
//! refuse what was tampered with, garbage collection that keeps what is rooted, and builds
//! killed with SIGKILL at random moments that leave a store `mobix store verify` accepts.

use crate::common::{mobix_in as mobix, ok, repo_copy, store_names};

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A build from source: these tests are about what building puts in the store (what a
/// change rebuilds, what gc finds, what a killed build leaves), so no binary cache of the
/// user's (`scripts/test`'s CI cache) stands in, unless the test names one itself.
fn build(t: &Path, store: &str, out: &str, extra: &[&str]) -> Output {
    let mut a = vec!["build", "--device", "qemu-aarch64", "--store", store, "--out", out];
    if !extra.contains(&"--substituter") && !extra.contains(&"--no-substitute") {
        a.push("--no-substitute");
    }
    // The real tree unless the test copied one (a copied init/ is compiled again: its path
    // is part of rustc's flags).
    let repo = env!("CARGO_MANIFEST_DIR");
    if !t.join("mobix.lock").exists() {
        a.extend(["--repo", repo]);
    }
    let minimal = crate::common::minimal();
    if !extra.contains(&"--config") {
        a.extend(["--config", &minimal]);
    }
    a.extend(extra);
    mobix(t, &a)
}

fn sha256s(out: &Path) -> serde_json::Value {
    let m: serde_json::Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    m["images"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["sha256"].clone())).collect()
}

/// The recipes of `mobix build --dry-run --json` not yet built, by name.
fn unbuilt(t: &Path, store: &str, out: &str, extra: &[&str]) -> BTreeSet<String> {
    let mut a = vec![
        "build",
        "--device",
        "qemu-aarch64",
        "--store",
        store,
        "--out",
        out,
        "--dry-run",
        "--json",
        "--no-substitute",
    ];
    let minimal = crate::common::minimal();
    if !extra.contains(&"--config") {
        a.extend(["--config", &minimal]);
    }
    a.extend(extra);
    let plan: serde_json::Value = serde_json::from_str(&ok(&mobix(t, &a))).unwrap();
    plan["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["built"] == false)
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_overlay_change_rebuilds_only_what_depends_on_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    repo_copy(t);
    let motd = t.join("overlays/greeting/files/etc/motd");
    fs::create_dir_all(motd.parent().unwrap()).unwrap();
    fs::write(&motd, "one\n").unwrap();
    fs::write(t.join("system.yaml"), "init: minimal\noverlays: [greeting]\n").unwrap();
    let cfg = ["--config", "system.yaml"];
    ok(&build(t, "store", "out", &cfg));
    assert!(unbuilt(t, "store", "out", &cfg).is_empty(), "a no-op rebuild plans nothing");

    fs::write(&motd, "two\n").unwrap();
    let plan = unbuilt(t, "store", "out", &cfg);
    // The overlay, the /etc and software tree it merges into, the toplevel above them and the
    // system image that carries the new generation: not the kernel, its modules, busybox,
    // the init programs, the initramfs or the boot image.
    let want: BTreeSet<String> = ["overlay-greeting", "etc", "sw", "mobix-system-qemu-aarch64", "system.img"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(plan, want, "the plan rebuilds exactly what depends on the overlay");
    let dry: serde_json::Value = serde_json::from_str(&ok(&mobix(
        t,
        &[
            &["build", "--device", "qemu-aarch64", "--store", "store", "--out", "out", "--dry-run", "--no-substitute"]
                [..],
            &cfg[..],
        ]
        .concat(),
    )))
    .unwrap();
    assert_eq!((dry["generation"].as_u64(), dry["new_generation"].as_bool()), (Some(2), Some(true)), "{dry}");
    let o = build(t, "store", "out", &cfg);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("built {} store paths", want.len())), "the build did what the plan said: {err}");
    assert!(err.contains("new generation 2"), "{err}");

    // The rebuild's images are the bytes the image recipes make from their inputs alone:
    // with every image deleted from the store, the same build makes them again, identical
    // (nothing of the previous generation's images goes into the new ones).
    let rebuilt = sha256s(&t.join("out"));
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(t.join("out/manifest.json")).unwrap()).unwrap();
    let images: Vec<String> = manifest["images"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["store_path"].as_str().unwrap().to_string())
        .collect();
    let mut delete = vec!["--store", "store", "store", "delete"];
    delete.extend(images.iter().map(String::as_str));
    ok(&mobix(t, &delete));
    let o = build(t, "store", "out", &cfg);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("built {} store paths", images.len())), "only the images were made again: {err}");
    assert_eq!(sha256s(&t.join("out")), rebuilt, "images made from nothing but their inputs equal the rebuild's");
    let _ = mobix::util::remove_tree(&t.join("store"));
}

#[test]
fn a_binary_cache_substitutes_a_whole_build_and_refuses_a_tampered_archive_and_gc_keeps_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    ok(&build(t, "a", "out-a", &[]));
    ok(&mobix(t, &["store", "keygen", "team-1", "--key", "team.key"]));
    ok(&mobix(t, &["--store", "a", "store", "push", "out-a", "--to", "cache", "--key", "team.key"]));

    // Another machine: a fresh store takes everything from the cache, builds nothing, and
    // its images are the same bytes.
    let o = build(t, "b", "out-b", &["--substituter", "cache", "--trust", "team.key.pub"]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("built 0 store paths, substituted"), "{err}");
    assert_eq!(sha256s(&t.join("out-a")), sha256s(&t.join("out-b")));
    ok(&mobix(t, &["--store", "b", "store", "verify"]));

    // Signed by a key nobody trusts: refused, nothing enters the store.
    ok(&mobix(t, &["store", "keygen", "other", "--key", "other.key"]));
    let o = build(t, "c", "out-c", &["--substituter", "cache", "--trust", "other.key.pub"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not signed by a trusted key (signed by: team-1)"), "{err}");
    assert!(!t.join("c").exists() || store_names(&t.join("c")).is_empty(), "{:?}", store_names(&t.join("c")));

    // One archive changed in the cache: the build fails naming it, nothing from it enters.
    let sw_info = fs::read_dir(t.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-sw.json"))
        .unwrap();
    let sw_info: serde_json::Value = serde_json::from_slice(&fs::read(sw_info).unwrap()).unwrap();
    let victim = t.join("cache").join(sw_info["archive"].as_str().unwrap());
    let mut bytes = fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0x55;
    fs::write(&victim, &bytes).unwrap();
    let o = build(t, "d", "out-d", &["--substituter", "cache", "--trust", "team.key.pub"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{} (the archive of ", sw_info["archive"].as_str().unwrap())), "{err}");
    assert!(err.contains("-sw) was tampered with or damaged"), "{err}");
    assert!(!store_names(&t.join("d")).iter().any(|e| e.ends_with("-sw")), "the tampered path is not in the store");

    // gc: the first store's out directory and generation keep the system; what only the
    // build needed (Debian's kernel package, busybox's) goes, and the store still verifies
    // and rebuilds nothing.
    let before = store_names(&t.join("a"));
    let dry = mobix(t, &["--store", "a", "gc", "--dry-run"]);
    let listed = ok(&dry);
    assert_eq!(store_names(&t.join("a")), before, "--dry-run removes nothing");
    assert!(listed.contains("-linux-image-") && listed.contains("-busybox-static-"), "{listed}");
    ok(&mobix(t, &["--store", "a", "gc"]));
    let after = store_names(&t.join("a"));
    assert!(!after.iter().any(|e| e.contains("-linux-image-")), "{after:?}");
    let closure = ok(&mobix(t, &["--store", "a", "store", "closure", "out-a"]));
    for line in closure.lines() {
        let base = line.trim_start_matches("/mobix/store/");
        assert!(after.contains(base), "gc removed {base}, which out-a needs");
    }
    ok(&mobix(t, &["--store", "a", "store", "verify"]));
    let again = build(t, "a", "out-a", &[]);
    ok(&again);
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to build"));
    // With the out directory gone, the system image goes too; the generation's toplevel
    // and boot image stay.
    mobix::util::remove_tree(&t.join("out-a")).unwrap();
    let freed = ok(&mobix(t, &["--store", "a", "gc"]));
    assert!(freed.contains("-system.img"), "{freed}");
    let left = store_names(&t.join("a"));
    assert!(left.iter().any(|e| e.ends_with("-mobix-system-qemu-aarch64")), "{left:?}");
    assert!(left.iter().any(|e| e.ends_with("-boot.img")), "{left:?}");
    for s in ["a", "b", "c", "d"] {
        let _ = mobix::util::remove_tree(&t.join(s));
    }
}

/// A small deterministic pseudo-random sequence (so a failure can be replayed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn builds_killed_at_random_moments_leave_a_store_that_verifies_and_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // How long a whole cold build takes here, to spread the kills over it: timed on a
    // second one, once the download and cargo caches are warm (the first may compile the
    // init programs' dependencies, which later builds do not).
    ok(&build(t, "reference", "out-ref", &[]));
    let _ = mobix::util::remove_tree(&t.join("reference"));
    let t0 = Instant::now();
    ok(&build(t, "reference", "out-ref", &[]));
    let cold = t0.elapsed();
    eprintln!("a cold build takes {cold:?}");
    let _ = mobix::util::remove_tree(&t.join("reference"));
    let mut rng = Lcg(0x6d6f6269785f6b39);
    let mut finished_early = 0;
    // Kills are spread over half a cold build; a build that finished before its kill (the
    // machine was faster than when timed) halves that span, so kills keep landing mid-build
    // however loaded the machine is.
    let mut cap_ms = cold.as_millis() as u64 / 2;
    for round in 0..20 {
        // Every fifth round starts from an empty store again, so kills keep landing in the
        // middle of a build rather than after it finished.
        if round % 5 == 0 {
            let _ = mobix::util::remove_tree(&t.join("s"));
        }
        let delay = Duration::from_millis(rng.next() % cap_ms.max(300));
        let mut child = crate::common::mobix_cmd()
            .args([
                "build",
                "--device",
                "qemu-aarch64",
                "--store",
                "s",
                "--out",
                "out",
                "--config",
                &crate::common::minimal(),
                "--no-substitute",
            ])
            .arg("--repo")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .current_dir(t)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            finished_early += 1;
            cap_ms /= 2;
        }
        // SIGKILL to mobix and the tools it runs: no destructor, no cleanup.
        crate::common::kill_group(&mut child);
        let v = mobix(t, &["--store", "s", "store", "verify"]);
        assert!(
            v.status.success(),
            "round {round}: killed after {delay:?}, the store does not verify:\n{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        for e in store_names(&t.join("s")) {
            assert!(!e.contains(".tmp") && !e.ends_with(".partial"), "round {round}: {e} left behind");
        }
    }
    eprintln!("{finished_early} of 20 builds finished before their kill");
    // Kills after the end prove nothing; most must land mid-build (here: 0 of 20 finish).
    assert!(finished_early <= 8, "too few builds were interrupted ({finished_early} of 20 finished)");
    ok(&build(t, "s", "out", &[]));
    ok(&mobix(t, &["--store", "s", "store", "verify"]));
    assert_eq!(sha256s(&t.join("out")), sha256s(&t.join("out-ref")), "interrupted builds change nothing");
    let _ = mobix::util::remove_tree(&t.join("s"));
}

#[test]
fn lock_update_repins_to_what_apt_has_and_dry_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    repo_copy(t);
    let lock_path = t.join("mobix.lock");
    let original: serde_json::Value = serde_json::from_slice(&fs::read(&lock_path).unwrap()).unwrap();
    // An old pin of busybox (a version and hash the mirror does not have).
    let mut old = original.clone();
    old["debs"]["busybox"]["version"] = "1:1.30.1-1".into();
    old["debs"]["busybox"]["sha256"] = "00".repeat(32).into();
    fs::write(&lock_path, serde_json::to_string_pretty(&old).unwrap() + "\n").unwrap();
    let before = fs::read(&lock_path).unwrap();

    let dry = ok(&mobix(t, &["lock", "update", "busybox", "--dry-run"]));
    assert!(dry.contains("debs.busybox: busybox-static 1:1.30.1-1 -> "), "{dry}");
    assert_eq!(fs::read(&lock_path).unwrap(), before, "--dry-run leaves mobix.lock alone");

    ok(&mobix(t, &["lock", "update", "busybox"]));
    let now: serde_json::Value = serde_json::from_slice(&fs::read(&lock_path).unwrap()).unwrap();
    // What apt's index says about its candidate, asked directly (the host's own apt need
    // not know arm64 at all).
    // (Under the root's lock, as mobix takes it: another test may be updating its lists.)
    let show = crate::common::tool(
        Command::new("flock")
            .arg(crate::common::apt_conf().with_file_name("lock"))
            .args(["apt-cache", "show", "--no-all-versions", "busybox-static:arm64"])
            .env("APT_CONFIG", crate::common::apt_conf()),
    );
    let field = |k: &str| show.lines().find_map(|l| l.strip_prefix(&format!("{k}: "))).unwrap().trim().to_string();
    assert_eq!(now["debs"]["busybox"]["version"], field("Version"));
    assert_eq!(now["debs"]["busybox"]["sha256"], field("SHA256"));
    // Nothing else moved.
    let mut rest = now.clone();
    rest["debs"]["busybox"] = original["debs"]["busybox"].clone();
    assert_eq!(rest, original);

    let o = mobix(t, &["lock", "update", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no entry \"nope\""));
}

/// The init programs compile from their vendored crates, offline: with the crates path
/// imported from a cache, a build with an empty cargo home and cargo's network off
/// succeeds and gives the same binary.
#[test]
fn the_init_programs_build_offline_from_their_vendored_crates() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    ok(&build(t, "a", "out-a", &[]));
    let crates = store_names(&t.join("a")).into_iter().find(|e| e.ends_with("-mobix-init-crates")).unwrap();
    let init = store_names(&t.join("a")).into_iter().find(|e| e.ends_with("-mobix-init")).unwrap();
    assert!(t.join("a").join(&crates).join(".").read_dir().unwrap().count() > 5, "crates were vendored");
    ok(&mobix(t, &["store", "keygen", "k", "--key", "k.key"]));
    ok(&mobix(t, &["--store", "a", "store", "push", &format!("a/{crates}"), "--to", "cache", "--key", "k.key"]));
    ok(&mobix(t, &["--store", "b", "store", "pull", "cache", "--trust", "k.key.pub"]));
    fs::create_dir(t.join("empty-cargo-home")).unwrap();
    // mobix's cargo cache empty too (its compiled crates would stand in for compiling
    // them), the downloaded Debian packages linked in (what this test is not about).
    let cache = t.join("mobix-cache");
    fs::create_dir(&cache).unwrap();
    let downloads = std::env::var_os("MOBIX_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| std::path::PathBuf::from(x).join("mobix")))
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/mobix"))
        .join("downloads");
    if downloads.is_dir() {
        let st = Command::new("cp").arg("-al").arg(&downloads).arg(cache.join("downloads")).status().unwrap();
        assert!(st.success());
    }
    let o = crate::common::mobix_cmd()
        .args([
            "build",
            "--device",
            "qemu-aarch64",
            "--store",
            "b",
            "--out",
            "out-b",
            "--config",
            &crate::common::minimal(),
            "--no-substitute", // built here, whatever binary caches the run has
        ])
        .arg("--repo")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .current_dir(t)
        .env("CARGO_HOME", t.join("empty-cargo-home"))
        .env("CARGO_NET_OFFLINE", "true")
        .env("MOBIX_CACHE", &cache)
        .output()
        .unwrap();
    ok(&o);
    let compiled = cache.join("cargo-target");
    assert!(
        fs::read_dir(&compiled).is_ok_and(|mut d| d.next().is_some()),
        "the init programs were compiled here, into {}",
        compiled.display()
    );
    let bin = |s: &str| fs::read(t.join(s).join(&init).join("bin/mobix-init")).unwrap();
    assert_eq!(bin("a"), bin("b"), "the offline build gives the same binary");
    // The phone's system does not carry the crates' sources.
    let why = mobix(t, &["--store", "a", "store", "why-depends", "out-a", &crates]);
    assert_eq!(why.status.code(), Some(1), "{}", String::from_utf8_lossy(&why.stdout));
    for s in ["a", "b"] {
        let _ = mobix::util::remove_tree(&t.join(s));
    }
}

#[test]
fn two_builds_at_once_on_one_store_both_complete_and_get_their_own_generations() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let repo = env!("CARGO_MANIFEST_DIR");
    let spawn = |host: &str| {
        let cfg = t.join(format!("{host}.yaml"));
        fs::write(&cfg, format!("hostname: {host}\ninit: minimal\n")).unwrap();
        crate::common::mobix_cmd()
            .args([
                "build",
                "--device",
                "qemu-aarch64",
                "--repo",
                repo,
                "--store",
                "store",
                "--no-substitute",
                "--config",
            ])
            .arg(&cfg)
            .args(["--out", &format!("out-{host}")])
            .current_dir(t)
            .output()
    };
    // Two systems that share everything but /etc, started together on one empty store.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn("alpha").unwrap());
        let b = s.spawn(|| spawn("beta").unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    ok(&a);
    ok(&b);
    let both = format!("{}{}", String::from_utf8_lossy(&a.stderr), String::from_utf8_lossy(&b.stderr));
    assert!(both.contains("waiting for another mobix process"), "one build waited for the other:\n{both}");
    ok(&mobix(t, &["--store", "store", "store", "verify"]));
    // Each got a generation of its own: numbers are not handed out twice.
    let gen = |host: &str| {
        let m: serde_json::Value =
            serde_json::from_slice(&fs::read(t.join(format!("out-{host}/manifest.json"))).unwrap()).unwrap();
        (m["generation"].as_u64().unwrap(), m["toplevel"].as_str().unwrap().to_string())
    };
    let (ga, ta) = gen("alpha");
    let (gb, tb) = gen("beta");
    assert_ne!(ta, tb);
    assert_eq!([ga, gb], [1, 1], "each out directory numbers its own generations");
    for (host, top) in [("alpha", &ta), ("beta", &tb)] {
        let out = format!("out-{host}");
        let list = ok(&mobix(
            t,
            &["--store", "store", "generations", "list", "--device", "qemu-aarch64", "--repo", repo, "--out", &out],
        ));
        assert!(list.contains(top.as_str()), "{host}'s generation is recorded in its lineage:\n{list}");
    }

    // Two builds at once into one out directory: the second waits for the first, so the
    // out directory ends with the newer generation (not whichever was slower).
    let spawn_to = |host: &str, out: &str| {
        let cfg = t.join(format!("{host}.yaml"));
        fs::write(&cfg, format!("hostname: {host}\ninit: minimal\n")).unwrap();
        crate::common::mobix_cmd()
            .args([
                "build",
                "--device",
                "qemu-aarch64",
                "--repo",
                repo,
                "--store",
                "store",
                "--no-substitute",
                "--config",
            ])
            .arg(&cfg)
            .args(["--out", out])
            .current_dir(t)
            .output()
            .unwrap()
    };
    let (c, d) = std::thread::scope(|s| {
        let c = s.spawn(|| spawn_to("gamma", "shared-out"));
        let d = s.spawn(|| spawn_to("delta", "shared-out"));
        (c.join().unwrap(), d.join().unwrap())
    });
    ok(&c);
    ok(&d);
    let both = format!("{}{}", String::from_utf8_lossy(&c.stderr), String::from_utf8_lossy(&d.stderr));
    assert!(both.contains("another mobix build is writing"), "one build waited:\n{both}");
    let m: serde_json::Value = serde_json::from_slice(&fs::read(t.join("shared-out/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["generation"].as_u64(), Some(2), "the out directory holds the newest generation: {m}");
}

/// `store verify`'s hint, followed as written, repairs the store: the damaged path is
/// deleted, the next build realises it again under the present paths that refer to it.
/// A build that fails records no generation.
#[test]
fn the_repair_hint_works_as_written_and_a_failed_build_records_no_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    ok(&build(t, "s", "o", &[]));
    let gens = |t: &Path| -> usize {
        let o = ok(&mobix(
            t,
            &[
                "generations",
                "list",
                "--device",
                "qemu-aarch64",
                "--store",
                "s",
                "--json",
                "--out",
                "o",
                "--repo",
                env!("CARGO_MANIFEST_DIR"),
            ],
        ));
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        v["generations"].as_array().unwrap().len()
    };
    assert_eq!(gens(t), 1);

    // Damage the etc path (a user's stray edit).
    let etc = crate::common::store_entry(&t.join("s"), "-etc");
    let victim = etc.join("hostname");
    let mut perm = fs::metadata(&etc).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    fs::set_permissions(&etc, perm).unwrap();
    fs::remove_file(&victim).unwrap();
    fs::write(&victim, "tampered\n").unwrap();
    let v = mobix(t, &["store", "verify", "--store", "s"]);
    assert_eq!(v.status.code(), Some(1));
    let err = String::from_utf8_lossy(&v.stderr);
    let hint = err.lines().find_map(|l| l.strip_prefix("hint: delete them with `")).expect("a hint").to_string();
    let command = hint.split('`').next().unwrap();
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(&words[..3], ["mobix", "store", "delete"], "{command}");
    let mut args: Vec<&str> = words[1..].to_vec();
    args.extend(["--store", "s"]);
    ok(&mobix(t, &args));
    // Its dependants (toplevel, system image) are still there; the build puts etc back.
    let o = ok(&build(t, "s", "o", &[]));
    let _ = o;
    ok(&mobix(t, &["store", "verify", "--store", "s"]));
    assert_eq!(gens(t), 1, "the same system: no new generation");

    // A system whose image cannot be made (a partition far too small) fails after its
    // system is built: no generation is recorded for it.
    fs::write(t.join("small.yaml"), "hostname: too-big\ninit: minimal\ndevice:\n  system: { size: 1MiB }\n").unwrap();
    let failed = build(t, "s", "o", &["--config", "small.yaml"]);
    assert_eq!(failed.status.code(), Some(1), "{}", String::from_utf8_lossy(&failed.stderr));
    assert_eq!(gens(t), 1, "a failed build records no generation");
}

/// What a build killed by a signal leaves in the store's temporary directory goes with the
/// next build or `mobix gc`, which says so.
#[test]
fn gc_clears_and_reports_what_an_interrupted_build_left() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let left = t.join("store/.mobix/tmp/build-xyz-kernel/linux");
    fs::create_dir_all(&left).unwrap();
    fs::write(left.join("vmlinux.o"), vec![7u8; 3 << 20]).unwrap();
    let o = mobix(t, &["gc", "--store", "store"]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("removed what 1 interrupted build(s) left in") && err.contains("(3.0 MiB)"), "{err}");
    assert!(!t.join("store/.mobix/tmp/build-xyz-kernel").exists());
}
