//! The command line as a shell pipeline uses it: a reader that stops early
//! (`tollgate keys list | head -1`) is not an error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use tollgate_control_plane::store::{KeyRow, Store};

#[tokio::test]
async fn a_listing_read_only_in_part_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        "[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9\"\n\
         [[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n",
    )
    .unwrap();
    // More than a pipe holds (64 KiB), so the listing is still writing when the reader goes.
    let store = Store::open(&format!(
        "sqlite://{}/.tollgate/tollgate.db",
        dir.path().display()
    ))
    .await
    .unwrap();
    for i in 0..2_000 {
        let row = KeyRow {
            id: format!("key_{i:016x}"),
            name: format!("a key with a long enough name to fill the pipe quickly, number {i}"),
            key_hash: format!("{i:064x}"),
            key_prefix: "tg-0000".into(),
            models: Vec::new(),
            created_at_ms: 0,
            revoked_at_ms: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            user: None,
            team: None,
            expires_at_ms: None,
            previous_until_ms: None,
        };
        store.insert_key(&row).await.unwrap();
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--config", config.to_str().unwrap(), "keys", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("key_"), "{first}");
    // The reader is dropped here, as `head -1` exits.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

#[tokio::test]
async fn the_first_admin_is_created_with_the_password_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        "[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9\"\n\
         [[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n",
    )
    .unwrap();
    let tollgate = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["--config", config.to_str().unwrap()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = tollgate(
        &["users", "create", "root", "--role", "admin"],
        "the first admin's password\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("created with role admin"), "{stdout}");
    let out = tollgate(&["users", "list"], "");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("root") && listing.contains("admin") && listing.contains("active"),
        "{listing}"
    );
    let store = Store::open(&format!(
        "sqlite://{}/.tollgate/tollgate.db",
        dir.path().display()
    ))
    .await
    .unwrap();
    let root = store.user_by_name("root").await.unwrap().unwrap();
    assert!(tollgate_control_plane::passwords::verify(
        "the first admin's password",
        &root.password_hash
    ));
    let out = tollgate(&["users", "create", "weak", "--role", "admin"], "short\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12"));
}
