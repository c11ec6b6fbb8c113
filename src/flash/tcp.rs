//! Fastboot over TCP (protocol version 1): a 4-byte handshake `FB01` each way, then every
//! packet framed by its length as a big-endian u64. A download's data may come in any
//! number of frames; a device treats the data phase as a byte stream.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// fastboot's TCP port (the code says 5554; its README's 5555 is wrong).
pub const DEFAULT_PORT: u16 = 5554;
const HANDSHAKE: &[u8; 4] = b"FB01";
/// Largest frame a reader accepts outside a data phase.
const MAX_FRAME: u64 = 64 << 20;

/// One end of a fastboot TCP connection, after the handshake.
pub struct Tcp {
    stream: TcpStream,
    pub peer: SocketAddr,
}

/// `host[:port]` (the port defaulting to `default_port`) as an address.
pub fn resolve(target: &str, default_port: u16) -> io::Result<SocketAddr> {
    let with_port = if target.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        target.to_string()
    } else {
        format!("{target}:{default_port}")
    };
    with_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{target} has no address")))
}

fn handshake(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(HANDSHAKE)?;
    let mut theirs = [0u8; 4];
    stream.read_exact(&mut theirs)?;
    if &theirs[..2] != b"FB" || !theirs[2..].iter().all(u8::is_ascii_digit) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not a fastboot handshake: {theirs:?}")));
    }
    Ok(())
}

impl Tcp {
    /// Connects to `host[:port]` and shakes hands (2 s, as fastboot allows).
    pub fn connect(target: &str) -> io::Result<Tcp> {
        let addr = resolve(target, DEFAULT_PORT)?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        handshake(&mut stream)?;
        // fastboot's reply timeout; an INFO reply starts it again.
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Tcp { stream, peer: addr })
    }

    /// The device side of an accepted connection.
    pub fn accept(mut stream: TcpStream) -> io::Result<Tcp> {
        let peer = stream.peer_addr()?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        handshake(&mut stream)?;
        stream.set_read_timeout(None)?;
        stream.set_nodelay(true)?;
        Ok(Tcp { stream, peer })
    }

    /// Sends one packet.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_be_bytes();
        if data.len() <= 4096 {
            // One segment for a command or reply.
            return self.stream.write_all(&[&len[..], data].concat());
        }
        // Data: the header, then the bytes where they are, no copy.
        self.stream.write_all(&len)?;
        self.stream.write_all(data)
    }

    /// Receives one packet (at most 64 MiB).
    pub fn recv(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 8];
        self.stream.read_exact(&mut len)?;
        let len = u64::from_be_bytes(len);
        if len > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Ends the connection both ways.
    pub fn close(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
