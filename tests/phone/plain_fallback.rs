//! The mission's headline in its simplest form, exactly as a user would try it: build a
//! good generation and `mobix test` it; build one whose health check fails and `mobix test`
//! again. The phone tries the bad one its N times and falls back to the good one by itself,
//! and `mobix test` says so (exit 1: the build under test did not boot).

use std::path::Path;

use crate::common::{mobix_in, mobix_shared as mobix, ok, repo};

fn build(out: &Path, config: &Path) -> u64 {
    ok(&mobix(&[
        "build",
        "--device",
        "qemu-aarch64",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
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
    let list: serde_json::Value =
        serde_json::from_str(&ok(&mobix(&["generations", "list", "--device", "qemu-aarch64", "--json"]))).unwrap();
    let phone = |g: u64| {
        list["generations"].as_array().unwrap().iter().find(|r| r["generation"] == g).unwrap()["phone"].clone()
    };
    assert_eq!(phone(g2)["status"], "bad", "{list:#}");
    assert_eq!(phone(g2)["bad_reason"], "tries");
    assert_eq!((phone(g1)["status"].as_str(), phone(g1)["booted"].as_bool()), (Some("good"), Some(true)));
    let text = ok(&mobix(&["generations", "list", "--device", "qemu-aarch64"]));
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
    // A store of its own: a generation of this test's in the shared store, never booted and
    // so still a trial, would be carried and tried by the other test's builds running beside.
    let store = t.path().join("store");
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
