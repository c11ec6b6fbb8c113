//! The fastboot client: the protocol core driven over a transport. One command at a time:
//! send it, read INFO/TEXT until OKAY or FAIL, or run the data phase after DATA.

use super::protocol::{self, Command, Reply};
use super::tcp::Tcp;
use crate::util::Fail;
use anyhow::{Context, Result};
use std::io;

/// A way to the device that moves whole fastboot packets.
pub trait Transport {
    fn send(&mut self, data: &[u8]) -> io::Result<()>;
    fn recv(&mut self) -> io::Result<Vec<u8>>;
    /// What the user named (`tcp:127.0.0.1:5554`).
    fn name(&self) -> String;
    /// Called before each command is sent.
    fn before_command(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Tcp {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        Tcp::send(self, data)
    }
    fn recv(&mut self) -> io::Result<Vec<u8>> {
        Tcp::recv(self)
    }
    fn name(&self) -> String {
        format!("tcp:{}", self.peer)
    }
}

impl Transport for super::udp::Udp {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        super::udp::Udp::send(self, data)
    }
    fn recv(&mut self) -> io::Result<Vec<u8>> {
        super::udp::Udp::recv(self)
    }
    fn name(&self) -> String {
        format!("udp:{}", self.peer)
    }
    fn before_command(&mut self) -> io::Result<()> {
        self.resync()
    }
}

impl Transport for super::usb::Usb {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        super::usb::Usb::send(self, data)
    }
    fn recv(&mut self) -> io::Result<Vec<u8>> {
        super::usb::Usb::recv(self)
    }
    fn name(&self) -> String {
        super::usb::Usb::name(self)
    }
}

/// Opens a transport from a `--serial` value: `tcp:HOST[:PORT]`, `udp:HOST[:PORT]`, or a
/// USB device's serial number (also as `usb:SERIAL`, or its bus path `usb:1-2.3`); None is
/// the only USB fastboot device connected.
pub fn connect(serial: Option<&str>, progress: &dyn crate::report::Reporter) -> Result<Box<dyn Transport>> {
    let Some(serial) = serial else {
        return usb(None);
    };
    if let Some(t) = serial.strip_prefix("tcp:") {
        let tcp = Tcp::connect(t).map_err(|e| {
            anyhow::Error::new(e).context(Fail::new(format!("cannot reach a fastboot device at {serial}")).hint(
                "is the phone in fastboot mode (an emulated phone: `mobix run --fastboot` with the same --device and --out)?",
            ))
        })?;
        return Ok(Box::new(tcp));
    }
    if let Some(t) = serial.strip_prefix("udp:") {
        let patience = std::time::Duration::from_secs(30);
        let mut waiting = |peer| {
            progress.note(&format!(
                "waiting up to {} s for a fastboot device to answer on udp:{peer} (a bootloader running `fastboot udp`)",
                patience.as_secs()
            ))
        };
        let udp = super::udp::Udp::connect(t, patience, &mut waiting).map_err(|e| {
            anyhow::Error::new(e).context(
                Fail::new(format!("cannot reach a fastboot device at {serial}"))
                    .hint("is the bootloader running `fastboot udp` and reachable on that port?"),
            )
        })?;
        return Ok(Box::new(udp));
    }
    let s = serial.strip_prefix("usb:").unwrap_or(serial);
    usb((!s.is_empty()).then_some(s))
}

fn usb(which: Option<&str>) -> Result<Box<dyn Transport>> {
    let what = which.map_or("the USB fastboot device".to_string(), |w| format!("USB fastboot device {w}"));
    match super::usb::Usb::open(which) {
        Ok(u) => Ok(Box::new(u)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(anyhow::Error::new(e).context(
            Fail::new(format!("cannot open {what}"))
                .hint("this user may not open the phone's USB device: add a udev rule for 18d1:4ee0 (or the phone's ids), or run as root"),
        )),
        Err(e) => Err(anyhow::Error::new(e).context(
            Fail::new(format!("cannot open {what}"))
                .hint("is the phone in fastboot mode and plugged in (`lsusb` shows it)? For a phone on the network use -s tcp:HOST or udp:HOST"),
        )),
    }
}

/// A fastboot session.
pub struct Client {
    t: Box<dyn Transport>,
    /// Where INFO and TEXT lines go.
    pub on_info: Box<dyn FnMut(&str)>,
    /// Every command sent, in order (for the report).
    pub sent: Vec<String>,
}

impl Client {
    pub fn new(t: Box<dyn Transport>) -> Client {
        Client { t, on_info: Box::new(|_| {}), sent: Vec::new() }
    }

    pub fn name(&self) -> String {
        self.t.name()
    }

    fn send(&mut self, c: &Command) -> Result<()> {
        let bytes = c.encode().map_err(|e| anyhow::anyhow!("{e}"))?;
        self.sent.push(c.show());
        self.t.before_command().with_context(|| format!("reaching {} before `{}`", self.t.name(), c.show()))?;
        self.t.send(&bytes).with_context(|| format!("sending `{}` to {}", c.show(), self.t.name()))
    }

    /// Reads replies until one that is not INFO or TEXT.
    fn reply(&mut self, c: &Command) -> Result<Reply> {
        loop {
            let b = self.t.recv().with_context(|| format!("waiting for the answer to `{}`", c.show()))?;
            match Reply::parse(&b).map_err(|e| anyhow::anyhow!("answer to `{}`: {e}", c.show()))? {
                Reply::Info(m) | Reply::Text(m) => (self.on_info)(&m),
                r => return Ok(r),
            }
        }
    }

    /// Runs a command without a data phase; its OKAY value, or an error with the device's
    /// FAIL message.
    pub fn command(&mut self, c: &Command) -> Result<String> {
        self.send(c)?;
        match self.reply(c)? {
            Reply::Okay(v) => Ok(v),
            Reply::Fail(m) => Err(Fail::new(format!("the device refused `{}`: {m}", c.show())).into()),
            r => Err(anyhow::anyhow!("unexpected answer to `{}`: {r:?}", c.show())),
        }
    }

    /// A variable, or None when the device does not know it (FAIL): bootloaders differ in
    /// which they implement.
    pub fn getvar(&mut self, name: &str) -> Result<Option<String>> {
        let c = Command::GetVar(name.into());
        self.send(&c)?;
        match self.reply(&c)? {
            Reply::Okay(v) => Ok(Some(v)),
            Reply::Fail(_) => Ok(None),
            r => Err(anyhow::anyhow!("unexpected answer to `{}`: {r:?}", c.show())),
        }
    }

    /// Downloads `data` into the device's buffer, calling `progress` with the bytes sent
    /// so far.
    pub fn download(&mut self, data: &[u8], progress: &mut dyn FnMut(u64)) -> Result<()> {
        let len = data.len() as u64;
        let n = u32::try_from(len).map_err(|_| anyhow::anyhow!("{}", protocol::Error::TooBig(len)))?;
        let c = Command::Download(n);
        self.send(&c)?;
        match self.reply(&c)? {
            Reply::Data(m) if m == n => {}
            Reply::Data(m) => anyhow::bail!("the device asked for {m} bytes, not {n}"),
            Reply::Fail(m) => return Err(Fail::new(format!("the device refused `{}`: {m}", c.show())).into()),
            r => anyhow::bail!("unexpected answer to `{}`: {r:?}", c.show()),
        }
        let mut sent = 0u64;
        for chunk in data.chunks(1 << 20) {
            self.t.send(chunk).with_context(|| format!("sending data to {} after {sent} bytes", self.t.name()))?;
            sent += chunk.len() as u64;
            progress(sent);
        }
        match self.reply(&c)? {
            Reply::Okay(_) => Ok(()),
            Reply::Fail(m) => Err(Fail::new(format!("the device refused the download: {m}")).into()),
            r => anyhow::bail!("unexpected answer after the download: {r:?}"),
        }
    }
}
