//! Fastboot over UDP (protocol version 1), the transport of network bootloaders such as
//! U-Boot's `fastboot udp`. Every packet starts with `{id u8, flags u8, seq u16 BE}`; the
//! host sends one packet and the device answers it (the same sequence number), the host
//! resending after 500 ms. A query asks the device's next sequence number, an init
//! exchanges version and largest packet; fastboot messages then travel in packets of at
//! most that size, all but the last flagged as continued. To read, the host sends an
//! empty fastboot packet and the device answers with data.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub const DEFAULT_PORT: u16 = 5554;
const ID_ERROR: u8 = 0;
const ID_QUERY: u8 = 1;
const ID_INIT: u8 = 2;
const ID_FASTBOOT: u8 = 3;
const FLAG_CONTINUATION: u8 = 1;
const HEADER: usize = 4;
const VERSION: u16 = 1;
/// The largest packet the host offers (fastboot's `kHostMaxPacketSize`).
const HOST_MAX_PACKET: u16 = 8192;
const RESEND: Duration = Duration::from_millis(500);
const MAX_RESEND: Duration = Duration::from_secs(8);
/// How long one exchange may take, resends included (fastboot gives up after 60 s).
const GIVE_UP: Duration = Duration::from_secs(60);

/// A fastboot UDP connection, after the query and init exchanges.
pub struct Udp {
    socket: UdpSocket,
    pub peer: SocketAddr,
    seq: u16,
    max_data: usize,
    /// Messages the device slipped in while acknowledging data (U-Boot sends an INFO every
    /// 30 s of a long operation, numbered as the next packet), handed out by `recv` first.
    pending: std::collections::VecDeque<Vec<u8>>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Udp {
    /// Reaches `host[:port]`: query, then init. When nothing has answered after a second,
    /// `waiting` is told once (the query goes on for `patience` in all: a bootloader may still
    /// be starting its network).
    pub fn connect(target: &str, patience: Duration, waiting: &mut dyn FnMut(SocketAddr)) -> io::Result<Udp> {
        let peer = super::tcp::resolve(target, DEFAULT_PORT)?;
        let socket = UdpSocket::bind(if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        socket.connect(peer)?;
        let mut u = Udp { socket, peer, seq: 0, max_data: 512 - HEADER, pending: Default::default() };
        // Query: the device says which sequence number it expects next.
        let first = Duration::from_secs(1).min(patience);
        let answer = match u.exchange(ID_QUERY, 0, &[], first) {
            Ok((_, a)) => a,
            Err(e) if e.kind() == io::ErrorKind::TimedOut && patience > first => {
                waiting(peer);
                u.exchange(ID_QUERY, 0, &[], patience - first)?.1
            }
            Err(e) => return Err(e),
        };
        let next = answer.get(..2).ok_or_else(|| invalid("a query answer without a sequence number".into()))?;
        u.seq = u16::from_be_bytes([next[0], next[1]]);
        let mut init = VERSION.to_be_bytes().to_vec();
        init.extend_from_slice(&HOST_MAX_PACKET.to_be_bytes());
        let (_, answer) = u.exchange(ID_INIT, 0, &init, GIVE_UP)?;
        u.seq = u.seq.wrapping_add(1);
        if answer.len() < 4 {
            return Err(invalid(format!("an init answer of {} bytes", answer.len())));
        }
        let version = u16::from_be_bytes([answer[0], answer[1]]);
        let max_packet = u16::from_be_bytes([answer[2], answer[3]]).min(HOST_MAX_PACKET) as usize;
        if version == 0 || max_packet < 512 {
            return Err(invalid(format!("the device offers version {version}, packets of {max_packet} bytes")));
        }
        u.max_data = max_packet - HEADER;
        Ok(u)
    }

    /// Sends one packet and returns the flags and data of its answer (same id and sequence
    /// number), resending every 500 ms. The caller advances the sequence number.
    fn exchange(&mut self, id: u8, flags: u8, data: &[u8], give_up: Duration) -> io::Result<(u8, Vec<u8>)> {
        let mut packet = vec![id, flags];
        packet.extend_from_slice(&self.seq.to_be_bytes());
        packet.extend_from_slice(data);
        let t0 = Instant::now();
        let mut buf = vec![0u8; 65536];
        let mut wait = RESEND;
        loop {
            match self.socket.send(&packet) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                r => {
                    r?;
                }
            }
            let resend_at = Instant::now() + wait;
            // Back off while the device is busy (a long flash): U-Boot queues what arrives
            // meanwhile, and too many queued packets stop its network for good.
            wait = (wait * 2).min(MAX_RESEND);
            loop {
                let now = Instant::now();
                if now >= resend_at {
                    break;
                }
                self.socket.set_read_timeout(Some(resend_at - now))?;
                let n = match self.socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                    // Refused: nothing listens yet (a bootloader still starting). Wait out the
                    // resend interval rather than resending at once, which would spin.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        std::thread::sleep(resend_at.saturating_duration_since(Instant::now()));
                        break;
                    }
                    Err(e) => return Err(e),
                };
                if n < HEADER {
                    continue;
                }
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                // The query's answer carries the host's sequence number (0) too.
                if seq != self.seq {
                    continue;
                }
                if buf[0] == ID_ERROR {
                    return Err(invalid(format!("the device reports: {}", String::from_utf8_lossy(&buf[HEADER..n]))));
                }
                if buf[0] != id {
                    continue;
                }
                return Ok((buf[1], buf[HEADER..n].to_vec()));
            }
            if t0.elapsed() >= give_up {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {} over UDP", self.peer)));
            }
        }
    }

    /// Asks the device which sequence number it expects next and takes it. Done before each
    /// command: U-Boot's counter can run ahead of the host's (an INFO it sent during a long
    /// flash and the host's resends while it was busy), after which it drops every packet.
    pub fn resync(&mut self) -> io::Result<()> {
        let (_, answer) = self.exchange(ID_QUERY, 0, &[], GIVE_UP)?;
        let next = answer.get(..2).ok_or_else(|| invalid("a query answer without a sequence number".into()))?;
        self.seq = u16::from_be_bytes([next[0], next[1]]);
        Ok(())
    }

    /// Sends one fastboot message (a command, or a piece of download data).
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let mut chunks = data.chunks(self.max_data).peekable();
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_some() { FLAG_CONTINUATION } else { 0 };
            let (_, mut body) = self.exchange(ID_FASTBOOT, flags, chunk, GIVE_UP)?;
            self.seq = self.seq.wrapping_add(1);
            // Not an acknowledgement but an INFO the device sent while working on this
            // packet: the acknowledgement follows, numbered one on. Asking with that number
            // makes the device repeat its last packet, and processes nothing twice.
            while !body.is_empty() {
                self.pending.push_back(body);
                body = self.exchange(ID_FASTBOOT, flags, chunk, GIVE_UP)?.1;
                self.seq = self.seq.wrapping_add(1);
            }
        }
        Ok(())
    }

    /// Receives one fastboot message (a reply): empty packets ask for data until an answer
    /// holds some and is not continued.
    pub fn recv(&mut self) -> io::Result<Vec<u8>> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(m);
        }
        let mut out = Vec::new();
        let t0 = Instant::now();
        loop {
            let (flags, body) = self.exchange(ID_FASTBOOT, 0, &[], GIVE_UP)?;
            self.seq = self.seq.wrapping_add(1);
            out.extend_from_slice(&body);
            if flags & FLAG_CONTINUATION == 0 && !out.is_empty() {
                return Ok(out);
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply from the device within 30 s"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time this thread has used, from /proc (utime + stime, in clock ticks).
    fn cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after_name.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    #[test]
    fn nothing_listening_is_waited_for_quietly_and_said() {
        // A port nothing listens on: bound, then released.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut told = Vec::new();
        let (t0, c0) = (Instant::now(), cpu_ticks());
        let r = Udp::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(3), &mut |p| told.push(p));
        let (took, cpu) = (t0.elapsed(), cpu_ticks() - c0);
        assert_eq!(r.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        assert_eq!(told.len(), 1, "told once that it waits: {told:?}");
        assert_eq!(told[0].port(), port);
        assert!(took >= Duration::from_secs(3), "waited its patience: {took:?}");
        // Spinning would use about as much CPU as wall time (300 ticks at 100 Hz).
        assert!(cpu < 30, "{cpu} clock ticks of CPU in {took:?}: it must sleep between resends");
    }
}
