//! The catalog's stored part, on SQLite and on PostgreSQL (`TOLLGATE_TEST_POSTGRES_URL`).
//! The PostgreSQL database is shared with other tests and runs: every name is fresh, and
//! what is read back is filtered to this test's names.

use super::*;
use crate::secrets::{MasterKey, seal};
use crate::store::test_stores::{postgres, sqlite};

/// A name no other test (or earlier run on the shared database) uses.
fn fresh(kind: &str) -> String {
    format!("{kind}-t{}", hex::encode(rand::random::<[u8; 8]>()))
}

fn provider(name: &str, key: Option<SealedSecret>) -> ProviderRecord {
    ProviderRecord {
        name: name.into(),
        kind: "openai".into(),
        base_url: "https://api.example.com".into(),
        auth_header: "authorization".into(),
        auth_scheme: "bearer".into(),
        timeout_ms: 30_000,
        forward_headers: vec!["x-a".into(), "x-b".into()],
        allow_background: true,
        key,
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
    }
}

fn price(input: u64) -> Price {
    Price {
        input,
        output: 2 * input,
        cache_read: 3,
        cache_write: 4,
    }
}

async fn providers_round_trip_with_their_sealed_key(store: &Store) {
    let master = MasterKey::generate();
    let name = fresh("p");
    let sealed = seal(&master, &name, "sk-secret").unwrap();
    let version = store.catalog_version().await.unwrap();
    assert!(
        store
            .insert_provider(&provider(&name, Some(sealed.clone())))
            .await
            .unwrap()
    );
    assert!(
        store.catalog_version().await.unwrap() > version,
        "a change is counted"
    );
    assert!(
        !store.insert_provider(&provider(&name, None)).await.unwrap(),
        "a name is taken once"
    );
    let read = store.provider(&name).await.unwrap().unwrap();
    assert_eq!(read, provider(&name, Some(sealed)));

    let changed = ProviderRecord {
        base_url: "https://other.example.com".into(),
        key: None,
        updated_at_ms: 2_000,
        ..provider(&name, None)
    };
    assert!(store.update_provider(&changed).await.unwrap());
    assert_eq!(store.provider(&name).await.unwrap().unwrap(), changed);
    assert!(
        !store
            .update_provider(&provider(&fresh("p"), None))
            .await
            .unwrap()
    );
    let all = store.stored_catalog().await.unwrap();
    assert!(all.providers.contains(&changed));

    assert_eq!(
        store.delete_provider(&name).await.unwrap(),
        ProviderRemoval::Removed
    );
    assert_eq!(
        store.delete_provider(&name).await.unwrap(),
        ProviderRemoval::NotFound
    );
    assert_eq!(store.provider(&name).await.unwrap(), None);
}

async fn models_keep_their_prices_over_time(store: &Store) {
    let p = fresh("p");
    let m = fresh("m");
    store.insert_provider(&provider(&p, None)).await.unwrap();
    let model = ModelRecord {
        name: m.clone(),
        provider: p.clone(),
        upstream_model: Some("up".into()),
        max_output_tokens: Some(4096),
        created_at_ms: 100,
    };
    let first = PriceRecord {
        model: &m,
        effective_from_ms: 100,
        price: price(10),
        created_at_ms: 100,
    };
    assert!(store.insert_model(&model, &first).await.unwrap());
    assert!(
        !store.insert_model(&model, &first).await.unwrap(),
        "a name is taken once"
    );
    let later = PriceRecord {
        effective_from_ms: 500,
        price: price(20),
        ..first
    };
    assert!(store.insert_price(&later).await.unwrap());
    assert!(
        !store.insert_price(&later).await.unwrap(),
        "one price per instant"
    );
    let elsewhere = fresh("m");
    assert!(
        !store
            .insert_price(&PriceRecord {
                model: &elsewhere,
                ..later
            })
            .await
            .unwrap(),
        "no price for a model not stored"
    );
    assert_eq!(
        store.delete_provider(&p).await.unwrap(),
        ProviderRemoval::InUse(vec![m.clone()])
    );

    let mine = |all: &StoredCatalog| -> (Vec<ModelRecord>, Vec<(i64, u64)>) {
        (
            all.models.iter().filter(|r| r.name == m).cloned().collect(),
            all.prices
                .iter()
                .filter(|r| r.model == m)
                .map(|r| (r.effective_from_ms, r.price.input))
                .collect(),
        )
    };
    let (models, prices) = mine(&store.stored_catalog().await.unwrap());
    assert_eq!(models, vec![model.clone()]);
    assert_eq!(prices, vec![(100, 10), (500, 20)]);

    assert!(store.delete_model(&m).await.unwrap());
    assert!(!store.delete_model(&m).await.unwrap());
    let (models, prices) = mine(&store.stored_catalog().await.unwrap());
    assert!(models.is_empty());
    assert_eq!(
        prices,
        vec![(100, 10), (500, 20)],
        "prices outlive their model"
    );

    // Added again from 300: the old price before it stays, the one after is replaced.
    let again = PriceRecord {
        effective_from_ms: 300,
        price: price(30),
        ..first
    };
    assert!(store.insert_model(&model, &again).await.unwrap());
    let (_, prices) = mine(&store.stored_catalog().await.unwrap());
    assert_eq!(prices, vec![(100, 10), (300, 30)]);
    assert_eq!(
        store.delete_provider(&p).await.unwrap(),
        ProviderRemoval::InUse(vec![m.clone()])
    );
}

async fn a_rewrap_moves_every_key_or_none(store: &Store) {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let (a, b) = (fresh("p"), fresh("p"));
    let sealed_a = seal(&old, &a, "sk-a").unwrap();
    let sealed_b = seal(&old, &b, "sk-b").unwrap();
    store
        .insert_provider(&provider(&a, Some(sealed_a.clone())))
        .await
        .unwrap();
    store
        .insert_provider(&provider(&b, Some(sealed_b.clone())))
        .await
        .unwrap();
    let listed: Vec<(String, SealedSecret)> = store
        .sealed_provider_keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|(name, _)| *name == a || *name == b)
        .collect();
    let mut expected = vec![(a.clone(), sealed_a.clone()), (b.clone(), sealed_b.clone())];
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(listed, expected, "by name");
    let moved = |name: &str, sealed: &SealedSecret, from: &str| Rewrapped {
        name: name.to_owned(),
        from_master_id: from.to_owned(),
        key: SealedSecret {
            wrapped_key: format!("rewrapped-{name}"),
            master_key_id: new.id().to_owned(),
            ..sealed.clone()
        },
    };
    // One row read under another master key than it holds: nothing changes.
    let stale = [
        moved(&a, &sealed_a, old.id()),
        moved(&b, &sealed_b, new.id()),
    ];
    assert!(!store.rewrap_provider_keys(&stale).await.unwrap());
    assert_eq!(
        store.provider(&a).await.unwrap().unwrap().key,
        Some(sealed_a.clone())
    );

    let both = [
        moved(&a, &sealed_a, old.id()),
        moved(&b, &sealed_b, old.id()),
    ];
    assert!(store.rewrap_provider_keys(&both).await.unwrap());
    let key_a = store.provider(&a).await.unwrap().unwrap().key.unwrap();
    assert_eq!(key_a.master_key_id, new.id());
    assert_eq!(key_a.wrapped_key, format!("rewrapped-{a}"));
    assert_eq!(key_a.ciphertext, sealed_a.ciphertext);
}

#[tokio::test]
async fn sqlite_providers_round_trip_with_their_sealed_key() {
    let (_dir, store) = sqlite().await;
    providers_round_trip_with_their_sealed_key(&store).await;
}

#[tokio::test]
async fn postgres_providers_round_trip_with_their_sealed_key() {
    providers_round_trip_with_their_sealed_key(&postgres().await).await;
}

#[tokio::test]
async fn sqlite_models_keep_their_prices_over_time() {
    let (_dir, store) = sqlite().await;
    models_keep_their_prices_over_time(&store).await;
}

#[tokio::test]
async fn postgres_models_keep_their_prices_over_time() {
    models_keep_their_prices_over_time(&postgres().await).await;
}

#[tokio::test]
async fn sqlite_a_rewrap_moves_every_key_or_none() {
    let (_dir, store) = sqlite().await;
    a_rewrap_moves_every_key_or_none(&store).await;
}

#[tokio::test]
async fn postgres_a_rewrap_moves_every_key_or_none() {
    a_rewrap_moves_every_key_or_none(&postgres().await).await;
}
