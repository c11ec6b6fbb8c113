//! The fallback scenarios of the generations work, end to end on the emulated phone:
//! `mobix test --scenario NAME` builds each scenario's generations, boots them power cycle
//! after power cycle through the A/B bootloader, and checks slot, generation, tries and
//! outcome of every boot and the boot-state record at the end.
//!
//! Every scenario runs under the real bootloader, U-Boot built by the store from Debian's
//! source (`--bootloader u-boot`); at each of those boots mobix also runs its own model of
//! the A/B rules on the same misc and fails if the slot or the metadata left in misc
//! differ, which is what lets the model stand in elsewhere. One scenario runs under the
//! model too.

use std::process::Command;

mod common;
use common::repo;

/// Runs one scenario in the shared test store under U-Boot; returns its JSON report.
fn scenario(name: &str) -> serde_json::Value {
    scenario_with(name, "u-boot")
}

fn scenario_with(name: &str, bootloader: &str) -> serde_json::Value {
    let store = repo().join("target/mobix-test-store");
    let out = tempfile::tempdir().unwrap();
    let r = repo();
    let o = Command::new(env!("CARGO_BIN_EXE_mobix"))
        .args(["test", "--device", "qemu-aarch64", "--json", "--scenario", name, "--config", &common::minimal()])
        .args(["--repo", r.to_str().unwrap(), "--store", store.to_str().unwrap()])
        .args(["--out", out.path().to_str().unwrap(), "--bootloader", bootloader])
        .output()
        .expect("running mobix");
    let err = String::from_utf8_lossy(&o.stderr);
    let progress: Vec<&str> = err.lines().filter(|l| !l.starts_with("mobix: build")).collect();
    eprintln!("{}", progress.join("\n"));
    assert!(o.status.success(), "scenario {name} failed ({}):\n{err}", o.status);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
    let log = std::fs::read_to_string(report["serial_log"].as_str().unwrap()).unwrap();
    let by_u_boot = log.lines().filter(|l| l.starts_with("MOBIX-UBOOT slot=")).count();
    let boots = report["boots"].as_array().unwrap().len();
    assert_eq!(by_u_boot, if bootloader == "u-boot" { boots } else { 0 }, "boots U-Boot chose a slot for");
    report
}

fn chosen(report: &serde_json::Value) -> Vec<(Option<u64>, String, String)> {
    report["boots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["generation"].as_u64(),
                b["slot"].as_str().unwrap_or("-").to_string(),
                b["status"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

// One test drives them all in turn: QEMU boots run one at a time on a 2-core machine.
#[test]
fn fallback_scenarios_on_the_emulated_phone() {
    let s = |g: u64, slot: &str, st: &str| (Some(g), slot.to_string(), st.to_string());
    let r = scenario("s1");
    assert_eq!(chosen(&r), [s(1, "a", "trial"), s(2, "a", "trial")]);

    let r = scenario("s2");
    let t = |g| s(g, "a", "trial");
    assert_eq!(chosen(&r), [t(1), t(2), t(2), t(2), s(1, "a", "good"), s(1, "a", "good")]);
    let tries: Vec<u64> = r["boots"].as_array().unwrap().iter().map(|b| b["tries_left"].as_u64().unwrap()).collect();
    assert_eq!(&tries[1..4], [2, 1, 0], "each trial boot spends one try before it runs");

    let r = scenario("s3");
    assert_eq!(chosen(&r)[1..5], [t(2), t(2), t(2), s(1, "a", "good")]);
    assert!(r["boots"][1]["trial_timeout"].as_bool().unwrap(), "the hang ended by the trial deadline");

    let r = scenario("s4");
    let c = chosen(&r);
    assert_eq!(
        c[1..4],
        [(None, "b".into(), "-".into()), (None, "b".into(), "-".into()), (None, "b".into(), "-".into())]
    );
    assert_eq!(c[4], s(1, "a", "good"));

    let r = scenario("s5");
    assert_eq!(chosen(&r)[2..], [s(2, "a", "good"), s(2, "a", "degraded")]);

    let r = scenario("s6");
    assert_eq!(chosen(&r)[1..], [s(10, "a", "trial"), s(1, "a", "manual")]);

    let r = scenario("s7");
    assert_eq!(chosen(&r).len(), 8);

    let r = scenario("s8");
    let b2 = s(2, "b", "trial");
    assert_eq!(
        chosen(&r)[1..],
        [b2.clone(), b2.clone(), b2, (None, "b".into(), "-".into()), s(1, "a", "good")],
        "generation 2 fails its tries on slot b, stage-1 switches back, generation 1 boots on slot a"
    );

    let r = scenario("menu");
    assert_eq!(chosen(&r).last().unwrap(), &s(1, "a", "manual"));

    // The model that `mobix test` uses by default takes the same path.
    let r = scenario_with("s4", "model");
    assert_eq!(chosen(&r)[1..], c[1..]);
}
