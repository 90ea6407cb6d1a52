//! How fast the control plane stores usage: records/s through `ReportUsage` (gRPC, the
//! filter's path) and straight into the store, on SQLite (and PostgreSQL when
//! `TOLLGATE_BENCH_POSTGRES_URL` is set). Prints figures; asserts nothing about speed.
//!
//! `cargo bench -p tollgate-control-plane --bench ingest [-- RECORDS]`

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Instant;
use tollgate_control_plane::catalog::LiveCatalog;
use tollgate_control_plane::config::Config;
use tollgate_control_plane::gateway;
use tollgate_control_plane::store::{Store, UsageRow};
use tollgate_proto::v1::gateway_client::GatewayClient;
use tollgate_proto::v1::{UsageBatch, UsageRecord};

const BATCH: usize = 1_000;
/// The token the bench's server demands and its clients send, as the filter does.
const TOKEN: &str = "bench-token-bench-token-bench-token";

fn record(run: &str, i: usize) -> UsageRecord {
    UsageRecord {
        request_id: format!("{run}-{i:09}"),
        key_id: "key_bench".into(),
        model: "gpt-4o-mini".into(),
        provider: "offline".into(),
        status: 200,
        input_uncached: 1200 + (i % 100) as u64,
        cache_read: 512,
        output: 300,
        finished_at_ms: 1_800_000_000_000 + i as i64,
        duration_ms: 40,
        ..UsageRecord::default()
    }
}

fn row(run: &str, i: usize) -> UsageRow {
    let r = record(run, i);
    UsageRow {
        request_id: r.request_id,
        key_id: r.key_id,
        model: r.model,
        provider: r.provider,
        status: 200,
        input_uncached: r.input_uncached as i64,
        cache_read: 512,
        cache_write: 0,
        output: 300,
        reasoning: 0,
        estimated: false,
        partial: false,
        cost_picos: 123_456,
        finished_at_ms: r.finished_at_ms,
        duration_ms: 40,
        user: None,
        team: None,
        lease_ids: Vec::new(),
        lease_charge_picos: 0,
        done_lease_ids: Vec::new(),
    }
}

async fn via_store(store: &Store, run: &str, records: usize) -> f64 {
    let started = Instant::now();
    for start in (0..records).step_by(BATCH) {
        let rows: Vec<UsageRow> = (start..(start + BATCH).min(records))
            .map(|i| row(run, i))
            .collect();
        store.insert_usage(&rows).await.expect("insert");
    }
    records as f64 / started.elapsed().as_secs_f64()
}

async fn via_grpc(url: String, run: &str, records: usize, senders: usize) -> f64 {
    let started = Instant::now();
    let per = records / senders;
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let url = url.clone();
            let run = format!("{run}-s{s}");
            tokio::spawn(async move {
                let mut client = GatewayClient::connect(url).await.expect("connect");
                let bearer: tonic::metadata::MetadataValue<_> =
                    format!("Bearer {TOKEN}").parse().expect("header value");
                for start in (0..per).step_by(BATCH) {
                    let batch = UsageBatch {
                        records: (start..(start + BATCH).min(per))
                            .map(|i| record(&run, i))
                            .collect(),
                    };
                    let mut request = tonic::Request::new(batch);
                    request
                        .metadata_mut()
                        .insert("authorization", bearer.clone());
                    let ack = client
                        .report_usage(request)
                        .await
                        .expect("report")
                        .into_inner();
                    assert_eq!(ack.duplicates, 0);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("sender");
    }
    (per * senders) as f64 / started.elapsed().as_secs_f64()
}

async fn bench(label: &str, database_url: &str, records: usize) {
    let toml = format!(
        "[storage]\ndatabase_url = \"{database_url}\"\n[[providers]]\nname = \"offline\"\nurl = \"http://127.0.0.1:9000\"\n\
         [[models]]\nname = \"gpt-4o-mini\"\nprovider = \"offline\"\ninput = 0.15\noutput = 0.6\ncache_read = 0.075\n"
    );
    let config = Config::parse(&toml, Path::new("."), |var| {
        (var == "TOLLGATE_FILTER_TOKEN").then(|| TOKEN.to_owned())
    })
    .expect("config");
    let token = config.server.filter_token().expect("token").clone();
    let store = Store::open(&config.storage.database_url)
        .await
        .expect("store");
    let run = format!("bench-{}", std::process::id());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tonic::transport::Server::builder()
        .add_service(gateway::server(
            LiveCatalog::new(config.catalog),
            gateway::Settings {
                gateway: config.gateway,
                limits: config.limits,
                budgets: config.budgets,
                clock: tollgate_control_plane::clock::Clock::system(),
            },
            store.clone(),
            token,
        ))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);

    let direct = via_store(&store, &format!("{run}-direct"), records).await;
    let one = via_grpc(format!("http://{addr}"), &format!("{run}-g1"), records, 1).await;
    let four = via_grpc(format!("http://{addr}"), &format!("{run}-g4"), records, 4).await;
    println!("{label}: {records} records in batches of {BATCH}");
    println!("  store.insert_usage directly      {direct:>10.0} records/s");
    println!(
        "  ReportUsage over gRPC, 1 sender  {one:>10.0} records/s ({:.2}x direct)",
        one / direct
    );
    println!(
        "  ReportUsage over gRPC, 4 senders {four:>10.0} records/s ({:.2}x direct)",
        four / direct
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; the first number given is the record count.
    let records = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000usize);
    let dir = tempfile::tempdir().expect("tempdir");
    bench(
        "SQLite",
        &format!("sqlite://{}/ingest.db", dir.path().display()),
        records,
    )
    .await;
    if let Ok(url) = std::env::var("TOLLGATE_BENCH_POSTGRES_URL") {
        bench("PostgreSQL", &url, records).await;
    }
}
