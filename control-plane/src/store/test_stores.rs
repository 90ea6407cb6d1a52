//! The stores the store's tests run on: a fresh SQLite file, and a fresh schema of the
//! PostgreSQL database `TOLLGATE_TEST_POSTGRES_URL` names (this machine's `test` database
//! by default).
//!
//! Each PostgreSQL test gets its own schema: tests run at once, and one test's lease sweep
//! or totals must never see another's rows (a sweep reclaimed a concurrent test's leases);
//! nor may tables migrated by an older build of the schema stand in the way.

use super::Store;

/// A store on a new SQLite file, with the directory that holds it.
pub async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store = Store::open(&url).await.unwrap();
    (dir, store)
}

/// The URL of a new, empty schema of the test PostgreSQL database.
pub async fn fresh_postgres_url() -> String {
    let base = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("test_{}", hex::encode(rand::random::<[u8; 8]>()));
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("PostgreSQL must be running for this test (see README)");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let joiner = if base.contains('?') { '&' } else { '?' };
    format!("{base}{joiner}options%5Bsearch_path%5D={schema}")
}

/// A store on a new schema of the test PostgreSQL database.
pub async fn postgres() -> Store {
    Store::open(&fresh_postgres_url().await).await.unwrap()
}

/// Two stores on one new schema: two replicas' connection pools on one database.
pub async fn postgres_replicas() -> (Store, Store) {
    let url = fresh_postgres_url().await;
    (
        Store::open(&url).await.unwrap(),
        Store::open(&url).await.unwrap(),
    )
}
