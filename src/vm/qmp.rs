//! The emulated phone's keys and screen, through QEMU's QMP socket: what a boot does when a
//! console line appears ([`Answer`], [`Act`]), key presses and holds, screenshots that wait
//! for the screen to hold still, and reading them back (a binary PPM).

use super::*;

/// What to do, once per boot, when a console line containing `when` appears.
pub struct Answer {
    pub when: String,
    pub act: Act,
}

impl Answer {
    pub fn new(when: impl Into<String>, act: Act) -> Answer {
        Answer { when: when.into(), act }
    }
}

/// Something done to the emulated phone: typed on its console, or through QEMU's QMP
/// socket on its keys and screen.
pub enum Act {
    /// Type this on the serial console.
    Type(String),
    /// Press and release a key of the phone (a QEMU qcode: `volumeup`, `volumedown`,
    /// `power`).
    Press(String),
    /// Hold a key down, as a person holds volume-down while powering on, until [`Act::Release`].
    Hold(String),
    Release(String),
    /// Save the screen as a binary PPM to this file once it holds still (and a PNG of it
    /// beside, with the extension `.png`).
    Screenshot(PathBuf),
}

/// QEMU's QMP socket, spoken to one command at a time.
pub struct Qmp {
    stream: std::os::unix::net::UnixStream,
    reader: BufReader<std::os::unix::net::UnixStream>,
}

impl Qmp {
    /// Connects (QEMU listens once it has started: retried for up to five seconds).
    pub fn connect(sock: &Path) -> Result<Qmp> {
        use std::os::unix::net::UnixStream;
        let t0 = Instant::now();
        let stream = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(_) if t0.elapsed() < Duration::from_secs(5) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(e).with_context(|| format!("connecting to QMP at {}", sock.display())),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut q = Qmp { reader: BufReader::new(stream.try_clone()?), stream };
        let mut greeting = String::new();
        q.reader.read_line(&mut greeting)?;
        q.execute(serde_json::json!({"execute": "qmp_capabilities"}))?;
        Ok(q)
    }

    /// Runs one command; its `return` value, or the error QEMU gave.
    pub fn execute(&mut self, cmd: serde_json::Value) -> Result<serde_json::Value> {
        self.stream.write_all(format!("{cmd}\n").as_bytes())?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                anyhow::bail!("QMP closed the connection");
            }
            let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("QMP said {line:?}"))?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                anyhow::bail!("QMP refused {cmd}: {e}");
            }
            // An event (RESET, POWERDOWN, …): not the answer.
        }
    }

    /// Presses a key of the phone, holding it for `hold_ms`.
    pub fn press(&mut self, qcode: &str, hold_ms: u32) -> Result<()> {
        self.execute(serde_json::json!({"execute": "send-key", "arguments": {
            "keys": [{"type": "qcode", "data": qcode}], "hold-time": hold_ms}}))?;
        Ok(())
    }

    /// A key down (`true`) or up.
    pub fn key(&mut self, qcode: &str, down: bool) -> Result<()> {
        self.execute(serde_json::json!({"execute": "input-send-event", "arguments": {"events": [
            {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": qcode}}}]}}))?;
        Ok(())
    }

    /// A tap of the emulated touch device (QEMU's tablet) at pixel (`x`, `y`) of a
    /// `width` x `height` screen: the finger placed there, pressed and lifted.
    pub fn tap(&mut self, x: usize, y: usize, width: usize, height: usize) -> Result<()> {
        let (ax, ay) = (x * 32767 / width, y * 32767 / height);
        self.execute(serde_json::json!({"execute": "input-send-event", "arguments": {"events": [
            {"type": "abs", "data": {"axis": "x", "value": ax}}, {"type": "abs", "data": {"axis": "y", "value": ay}}]}}))?;
        for down in [true, false] {
            self.execute(serde_json::json!({"execute": "input-send-event", "arguments": {"events": [
                {"type": "btn", "data": {"down": down, "button": "left"}}]}}))?;
            std::thread::sleep(std::time::Duration::from_millis(150));
        }
        Ok(())
    }

    /// Saves the screen to `to` (`ppm` or `png`).
    pub fn screendump(&mut self, to: &Path, format: &str) -> Result<()> {
        self.execute(serde_json::json!({"execute": "screendump",
            "arguments": {"filename": to.to_string_lossy(), "format": format}}))?;
        Ok(())
    }

    /// Saves the screen once it holds still (two dumps 150 ms apart alike; at most three
    /// seconds): what the guest drew reaches QEMU's display a moment after it was drawn.
    pub fn settled_screendump(&mut self, to: &Path, format: &str) -> Result<()> {
        let t0 = Instant::now();
        let mut last: Option<Vec<u8>> = None;
        loop {
            self.screendump(to, format)?;
            let now = fs::read(to).with_context(|| format!("reading {}", to.display()))?;
            if last.as_ref() == Some(&now) || t0.elapsed() > Duration::from_secs(3) {
                return Ok(());
            }
            last = Some(now);
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

/// A binary PPM (as QEMU's `screendump` writes one): width, height and the RGB bytes.
pub fn read_ppm(bytes: &[u8]) -> Result<(u32, u32, &[u8])> {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
            at += 1;
        }
        let start = at;
        while bytes.get(at).is_some_and(|b| !b.is_ascii_whitespace()) {
            at += 1;
        }
        anyhow::ensure!(at > start, "a PPM header ends early");
        fields.push(std::str::from_utf8(&bytes[start..at])?.to_string());
    }
    anyhow::ensure!(fields[0] == "P6" && fields[3] == "255", "not an 8-bit binary PPM ({} {})", fields[0], fields[3]);
    let (w, h): (u32, u32) = (fields[1].parse()?, fields[2].parse()?);
    let body = &bytes[at + 1..];
    anyhow::ensure!(body.len() == (w * h * 3) as usize, "a {w}x{h} PPM with {} bytes of pixels", body.len());
    Ok((w, h, body))
}

impl Act {
    pub(super) fn words(&self) -> String {
        match self {
            Act::Type(t) => format!("typing {t:?}"),
            Act::Press(k) => format!("pressing {k}"),
            Act::Hold(k) => format!("holding {k}"),
            Act::Release(k) => format!("releasing {k}"),
            Act::Screenshot(p) => format!("a screenshot to {}", p.display()),
        }
    }
}

/// The moments `mobix test --screenshots` keeps: each screen stage-1 draws (named by its
/// kind) and boot-complete.
pub(super) fn screen_moment(line: &str) -> Option<&'static str> {
    use mobix_bootctl::console::Event;
    use mobix_bootctl::screen::Scene;
    match Event::find(line)? {
        Event::Screen(Scene::Boot { .. }) => Some("boot"),
        Event::Screen(Scene::Menu { .. }) => Some("menu"),
        Event::Screen(Scene::Notice { .. }) => Some("notice"),
        Event::Screen(Scene::Shell { .. }) => Some("shell"),
        Event::Screen(Scene::Pin { .. }) => Some("pin"),
        Event::Complete { .. } => Some("complete"),
        _ => None,
    }
}
