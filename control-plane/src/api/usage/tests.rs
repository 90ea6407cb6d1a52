use crate::api::testing::{TEST_START_MS, TestApi, TestClient};
use crate::store::UsageRow;
use crate::usage::{DAY_MS, HOUR_MS};
use crate::users::Role;
use axum::http::StatusCode;
use serde_json::Value;

/// The users of a test: an admin, a viewer, and members alice and bob.
struct People {
    admin: TestClient,
    viewer: TestClient,
    alice: TestClient,
    bob: TestClient,
}

async fn people(api: &TestApi) -> People {
    People {
        admin: api.user(Role::Admin, "root").await,
        viewer: api.user(Role::Viewer, "vera").await,
        alice: api.user(Role::Member, "alice").await,
        bob: api.user(Role::Member, "bob").await,
    }
}

/// A call of `user`'s key on `model`, `hours_ago` before the test clock's start, with
/// 100 uncached input and 10 output tokens, costing `cost` picos.
fn call(id: &str, user: &str, model: &str, hours_ago: i64, cost: i64) -> UsageRow {
    UsageRow {
        request_id: id.into(),
        key_id: format!("key_{user}"),
        model: model.into(),
        provider: "openai".into(),
        status: 200,
        input_uncached: 100,
        cache_read: 0,
        cache_write: 0,
        output: 10,
        reasoning: 0,
        estimated: false,
        partial: false,
        cost_picos: cost,
        finished_at_ms: TEST_START_MS - hours_ago * HOUR_MS + 7,
        duration_ms: 30,
        user: Some(user.into()),
        team: Some("ml".into()),
        lease_ids: Vec::new(),
        lease_charge_picos: 0,
        done_lease_ids: Vec::new(),
    }
}

/// Alice: 3 calls on gpt-4o (2 today's last hours, 1 two days ago); bob: 2 on claude.
async fn some_usage(api: &TestApi) {
    let rows = vec![
        call("a1", "alice", "gpt-4o", 1, 1_500_000_000_000),
        call("a2", "alice", "gpt-4o", 2, 1_500_000_000_000),
        call("a3", "alice", "gpt-4o", 49, 2_000_000_000_000),
        call("b1", "bob", "claude", 1, 250_000_000_000),
        call("b2", "bob", "claude", 3, 250_000_000_000),
    ];
    assert_eq!(api.store().insert_usage(&rows).await.unwrap(), 5);
}

fn calls_of(json: &Value) -> u64 {
    json["totals"]["calls"].as_u64().unwrap()
}

#[tokio::test]
async fn members_see_only_their_own_usage_and_viewers_and_admins_all() {
    let api = TestApi::start().await;
    let p = people(&api).await;
    some_usage(&api).await;
    for (client, calls, cost) in [
        (&p.admin, 5, "5.500000000000"),
        (&p.viewer, 5, "5.500000000000"),
        (&p.alice, 3, "5.000000000000"),
        (&p.bob, 2, "0.500000000000"),
    ] {
        let (status, json) = client.get("/api/usage/summary").await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(calls_of(&json), calls, "{}: {json}", client.name);
        assert_eq!(json["totals"]["cost_usd"], cost, "{}", client.name);
        let (_, page) = client.get("/api/usage/calls").await;
        assert_eq!(page["calls"].as_array().unwrap().len() as u64, calls);
        let (_, csv) = client.get("/api/usage/export.csv").await;
        assert_eq!(csv.as_str().unwrap().lines().count() as u64, calls + 1);
    }
    // A member naming another user learns nothing, not even that they exist.
    for path in [
        "/api/usage/summary?user=bob",
        "/api/usage/series?user=bob",
        "/api/usage/calls?user=bob",
        "/api/usage/export.csv?user=bob",
        "/api/usage/summary?user=nobody",
    ] {
        let (status, json) = p.alice.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {json}");
        assert_eq!(json["error"]["code"], "not_found");
    }
    // Another member's key, or grouping by user, shows only her own calls.
    let (_, json) = p.alice.get("/api/usage/summary?key=key_bob").await;
    assert_eq!(calls_of(&json), 0);
    let (_, page) = p.alice.get("/api/usage/calls?key=key_bob").await;
    assert_eq!(page["calls"], serde_json::json!([]));
    let (_, json) = p.alice.get("/api/usage/summary?group_by=user").await;
    assert_eq!(json["groups"].as_array().unwrap().len(), 1);
    assert_eq!(json["groups"][0]["group"], "alice");
    // Her own name is fine.
    let (status, json) = p.alice.get("/api/usage/summary?user=alice").await;
    assert_eq!((status, calls_of(&json)), (StatusCode::OK, 3));
    // An admin filters by anyone.
    let (_, json) = p.admin.get("/api/usage/summary?user=bob").await;
    assert_eq!(calls_of(&json), 2);
}

#[tokio::test]
async fn usage_needs_a_session() {
    let api = TestApi::start().await;
    for path in [
        "/api/usage/summary",
        "/api/usage/series",
        "/api/usage/calls",
        "/api/usage/export.csv",
    ] {
        let (status, json) = api.anonymous().get(path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {json}");
    }
}

#[tokio::test]
async fn summaries_group_and_series_bucket_by_hour_or_day() {
    let api = TestApi::start().await;
    let p = people(&api).await;
    some_usage(&api).await;

    let (_, json) = p.admin.get("/api/usage/summary?group_by=model").await;
    assert_eq!(json["from_ms"], TEST_START_MS - 30 * DAY_MS);
    assert_eq!(json["to_ms"], TEST_START_MS);
    assert_eq!(json["group_by"], "model");
    let groups: Vec<(&str, u64, &str)> = json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap(),
                g["calls"].as_u64().unwrap(),
                g["cost_usd"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("claude", 2, "0.500000000000"),
            ("gpt-4o", 3, "5.000000000000")
        ]
    );
    assert_eq!(json["totals"]["input_uncached"], 500);
    assert_eq!(json["totals"]["output"], 50);

    // By day over the last three days: alice's call two days ago, then today's four.
    let from = TEST_START_MS - 3 * DAY_MS;
    let (_, json) = p
        .admin
        .get(&format!("/api/usage/series?bucket=day&from_ms={from}"))
        .await;
    let points: Vec<(i64, u64)> = json["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["bucket_start_ms"].as_i64().unwrap(),
                p["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        points,
        vec![(TEST_START_MS - 3 * DAY_MS, 1), (TEST_START_MS - DAY_MS, 4)]
    );

    // By hour (the last 24 by default) and model.
    let (_, json) = p
        .admin
        .get("/api/usage/series?bucket=hour&group_by=model")
        .await;
    assert_eq!(json["from_ms"], TEST_START_MS - DAY_MS);
    let points: Vec<(i64, &str, u64)> = json["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["bucket_start_ms"].as_i64().unwrap(),
                p["group"].as_str().unwrap(),
                p["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    let h = |n: i64| TEST_START_MS - n * HOUR_MS;
    assert_eq!(
        points,
        vec![
            (h(3), "claude", 1),
            (h(2), "gpt-4o", 1),
            (h(1), "claude", 1),
            (h(1), "gpt-4o", 1)
        ]
    );

    // Too many buckets for one series.
    let (status, json) = p
        .admin
        .get(&format!(
            "/api/usage/series?bucket=hour&from_ms={}",
            TEST_START_MS - 200 * DAY_MS
        ))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
}

#[tokio::test]
async fn calls_page_by_cursor_newest_first() {
    let api = TestApi::start().await;
    let p = people(&api).await;
    some_usage(&api).await;
    let mut seen = Vec::new();
    let mut path = "/api/usage/calls?limit=2".to_owned();
    loop {
        let (status, json) = p.viewer.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        for c in json["calls"].as_array().unwrap() {
            seen.push(c["request_id"].as_str().unwrap().to_owned());
        }
        match json["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/usage/calls?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, vec!["b1", "a1", "a2", "b2", "a3"]);
    let (_, json) = p.admin.get("/api/usage/calls?model=claude&limit=1").await;
    let call = &json["calls"][0];
    assert_eq!(call["request_id"], "b1");
    assert_eq!(call["user"], "bob");
    assert_eq!(call["cost_usd"], "0.250000000000");
    assert_eq!(call["finished_at_ms"], TEST_START_MS - HOUR_MS + 7);
}

#[tokio::test]
async fn the_export_holds_exactly_the_filtered_calls_across_pages() {
    let api = TestApi::start().await;
    let p = people(&api).await;
    // More calls than one store read of the export (1000), and some not matching.
    let rows: Vec<UsageRow> = (0..2_300)
        .map(|i| {
            let model = if i % 10 == 0 { "other" } else { "gpt-4o" };
            call(&format!("r{i:05}"), "alice", model, 1 + i % 40, 1)
        })
        .collect();
    api.store().insert_usage(&rows).await.unwrap();
    let (status, csv) = p.admin.get("/api/usage/export.csv?model=gpt-4o").await;
    assert_eq!(status, StatusCode::OK);
    let text = csv.as_str().unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "request_id,finished_at_ms,key_id,user,team,model,provider,status,input_uncached,\
             cache_read,cache_write,output,reasoning,estimated,partial,cost_usd,duration_ms"
        )
    );
    let mut ids: Vec<&str> = lines
        .map(|l| {
            assert!(l.contains(",gpt-4o,"), "{l}");
            l.split(',').next().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 2_070);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2_070, "no call twice");
}

#[tokio::test]
async fn csv_cells_a_spreadsheet_would_run_are_made_inert() {
    let api = TestApi::start().await;
    let p = people(&api).await;
    let mut evil = call("e1", "alice", "=HYPERLINK(\"http://x\",\"y\")", 1, 1);
    evil.team = Some("@SUM(A1)".into());
    api.store().insert_usage(&[evil]).await.unwrap();
    let (_, csv) = p.admin.get("/api/usage/export.csv").await;
    let line = csv.as_str().unwrap().lines().nth(1).unwrap().to_owned();
    assert!(
        line.contains(",'@SUM(A1),\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\","),
        "{line}"
    );
}

/// Strings from the advisories' injection lists, for every parameter.
const EVIL: [&str; 6] = [
    "' OR '1'='1",
    "1 OR 1=1",
    "x'; DROP TABLE usage_records; --",
    "model) UNION SELECT key_hash FROM virtual_keys --",
    "key_id",
    "%00",
];

#[tokio::test]
async fn injection_strings_in_any_parameter_are_4xx_or_empty_never_500() {
    let api = TestApi::start().await;
    let p = people(&api).await;
    some_usage(&api).await;
    let params = [
        "from_ms", "to_ms", "bucket", "group_by", "key", "user", "team", "model", "provider",
        "limit", "cursor", "sort",
    ];
    for client in [&p.admin, &p.alice] {
        for path in ["summary", "series", "calls", "export.csv"] {
            for param in params {
                for evil in EVIL {
                    let value: String =
                        url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
                    let uri = format!("/api/usage/{path}?{param}={value}");
                    let (status, json) = client.get(&uri).await;
                    assert!(
                        status.is_client_error() || status == StatusCode::OK,
                        "{uri} by {}: {status} {json}",
                        client.name
                    );
                    if status == StatusCode::OK {
                        let empty = match path {
                            "summary" => calls_of(&json) == 0,
                            "series" => json["points"] == serde_json::json!([]),
                            "calls" => json["calls"] == serde_json::json!([]),
                            _ => json.as_str().unwrap().lines().count() == 1,
                        };
                        assert!(empty, "{uri} by {}: {json}", client.name);
                    }
                }
            }
        }
    }
    // Everything is still there.
    let (_, json) = p.admin.get("/api/usage/summary").await;
    assert_eq!(calls_of(&json), 5);
}

#[tokio::test]
async fn parameters_out_of_their_domain_are_refused_by_name() {
    let api = TestApi::start().await;
    let p = people(&api).await;
    for (uri, field) in [
        ("/api/usage/summary?group_by=models", "group_by"),
        ("/api/usage/summary?bucket=day", "bucket"),
        ("/api/usage/series?bucket=week", "bucket"),
        ("/api/usage/summary?from_ms=10&to_ms=5", "from_ms"),
        ("/api/usage/summary?from_ms=-1", "from_ms"),
        ("/api/usage/calls?limit=0", "limit"),
        ("/api/usage/calls?limit=1001", "limit"),
        ("/api/usage/calls?cursor=abc", "cursor"),
        ("/api/usage/calls?model=", "model"),
        ("/api/usage/export.csv?limit=5", "limit"),
    ] {
        let (status, json) = p.admin.get(uri).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{uri}: {message}");
    }
    for uri in [
        "/api/usage/summary?sort=cost",
        "/api/usage/calls?limit=ten",
        "/api/usage/summary?to_ms=99999999999999999999",
    ] {
        let (status, json) = p.admin.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {json}");
    }
}

#[tokio::test]
async fn postgres_members_see_only_their_own_usage() {
    let api = TestApi::start_postgres().await;
    let p = people(&api).await;
    some_usage(&api).await;
    let (_, json) = p.bob.get("/api/usage/summary?group_by=model").await;
    assert_eq!(calls_of(&json), 2);
    assert_eq!(json["groups"][0]["group"], "claude");
    let (status, _) = p.bob.get("/api/usage/calls?user=alice").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, json) = p.viewer.get("/api/usage/calls").await;
    assert_eq!(json["calls"].as_array().unwrap().len(), 5);
}
