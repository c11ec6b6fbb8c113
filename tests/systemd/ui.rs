//! The phone UI (`ui: phosh`) on the emulated phone, as its owner meets it: the config of
//! docs/phone-ui.md (a user with a key and a PIN made by `mobix config hash-pin`, ssh, one
//! app) builds and boots to Phosh's lock screen; the screen is looked at (screenshots kept
//! under the test's output, checked for what tells a lock screen from a console or a
//! uniform frame), the PIN is typed on the emulated keyboard, the session's own answer
//! (`org.gnome.ScreenSaver.GetActive` on the user's session bus, read over ssh) says
//! whether it is locked, and a tap on the touch device starts the app. Then a deploy whose
//! UI cannot start fails its `ui` health check, the phone falls back by itself, and the
//! generation it fell back to shows the fallback as a notification on its lock screen.

use crate::common::{mobix_cmd, ok, phone, repo, repo_copy, ssh_keygen, Group, Story};
use mobix::vm::{read_ppm, Qmp};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The systemd tests' store: the UI's system shares systemd, OpenSSH and the rest with theirs.
fn store() -> PathBuf {
    repo().join("target/mobix-test-store-systemd")
}

const PIN: &str = "2468";
const WIDTH: usize = 720;
const HEIGHT: usize = 1440;

/// A screenshot as RGB rows.
struct Shot {
    rgb: Vec<u8>,
}

impl Shot {
    fn take(qmp: &mut Qmp, dir: &Path, name: &str) -> Shot {
        let ppm = dir.join(format!("{name}.ppm"));
        qmp.settled_screendump(&ppm, "ppm").unwrap();
        // The PNG is kept for a person to look at (QEMU writes it from the same frame).
        qmp.screendump(&dir.join(format!("{name}.png")), "png").unwrap();
        let bytes = fs::read(&ppm).unwrap();
        let (w, h, rgb) = read_ppm(&bytes).unwrap();
        assert_eq!((w as usize, h as usize), (WIDTH, HEIGHT), "the emulated phone's screen");
        Shot { rgb: rgb.to_vec() }
    }

    fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * WIDTH + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The share of pixels in rows `rows` for which `f` holds.
    fn share(&self, rows: std::ops::Range<usize>, f: impl Fn([u8; 3]) -> bool) -> f64 {
        let n = rows.len() * WIDTH;
        let hits = rows.flat_map(|y| (0..WIDTH).map(move |x| (x, y))).filter(|&(x, y)| f(self.pixel(x, y))).count();
        hits as f64 / n as f64
    }

    /// Phosh's lock screen: black, with the time in large white digits across the middle
    /// of the screen (rows 40-52 %) and nothing bright in the top quarter but the small
    /// arrow of the top panel. A console or stage-1's screen has its text at the top on
    /// another background; a uniform frame has no digits.
    fn lock_screen(&self) -> Result<(), String> {
        let black = |p: [u8; 3]| p.iter().all(|&c| c < 12);
        let white = |p: [u8; 3]| p.iter().all(|&c| c > 200);
        let all = self.share(0..HEIGHT, black);
        let clock = self.share(HEIGHT * 40 / 100..HEIGHT * 52 / 100, white);
        let top = self.share(HEIGHT / 20..HEIGHT / 4, white);
        if all > 0.85 && clock > 0.03 && top < 0.001 {
            Ok(())
        } else {
            Err(format!("black {all:.3} (> 0.85), white in the clock's rows {clock:.3} (> 0.03), white at the top {top:.4} (< 0.001)"))
        }
    }

    /// Whether the keypad's entry shows typed digits (its dots, in rows 27-30 % across the
    /// middle third).
    fn entry_has_digits(&self) -> bool {
        let (rows, cols) = (HEIGHT * 27 / 100..HEIGHT * 30 / 100, WIDTH / 3..WIDTH * 2 / 3);
        rows.flat_map(|y| cols.clone().map(move |x| (x, y))).any(|(x, y)| self.pixel(x, y).iter().all(|&c| c > 200))
    }

    /// Phosh's home screen: its app search bar, a dark gray (40, 40, 40) field across the
    /// screen below the top panel (rows 11.6-15.6 %, the middle 80 % of the width), which
    /// the lock screen and its keypad do not have.
    fn home_screen(&self) -> Result<(), String> {
        let (rows, cols) = (HEIGHT * 116 / 1000..HEIGHT * 156 / 1000, WIDTH / 10..WIDTH * 9 / 10);
        let n = rows.len() * cols.len();
        let gray = rows
            .flat_map(|y| cols.clone().map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y).iter().all(|&c| (30..=50).contains(&c)))
            .count() as f64
            / n as f64;
        if gray > 0.8 {
            Ok(())
        } else {
            Err(format!("the search bar's gray fills {gray:.3} of its place (> 0.8)"))
        }
    }

    /// Phosh's lock screen with a notification under the clock: its card, a band of dark
    /// gray (40, 40, 40) across the middle 80 % of the width somewhere in rows 45-75 % (at
    /// least 72 rows of it: a card with one notification is about 140), with white text in
    /// it (the summary); the rest of the screen black.
    fn notice_on_lock_screen(&self) -> Result<(), String> {
        let cols = WIDTH / 10..WIDTH * 9 / 10;
        let gray = |p: [u8; 3]| p.iter().all(|&c| (30..=50).contains(&c));
        let card: Vec<usize> = (HEIGHT * 45 / 100..HEIGHT * 75 / 100)
            .filter(|&y| cols.clone().filter(|&x| gray(self.pixel(x, y))).count() * 10 >= cols.len() * 8)
            .collect();
        let (Some(&top), Some(&bottom)) = (card.first(), card.last()) else {
            return Err("no notification card (a gray band) under the clock".into());
        };
        let text = self.share(top..bottom + 1, |p| p.iter().all(|&c| c > 200));
        let black = self.share(0..HEIGHT, |p| p.iter().all(|&c| c < 12));
        if card.len() >= HEIGHT / 20 && text > 0.003 && black > 0.6 {
            Ok(())
        } else {
            Err(format!(
                "gray card rows {} (>= {}) between {top} and {bottom}, white text in them {text:.4} (> 0.003), black {black:.3} (> 0.6)",
                card.len(),
                HEIGHT / 20
            ))
        }
    }

    /// The share of pixels that differ from `other`'s.
    fn differs(&self, other: &Shot) -> f64 {
        let n = self.rgb.len() / 3;
        (0..n).filter(|i| self.rgb[i * 3..i * 3 + 3] != other.rgb[i * 3..i * 3 + 3]).count() as f64 / n as f64
    }
}

/// Types `keys` (QEMU key codes) on the emulated keyboard.
fn type_keys(qmp: &mut Qmp, keys: &[&str]) {
    for k in keys {
        qmp.press(k, 80).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Brings up the lock screen's keypad with an empty entry: a digit key shows it (and types
/// the digit, cleared again); a shell just started may not take keys for a while yet.
fn bring_up_keypad(qmp: &mut Qmp, out: &Path) {
    let t0 = Instant::now();
    let mut pressed = 0;
    loop {
        type_keys(qmp, &["0"]);
        pressed += 1;
        std::thread::sleep(Duration::from_secs(2));
        if Shot::take(qmp, out, "keypad").entry_has_digits() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "the keypad did not come up on a key within 90 s");
    }
    // As many as the digits that may have reached the entry, and two more; a loaded
    // machine's shell may take the keys late, so look again and erase again.
    type_keys(qmp, &vec!["backspace"; pressed + 2]);
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if !Shot::take(qmp, out, "keypad").entry_has_digits() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the keypad's entry is not empty 30 s after Backspace");
        type_keys(qmp, &["backspace", "backspace"]);
    }
}

/// Types a PIN on the lock screen's keypad and sends it with Enter, once the keypad shows
/// every digit (the keypad comes up with the first key; under load it may lag the keys).
fn enter_pin(qmp: &mut Qmp, out: &Path, pin: &str) {
    let digits: Vec<String> = pin.chars().map(|c| c.to_string()).collect();
    type_keys(qmp, &digits.iter().map(String::as_str).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(1));
    assert!(Shot::take(qmp, out, "pin-typed").entry_has_digits(), "the keypad shows the typed PIN");
    type_keys(qmp, &["ret"]);
}

/// A tap of the touch device at screen pixel (x, y).
fn tap(qmp: &mut Qmp, x: usize, y: usize) {
    qmp.tap(x, y, WIDTH, HEIGHT).unwrap();
}

struct Owner {
    keys: PathBuf,
    port: u16,
}

impl Owner {
    fn ssh(&self, user: &str, command: &str) -> std::process::Output {
        Command::new("ssh")
            .arg("-i")
            .arg(self.keys.join("alice"))
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["-p", &self.port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .output()
            .unwrap()
    }

    /// The session's answer to whether its screen is locked (`Some(true)`), if it answers.
    fn locked(&self) -> Option<bool> {
        let o = self.ssh(
            "alice",
            "gdbus call --session --dest org.gnome.ScreenSaver --object-path /org/gnome/ScreenSaver \
             --method org.gnome.ScreenSaver.GetActive",
        );
        match String::from_utf8_lossy(&o.stdout).trim() {
            "(true,)" => Some(true),
            "(false,)" => Some(false),
            _ => None,
        }
    }

    /// Waits up to `secs` for `f` to give a value.
    fn wait<T>(&self, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(t0.elapsed() < Duration::from_secs(secs), "{what}: not within {secs} s");
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

#[test]
fn phosh_boots_to_its_lock_screen_unlocks_with_the_pin_and_starts_an_app() {
    let _one = phone();
    let mut story = Story::new("phosh_boots_to_its_lock_screen_unlocks_with_the_pin_and_starts_an_app");
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    repo_copy(&tree);
    let keys = t.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let key = ssh_keygen(&keys, "alice");
    let out = repo().join("target/test-report/ui");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    let owner = Owner { keys, port: crate::common::free_port() };
    // mobix on this phone: the tree's configs, the systemd tests' store, one out directory.
    let on_phone = |args: &[&str]| {
        let mut c = mobix_cmd();
        c.args(args).arg("--store").arg(store()).arg("--out").arg(t.path().join("out")).current_dir(&tree);
        c
    };

    let Some(()) = story.step("1 the PIN's hash, the config, the build", || {
        let mut hash =
            mobix_cmd().args(["config", "hash-pin"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        hash.stdin.take().unwrap().write_all(format!("{PIN}\n").as_bytes()).unwrap();
        let hashed = ok(&hash.wait_with_output().unwrap()).trim().to_string();
        assert!(hashed.starts_with("$6$"), "{hashed}");
        // root's key is the owner's too: `mobix deploy` logs in as root (step 6).
        let config = format!(
            "hostname: pocket\nusers:\n  alice:\n    authorized_keys: [\"{key}\"]\n    hashed_password: '{hashed}'\n\
             \x20 root:\n    authorized_keys: [\"{key}\"]\n\
             ssh: {{ enable: true }}\nui: phosh\npackages: [gnome-console]\n\
             device:\n  system: {{ size: 3GiB }}\n  qemu: {{ smp: 2, memory_mib: 2048 }}\n"
        );
        fs::write(tree.join("phone.yaml"), config).unwrap();
        ok(&on_phone(&["build", "--device", "qemu-aarch64", "--config", "phone.yaml"]).output().unwrap());
    }) else {
        return story.end();
    };

    // Power on, with QMP for the screen, the keys and the touch device.
    let sock = t.path().join("qmp.sock");
    let log = out.join("serial.log");
    let powered = Instant::now();
    let port = owner.port.to_string();
    let run = Group::spawn_logged(
        on_phone(&["run", "--device", "qemu-aarch64", "--config", "phone.yaml", "--ssh-port", &port])
            .arg("--qmp")
            .arg(&sock),
        &log,
    );
    story.log(&log);
    // mobix run writes the system image into the emulated disk before QEMU listens.
    let waited = Instant::now();
    while !sock.exists() && waited.elapsed() < Duration::from_secs(180) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut qmp = Qmp::connect(&sock).unwrap();

    let Some(lock) = story.step("2 it boots to the lock screen, the session locked", || {
        let locked = owner.wait(300, "the session's lock state over ssh", || owner.locked());
        assert!(locked, "the session starts locked");
        let shot = owner.wait(120, "the lock screen on the screen", || {
            let s = Shot::take(&mut qmp, &out, "lock");
            s.lock_screen().ok().map(|()| s)
        });
        eprintln!("lock screen {:.0} s after power-on", powered.elapsed().as_secs_f64());
        shot
    }) else {
        drop(run);
        return story.end();
    };

    story.step("3 a wrong PIN leaves it locked", || {
        bring_up_keypad(&mut qmp, &out);
        enter_pin(&mut qmp, &out, "9999");
        // Refused: the entry is emptied for another try, and the session stays locked.
        owner.wait(20, "the wrong PIN refused (its entry emptied)", || {
            (!Shot::take(&mut qmp, &out, "wrong-pin").entry_has_digits()).then_some(())
        });
        assert_eq!(owner.locked(), Some(true), "locked after a wrong PIN");
    });

    let Some(()) = story.step("4 the PIN unlocks it; the home screen is another picture", || {
        enter_pin(&mut qmp, &out, PIN);
        owner.wait(30, "unlocked", || (owner.locked() == Some(false)).then_some(()));
        // The session says so before the screen has followed.
        let home = owner.wait(30, "the home screen", || {
            let s = Shot::take(&mut qmp, &out, "home");
            s.home_screen().ok().map(|()| s)
        });
        assert!(lock.home_screen().is_err(), "the lock screen has no search bar");
        assert!(lock.notice_on_lock_screen().is_err(), "no notification on a boot that did not fall back");
        let d = home.differs(&lock);
        assert!(d > 0.02, "the home screen differs from the lock screen in {d:.3} of its pixels");
        assert!(home.lock_screen().is_err(), "the home screen does not look like the lock screen");
    }) else {
        drop(run);
        return story.end();
    };

    story.step("5 a tap on the app's icon starts it", || {
        // Phosh's app grid on the 720x1440 screen: the first app (Console, the only one
        // the config adds; Settings follows it) at the left of the first row.
        assert!(!owner.ssh("alice", "busybox pidof kgx").status.success(), "no Console before the tap");
        tap(&mut qmp, 90, 380);
        owner.wait(60, "the app's process (kgx)", || {
            let o = owner.ssh("alice", "busybox pidof kgx");
            o.status.success().then_some(())
        });
        Shot::take(&mut qmp, &out, "app");
    });

    // A deploy that breaks the UI (an overlay replaces phosh.service's program with
    // /bin/false; one try): the `ui` health check fails, the phone falls back to the first
    // generation by itself, the deploy says so and fails, and that generation's session
    // shows the fallback as a notification on its lock screen.
    story.step("6 a deploy whose UI cannot start falls back by itself; the lock screen says so", || {
        let dropin = tree.join("overlays/broken-ui/files/etc/systemd/system/phosh.service.d");
        fs::create_dir_all(&dropin).unwrap();
        fs::write(dropin.join("zz-broken.conf"), "[Service]\nExecStart=\nExecStart=/bin/false\n").unwrap();
        let config = fs::read_to_string(tree.join("phone.yaml")).unwrap();
        fs::write(tree.join("broken.yaml"), format!("{config}boot: {{ tries: 1 }}\noverlays: [broken-ui]\n")).unwrap();
        let to = format!("ssh://root@127.0.0.1:{}", owner.port);
        let o = on_phone(&["deploy", "--device", "qemu-aarch64", "--config", "broken.yaml", "--timeout", "600"])
            .args(["--json", "--to", &to, "-i"])
            .arg(owner.keys.join("alice"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stderr);
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let broken = report["plan"]["generation"].as_u64().unwrap_or_else(|| panic!("no plan: {said}"));
        assert_eq!(o.status.code(), Some(1), "{said}");
        assert!(
            said.contains(&format!("generation {broken} failed (health check ui failed"))
                && said.contains(&format!("the phone fell back to generation {} by itself", broken - 1)),
            "{said}"
        );
        // The session's journal has the notification the fallback notice sent.
        let want = format!("Generation {broken} failed; this is generation {}", broken - 1);
        owner.wait(240, "the fallback notification in the session's journal", || {
            let o = owner.ssh("root", "journalctl -b -o cat _UID=1000 | grep 'mobix: notified'");
            String::from_utf8_lossy(&o.stdout).contains(&want).then_some(())
        });
        assert_eq!(owner.locked(), Some(true), "the session it fell back to starts locked");
        // QEMU was started again for each boot: a new QMP socket.
        let mut qmp = owner.wait(60, "QMP after the reboots", || Qmp::connect(&sock).ok());
        owner.wait(60, "the notification on the lock screen", || {
            let s = Shot::take(&mut qmp, &out, "fallback-notice");
            s.notice_on_lock_screen().ok()
        });
    });
    drop(run);
    story.end();
}
