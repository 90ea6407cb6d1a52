//! The share race at the control plane: several replicas (each its own store pool and
//! gRPC service) on one database grant shares of one rate limit to many Envoys at once,
//! and the shares never add up past the limit, each Envoy holding one lease.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{postgres_url, race_config, two_replicas};

use std::collections::HashMap;
use std::sync::Arc;
use tollgate_control_plane::clock::Clock;
use tollgate_control_plane::gateway::GatewayService;
use tollgate_control_plane::keys::{self, KeySpec};
use tollgate_control_plane::store::Store;
use tollgate_core::limits::Measure;
use tollgate_proto::v1::gateway_server::Gateway;
use tollgate_proto::v1::{ShareAnswer, ShareRequest, share_answer::Outcome};
use tonic::Request;

/// Requests per minute of the raced key: fewer than the calls, not a divisor of them.
const RPM: u32 = 37;
/// Tokens per minute of the raced key.
const TPM: u64 = 1_000;
const CALLS: usize = 200;
const HOLDERS: usize = 5;

/// Sends every request at once, alternating between `replicas`; the answers in order.
async fn all_at_once(
    replicas: &[Arc<GatewayService>],
    requests: Vec<ShareRequest>,
) -> Vec<ShareAnswer> {
    let calls: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let replica = Arc::clone(&replicas[i % replicas.len()]);
            tokio::spawn(async move { replica.lease_share(Request::new(request)).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(
            call.await
                .unwrap()
                .expect("LeaseShare answered")
                .into_inner(),
        );
    }
    answers
}

/// Each holder has exactly one lease of `subject`'s `measure`, and the pool's assigned
/// units are the sum of their shares; returns the shares by holder.
async fn one_lease_each(store: &Store, subject: &str, measure: Measure) -> HashMap<String, u64> {
    let leases = store.share_leases(subject, measure).await.unwrap();
    let mut shares = HashMap::new();
    for lease in &leases {
        assert!(
            shares.insert(lease.holder.clone(), lease.share).is_none(),
            "{} holds two leases: {leases:?}",
            lease.holder
        );
    }
    let assigned = store.share_assigned(subject, measure).await.unwrap();
    assert_eq!(assigned, shares.values().sum::<u64>(), "{leases:?}");
    shares
}

/// `CALLS` asks of one request each from `HOLDERS` Envoys: exactly `RPM` are granted,
/// each Envoy's lease holds what it was granted; then asks of varied sizes with releases
/// never leave more than `TPM` assigned, and each grant lies between need and want.
async fn race(replicas: Vec<Arc<GatewayService>>, store: &Store) {
    let issued = keys::create(
        store,
        &race_config(tempfile::tempdir().unwrap().path()).catalog,
        &Clock::system(),
        KeySpec {
            name: "race".into(),
            requests_per_minute: Some(RPM),
            tokens_per_minute: Some(TPM),
            ..KeySpec::default()
        },
    )
    .await
    .unwrap();
    let subject = format!("key:{}", issued.row.id);
    let requests = (0..CALLS)
        .map(|i| ShareRequest {
            subject: subject.clone(),
            measure: "requests".into(),
            holder: format!("envoy-{}", i % HOLDERS),
            want: 1,
            need: 1,
            release: 0,
            lease_id: String::new(),
        })
        .collect();
    let answers = all_at_once(&replicas, requests).await;
    let mut granted_to: HashMap<String, u64> = HashMap::new();
    let mut exhausted = 0;
    for (i, answer) in answers.iter().enumerate() {
        match answer.outcome() {
            Outcome::Granted => {
                assert_eq!(answer.granted, 1);
                *granted_to
                    .entry(format!("envoy-{}", i % HOLDERS))
                    .or_default() += 1;
            }
            Outcome::Exhausted => exhausted += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
        assert_eq!(answer.limit, u64::from(RPM));
    }
    assert_eq!(
        granted_to.values().sum::<u64>(),
        u64::from(RPM),
        "exactly the limit"
    );
    assert_eq!(exhausted, CALLS - RPM as usize);
    assert_eq!(
        one_lease_each(store, &subject, Measure::Requests).await,
        granted_to,
        "each Envoy's one lease holds what it was granted"
    );

    let requests = (0..CALLS)
        .map(|i| {
            let need = (i % 10) as u64;
            ShareRequest {
                subject: subject.clone(),
                measure: "tokens".into(),
                holder: format!("envoy-{}", i % HOLDERS),
                want: need + (i % 50) as u64,
                need,
                release: (i % 7) as u64 * 10,
                lease_id: String::new(),
            }
        })
        .collect::<Vec<_>>();
    let answers = all_at_once(&replicas, requests.clone()).await;
    let mut granted = 0;
    for (request, answer) in requests.iter().zip(&answers) {
        if answer.outcome() == Outcome::Granted {
            assert!(
                (request.need..=request.want).contains(&answer.granted),
                "{request:?} got {answer:?}"
            );
            granted += 1;
        } else {
            assert_eq!(answer.outcome(), Outcome::Exhausted);
            assert!(
                answer.available < request.need,
                "{request:?} got {answer:?}"
            );
        }
        assert!(answer.share <= TPM && answer.available <= TPM);
    }
    assert!(granted > 0);
    let shares = one_lease_each(store, &subject, Measure::Tokens).await;
    assert!(shares.values().sum::<u64>() <= TPM, "{shares:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_never_assign_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = race_config(dir.path());
    let (replicas, store) = two_replicas(&config, &postgres_url().await).await;
    race(replicas, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_services_on_one_sqlite_file_never_assign_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = race_config(dir.path());
    let (replicas, store) = two_replicas(&config, &config.storage.database_url).await;
    race(replicas, &store).await;
}
