use super::*;

/// A deploy uses the kept host key only for the address a running `mobix run
/// --ssh-port` of the same out directory forwards.
#[test]
fn the_kept_host_key_is_used_only_for_the_running_phones_ssh_port() {
    let t = tempfile::tempdir().unwrap();
    let lock = use_vm(t.path(), "boot it").unwrap();
    Holder::me(Some("mobix run"), Some(2222)).write(&lock);
    let known = t.path().join("vm").join(KNOWN_HOSTS);
    assert_eq!(emulated_known_hosts(t.path(), "127.0.0.1", Some(2222)), Some(known));
    assert_eq!(emulated_known_hosts(t.path(), "127.0.0.1", Some(2223)), None);
    assert_eq!(emulated_known_hosts(t.path(), "10.0.0.7", Some(2222)), None);
    let refused = format!("{:#}", use_vm(t.path(), "boot it").err().unwrap());
    assert!(
        refused.contains(&format!("(pid {}: `mobix run`, ssh on 127.0.0.1:2222)", std::process::id())),
        "{refused}"
    );
    drop(lock);
    assert_eq!(emulated_known_hosts(t.path(), "127.0.0.1", Some(2222)), None, "no phone runs");
}

fn boot() -> Boot {
    Boot::unseen()
}

/// What U-Boot printed on this machine after re-initialising an all-zero misc.
const SEEN: &str =
    "ANDROID: Booting slot: a\nMOBIX-UBOOT slot=a\n\nvirtio read: device 0 block # 2052, count 1 ... OK\n\
    MOBIX-UBOOT misc:\n47000000: 61 00 00 00 42 43 41 42 01 02 00 00 6f 00 7f 00  a...BCAB....o...\n\
    47000010: 00 00 00 00 00 00 00 00 00 00 00 00 91 a3 0d 81  ................\n\nvirtio read: ...";

#[test]
fn reads_what_u_boot_printed_and_compares_it_with_the_model() {
    let mut saw = UBootSaw::default();
    let mut b = boot();
    for l in SEEN.lines() {
        saw.scan(l, &mut b);
    }
    assert_eq!(b.slot, Some(Slot::A));
    assert_eq!(saw.misc.len(), 32);
    // The model on an all-zero misc: re-initialised, slot a, one try spent.
    let sel = misc::select_slot(&[0; 32], true).unwrap();
    let want = (Ok(Slot::A), sel.control.clone().encode());
    assert_eq!(saw.agrees_with(&want), Ok(()));
    let mut other = want.1;
    other[12] ^= 0x10;
    assert!(saw.agrees_with(&(Ok(Slot::A), other)).unwrap_err().contains("misc after U-Boot"));
    assert!(saw.agrees_with(&(Ok(Slot::B), want.1)).unwrap_err().contains("U-Boot chose slot a, the model slot b"));
}

#[test]
fn no_slot_agrees_only_with_no_slot() {
    let mut saw = UBootSaw::default();
    let mut b = boot();
    saw.scan("MOBIX-UBOOT no-slot", &mut b);
    assert_eq!(b.ending, Ending::NoBoot);
    assert_eq!(saw.agrees_with(&(Err("no bootable slot".into()), [0; 32])), Ok(()));
    assert!(saw.agrees_with(&(Ok(Slot::A), [0; 32])).is_err());
}

#[test]
fn a_failed_health_check_is_told_with_its_reason_and_what_followed() {
    let mut b = boot();
    scan("mobix: GEN-CHOSEN generation=1 status=good tries_left=0", &mut b);
    scan(
        "[   41.2] mobix-init[301]: mobix: HEALTH-FAILED generation=1: health check usb failed (exit status: 1)",
        &mut b,
    );
    scan("mobix: HEALTH-FAILED generation=1: health check other failed (exit status: 2)", &mut b);
    assert!(b.health_failed);
    assert_eq!(b.note, "health check usb failed (exit status: 1)", "the first failure is the reason");
    // A good generation is not rebooted: the boot ends when its time is up.
    assert!(b.summary().contains("health check failed (health check usb failed (exit status: 1)); not rebooted"));
    b.ending = Ending::Rebooted;
    assert!(b.summary().ends_with("health check failed (health check usb failed (exit status: 1)), rebooted (0.0s)"));
}

#[test]
fn the_boots_times_are_read_from_the_console() {
    let mut b = boot();
    scan("[   11.2] init[167]: mobix: boot-complete generation=1 toplevel=/mobix/store/t", &mut b);
    assert!(b.times.is_none(), "no times before the phone says them");
    scan(
        "[   11.6] init[167]: mobix: BOOT-TIMES generation=1 kernel_ms=990 stage1_ms=1410 activation_ms=400 \
         complete_ms=9400 slowest=systemd-networkd.service/2374,ssh.service/603",
        &mut b,
    );
    let t = b.times.expect("read");
    assert_eq!((t.kernel_ms, t.stage1_ms, t.activation_ms, t.complete_ms), (990, 1410, 400, 9400));
    assert_eq!(t.slowest[1], ("ssh.service".to_string(), 603));
}
