//! Event filtering, watched folders, file digests and the debounce.

use super::*;

#[test]
fn reading_is_no_change() {
    assert!(!is_change(&EventKind::Access(AccessKind::Open(
        AccessMode::Any
    ))));
    assert!(!is_change(&EventKind::Access(AccessKind::Close(
        AccessMode::Read
    ))));
    assert!(is_change(&EventKind::Access(AccessKind::Close(
        AccessMode::Write
    ))));
    assert!(is_change(&EventKind::Create(
        notify::event::CreateKind::File
    )));
    assert!(is_change(&EventKind::Remove(
        notify::event::RemoveKind::Any
    )));
}

#[test]
fn folders_follow_symlinks() {
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("keygate.yml"), "allowedClients: []\n").unwrap();
    let link = root.path().join("keygate.yml");
    std::os::unix::fs::symlink(real.join("keygate.yml"), &link).unwrap();

    let folders = folders_of(&link);
    let root_folder = std::fs::canonicalize(root.path()).unwrap();
    assert!(folders.contains(root.path()), "{folders:?}");
    assert!(folders.contains(&root_folder.join("real")), "{folders:?}");
}

#[test]
fn fifo_is_not_read() {
    let folder = tempfile::tempdir().unwrap();
    let fifo = folder.path().join("keygate.yml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo failed");
    let err = file_digest(&fifo).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn missing_file_keeps_its_folder() {
    let folders = folders_of(Path::new("/nonexistent/keygate.yml"));
    assert_eq!(
        folders.into_iter().collect::<Vec<_>>(),
        [PathBuf::from("/nonexistent")]
    );
}

#[tokio::test]
async fn settle_waits_for_quiet() {
    let changes = Notify::new();
    let started = Instant::now();
    settle(&changes).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= DEBOUNCE, "{elapsed:?}");
    assert!(elapsed < MAX_DEBOUNCE, "{elapsed:?}");
}

#[tokio::test]
async fn settle_stops_at_max_wait() {
    let changes = Arc::new(Notify::new());
    let noisy = Arc::clone(&changes);
    let noise = tokio::spawn(async move {
        loop {
            noisy.notify_one();
            tokio::time::sleep(DEBOUNCE / 5).await;
        }
    });
    let started = Instant::now();
    settle(&changes).await;
    let elapsed = started.elapsed();
    noise.abort();
    assert!(elapsed >= MAX_DEBOUNCE, "{elapsed:?}");
    assert!(elapsed < MAX_DEBOUNCE + DEBOUNCE, "{elapsed:?}");
}
