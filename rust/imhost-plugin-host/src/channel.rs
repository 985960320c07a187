//! The two channels between a host and its isolated worker, and the anonymous memory that
//! carries pixels between them.
//!
//! - Worker → host: JSON lines on a pipe (the worker's private copy of stdout). The host reads
//!   them with [`read_bounded_lines`]: a line over [`MAX_LINE`] ends the worker, and the channel
//!   that hands lines to the run loop is bounded, so a worker cannot make the host allocate
//!   without limit.
//! - Host → worker: a `SOCK_SEQPACKET` Unix socket (descriptor 3 in the worker). Each message is
//!   one packet of JSON (at most [`MAX_PACKET`] bytes) with up to [`MAX_FDS`] descriptors
//!   attached (`SCM_RIGHTS`): the request and the input pixels of a run, each output the host
//!   allocated. The packet boundary keeps descriptors with their message.
//! - Pixels: `memfd_create` memory, never a named file. Inputs are sealed against writing,
//!   shrinking and growing before the worker sees them; outputs are sized by the host and sealed
//!   against shrinking and growing (so the host's later read cannot fault), and the worker writes
//!   their contents. Nothing has a name another user could open, and everything disappears with
//!   the last descriptor — after any signal, `kill -9` included.

use std::fs::File;
use std::io::{BufRead, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde_json::Value;

/// The longest JSON line a worker may send (hello with manifests, done with a report).
pub const MAX_LINE: usize = 16 << 20;
/// The longest host → worker packet.
pub const MAX_PACKET: usize = 64 << 10;
/// The most descriptors one packet carries.
pub const MAX_FDS: usize = 4;

/// A pair of connected `SOCK_SEQPACKET` Unix sockets (close-on-exec).
pub fn socket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Send `message` with `fds` attached, as one packet.
pub fn send(socket: impl AsFd, message: &Value, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let text = message.to_string();
    if text.len() > MAX_PACKET || fds.len() > MAX_FDS {
        return Err(std::io::Error::other("message too large for the worker channel"));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("cannot attach descriptors"));
    }
    let sent = rustix::net::sendmsg(socket, &[IoSlice::new(text.as_bytes())], &mut control, SendFlags::NOSIGNAL)?;
    if sent != text.len() {
        return Err(std::io::Error::other("short send on the worker channel"));
    }
    Ok(())
}

/// Receive one packet: its JSON and descriptors; `None` once the peer has closed its end.
/// A packet that is truncated, not JSON, or carries too many descriptors is an error.
pub fn receive(socket: impl AsFd) -> std::io::Result<Option<(Value, Vec<OwnedFd>)>> {
    let mut buffer = vec![0u8; MAX_PACKET];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(&socket, &mut [IoSliceMut::new(&mut buffer)], &mut control, RecvFlags::CMSG_CLOEXEC)
        {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if got.flags.contains(rustix::net::ReturnFlags::TRUNC) || got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(std::io::Error::other("a truncated packet on the worker channel"));
    }
    let value = serde_json::from_slice(&buffer[..got.bytes])
        .map_err(|e| std::io::Error::other(format!("an unreadable packet on the worker channel: {e}")))?;
    Ok(Some((value, fds)))
}

/// Anonymous memory that can be sealed (`memfd_create`, close-on-exec); `name` shows only in
/// `/proc/<pid>/fd` of processes holding it.
pub fn memfd(name: &str) -> std::io::Result<File> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    Ok(File::from(fd))
}

/// Seals of an input the host wrote: nothing can change it any more.
pub const INPUT_SEALS: SealFlags =
    SealFlags::SEAL.union(SealFlags::SHRINK).union(SealFlags::GROW).union(SealFlags::WRITE);
/// Seals of an output the host sized: the worker writes its contents, its size is fixed.
pub const OUTPUT_SEALS: SealFlags = SealFlags::SEAL.union(SealFlags::SHRINK).union(SealFlags::GROW);

/// Add `seals` to a memfd.
pub fn seal(file: &File, seals: SealFlags) -> std::io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(file, seals)?)
}

/// Whether `file` is a memfd carrying at least `seals` and exactly `len` bytes.
pub fn is_sealed(file: &File, seals: SealFlags, len: u64) -> bool {
    rustix::fs::fcntl_get_seals(file).is_ok_and(|s| s.contains(seals)) && file.metadata().is_ok_and(|m| m.len() == len)
}

/// What [`read_bounded_lines`] hands on.
#[derive(Debug)]
pub enum Line {
    /// One line, without its newline.
    Text(String),
    /// A line longer than the bound: the reader stopped.
    TooLong(usize),
}

/// Read lines of at most `max` bytes from `reader` and pass them to `deliver` until the end of
/// the stream, a read error, `deliver` returning false, or an over-long line (reported as
/// [`Line::TooLong`], then the reading stops). With `truncate`, an over-long line is cut to
/// `max` bytes instead and reading goes on (for the worker's stderr, which is only quoted).
pub fn read_bounded_lines(
    reader: impl std::io::Read,
    max: usize,
    truncate: bool,
    mut deliver: impl FnMut(Line) -> bool,
) {
    let mut reader = std::io::BufReader::with_capacity(64 << 10, reader);
    let mut line: Vec<u8> = Vec::new();
    let mut discarding = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let (part, newline) = match chunk.iter().position(|&b| b == b'\n') {
            Some(n) => (&chunk[..n], true),
            None => (chunk, false),
        };
        let used = part.len() + usize::from(newline);
        if !discarding {
            let room = max.saturating_sub(line.len());
            line.extend_from_slice(&part[..part.len().min(room)]);
            if part.len() > room {
                if !truncate {
                    deliver(Line::TooLong(max));
                    return;
                }
                discarding = true;
            }
        }
        reader.consume(used);
        if newline {
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            discarding = false;
            if !deliver(Line::Text(text)) {
                return;
            }
        }
    }
    if !line.is_empty() {
        deliver(Line::Text(String::from_utf8_lossy(&line).into_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn packets_carry_json_and_descriptors() {
        let (a, b) = socket_pair().unwrap();
        let mut f = memfd("test").unwrap();
        f.write_all(b"pixels").unwrap();
        seal(&f, INPUT_SEALS).unwrap();
        assert!(is_sealed(&f, INPUT_SEALS, 6));
        assert!(f.write_all(b"more").is_err(), "sealed against writing");
        send(&a, &serde_json::json!({"type": "run"}), &[f.as_fd()]).unwrap();
        let (value, fds) = receive(&b).unwrap().unwrap();
        assert_eq!(value["type"], "run");
        assert_eq!(fds.len(), 1);
        // The descriptor shares the writer's file offset: read by position.
        let mut text = [0u8; 6];
        std::os::unix::fs::FileExt::read_exact_at(&File::from(fds.into_iter().next().unwrap()), &mut text, 0).unwrap();
        assert_eq!(&text, b"pixels");
        drop(a);
        assert!(receive(&b).unwrap().is_none(), "EOF once the peer closed");
    }

    #[test]
    fn lines_are_bounded() {
        let input = format!("short\n{}\nafter\n", "x".repeat(100));
        let mut got = Vec::new();
        read_bounded_lines(input.as_bytes(), 10, false, |l| {
            got.push(format!("{l:?}"));
            true
        });
        assert_eq!(got, ["Text(\"short\")", "TooLong(10)"]);
        let mut got = Vec::new();
        read_bounded_lines(input.as_bytes(), 10, true, |l| {
            if let Line::Text(t) = l {
                got.push(t);
            }
            true
        });
        assert_eq!(got, ["short", "xxxxxxxxxx", "after"]);
    }
}
