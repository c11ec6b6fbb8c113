//! The owner's data encrypted (`state: { encryption: luks2 }`) on the emulated phone, as its
//! owner meets it: the first boot asks for a new PIN on the screen (screenshot checked pixel
//! for pixel against the scene the host draws with stage-1's own code), taken once from the
//! emulated keyboard and once from taps on the touch device; the system comes up and keeps a
//! file in /home. On the host the state partition holds a LUKS2 header (`cryptsetup
//! luksDump`) and the disk image holds the file's words nowhere. After a power cycle a wrong
//! PIN is refused (the screen says so) and the right one, typed with the volume keys and
//! power, opens the state with the file in it; the owner changes the PIN with the manual's
//! command, and the new one opens it from then on. A deploy with `--pin-file` unlocks the
//! phone over ssh after its reboot (stage-1's remote unlock, whose host key the running
//! phone reported) and keeps the file; the unlock server takes no other key, and a wrong
//! PIN sent to it is refused as on the screen. A deploy without it says the phone waits for
//! its PIN and waits while the test types it; a trial generation left at the PIN
//! screen and reset has spent no try; a generation whose health check fails falls back by
//! itself, the PIN asked at each of its restarts. A damaged header gives the rescue screen and stays
//! as it was.
//!
//! The key slot's argon2id cost is lowered in this config (`state.kdf`): QEMU emulates the
//! CPU, and a phone's own cost would take minutes here.

use crate::common::{mobix_cmd, ok, phone, repo, repo_copy, ssh_keygen, Group, Story};
use mobix::vm::{read_ppm, Qmp};
use mobix_bootctl::console::Event;
use mobix_bootctl::screen::Scene;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn store() -> PathBuf {
    repo().join("target/mobix-test-store-systemd")
}

const PIN: &str = "1357";
/// The PIN after the owner changes it.
const NEW_PIN: &str = "80246";
/// Words only the file in /home holds.
const SECRET: &str = "words of the owner 7c41e9d2, encrypted at rest";

/// The serial log of `mobix run`, read as it grows.
struct Serial {
    log: PathBuf,
    /// Where the next wait starts reading.
    at: usize,
}

impl Serial {
    fn text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits up to `secs` for `needle` after what was read so far; moves past it.
    fn wait_for(&mut self, needle: &str, secs: u64) -> String {
        let t0 = Instant::now();
        loop {
            let text = self.text();
            if let Some(i) = text.get(self.at..).and_then(|t| t.find(needle)) {
                let start = self.at + i;
                let end = text[start..].find('\n').map_or(text.len(), |e| start + e);
                self.at = end;
                return text[start..end].to_string();
            }
            assert!(t0.elapsed() < Duration::from_secs(secs), "{needle:?} not on the console within {secs} s");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last scene stage-1 said it drew, so far.
    fn last_scene(&self) -> Option<Scene> {
        self.text().lines().rev().find_map(|l| match Event::find(l) {
            Some(Event::Screen(s)) => Some(s),
            _ => None,
        })
    }
}

/// Waits until the scene stage-1 last said it drew is one `want` takes, then checks that
/// the screen shows it pixel for pixel as the host draws it; the screenshot is kept as
/// `name`.png in `dir`.
fn screen_shows(qmp: &mut Qmp, serial: &Serial, dir: &Path, name: &str, want: impl Fn(&Scene) -> bool) -> Scene {
    let t0 = Instant::now();
    loop {
        // The screen's thread says a scene once it is drawn, which may follow the line that
        // asked for it (the GPU's driver still loading, a key still on its way).
        let Some(scene) = serial.last_scene().filter(|s| want(s)) else {
            assert!(t0.elapsed() < Duration::from_secs(30), "not shown within 30 s; last {:?}", serial.last_scene());
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let ppm = dir.join(format!("{name}.ppm"));
        qmp.settled_screendump(&ppm, "ppm").unwrap();
        let bytes = fs::read(&ppm).unwrap();
        let (w, h, rgb) = read_ppm(&bytes).unwrap();
        let drawn = mobix_screen::render(&scene, w, h).rgb_bytes();
        let differ = rgb.chunks(3).zip(drawn.chunks(3)).filter(|(a, b)| a != b).count();
        // The scene drawn may trail its line by a frame: look again before judging.
        if differ == 0 {
            qmp.screendump(&dir.join(format!("{name}.png")), "png").unwrap();
            return scene;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the screen differs from {scene:?} drawn on the host in {differ} of {} pixels",
            w * h
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn press(qmp: &mut Qmp, keys: &[&str]) {
    for k in keys {
        qmp.press(k, 80).unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Taps the pad's key `label` where stage-1's layout puts it on the 720x1440 screen.
fn tap_key(qmp: &mut Qmp, label: &str) {
    let i = mobix_bootctl::pin::PAD.iter().position(|k| k.label() == label).unwrap();
    let (x, y, w, h) = mobix_screen::pad_keys(720, 1440)[i];
    qmp.tap((x + w / 2) as usize, (y + h / 2) as usize, 720, 1440).unwrap();
    std::thread::sleep(Duration::from_millis(200));
}

/// The PIN typed with the volume keys (down moves the highlight on, up back) and power (the
/// highlighted key), from the pad's first key.
fn pin_by_volume_keys(qmp: &mut Qmp, pin: &str) {
    let mut at = 0usize;
    let index = |label: &str| mobix_bootctl::pin::PAD.iter().position(|k| k.label() == label).unwrap();
    for target in pin.chars().map(|c| index(&c.to_string())).chain([index("OK")]) {
        while at < target {
            press(qmp, &["volumedown"]);
            at += 1;
        }
        while at > target {
            press(qmp, &["volumeup"]);
            at -= 1;
        }
        press(qmp, &["power"]);
        // A PIN sent puts the highlight back on the first key.
        if target == index("OK") {
            at = 0;
        }
    }
}

struct Owner {
    key: PathBuf,
    port: u16,
}

impl Owner {
    fn ssh(&self, command: &str) -> std::process::Output {
        Command::new("ssh")
            .arg("-i")
            .arg(&self.key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["-p", &self.port.to_string(), "root@127.0.0.1", command])
            .output()
            .unwrap()
    }

    fn wait_ssh(&self, command: &str, secs: u64) -> String {
        let t0 = Instant::now();
        loop {
            let o = self.ssh(command);
            if o.status.success() {
                return String::from_utf8_lossy(&o.stdout).into_owned();
            }
            assert!(t0.elapsed() < Duration::from_secs(secs), "ssh {command:?}: not within {secs} s");
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// Waits for `mobix run` to end (the phone powered off), at most `secs`.
fn wait_off(run: &mut Group, secs: u64) {
    let t0 = Instant::now();
    while run.0.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(secs), "the phone did not power off within {secs} s");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The byte range of the partition `name` in the disk image.
fn partition(disk: &Path, name: &str) -> (u64, u64) {
    let mut f = fs::File::open(disk).unwrap();
    let t = mobix::format::gpt::read(&mut f, Some(512)).unwrap();
    let p = t.partitions.iter().find(|p| p.name == name).unwrap();
    (p.offset(512), p.size(512))
}

/// Which of `needles` are anywhere in the file (read once, in overlapping chunks).
fn found_in_file(path: &Path, needles: &[&[u8]]) -> Vec<bool> {
    use std::io::Read;
    let mut f = fs::File::open(path).unwrap();
    let longest = needles.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut buf = vec![0u8; 16 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut found = vec![false; needles.len()];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return found;
        }
        carry.extend_from_slice(&buf[..n]);
        for (i, needle) in needles.iter().enumerate() {
            found[i] |= memchr::memmem::find(&carry, needle).is_some();
        }
        carry.drain(..carry.len().saturating_sub(longest));
    }
}

/// One test's emulated phone: a copy of the tree, the owner's ssh key (root's, forwarded
/// port), the out directory and `mobix run`'s QMP socket; serial logs and screenshots in
/// `target/test-report/NAME`.
struct Rig {
    t: tempfile::TempDir,
    tree: PathBuf,
    /// The owner's public key line.
    key: String,
    report: PathBuf,
    owner: Owner,
    out: PathBuf,
    sock: PathBuf,
}

impl Rig {
    fn new(name: &str) -> Rig {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        repo_copy(&tree);
        let keys = t.path().join("keys");
        fs::create_dir_all(&keys).unwrap();
        let key = ssh_keygen(&keys, "root");
        let report = repo().join("target/test-report").join(name);
        let _ = fs::remove_dir_all(&report);
        fs::create_dir_all(&report).unwrap();
        let owner = Owner { key: keys.join("root"), port: crate::common::free_port() };
        let (out, sock) = (t.path().join("out"), t.path().join("qmp.sock"));
        Rig { t, tree, key, report, owner, out, sock }
    }

    /// The encrypted system's config (root's key, ssh, the lowered key slot cost, two CPUs),
    /// `device` keys after `qemu:`.
    fn config(&self, device: &str) -> String {
        format!(
            "hostname: pocket\nusers:\n  root:\n    authorized_keys: [\"{}\"]\nssh: {{ enable: true }}\n\
             state:\n  encryption: luks2\n  kdf: {{ memory_kib: 65536, iter_time_ms: 200 }}\n  remote_unlock: true\n\
             device:\n  qemu: {{ smp: 2 }}\n{device}",
            self.key
        )
    }

    /// mobix with `args`, on this test's store, out directory and tree.
    fn on_phone(&self, args: &[&str]) -> Command {
        let mut c = mobix_cmd();
        c.args(args).arg("--store").arg(store()).arg("--out").arg(&self.out).current_dir(&self.tree);
        c
    }

    /// `mobix run` of phone.yaml (its serial log `serial-N.log`), once its QMP socket is there.
    fn power_on(&self, n: u32) -> (Group, Qmp, Serial) {
        let log = self.report.join(format!("serial-{n}.log"));
        let _ = fs::remove_file(&self.sock);
        let port = self.owner.port.to_string();
        let run = Group::spawn_logged(
            self.on_phone(&["run", "--device", "qemu-aarch64", "--config", "phone.yaml", "--ssh-port", &port])
                .arg("--qmp")
                .arg(&self.sock),
            &log,
        );
        let waited = Instant::now();
        while !self.sock.exists() && waited.elapsed() < Duration::from_secs(180) {
            std::thread::sleep(Duration::from_millis(200));
        }
        (run, Qmp::connect(&self.sock).unwrap(), Serial { log, at: 0 })
    }
}

#[test]
fn an_encrypted_state_is_made_at_first_boot_and_opens_with_the_pin_only() {
    let _one = phone();
    let mut story = Story::new("an_encrypted_state_is_made_at_first_boot_and_opens_with_the_pin_only");
    let rig = Rig::new("encryption");
    let Rig { t, tree, report, owner, out, sock, .. } = &rig;
    let on_phone = |args: &[&str]| rig.on_phone(args);
    let power_on = |n: u32| rig.power_on(n);

    let Some(()) = story.step("1 the config and the build", || {
        fs::write(tree.join("phone.yaml"), rig.config("")).unwrap();
        ok(&on_phone(&["build", "--device", "qemu-aarch64", "--config", "phone.yaml"]).output().unwrap());
    }) else {
        return story.end();
    };

    let (mut run, mut qmp, mut serial) = power_on(1);
    story.log(&serial.log);
    let Some(()) = story.step("2 first boot: a new PIN from the keyboard, then from taps; a file in /home", || {
        serial.wait_for("PIN-ASK for=choose", 180);
        screen_shows(
            &mut qmp,
            &serial,
            report,
            "choose-pin",
            |s| matches!(s, Scene::Pin { title, entered: 0, .. } if title == "Choose a PIN"),
        );
        let digits: Vec<String> = PIN.chars().map(|c| c.to_string()).collect();
        press(&mut qmp, &digits.iter().map(String::as_str).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_secs(1));
        // Four dots, no digits.
        screen_shows(&mut qmp, &serial, report, "choose-pin-typed", |s| matches!(s, Scene::Pin { entered: 4, .. }));
        press(&mut qmp, &["ret"]);
        serial.wait_for("PIN-ASK for=again", 30);
        for d in &digits {
            tap_key(&mut qmp, d);
        }
        tap_key(&mut qmp, "OK");
        serial.wait_for("STATE-OPEN made=1", 300);
        let chosen = serial.wait_for("GEN-CHOSEN", 60);
        assert!(chosen.contains("generation=1 status=trial tries_left=2"), "{chosen}");
        serial.wait_for("boot-complete generation=1", 300);
        let mounts = owner.wait_ssh(&format!("echo '{SECRET}' > /home/note.txt && sync && cat /proc/mounts"), 120);
        assert!(mounts.contains("/dev/mapper/mobix-state /home ext4"), "{mounts}");
        let _ = owner.ssh("systemctl poweroff");
        wait_off(&mut run, 120);
    }) else {
        return story.end();
    };

    story.step("3 on the host: a LUKS2 header, and the file's words nowhere in the disk", || {
        let disk = out.join("vm/disk.img");
        let (offset, size) = partition(&disk, "userdata");
        let area = t.path().join("userdata.img");
        let mut from = fs::File::open(&disk).unwrap();
        use std::io::{Read, Seek};
        from.seek(std::io::SeekFrom::Start(offset)).unwrap();
        let mut head = vec![0u8; 32 << 20];
        from.read_exact(&mut head).unwrap();
        fs::write(&area, &head).unwrap();
        let dump = Command::new("cryptsetup").arg("luksDump").arg(&area).output().unwrap();
        let said = String::from_utf8_lossy(&dump.stdout);
        assert!(dump.status.success(), "{said}{}", String::from_utf8_lossy(&dump.stderr));
        for want in
            ["Version:       \t2", "Label:         \tmobix-state", "cipher: aes-xts-plain64", "PBKDF:      argon2id"]
        {
            assert!(said.contains(want), "{want:?} in\n{said}");
        }
        assert!(size > 32 << 20);
        // The header's UUID (made on the phone) is in the clear: the scan that finds it
        // reads the state partition, and would find the words there.
        let uuid = said.lines().find_map(|l| l.strip_prefix("UUID:")).expect("a UUID").trim().to_string();
        let found = found_in_file(&disk, &[SECRET.as_bytes(), uuid.as_bytes()]);
        assert!(found[1], "the scan finds the header's UUID {uuid}");
        assert!(!found[0], "the file's words are in the disk image in the clear");
    });

    let (mut run, mut qmp, mut serial) = power_on(2);
    story.log(&serial.log);
    let Some(()) = story.step("4 power cycle: a wrong PIN is refused, the right one (volume keys) opens it", || {
        serial.wait_for("PIN-ASK for=unlock", 180);
        press(&mut qmp, &["9", "9", "9", "9", "ret"]);
        serial.wait_for("PIN-WRONG failures=1", 120);
        serial.wait_for("PIN-ASK for=unlock", 30);
        screen_shows(&mut qmp, &serial, report, "wrong-pin", |s| {
            matches!(s, Scene::Pin { bad: true, text, entered: 0, .. } if text.starts_with("Wrong PIN"))
        });
        pin_by_volume_keys(&mut qmp, PIN);
        serial.wait_for("STATE-OPEN made=0", 120);
        serial.wait_for("boot-complete", 300);
        let note = owner.wait_ssh("cat /home/note.txt", 120);
        assert_eq!(note.trim(), SECRET);
        // The PIN changed on the phone, as docs/encryption.md says (the PINs from files
        // here instead of typed at its prompts; the test's lowered cost again).
        let change = format!(
            "printf {PIN} > /run/old && printf {NEW_PIN} > /run/new && cryptsetup luksChangeKey --key-file /run/old \
             --pbkdf-memory 65536 --iter-time 200 /run/mobix/encrypted-state /run/new; e=$?; rm -f /run/old /run/new; exit $e"
        );
        let o = owner.ssh(&change);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }) else {
        drop(run);
        return story.end();
    };

    story.step("5 a deploy unlocks over ssh, or waits for the PIN, and keeps the file; a trial left at the PIN keeps its tries; a failing one falls back", || {
        fs::write(tree.join("phone.yaml"), fs::read_to_string(tree.join("phone.yaml")).unwrap() + "packages: [less]\n")
            .unwrap();
        let to = format!("ssh://root@127.0.0.1:{}", owner.port);
        let start_deploy_with = |extra: &[&str]| {
            on_phone(&["deploy", "--device", "qemu-aarch64", "--config", "phone.yaml", "--timeout", "900"])
                .args(["--json", "--to", &to, "-i"])
                .arg(&owner.key)
                .args(extra)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let start_deploy = || start_deploy_with(&[]);
        // The PIN from a file, sent over ssh to stage-1 after the reboot: nothing typed.
        let pin_file = t.path().join("pin");
        fs::write(&pin_file, format!("{NEW_PIN}\n")).unwrap();
        let o = start_deploy_with(&["--pin-file", pin_file.to_str().unwrap()]).wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{said}");
        assert!(said.contains("mobix sends the PIN of --pin-file to its stage-1 over ssh"), "{said}");
        assert!(said.contains("the phone's data is unlocked: mobix sent the PIN to stage-1 over ssh"), "{said}");
        assert!(said.contains("generation 2 booted and is good"), "{said}");
        serial.wait_for("the PIN came over ssh (remote unlock)", 60);
        serial.wait_for("STATE-OPEN made=0", 60);
        assert_eq!(owner.wait_ssh("cat /home/note.txt", 60).trim(), SECRET);
        let digits: Vec<String> = NEW_PIN.chars().chain(['\n']).map(|c| c.to_string()).collect();
        let keys: Vec<&str> = digits.iter().map(|d| if d == "\n" { "ret" } else { d.as_str() }).collect();
        // Another deploy; its reboot is left at the PIN screen and the phone reset there
        // (SysRq-B: no shutdown, nothing written, as a power cut); the trial's try is spent
        // only by the boot after the PIN.
        fs::write(
            tree.join("phone.yaml"),
            fs::read_to_string(tree.join("phone.yaml")).unwrap().replace("less", "less, file"),
        )
        .unwrap();
        let deploy = start_deploy();
        serial.wait_for("PIN-ASK for=unlock", 600);
        // While it asks: the unlock server takes only root's keys, and a wrong PIN sent to
        // it is refused as one typed on the screen.
        ssh_keygen(&t.path().join("keys"), "stranger");
        let unlock = |key: &Path, pin: &str| {
            let mut c = Command::new("ssh")
                .arg("-i")
                .arg(key)
                .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
                .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
                .args(["-p", &owner.port.to_string(), "root@127.0.0.1"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            c.stdin.take().unwrap().write_all(format!("{pin}\n").as_bytes()).unwrap();
            c.wait_with_output().unwrap()
        };
        // The owner's first (the server may still be starting: ssh's own failure, 255, is
        // tried again), then a stranger's, refused by the running server.
        let t0 = Instant::now();
        let o = loop {
            let o = unlock(&owner.key, "0000");
            if o.status.code() != Some(255) || t0.elapsed() > Duration::from_secs(60) {
                break o;
            }
            std::thread::sleep(Duration::from_secs(2));
        };
        let stranger = unlock(&t.path().join("keys/stranger"), NEW_PIN);
        let refused = String::from_utf8_lossy(&stranger.stderr);
        assert_eq!(stranger.status.code(), Some(255), "another key is refused: {refused}");
        assert!(refused.contains("Permission denied"), "{refused}");
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(1), "{out}{err}");
        assert_eq!(
            mobix_bootctl::contract::UnlockReply::find(&out),
            Some(mobix_bootctl::contract::UnlockReply::Wrong { failures: 1, wait_s: 0 }),
            "{out}{err}"
        );
        assert!(err.contains("Wrong PIN (1 in a row)"), "{err}");
        serial.wait_for("PIN-WRONG failures=1", 30);
        let mut qmp = Qmp::connect(sock).unwrap();
        let reset = serde_json::json!({"execute": "send-key", "arguments": {"keys": [
            {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "sysrq"}, {"type": "qcode", "data": "b"}]}});
        qmp.execute(reset).unwrap();
        serial.wait_for("sysrq: Resetting", 30);
        serial.wait_for("PIN-ASK for=unlock", 180);
        let mut qmp = Qmp::connect(sock).unwrap();
        press(&mut qmp, &keys);
        let chosen = serial.wait_for("GEN-CHOSEN", 120);
        assert!(
            chosen.contains("generation=3 status=trial tries_left=2"),
            "one try spent over two power-ons: {chosen}"
        );
        let o = deploy.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&o.stderr);
        assert!(said.contains("generation 3 booted and is good"), "{said}");
        assert_eq!(owner.wait_ssh("cat /home/note.txt", 60).trim(), SECRET);
        // A generation whose health check fails: opened with the PIN, it fails, the phone
        // restarts, asks for the PIN again and falls back to generation 3 by itself. (One
        // try, so that the test types the PIN twice rather than four times.)
        let good = fs::read_to_string(tree.join("phone.yaml")).unwrap();
        let doomed =
            format!("{good}health_checks:\n  - {{ name: doomed, command: [/bin/false] }}\nboot: {{ tries: 1 }}\n");
        fs::write(tree.join("phone.yaml"), doomed).unwrap();
        let deploy = start_deploy();
        for boot in ["the failing generation", "the fallback"] {
            serial.wait_for("PIN-ASK for=unlock", 600);
            let mut qmp = Qmp::connect(sock).unwrap();
            press(&mut qmp, &keys);
            let chosen = serial.wait_for("GEN-CHOSEN", 120);
            assert!(chosen.contains(if boot == "the fallback" { "generation=3" } else { "generation=4" }), "{boot}: {chosen}");
        }
        let o = deploy.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{said}");
        assert!(
            said.contains("generation 4 failed (health check doomed failed")
                && said.contains("the phone fell back to generation 3 by itself"),
            "{said}"
        );
        assert_eq!(owner.wait_ssh("cat /home/note.txt", 60).trim(), SECRET);
        fs::write(tree.join("phone.yaml"), good).unwrap();
        let _ = owner.ssh("systemctl poweroff");
        wait_off(&mut run, 120);
    });

    story.step("6 a damaged header: the rescue screen, the partition untouched", || {
        use std::io::{Read, Seek, Write};
        let disk = out.join("vm/disk.img");
        let (offset, _) = partition(&disk, "userdata");
        let read_head = || {
            let mut f = fs::File::open(&disk).unwrap();
            f.seek(std::io::SeekFrom::Start(offset)).unwrap();
            let mut head = vec![0u8; 32 << 20];
            f.read_exact(&mut head).unwrap();
            head
        };
        // The first binary header's magic and checksum gone; its second copy (16 KiB on)
        // is whole.
        let mut f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.seek(std::io::SeekFrom::Start(offset)).unwrap();
        f.write_all(&[0x55; 512]).unwrap();
        drop(f);
        let before = read_head();
        // `mobix run` boots what was built: the config of the build, before the deploys'.
        let deployed = fs::read_to_string(tree.join("phone.yaml")).unwrap();
        fs::write(tree.join("phone.yaml"), deployed.replace("packages: [less, file]\n", "")).unwrap();
        let (run, mut qmp, mut serial) = power_on(4);
        let rescue = serial.wait_for("RESCUE:", 180);
        assert!(rescue.contains("is damaged") && rescue.contains("nothing was changed"), "{rescue}");
        screen_shows(
            &mut qmp,
            &serial,
            report,
            "damaged-header",
            |s| matches!(s, Scene::Shell { title, .. } if title == "Your data cannot be opened"),
        );
        drop(qmp);
        // The plug pulled (the whole process group: mobix run and QEMU).
        drop(run);
        assert!(read_head() == before, "the state partition's first 32 MiB changed");
    });
    story.end();
}

/// Phones whose store is on userdata (every real phone profile here) keep the state after
/// the system image: stage-1 makes and opens the encrypted state through a loop device from
/// there. The LUKS2 header is found on the host where the image ends, the file's words
/// nowhere; the PIN changed with the manual's command; a new generation's system image
/// written over the first (as `mobix run` and flashing do) leaves the state to open with
/// the new PIN, the file in it; `mobix test` opens it with the PIN from `--pin-file`.
#[test]
fn an_encrypted_state_after_the_system_image_is_kept_by_a_new_image() {
    let _one = phone();
    let mut story = Story::new("an_encrypted_state_after_the_system_image_is_kept_by_a_new_image");
    let rig = Rig::new("encryption-beside");
    let Rig { t, tree, owner, out, .. } = &rig;
    let on_phone = |args: &[&str]| rig.on_phone(args);
    let build = |extra: &str| {
        let config = rig.config(&format!("{}{extra}", crate::systemd::STORE_ON_USERDATA));
        fs::write(tree.join("phone.yaml"), config).unwrap();
        ok(&on_phone(&["build", "--device", "qemu-aarch64", "--config", "phone.yaml"]).output().unwrap());
    };
    let power_on = |n: u32| rig.power_on(n);
    let type_pin = |qmp: &mut Qmp, pin: &str| {
        let digits: Vec<String> = pin.chars().map(|c| c.to_string()).collect();
        press(qmp, &digits.iter().map(String::as_str).chain(["ret"]).collect::<Vec<_>>());
    };

    let Some(()) = story.step("1 the build: the store and the state on userdata, encrypted", || build("")) else {
        return story.end();
    };
    let (mut run, mut qmp, mut serial) = power_on(1);
    story.log(&serial.log);
    let Some(()) = story.step("2 first boot: a new PIN, the state made after the image, a file, the PIN changed", || {
        serial.wait_for("PIN-ASK for=choose", 180);
        let said = serial.text();
        assert!(said.contains("the state follows the system image in /dev/vda"), "{said}");
        type_pin(&mut qmp, PIN);
        serial.wait_for("PIN-ASK for=again", 30);
        type_pin(&mut qmp, PIN);
        serial.wait_for("STATE-OPEN made=1", 300);
        serial.wait_for("boot-complete generation=1", 300);
        let said = owner.wait_ssh(
            &format!("echo '{SECRET}' > /home/note.txt && sync && readlink /run/mobix/encrypted-state && cat /proc/mounts"),
            120,
        );
        assert!(said.starts_with("/dev/loop"), "the header is on a loop device: {said}");
        assert!(said.contains("/dev/mapper/mobix-state /home ext4"), "{said}");
        // The manual's command, with the PINs from files instead of typed at its prompts.
        let change = format!(
            "printf {PIN} > /run/old && printf {NEW_PIN} > /run/new && cryptsetup luksChangeKey --key-file /run/old \
             --pbkdf-memory 65536 --iter-time 200 /run/mobix/encrypted-state /run/new; e=$?; rm -f /run/old /run/new; exit $e"
        );
        let o = owner.ssh(&change);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let _ = owner.ssh("systemctl poweroff");
        wait_off(&mut run, 120);
    }) else {
        return story.end();
    };

    let Some(()) = story.step("3 on the host: the LUKS2 header where the system image ends, the words nowhere", || {
        use std::io::{Read, Seek};
        let disk = out.join("vm/disk.img");
        let (offset, size) = partition(&disk, "userdata");
        assert_eq!(size, 1280 << 20);
        let mut head = vec![0u8; 32 << 20];
        let mut from = fs::File::open(&disk).unwrap();
        from.seek(std::io::SeekFrom::Start(offset + (1 << 30))).unwrap();
        from.read_exact(&mut head).unwrap();
        let area = t.path().join("state-head.img");
        fs::write(&area, &head).unwrap();
        let dump = Command::new("cryptsetup").arg("luksDump").arg(&area).output().unwrap();
        let said = String::from_utf8_lossy(&dump.stdout);
        assert!(dump.status.success(), "{said}{}", String::from_utf8_lossy(&dump.stderr));
        assert!(said.contains("Version:       \t2") && said.contains("Label:         \tmobix-state"), "{said}");
        let uuid = said.lines().find_map(|l| l.strip_prefix("UUID:")).expect("a UUID").trim().to_string();
        let found = found_in_file(&disk, &[SECRET.as_bytes(), uuid.as_bytes()]);
        assert!(found[1], "the scan finds the header's UUID {uuid}");
        assert!(!found[0], "the file's words are in the disk image in the clear");
    }) else {
        return story.end();
    };

    let Some(()) = story.step("4 a new generation built", || build("packages: [tree]\n")) else {
        return story.end();
    };
    let (mut run, mut qmp, mut serial) = power_on(2);
    story.log(&serial.log);
    story.step("5 its image written over the first: the new PIN opens the state, the file is kept", || {
        serial.wait_for("PIN-ASK for=unlock", 180);
        type_pin(&mut qmp, NEW_PIN);
        serial.wait_for("STATE-OPEN made=0", 120);
        let said = owner.wait_ssh("cat /home/note.txt; tree --version | cut -c1-6", 300);
        assert_eq!(said, format!("{SECRET}\ntree v\n"), "the data and the new generation");
        let _ = owner.ssh("systemctl poweroff");
        wait_off(&mut run, 120);
    });

    story.step("6 mobix test types the PIN from --pin-file, and says it needs one", || {
        let test = |extra: &[&str]| {
            on_phone(&["test", "--device", "qemu-aarch64", "--config", "phone.yaml", "--keep-state"])
                .args(extra)
                .output()
                .unwrap()
        };
        let o = test(&[]);
        let said = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{said}");
        assert!(said.contains("encrypts its state") && said.contains("--pin-file FILE"), "{said}");
        let pin = t.path().join("pin");
        fs::write(&pin, "80 246\n").unwrap();
        let o = test(&["--pin-file", pin.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{said}");
        assert!(said.contains("not a PIN the phone takes (4 to 32 digits"), "{said}");
        fs::write(&pin, format!("{NEW_PIN}\n")).unwrap();
        let o = test(&["--pin-file", pin.to_str().unwrap(), "--json"]);
        let said = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{said}");
        let outcome: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(outcome["passed"], true, "{outcome}");
        let log = fs::read_to_string(outcome["serial_log"].as_str().unwrap()).unwrap();
        assert!(log.contains("STATE-OPEN made=0"), "the state opened, not made anew");
        // Not as a number of its own anywhere (timestamps and addresses hold its digits).
        let as_number = log.split(|c: char| !c.is_ascii_digit()).any(|n| n == NEW_PIN);
        assert!(!as_number, "the PIN is in the serial log");
    });
    story.end();
}
