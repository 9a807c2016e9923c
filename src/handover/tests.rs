//! The receiving side of a handover, against pingora's own sender.

use std::net::TcpListener;
use std::os::unix::net::UnixListener;

use super::*;

const SHORT_WAIT: Duration = Duration::from_secs(1);

fn socket_in(folder: &tempfile::TempDir) -> PathBuf {
    folder.path().join("upgrade.sock")
}

/// Returns the names in `folder`, to check that nothing was left behind.
fn entries(folder: &tempfile::TempDir) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(folder.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn receives_sockets_from_engine_sender() {
    let folder = tempfile::tempdir().unwrap();
    let socket = socket_in(&folder);
    let receiver = {
        let socket = socket.clone();
        thread::spawn(move || receive(&socket, Duration::from_secs(10)))
    };
    wait_for_file(&socket);
    let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only keygate's user may connect");

    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    let first_name = first.local_addr().unwrap().to_string();
    let second_name = second.local_addr().unwrap().to_string();
    let mut fds = Fds::new();
    fds.add(first_name.clone(), first.as_raw_fd());
    fds.add(second_name.clone(), second.as_raw_fd());
    fds.send_to_sock(socket.to_str().unwrap()).unwrap();

    let inherited = receiver.join().unwrap().unwrap();
    let mut addresses: Vec<&str> = inherited.addresses().collect();
    addresses.sort_unstable();
    let mut expected = [first_name.as_str(), second_name.as_str()];
    expected.sort_unstable();
    assert_eq!(addresses, expected);

    // Each received descriptor is the listener sent under its address.
    for (address, fd) in &inherited.sockets {
        let listener = TcpListener::from(fd.try_clone().unwrap());
        assert_eq!(listener.local_addr().unwrap().to_string(), *address);
    }
    assert!(
        inherited
            .relay_socket()
            .starts_with(&format!("{}.", socket.display())),
        "{}",
        inherited.relay_socket()
    );
    drop(inherited);
    assert!(
        entries(&folder).is_empty(),
        "left behind: {:?}",
        entries(&folder)
    );
}

#[test]
fn times_out_without_sender() {
    let folder = tempfile::tempdir().unwrap();
    let socket = socket_in(&folder);
    let started = Instant::now();
    let err = receive(&socket, SHORT_WAIT).err().unwrap();
    assert!(matches!(err, HandoverError::TimedOut { .. }), "{err}");
    assert!(started.elapsed() >= SHORT_WAIT);
    let message = err.to_string();
    assert!(message.contains("SIGQUIT"), "{message}");
    assert!(message.contains(&socket.display().to_string()), "{message}");
    assert!(
        entries(&folder).is_empty(),
        "left behind: {:?}",
        entries(&folder)
    );
}

#[test]
fn missing_folder_named_in_error() {
    let folder = tempfile::tempdir().unwrap();
    let socket = folder.path().join("missing").join("upgrade.sock");
    let err = receive(&socket, SHORT_WAIT).err().unwrap();
    assert!(matches!(err, HandoverError::Bind { .. }), "{err}");
    assert!(err.to_string().contains("gateway.upgradeSocket"), "{err}");
}

#[test]
fn regular_file_left_alone() {
    let folder = tempfile::tempdir().unwrap();
    let socket = socket_in(&folder);
    fs::write(&socket, "data").unwrap();
    let err = receive(&socket, SHORT_WAIT).err().unwrap();
    assert!(matches!(err, HandoverError::NotASocket { .. }), "{err}");
    assert_eq!(fs::read_to_string(&socket).unwrap(), "data");
    assert_eq!(entries(&folder), ["upgrade.sock"]);
}

#[test]
fn stale_socket_replaced() {
    let folder = tempfile::tempdir().unwrap();
    let socket = socket_in(&folder);
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists(), "a closed listener leaves its file");
    let err = receive(&socket, SHORT_WAIT).err().unwrap();
    assert!(matches!(err, HandoverError::TimedOut { .. }), "{err}");
}

#[test]
fn second_waiter_refused() {
    let folder = tempfile::tempdir().unwrap();
    let socket = socket_in(&folder);
    let _waiting = UnixListener::bind(&socket).unwrap();
    let err = receive(&socket, SHORT_WAIT).err().unwrap();
    assert!(matches!(err, HandoverError::AlreadyWaiting { .. }), "{err}");
    assert!(socket.exists(), "the other waiter's socket must stay");
}

#[test]
fn receiver_check_cases() {
    let folder = tempfile::tempdir().unwrap();
    let socket = socket_in(&folder);

    let missing = check_receiver(&socket).unwrap_err();
    assert!(missing.contains("no keygate is waiting"), "{missing}");

    let listener = UnixListener::bind(&socket).unwrap();
    assert_eq!(check_receiver(&socket), Ok(()));

    drop(listener);
    let stale = check_receiver(&socket).unwrap_err();
    assert!(stale.contains("left over"), "{stale}");

    fs::remove_file(&socket).unwrap();
    fs::write(&socket, "data").unwrap();
    let regular = check_receiver(&socket).unwrap_err();
    assert!(regular.contains("not a Unix socket"), "{regular}");
}

#[test]
fn message_without_sockets_rejected() {
    let folder = tempfile::tempdir().unwrap();
    let socket = socket_in(&folder);
    let receiver = {
        let socket = socket.clone();
        thread::spawn(move || receive(&socket, Duration::from_secs(10)))
    };
    wait_for_file(&socket);
    let mut plain = UnixStream::connect(&socket).unwrap();
    io::Write::write_all(&mut plain, b"127.0.0.1:1").unwrap();
    drop(plain);

    let err = receiver.join().unwrap().err().unwrap();
    assert!(matches!(err, HandoverError::Receive { .. }), "{err}");
    assert!(err.to_string().contains("no listening sockets"), "{err}");
    assert!(
        entries(&folder).is_empty(),
        "left behind: {:?}",
        entries(&folder)
    );
}
