//! Graceful upgrade, the side of the new process: take the listening
//! sockets of the running keygate instead of binding the ports.
//!
//! The new keygate (`run --upgrade`) binds the Unix socket
//! `gateway.upgradeSocket` and waits. On SIGQUIT, the running keygate
//! (through pingora 0.9.1, `server/transfer_fd`) connects to it and sends
//! one message: the listen addresses joined by spaces as the payload, and
//! one file descriptor per address as `SCM_RIGHTS`, in the same order.
//!
//! keygate receives that message itself rather than through pingora's own
//! receiver, because pingora's receiver waits about 6 seconds and then ends
//! the process with status 1, panics on a path it cannot bind, and lets any
//! local user connect. keygate waits as long as `--upgrade-timeout`, makes
//! the socket readable by its own user only, checks the sender's user, and
//! reports every failure with the fix. pingora can load inherited sockets
//! only through its own receiver, so [`pass_to_engine`] relays them to it
//! over a second socket in a folder that only keygate's user can open.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, sockopt, ControlMessageOwned, MsgFlags};
use pingora::server::{Fds, Server};
use tracing::{info, warn};

/// Maximum number of sockets in one handover, the limit of pingora's own receiver.
const MAX_SOCKETS: usize = 32;

/// Maximum payload size: pingora's sender writes the addresses into a 2048-byte buffer.
const MAX_PAYLOAD_BYTES: usize = 2048;

/// How often the waiting socket is checked for the running keygate's connection.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// How long reading the message may take once the running keygate has connected.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the relay waits for pingora's receiver to create its socket.
const RELAY_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Name of the relay socket inside the private relay folder.
const RELAY_SOCKET_NAME: &str = "r";

/// Flag of a listening socket in `/proc/net/unix` (`__SO_ACCEPTCON` in Linux).
const PROC_NET_UNIX_LISTENING: u32 = 0x0001_0000;

/// Failure to take over the listening sockets.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("{path} exists and is not a Unix socket; remove it, or set gateway.upgradeSocket to another path")]
    NotASocket { path: String },
    #[error("{path} belongs to another user (uid {owner}); remove it as that user, or set gateway.upgradeSocket to a path in a folder that only keygate's user can write")]
    ForeignSocket { path: String, owner: u32 },
    #[error("another process is already waiting at {path}; stop it, or set gateway.upgradeSocket to another path")]
    AlreadyWaiting { path: String },
    #[error("cannot create the handover socket {path}: {source}; the folder must exist and be writable by keygate's user, or set gateway.upgradeSocket")]
    Bind { path: String, source: io::Error },
    #[error("no running keygate handed over its listening sockets at {path} within {wait:?}; start this command first, then send SIGQUIT to the running keygate (kill -QUIT <pid>) while it waits, and check that both use the same gateway.upgradeSocket")]
    TimedOut { path: String, wait: Duration },
    #[error("receiving the listening sockets at {path} failed: {reason}; the running keygate keeps them and stops after its grace period, so start keygate without --upgrade once it has stopped")]
    Receive { path: String, reason: String },
}

/// Listening sockets received from the running keygate, by listen address.
pub struct InheritedSockets {
    sockets: Vec<(String, OwnedFd)>,
    relay: RelayFolder,
}

impl InheritedSockets {
    /// Returns the listen addresses, as pingora names them (`127.0.0.1:20200`).
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.sockets.iter().map(|(address, _)| address.as_str())
    }

    /// Returns the path of the relay socket, which pingora's receiver must bind.
    pub fn relay_socket(&self) -> String {
        self.relay.socket_path().display().to_string()
    }
}

/// Waits up to `wait` at `socket` for the running keygate to send its
/// listening sockets, and returns them.
///
/// # Errors
///
/// The socket cannot be created, nothing arrives within `wait`, or the
/// message is not a handover.
pub fn receive(socket: &Path, wait: Duration) -> Result<InheritedSockets, HandoverError> {
    let path = socket.display().to_string();
    remove_stale_socket(socket)?;
    let relay = RelayFolder::create(socket)?;

    let bind_error = |source| HandoverError::Bind {
        path: path.clone(),
        source,
    };
    let listener = UnixListener::bind(socket).map_err(bind_error)?;
    let _socket_file = RemoveOnDrop(socket.to_path_buf());
    // The connecting process sends the sockets that keygate will serve on,
    // so only keygate's own user may connect.
    fs::set_permissions(socket, Permissions::from_mode(0o600)).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    info!(socket = %path, wait = ?wait, "waiting for the running keygate to hand over its listening sockets; send it SIGQUIT");

    let deadline = Instant::now() + wait;
    loop {
        // Checked on every turn, so rejected connections cannot extend the wait.
        if Instant::now() >= deadline {
            return Err(HandoverError::TimedOut { path, wait });
        }
        match listener.accept() {
            Ok((stream, _)) => match sender_uid(&stream) {
                Ok(_) => {
                    let sockets =
                        read_sockets(&stream).map_err(|reason| HandoverError::Receive {
                            path: path.clone(),
                            reason,
                        })?;
                    return Ok(InheritedSockets { sockets, relay });
                }
                Err(reason) => {
                    warn!(socket = %path, reason = %reason, "ignored a connection to the handover socket")
                }
            },
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(HandoverError::Receive {
                    path,
                    reason: format!("accepting the connection failed: {err}"),
                })
            }
        }
    }
}

/// Hands the inherited sockets to pingora, through its own receiver on
/// [`InheritedSockets::relay_socket`], and runs pingora's bootstrap.
///
/// `server` must have been built with upgrade on and `upgrade_sock` set to
/// the relay socket. Once pingora has its own copies, keygate's copies
/// are closed and the relay folder is removed.
///
/// # Errors
///
/// Sending to pingora's receiver failed. pingora's bootstrap itself ends the
/// process with status 1 when nothing arrives within about 6 seconds.
pub fn pass_to_engine(server: &mut Server, inherited: InheritedSockets) -> Result<(), String> {
    let relay_path = inherited.relay_socket();
    let mut fds = Fds::new();
    for (address, fd) in &inherited.sockets {
        fds.add(address.clone(), fd.as_raw_fd());
    }
    let sender = thread::spawn(move || {
        let deadline = Instant::now() + RELAY_START_TIMEOUT;
        while !Path::new(&relay_path).exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        fds.send_to_sock(relay_path.as_str())
    });

    server.bootstrap();

    let sent = sender
        .join()
        .map_err(|_| "the thread that relays the listening sockets failed".to_string())?;
    sent.map_err(|err| {
        format!("relaying the listening sockets to the proxy engine failed: {err}")
    })?;
    let addresses: Vec<&str> = inherited.addresses().collect();
    info!(addresses = ?addresses, "took over the listening sockets of the running keygate");
    Ok(())
}

/// Checks that a keygate is waiting at `socket` for a handover: a
/// listening Unix socket that belongs to this process's user.
///
/// # Errors
///
/// Returns the reason why no keygate would receive the sockets.
pub fn check_receiver(socket: &Path) -> Result<(), String> {
    let path = socket.display();
    let metadata = fs::symlink_metadata(socket).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => format!("no keygate is waiting at {path}"),
        _ => format!("{path} cannot be inspected: {err}"),
    })?;
    if !metadata.file_type().is_socket() {
        return Err(format!("{path} is not a Unix socket"));
    }
    let own_uid = nix::unistd::geteuid().as_raw();
    if metadata.uid() != own_uid {
        return Err(format!(
            "{path} belongs to another user (uid {}), and this keygate hands its sockets only to its own user",
            metadata.uid()
        ));
    }
    match is_listening(socket) {
        Some(false) => Err(format!(
            "{path} is left over from an earlier keygate; no process is waiting there"
        )),
        // Unknown when /proc/net/unix cannot be read: the socket file is the best evidence.
        Some(true) | None => Ok(()),
    }
}

/// Removes a socket file left by an earlier `--upgrade` run, and refuses
/// anything else found at `socket`.
fn remove_stale_socket(socket: &Path) -> Result<(), HandoverError> {
    let path = socket.display().to_string();
    let metadata = match fs::symlink_metadata(socket) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(HandoverError::Bind { path, source }),
    };
    if !metadata.file_type().is_socket() {
        return Err(HandoverError::NotASocket { path });
    }
    if metadata.uid() != nix::unistd::geteuid().as_raw() {
        return Err(HandoverError::ForeignSocket {
            path,
            owner: metadata.uid(),
        });
    }
    if is_listening(socket) == Some(true) {
        return Err(HandoverError::AlreadyWaiting { path });
    }
    fs::remove_file(socket).map_err(|source| HandoverError::Bind { path, source })
}

/// Returns the user id of the process at the other end of `stream`, or why
/// it may not hand over sockets: only keygate's own user and root may.
fn sender_uid(stream: &UnixStream) -> Result<u32, String> {
    let credentials = nix::sys::socket::getsockopt(stream, sockopt::PeerCredentials)
        .map_err(|err| format!("reading the sender's credentials failed: {err}"))?;
    let uid = credentials.uid();
    let own_uid = nix::unistd::geteuid().as_raw();
    if uid == own_uid || uid == 0 {
        Ok(uid)
    } else {
        Err(format!(
            "the sender runs as uid {uid}, not as keygate's uid {own_uid}"
        ))
    }
}

/// Reads the one handover message from `stream`: addresses and sockets.
fn read_sockets(stream: &UnixStream) -> Result<Vec<(String, OwnedFd)>, String> {
    let setup_error = |err: io::Error| format!("preparing the connection failed: {err}");
    stream.set_nonblocking(false).map_err(setup_error)?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(setup_error)?;

    let mut payload = vec![0u8; MAX_PAYLOAD_BYTES];
    let mut control = nix::cmsg_space!([RawFd; MAX_SOCKETS]);
    let (fds, length, truncated) = {
        let mut buffers = [IoSliceMut::new(&mut payload)];
        // CLOEXEC keeps the sockets out of any program keygate might start.
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut buffers,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|err| format!("reading the message failed: {err}"))?;
        let mut fds = Vec::new();
        let messages = message
            .cmsgs()
            .map_err(|err| format!("reading the message failed: {err}"))?;
        for control_message in messages {
            if let ControlMessageOwned::ScmRights(received) = control_message {
                for fd in received {
                    // SAFETY: the kernel has just created `fd` in this
                    // process for this message, and nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let truncated = message.flags.contains(MsgFlags::MSG_CTRUNC);
        (fds, message.bytes, truncated)
    };
    if truncated {
        return Err(format!("more than {MAX_SOCKETS} sockets were sent"));
    }

    // The sender closes the connection after its one message.
    payload.truncate(length);
    let mut rest = Vec::new();
    let limit = (MAX_PAYLOAD_BYTES - length) as u64 + 1;
    stream
        .take(limit)
        .read_to_end(&mut rest)
        .map_err(|err| format!("reading the message failed: {err}"))?;
    payload.extend_from_slice(&rest);
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "the message is longer than {MAX_PAYLOAD_BYTES} bytes"
        ));
    }

    let addresses = std::str::from_utf8(&payload)
        .map_err(|_| "the listen addresses are not UTF-8".to_string())?
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>();
    if fds.is_empty() {
        return Err("the running keygate sent no listening sockets".into());
    }
    if addresses.len() != fds.len() {
        return Err(format!(
            "the message names {} addresses for {} sockets",
            addresses.len(),
            fds.len()
        ));
    }
    Ok(addresses.into_iter().zip(fds).collect())
}

/// Returns whether a process listens on the Unix socket bound at `socket`,
/// from the socket table in `/proc/net/unix`, or `None` when it cannot be read.
fn is_listening(socket: &Path) -> Option<bool> {
    let table = fs::read_to_string("/proc/net/unix").ok()?;
    let suffix = format!(" {}", socket.display());
    let listening = table.lines().skip(1).any(|line| {
        let flags = line
            .split_whitespace()
            .nth(3)
            .and_then(|flags| u32::from_str_radix(flags, 16).ok())
            .unwrap_or(0);
        line.ends_with(&suffix) && flags & PROC_NET_UNIX_LISTENING != 0
    });
    Some(listening)
}

/// A folder that only keygate's user can open, beside the handover socket,
/// for the relay socket that pingora's receiver binds. pingora makes that
/// socket writable by every user and takes the first connection, so it
/// must not sit in a shared folder such as /tmp.
struct RelayFolder {
    folder: PathBuf,
}

impl RelayFolder {
    fn create(socket: &Path) -> Result<RelayFolder, HandoverError> {
        let path = socket.display().to_string();
        let mut suffix = [0u8; 4];
        getrandom::fill(&mut suffix).map_err(|err| HandoverError::Bind {
            path: path.clone(),
            source: io::Error::other(format!("the system random source failed: {err}")),
        })?;
        // `<socket>.<8 hex>/r`: 11 bytes longer than the socket path.
        let folder = PathBuf::from(format!("{path}.{}", hex::encode(suffix)));
        DirBuilder::new()
            .mode(0o700)
            .create(&folder)
            .map_err(|source| HandoverError::Bind {
                path: folder.display().to_string(),
                source,
            })?;
        Ok(RelayFolder { folder })
    }

    fn socket_path(&self) -> PathBuf {
        self.folder.join(RELAY_SOCKET_NAME)
    }
}

impl Drop for RelayFolder {
    fn drop(&mut self) {
        // pingora's receiver removes its socket; this covers a failed relay.
        let _ = fs::remove_file(self.socket_path());
        if let Err(err) = fs::remove_dir(&self.folder) {
            warn!(folder = %self.folder.display(), error = %err, "failed to remove the relay folder");
        }
    }
}

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests;
