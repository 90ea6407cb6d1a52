//! The stores the store's tests run on: a fresh SQLite file, and the PostgreSQL database
//! `TOLLGATE_TEST_POSTGRES_URL` names (this machine's `test` database by default).

use super::Store;

/// A store on a new SQLite file, with the directory that holds it.
pub async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store = Store::open(&url).await.unwrap();
    (dir, store)
}

/// A store on the test PostgreSQL database.
pub async fn postgres() -> Store {
    let url = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    Store::open(&url)
        .await
        .expect("PostgreSQL must be running for this test (see README)")
}
