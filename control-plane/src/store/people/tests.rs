use super::*;
use crate::store::test_stores::{postgres, sqlite};

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 6]>()))
}

fn user(name: &str, role: Role) -> UserRow {
    UserRow {
        id: crate::users::new_user_id(),
        name: name.to_owned(),
        role,
        password_hash: "$argon2id$stand-in".into(),
        created_at_ms: 1_000,
        disabled_at_ms: None,
    }
}

async fn users_are_unique_by_name_and_change_in_place(store: &Store) {
    let alice = user(&unique("alice"), Role::Member);
    assert!(store.insert_user(&alice).await.unwrap());
    let twin = UserRow {
        id: crate::users::new_user_id(),
        ..alice.clone()
    };
    assert!(
        !store.insert_user(&twin).await.unwrap(),
        "the name is taken"
    );
    assert_eq!(
        store.user_by_name(&alice.name).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.user_by_id(&alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.user_by_name("nobody-at-all").await.unwrap(), None);
    assert!(store.list_users().await.unwrap().contains(&alice));

    assert!(store.set_user_role(&alice.id, Role::Admin).await.unwrap());
    assert!(
        !store
            .set_user_role("usr_missing", Role::Admin)
            .await
            .unwrap()
    );
    let read = store.user_by_id(&alice.id).await.unwrap().unwrap();
    assert_eq!(read.role, Role::Admin);
    assert!(
        !format!("{read:?}").contains("argon2"),
        "Debug hides the hash"
    );
}

async fn sessions_live_until_revoked_expired_or_disabled(store: &Store) {
    let bob = user(&unique("bob"), Role::Viewer);
    store.insert_user(&bob).await.unwrap();
    let session = |expires_at_ms| SessionRow {
        id: crate::sessions::new_session_id(),
        user_id: bob.id.clone(),
        created_at_ms: 1_000,
        expires_at_ms,
    };
    let s1 = session(5_000);
    store.insert_session(&s1).await.unwrap();
    let (live, owner) = store.live_session(&s1.id, 4_999).await.unwrap().unwrap();
    assert_eq!(live, s1);
    assert_eq!(owner.name, bob.name);
    assert_eq!(
        store.live_session(&s1.id, 5_000).await.unwrap(),
        None,
        "expired"
    );
    assert!(store.extend_session(&s1.id, 9_000).await.unwrap());
    assert!(
        store.live_session(&s1.id, 5_000).await.unwrap().is_some(),
        "refreshed"
    );
    assert!(store.revoke_session(&s1.id, 6_000).await.unwrap());
    assert!(
        !store.revoke_session(&s1.id, 6_001).await.unwrap(),
        "already ended"
    );
    assert_eq!(
        store.live_session(&s1.id, 6_000).await.unwrap(),
        None,
        "revoked"
    );
    assert!(
        !store.extend_session(&s1.id, 99_000).await.unwrap(),
        "a revoked session stays ended"
    );

    let (s2, s3) = (session(50_000), session(50_000));
    store.insert_session(&s2).await.unwrap();
    store.insert_session(&s3).await.unwrap();
    assert_eq!(store.revoke_user_sessions(&bob.id, 7_000).await.unwrap(), 2);
    assert_eq!(store.live_session(&s2.id, 7_000).await.unwrap(), None);

    let s4 = session(50_000);
    store.insert_session(&s4).await.unwrap();
    assert!(
        store
            .set_user_password(&bob.id, "$argon2id$new", 8_000)
            .await
            .unwrap()
    );
    assert_eq!(
        store.live_session(&s4.id, 8_000).await.unwrap(),
        None,
        "a new password ends sessions"
    );
    assert_eq!(
        store
            .user_by_id(&bob.id)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$new"
    );

    let s5 = session(50_000);
    store.insert_session(&s5).await.unwrap();
    assert!(store.set_user_disabled(&bob.id, Some(9_000)).await.unwrap());
    assert_eq!(
        store.live_session(&s5.id, 9_000).await.unwrap(),
        None,
        "disabled"
    );
    assert!(store.set_user_disabled(&bob.id, None).await.unwrap());
    assert_eq!(
        store
            .user_by_id(&bob.id)
            .await
            .unwrap()
            .unwrap()
            .disabled_at_ms,
        None
    );
    assert_eq!(
        store.live_session(&s5.id, 9_000).await.unwrap(),
        None,
        "enabling revives no session"
    );
}

async fn login_failures_count_per_window(store: &Store) {
    let subject = unique("ip:10.0.0.1");
    assert_eq!(store.login_failures(&subject, 0, 1_000).await.unwrap(), 0);
    assert_eq!(
        store
            .count_login_failure(&subject, 10_000, 1_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_login_failure(&subject, 10_500, 1_000)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.login_failures(&subject, 10_999, 1_000).await.unwrap(),
        2
    );
    assert_eq!(
        store.login_failures(&subject, 11_000, 1_000).await.unwrap(),
        0,
        "window over"
    );
    assert_eq!(
        store
            .count_login_failure(&subject, 11_000, 1_000)
            .await
            .unwrap(),
        1,
        "new window"
    );
    store.clear_login_failures(&subject).await.unwrap();
    assert_eq!(
        store.login_failures(&subject, 11_001, 1_000).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn sqlite_people() {
    let (_dir, store) = sqlite().await;
    users_are_unique_by_name_and_change_in_place(&store).await;
    sessions_live_until_revoked_expired_or_disabled(&store).await;
    login_failures_count_per_window(&store).await;
}

#[tokio::test]
async fn postgres_people() {
    let store = postgres().await;
    users_are_unique_by_name_and_change_in_place(&store).await;
    sessions_live_until_revoked_expired_or_disabled(&store).await;
    login_failures_count_per_window(&store).await;
}
