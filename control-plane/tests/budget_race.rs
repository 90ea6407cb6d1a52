//! The budget race at the control plane: several replicas (each its own store pool and
//! gRPC service) on one database grant leases concurrently, and never more than the
//! budget affords.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{postgres_url, race_config, two_replicas};

use std::sync::Arc;
use tollgate_control_plane::budgets::Period;
use tollgate_control_plane::gateway::GatewayService;
use tollgate_control_plane::store::Store;
use tollgate_proto::v1::gateway_server::Gateway;
use tollgate_proto::v1::{LeaseRequest, lease_answer::Outcome};
use tonic::Request;

const LIMIT: u64 = 10_000_000;
const CALLS: usize = 200;

/// `CALLS` concurrent leases, alternating between `replicas`, each needing a tenth of the
/// budget: exactly ten are granted, and the window's leased money is the limit.
async fn race(replicas: Vec<Arc<GatewayService>>, store: &Store) {
    let subject = format!("team:race{}", hex::encode(rand::random::<[u8; 6]>()));
    let budget = store
        .set_budget(&subject, Period::Total, LIMIT, 0)
        .await
        .unwrap()
        .budget;
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let replica = Arc::clone(&replicas[i % replicas.len()]);
        let request = LeaseRequest {
            budget_id: budget.id.clone(),
            holder: format!("envoy-{i}"),
            lease_id: String::new(),
            want_picos: LIMIT / 10,
            need_picos: LIMIT / 10,
        };
        calls.push(tokio::spawn(async move {
            replica.lease_budget(Request::new(request)).await
        }));
    }
    let mut granted = 0u64;
    let mut exhausted = 0;
    for call in calls {
        let answer = call
            .await
            .unwrap()
            .expect("LeaseBudget answered")
            .into_inner();
        match answer.outcome() {
            Outcome::Granted => {
                assert_eq!(answer.granted_picos, LIMIT / 10);
                granted += answer.granted_picos;
            }
            Outcome::Exhausted => exhausted += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(granted, LIMIT, "exactly ten tenths granted");
    assert_eq!(exhausted, CALLS - 10);
    let status = store
        .list_budgets(0)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.budget.id == budget.id)
        .unwrap();
    assert_eq!((status.spent_picos, status.leased_picos), (0, LIMIT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_grant_exactly_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = race_config(dir.path());
    let (replicas, store) = two_replicas(&config, &postgres_url().await).await;
    race(replicas, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_services_on_one_sqlite_file_grant_exactly_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = race_config(dir.path());
    let (replicas, store) = two_replicas(&config, &config.storage.database_url).await;
    race(replicas, &store).await;
}
