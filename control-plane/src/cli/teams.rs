//! `tollgate teams create|list|add|remove`.

use super::users::user_named;
use super::{CliError, ListTeamsArgs, TeamMemberArgs};
use crate::audit::AuditEntry;
use crate::clock::Clock;
use crate::store::{Store, TeamRow};
use std::io::Write;

/// The team named `name`, or [`CliError::NoSuchTeam`].
async fn team_named(store: &Store, name: &str) -> Result<TeamRow, CliError> {
    let teams = store.list_teams(None).await?;
    teams
        .into_iter()
        .find(|t| t.name == name.trim())
        .ok_or_else(|| CliError::NoSuchTeam(name.trim().to_owned()))
}

/// Creates a team.
pub(super) async fn create(
    store: &Store,
    clock: &Clock,
    name: &str,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let name = crate::keys::owner_name("team", name)?;
    let id = format!("team_{}", hex::encode(rand::random::<[u8; 8]>()));
    let now = clock.now_ms();
    if !store.insert_team(&id, &name, now).await? {
        return Err(CliError::TeamExists(name));
    }
    store
        .record_audit(&AuditEntry::cli("team.create", &name, now))
        .await?;
    writeln!(out, "Team {name} ({id}) created.")?;
    Ok(())
}

/// Lists teams with their members: a table, or JSON lines.
pub(super) async fn list(
    store: &Store,
    args: &ListTeamsArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let teams = store.list_teams(None).await?;
    if args.json {
        for team in &teams {
            let line = serde_json::json!({
                "id": team.id,
                "name": team.name,
                "created_at_ms": team.created_at_ms,
                "members": team.members,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    writeln!(out, "{:<22} {:<24} MEMBERS", "ID", "NAME")?;
    for team in &teams {
        writeln!(
            out,
            "{:<22} {:<24} {}",
            team.id,
            team.name,
            team.members.join(",")
        )?;
    }
    Ok(())
}

/// Adds a user to a team.
pub(super) async fn add(
    store: &Store,
    clock: &Clock,
    args: &TeamMemberArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let team = team_named(store, &args.team).await?;
    let user = user_named(store, &args.user).await?;
    let now = clock.now_ms();
    if store.add_team_member(&team.id, &user.id, now).await? {
        let target = format!("{}/{}", team.name, user.name);
        store
            .record_audit(&AuditEntry::cli("team.add_member", &target, now))
            .await?;
    }
    writeln!(out, "{} is in team {}.", user.name, team.name)?;
    Ok(())
}

/// Removes a user from a team.
pub(super) async fn remove(
    store: &Store,
    clock: &Clock,
    args: &TeamMemberArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let team = team_named(store, &args.team).await?;
    let user = user_named(store, &args.user).await?;
    if !store.remove_team_member(&team.id, &user.id).await? {
        return Err(CliError::NotInTeam {
            team: team.name,
            user: user.name,
        });
    }
    let target = format!("{}/{}", team.name, user.name);
    store
        .record_audit(&AuditEntry::cli(
            "team.remove_member",
            &target,
            clock.now_ms(),
        ))
        .await?;
    writeln!(out, "{} left team {}.", user.name, team.name)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::TeamMemberArgs;

    #[tokio::test]
    async fn teams_are_created_filled_listed_and_emptied() {
        let (_dir, store) = crate::store::test_stores::sqlite().await;
        let time = crate::clock::ManualClock::at(7_000);
        let clock = time.clock();
        crate::users::create(
            &store,
            &clock,
            "alice",
            crate::users::Role::Member,
            "alice's long password".into(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        create(&store, &clock, "red", &mut out).await.unwrap();
        // Entries of one millisecond have no order among them: each step gets its own.
        time.advance_ms(1);
        assert!(
            create(&store, &clock, "red", &mut out)
                .await
                .unwrap_err()
                .to_string()
                .contains("exists")
        );
        let member = TeamMemberArgs {
            team: "red".into(),
            user: "alice".into(),
        };
        add(&store, &clock, &member, &mut out).await.unwrap();
        time.advance_ms(1);
        let mut listing = Vec::new();
        list(&store, &ListTeamsArgs { json: true }, &mut listing)
            .await
            .unwrap();
        let line: serde_json::Value = serde_json::from_slice(&listing).unwrap();
        assert_eq!(line["name"], "red");
        assert_eq!(line["members"], serde_json::json!(["alice"]));
        remove(&store, &clock, &member, &mut out).await.unwrap();
        let e = remove(&store, &clock, &member, &mut out).await.unwrap_err();
        assert!(e.to_string().contains("not in team"), "{e}");
        let nowhere = TeamMemberArgs {
            team: "blue".into(),
            user: "alice".into(),
        };
        assert!(
            add(&store, &clock, &nowhere, &mut out)
                .await
                .unwrap_err()
                .to_string()
                .contains("no team `blue`")
        );
        let actions: Vec<String> = store
            .list_audit(None, 3)
            .await
            .unwrap()
            .into_iter()
            .map(|r| format!("{} {}", r.entry.action, r.entry.target))
            .collect();
        assert_eq!(
            actions,
            [
                "team.remove_member red/alice",
                "team.add_member red/alice",
                "team.create red"
            ]
        );
    }
}
