//! The mission's headline in its simplest form, exactly as a user would try it: build a
//! good generation and `mobix test` it; build one whose health check fails and `mobix test`
//! again. The phone tries the bad one its N times and falls back to the good one by itself,
//! and `mobix test` says so (exit 1: the build under test did not boot).

use std::path::Path;

use crate::common::{mobix_in, mobix_shared as mobix, ok, repo};

fn build(out: &Path, config: &Path) -> u64 {
    ok(&crate::common::build_shared(config, out));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    m["generation"].as_u64().unwrap()
}

fn test(out: &Path) -> (std::process::Output, serde_json::Value) {
    let o = mobix(&["test", "--device", "qemu-aarch64", "--json", "--out", out.to_str().unwrap()]);
    let v = serde_json::from_slice(&o.stdout).expect("a JSON outcome, pass or fail");
    (o, v)
}

#[test]
fn a_bad_update_falls_back_by_itself_under_plain_mobix_test() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let good = t.path().join("good.yaml");
    let bad = t.path().join("bad.yaml");
    std::fs::write(&good, "hostname: plain-fallback\ninit: minimal\n").unwrap();
    std::fs::write(
        &bad,
        "hostname: plain-fallback\ninit: minimal\nhealth_checks: [{name: bad, command: [\"false\"]}]\n",
    )
    .unwrap();

    let g1 = build(&out, &good);
    let (o, v) = test(&out);
    assert!(o.status.success(), "the good generation boots: {v:#}");
    assert_eq!(v["generation"].as_u64(), Some(g1));

    let g2 = build(&out, &bad);
    assert!(g2 > g1, "a new generation: {g1} then {g2}");
    let (o, v) = test(&out);
    assert_eq!(o.status.code(), Some(1), "the generation under test did not boot: {v:#}");
    let boots = v["boots"].as_array().unwrap();
    let gens: Vec<(Option<u64>, bool)> =
        boots.iter().map(|b| (b["generation"].as_u64(), b["health_failed"] == true)).collect();
    assert_eq!(
        gens,
        [(Some(g2), true), (Some(g2), true), (Some(g2), true), (Some(g1), false)],
        "tried its three times, then the good one: {v:#}"
    );
    assert!(boots.iter().all(|b| b["slot"] == "a"), "all within slot a: {v:#}");
    assert_eq!(boots.last().unwrap()["ending"], "complete");
    assert_eq!(v["fell_back_to"].as_u64(), Some(g1));
    let err = String::from_utf8_lossy(&o.stderr);
    let said = format!(
        "error: generation {g2} of qemu-aarch64 did not boot: generation {g2} failed its health check 3 times; \
         the phone fell back to generation {g1}, which is good"
    );
    assert!(err.contains(&said), "{err}");

    // What the phone reported is what `generations list` shows.
    let o = out.to_str().unwrap();
    let list: serde_json::Value =
        serde_json::from_str(&ok(&mobix(&["generations", "list", "--device", "qemu-aarch64", "--json", "--out", o])))
            .unwrap();
    let phone = |g: u64| {
        list["generations"].as_array().unwrap().iter().find(|r| r["generation"] == g).unwrap()["phone"].clone()
    };
    assert_eq!(phone(g2)["status"], "bad", "{list:#}");
    assert_eq!(phone(g2)["bad_reason"], "tries");
    assert_eq!((phone(g1)["status"].as_str(), phone(g1)["booted"].as_bool()), (Some("good"), Some(true)));
    let text = ok(&mobix(&["generations", "list", "--device", "qemu-aarch64", "--out", o]));
    let line = |g: u64| text.lines().find(|l| l.trim_start().starts_with(&format!("{g} "))).unwrap().to_string();
    assert!(line(g2).contains("bad (tries)"), "{text}");
    assert!(line(g1).contains("good, booted"), "{text}");
}

/// `mobix test` boots what was built: with the system config the build used (its manifest
/// names it), never with another one, and only for profiles that can be emulated.
#[test]
fn mobix_test_boots_the_config_the_build_used() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let built = t.path().join("built.yaml");
    let other = t.path().join("other.yaml");
    std::fs::write(
        &built,
        "hostname: config-kept\ninit: minimal\nhealth_checks: [{name: bad, command: [\"false\"]}]\n",
    )
    .unwrap();
    std::fs::write(&other, "hostname: config-other\ninit: minimal\n").unwrap();
    // The shared store: this test's generations are the lineage of its own out directory, so
    // its never-booted trial rides along on no other test's images.
    let store = crate::common::shared_store();
    let mobix = |args: &[&str]| {
        let r = repo();
        mobix_in(t.path(), &[args, &["--repo", r.to_str().unwrap(), "--store", store.to_str().unwrap()]].concat())
    };
    ok(&mobix(&[
        "build",
        "--device",
        "qemu-aarch64",
        "--config",
        built.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["config"]["path"], built.canonicalize().unwrap().to_str().unwrap(), "{m:#}");

    let o = mobix(&[
        "test",
        "--device",
        "qemu-aarch64",
        "--config",
        other.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("was made with") && err.contains("not with") && err.contains("other.yaml"), "{err}");
    assert!(err.contains("hint: build it first: `mobix build --device qemu-aarch64 --config"), "{err}");
    assert!(!err.contains("booting"), "refused before booting anything: {err}");

    std::fs::write(&built, "hostname: config-edited\n").unwrap();
    let o = mobix(&["test", "--device", "qemu-aarch64", "--out", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("built.yaml that the build in") && err.contains("has changed or is gone"), "{err}");

    let o = mobix(&["test", "--device", "oneplus-enchilada", "--out", t.path().join("none").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("device oneplus-enchilada cannot be emulated"), "{err}");
    assert!(!err.contains("booting"), "{err}");
}

/// Issue 30's flow, booted: the owner's generation 1 booted good; a throwaway test system
/// built into another out directory is its own lineage (numbered there, never carried
/// here); a test system built into this out directory is said to come from another config
/// and is carried untried; the update after it fails its only try. The phone falls back to
/// generation 1, the one that booted good on it (and says so), not to the newer untried 2.
#[test]
fn a_failed_update_falls_back_to_the_generation_that_last_booted_good_not_a_newer_untried_one() {
    let t = tempfile::tempdir().unwrap();
    let (main, tiny_out) = (t.path().join("out-main"), t.path().join("out-tiny"));
    let cfg = |name: &str, text: &str| {
        let p = t.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let owner = cfg("pocket.yaml", "hostname: lineage-owner\ninit: minimal\nboot: {tries: 1}\n");
    let tiny = cfg("tiny.yaml", "hostname: lineage-tiny\ninit: minimal\nboot: {tries: 1}\n");
    let update = cfg(
        "update.yaml",
        "hostname: lineage-owner\ninit: minimal\nboot: {tries: 1}\nhealth_checks: [{name: bad, command: [\"false\"]}]\n",
    );
    let list = |out: &Path| -> Vec<serde_json::Value> {
        let o =
            ok(&mobix(&["generations", "list", "--device", "qemu-aarch64", "--json", "--out", out.to_str().unwrap()]));
        serde_json::from_str::<serde_json::Value>(&o).unwrap()["generations"].as_array().unwrap().clone()
    };

    assert_eq!(build(&main, &owner), 1, "a new out directory numbers from 1");
    let (o, v) = test(&main);
    assert!(o.status.success(), "the owner's system boots: {v:#}");
    assert_eq!(build(&tiny_out, &tiny), 1, "another out directory is another lineage, numbered on its own");
    // The README's tiny system built into the owner's out directory: carried, and said so.
    let o = mobix(&[
        "build",
        "--device",
        "qemu-aarch64",
        "--config",
        tiny.to_str().unwrap(),
        "--out",
        main.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("generation 2 is built from")
            && err.contains("tiny.yaml, generation 1 of this out directory from"),
        "{err}"
    );
    assert_eq!(build(&main, &update), 3, "the throwaway in the other out directory took no number here");

    let (o, v) = test(&main);
    assert_eq!(o.status.code(), Some(1), "the update did not boot: {v:#}");
    let boots: Vec<Option<u64>> = v["boots"].as_array().unwrap().iter().map(|b| b["generation"].as_u64()).collect();
    assert_eq!(boots, [Some(3), Some(1)], "its one try, then generation 1, never the untried 2: {v:#}");
    assert_eq!(v["fell_back_to"].as_u64(), Some(1));
    let serial = std::fs::read_to_string(v["serial_log"].as_str().unwrap()).unwrap();
    assert!(
        serial.contains(
            "the default generation 3 is bad (tries): falling back to generation 1, the last one that booted good on this phone"
        ),
        "stage-1 says why it boots generation 1:\n{serial}"
    );

    let gens = list(&main);
    let numbers: Vec<u64> = gens.iter().map(|g| g["generation"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3], "{gens:#?}");
    let status = |g: &serde_json::Value| g["phone"]["status"].as_str().map(str::to_string);
    assert_eq!(
        gens.iter().map(status).collect::<Vec<_>>(),
        [Some("good".into()), Some("trial".into()), Some("bad".into())]
    );
    assert!(gens[1]["config"].as_str().unwrap().ends_with("tiny.yaml"), "{gens:#?}");
    let other = list(&tiny_out);
    assert_eq!(other.len(), 1, "{other:#?}");
    assert_eq!(other[0]["phone"], serde_json::Value::Null, "never booted: no phone record of its own");
}
