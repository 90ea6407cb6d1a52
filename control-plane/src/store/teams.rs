//! Teams and their members in the store.

use super::{Store, StoreError};
use sqlx::Row;
use std::collections::BTreeMap;

/// A team as stored, with its members' user names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRow {
    /// Stable id, e.g. `team_3f2a…`.
    pub id: String,
    /// Unique name, the one keys (`team`) and budgets (`team:<name>`) carry.
    pub name: String,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Members' user names, sorted.
    pub members: Vec<String>,
}

impl Store {
    /// Stores a new team (without members); `false` if the name is taken.
    pub async fn insert_team(&self, id: &str, name: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO teams (id, name, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every team with its members, by name; only those `member` (a user id) belongs to
    /// if given.
    pub async fn list_teams(&self, member: Option<&str>) -> Result<Vec<TeamRow>, StoreError> {
        // One query: teams left-joined to their members' names.
        let rows = sqlx::query(
            "SELECT t.id, t.name, t.created_at_ms, u.name AS member \
             FROM teams t \
             LEFT JOIN team_members m ON m.team_id = t.id \
             LEFT JOIN users u ON u.id = m.user_id \
             WHERE $1 = '' OR t.id IN (SELECT team_id FROM team_members WHERE user_id = $1) \
             ORDER BY t.name, u.name",
        )
        .bind(member.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        let mut teams: BTreeMap<String, TeamRow> = BTreeMap::new();
        for row in &rows {
            let name: String = row.try_get("name")?;
            let team = match teams.get_mut(&name) {
                Some(team) => team,
                None => teams.entry(name.clone()).or_insert(TeamRow {
                    id: row.try_get("id")?,
                    name,
                    created_at_ms: row.try_get("created_at_ms")?,
                    members: Vec::new(),
                }),
            };
            if let Some(member) = row.try_get::<Option<String>, _>("member")? {
                team.members.push(member);
            }
        }
        Ok(teams.into_values().collect())
    }

    /// The team with this id, with its members.
    pub async fn team_by_id(&self, id: &str) -> Result<Option<TeamRow>, StoreError> {
        let teams = self.list_teams(None).await?;
        Ok(teams.into_iter().find(|t| t.id == id))
    }

    /// Deletes a team and its memberships; `false` if no team has this id.
    pub async fn delete_team(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM team_members WHERE team_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM teams WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Adds a user to a team; `false` if they already belong to it.
    pub async fn add_team_member(
        &self,
        team_id: &str,
        user_id: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO team_members (team_id, user_id, added_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (team_id, user_id) DO NOTHING",
        )
        .bind(team_id)
        .bind(user_id)
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a user from a team; `false` if they did not belong to it.
    pub async fn remove_team_member(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
            .bind(team_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the user named `user_name` belongs to the team named `team_name`: what a
    /// member's key may name as its team.
    pub async fn is_team_member(
        &self,
        team_name: &str,
        user_name: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM team_members m \
             JOIN teams t ON t.id = m.team_id JOIN users u ON u.id = m.user_id \
             WHERE t.name = $1 AND u.name = $2",
        )
        .bind(team_name)
        .bind(user_name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserRow;
    use crate::store::test_stores::{postgres, sqlite};
    use crate::users::Role;

    async fn teams_hold_members(store: &Store) {
        let tag = hex::encode(rand::random::<[u8; 5]>());
        let user = |name: &str| UserRow {
            id: crate::users::new_user_id(),
            name: format!("{name}-{tag}"),
            role: Role::Member,
            password_hash: "$argon2id$stand-in".into(),
            created_at_ms: 1,
            disabled_at_ms: None,
        };
        let (alice, bob) = (user("alice"), user("bob"));
        store.insert_user(&alice).await.unwrap();
        store.insert_user(&bob).await.unwrap();
        let (red, blue) = (format!("team_r{tag}"), format!("team_b{tag}"));
        let (red_name, blue_name) = (format!("red-{tag}"), format!("blue-{tag}"));
        assert!(store.insert_team(&red, &red_name, 5).await.unwrap());
        assert!(
            !store.insert_team("team_other", &red_name, 5).await.unwrap(),
            "name taken"
        );
        assert!(store.insert_team(&blue, &blue_name, 6).await.unwrap());
        assert!(store.add_team_member(&red, &alice.id, 7).await.unwrap());
        assert!(
            !store.add_team_member(&red, &alice.id, 8).await.unwrap(),
            "already in"
        );
        assert!(store.add_team_member(&red, &bob.id, 8).await.unwrap());
        assert!(store.add_team_member(&blue, &bob.id, 8).await.unwrap());

        let red_row = store.team_by_id(&red).await.unwrap().unwrap();
        assert_eq!(red_row.name, red_name);
        assert_eq!(red_row.members, [alice.name.clone(), bob.name.clone()]);
        let alices: Vec<String> = store
            .list_teams(Some(&alice.id))
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(
            alices,
            std::slice::from_ref(&red_name),
            "only her teams, with every member"
        );
        let bobs = store.list_teams(Some(&bob.id)).await.unwrap();
        assert_eq!(bobs.len(), 2);
        assert_eq!(bobs.iter().find(|t| t.id == red).unwrap().members.len(), 2);
        assert!(store.is_team_member(&red_name, &alice.name).await.unwrap());
        assert!(!store.is_team_member(&blue_name, &alice.name).await.unwrap());

        assert!(store.remove_team_member(&red, &alice.id).await.unwrap());
        assert!(!store.remove_team_member(&red, &alice.id).await.unwrap());
        assert!(!store.is_team_member(&red_name, &alice.name).await.unwrap());
        assert!(store.delete_team(&red).await.unwrap());
        assert!(!store.delete_team(&red).await.unwrap());
        assert_eq!(store.team_by_id(&red).await.unwrap(), None);
        assert_eq!(
            store.list_teams(Some(&bob.id)).await.unwrap().len(),
            1,
            "memberships go with the team"
        );
    }

    #[tokio::test]
    async fn sqlite_teams() {
        let (_dir, store) = sqlite().await;
        teams_hold_members(&store).await;
    }

    #[tokio::test]
    async fn postgres_teams() {
        teams_hold_members(&postgres().await).await;
    }
}
