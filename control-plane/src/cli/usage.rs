//! `tollgate usage list` and `tollgate usage rebuild-rollups`.

use super::{CliError, ListUsageArgs};
use crate::store::{Store, UsageRow};
use std::io::Write;
use tollgate_core::pricing::format_dollars;

/// Prints the newest usage records: one line each, as a table or as JSON.
pub(super) async fn list(
    store: &Store,
    args: &ListUsageArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let rows = store
        .list_usage(args.key.as_deref(), args.request_id.as_deref(), args.limit)
        .await?;
    for r in rows {
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&r)?)?;
        } else {
            writeln!(out, "{}", table_line(&r))?;
        }
    }
    Ok(())
}

/// Recomputes the usage rollups from the stored records and says how many hourly rows
/// they came to.
pub(super) async fn rebuild_rollups(store: &Store, out: &mut impl Write) -> Result<(), CliError> {
    let hourly = store.rebuild_usage_rollups().await?;
    writeln!(out, "usage rollups rebuilt: {hourly} hourly rows")?;
    Ok(())
}

fn table_line(r: &UsageRow) -> String {
    format!(
        "{}  {}  {}  {}  status={} in={} cached={} cache_write={} out={} cost={}{}",
        r.request_id,
        r.key_id,
        r.model,
        r.provider,
        r.status,
        r.input_uncached,
        r.cache_read,
        r.cache_write,
        r.output,
        format_dollars(u64::try_from(r.cost_picos).unwrap_or(0)),
        if r.partial { " partial" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_below_one_is_refused_by_name() {
        use clap::Parser;
        for bad in ["-1", "0"] {
            let e =
                super::super::Cli::try_parse_from(["tollgate", "usage", "list", "--limit", bad])
                    .unwrap_err()
                    .to_string();
            assert!(e.contains("--limit") && e.contains(bad), "{e}");
        }
    }

    fn row(id: &str, finished_at_ms: i64) -> UsageRow {
        UsageRow {
            request_id: id.into(),
            key_id: "key_1".into(),
            model: "m".into(),
            provider: "p".into(),
            status: 200,
            input_uncached: 10,
            cache_read: 2,
            cache_write: 0,
            output: 5,
            reasoning: 0,
            estimated: false,
            partial: true,
            cost_picos: 1_500_000_000,
            finished_at_ms,
            duration_ms: 3,
            user: None,
            team: None,
            lease_ids: Vec::new(),
            lease_charge_picos: 0,
            done_lease_ids: Vec::new(),
        }
    }

    #[tokio::test]
    async fn records_are_listed_newest_first_as_a_table_or_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        store
            .insert_usage(&[row("old", 1), row("new", 2)])
            .await
            .unwrap();
        let args = |json, request_id: Option<&str>| ListUsageArgs {
            key: None,
            request_id: request_id.map(str::to_owned),
            limit: 20,
            json,
        };
        let mut out = Vec::new();
        list(&store, &args(false, None), &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("new  key_1  m  p  status=200 in=10 cached=2"),
            "{text}"
        );
        assert!(lines[0].ends_with(&format!("cost={} partial", format_dollars(1_500_000_000))));

        let mut out = Vec::new();
        list(&store, &args(true, Some("old")), &mut out)
            .await
            .unwrap();
        let one: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(one["request_id"], "old");
        assert_eq!(one["cost_picos"], 1_500_000_000);
    }

    #[tokio::test]
    async fn rebuild_rollups_counts_the_hours_with_calls() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let hour = crate::usage::HOUR_MS;
        store
            .insert_usage(&[row("a", hour), row("b", hour + 5), row("c", 3 * hour)])
            .await
            .unwrap();
        let mut out = Vec::new();
        rebuild_rollups(&store, &mut out).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "usage rollups rebuilt: 2 hourly rows\n"
        );
    }
}
