//! The fallback scenarios of the generations work, end to end on the emulated phone:
//! `mobix test --scenario NAME` builds each scenario's generations, boots them power cycle
//! after power cycle through the A/B bootloader, and checks slot, generation, tries and
//! outcome of every boot and the boot-state record at the end.
//!
//! Every scenario runs under the real bootloader, U-Boot built by the store from Debian's
//! source (`--bootloader u-boot`); at each of those boots mobix also runs its own model of
//! the A/B rules on the same misc and fails if the slot or the metadata left in misc
//! differ, which is what lets the model stand in elsewhere.

use crate::common::repo;

/// Runs one scenario in the shared test store under U-Boot; returns its JSON report.
fn scenario(name: &str) -> serde_json::Value {
    let bootloader = "u-boot";
    let store = repo().join("target/mobix-test-store");
    let out = tempfile::tempdir().unwrap();
    let r = repo();
    let o = crate::common::run(
        crate::common::mobix_cmd()
            .args([
                "test",
                "--device",
                "qemu-aarch64",
                "--json",
                "--scenario",
                name,
                "--config",
                &crate::common::minimal(),
            ])
            .args(["--repo", r.to_str().unwrap(), "--store", store.to_str().unwrap()])
            .args(["--out", out.path().to_str().unwrap(), "--bootloader", bootloader]),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        // The serial log and the screenshots outlive the temporary out directory.
        let kept = repo().join("target/test-report/failed").join(format!("scenario-{name}"));
        let _ = std::fs::create_dir_all(&kept);
        let dir = out.path().join(format!("scenario-{name}"));
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if matches!(p.extension().and_then(|x| x.to_str()), Some("log" | "png" | "ppm")) {
                let _ = std::fs::copy(&p, kept.join(e.file_name()));
            }
        }
        panic!(
            "scenario {name} failed ({}); its serial log and screenshots are in {}:\n{err}",
            o.status,
            kept.display()
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
    let log = std::fs::read_to_string(report["serial_log"].as_str().unwrap()).unwrap();
    let by_u_boot = log.lines().filter(|l| l.starts_with("MOBIX-UBOOT slot=")).count();
    let boots = report["boots"].as_array().unwrap().len();
    assert_eq!(by_u_boot, boots, "boots U-Boot chose a slot for");
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

fn s(g: u64, slot: &str, st: &str) -> (Option<u64>, String, String) {
    (Some(g), slot.to_string(), st.to_string())
}

fn t(g: u64) -> (Option<u64>, String, String) {
    s(g, "a", "trial")
}

/// No generation: the boot did not reach stage-1's choice (a panicking kernel).
fn none(slot: &str) -> (Option<u64>, String, String) {
    (None, slot.to_string(), "-".to_string())
}

// Each scenario is its own test: a failure names it, and the others still run. Scenario s1
// (an update boots once as a trial, then is good) runs at the start of s5 and of `menu`,
// whose own checks fail the run if it does not hold; it is not booted on its own.

#[test]
fn s2_a_failing_health_check_is_tried_then_falls_back() {
    let r = scenario("s2");
    assert_eq!(chosen(&r), [t(1), t(2), t(2), t(2), s(1, "a", "good"), s(1, "a", "good")]);
    let tries: Vec<u64> = r["boots"].as_array().unwrap().iter().map(|b| b["tries_left"].as_u64().unwrap()).collect();
    assert_eq!(&tries[1..4], [2, 1, 0], "each trial boot spends one try before it runs");
}

#[test]
fn s3_a_hang_is_ended_by_the_trial_deadline() {
    let r = scenario("s3");
    assert_eq!(chosen(&r)[1..5], [t(2), t(2), t(2), s(1, "a", "good")]);
    assert!(r["boots"][1]["trial_timeout"].as_bool().unwrap(), "the hang ended by the trial deadline");
}

/// Every boot of every scenario here runs under U-Boot and is checked against mobix's model
/// of the A/B rules (`scenario_with` counts U-Boot's choices; `mobix test` fails a boot where
/// the model chose otherwise), so the model is not booted again on its own.
#[test]
fn s4_a_panicking_kernel_in_the_inactive_slot_returns_to_the_old_one() {
    let r = scenario("s4");
    let c = chosen(&r);
    assert_eq!(c[1..4], [none("b"), none("b"), none("b")]);
    assert_eq!(c[4], s(1, "a", "good"));
}

#[test]
fn s5_a_torn_record_uses_the_other_copy_and_two_give_a_degraded_boot() {
    let r = scenario("s5");
    assert_eq!(chosen(&r)[..2], [t(1), t(2)], "s1: the update boots once as a trial");
    assert_eq!(chosen(&r)[2..], [s(2, "a", "good"), s(2, "a", "degraded")]);
}

#[test]
fn s6_keep_3_keeps_the_booted_default_and_last_good_generations() {
    let r = scenario("s6");
    assert_eq!(chosen(&r)[1..], [s(10, "a", "trial"), s(1, "a", "manual")]);
}

#[test]
fn s7_good_reboots_keep_the_slot_bootable() {
    // Two real reboots; the rule itself over a hundred boots is misc's unit test
    // `good_reboots_never_use_up_a_successful_slot` (mobix-bootctl).
    let r = scenario("s7");
    assert_eq!(chosen(&r), [s(1, "a", "trial"), s(1, "a", "good")]);
}

#[test]
fn s8_a_kernel_whose_generations_all_fail_switches_back_to_the_old_slot() {
    let r = scenario("s8");
    let b2 = s(2, "b", "trial");
    assert_eq!(
        chosen(&r)[1..],
        [b2.clone(), b2.clone(), b2, none("b"), s(1, "a", "good")],
        "generation 2 fails its tries on slot b, stage-1 switches back, generation 1 boots on slot a"
    );
}

#[test]
fn menu_an_older_generation_is_picked_by_hand() {
    let r = scenario("menu");
    assert_eq!(chosen(&r)[..2], [t(1), t(2)], "s1: the update boots once as a trial");
    assert_eq!(chosen(&r).last().unwrap(), &s(1, "a", "manual"));
}
