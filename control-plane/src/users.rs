//! People who use the API: their roles, names and what each role may do to another.
//!
//! The rules are plain functions so the API, the CLI and their tests read the same ones.

use crate::clock::Clock;
use crate::passwords::{self, PasswordError};
use crate::store::{Store, StoreError, UserRow};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// What a user may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read-only: every key and all usage, no changes.
    Viewer,
    /// Their own keys and their own usage.
    Member,
    /// Everything.
    Admin,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    /// Whether the role may change anything (a viewer may not).
    pub fn may_write(self) -> bool {
        self != Role::Viewer
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of `admin`, `member`, `viewer`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("role must be admin, member or viewer")]
pub struct UnknownRole;

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            _ => Err(UnknownRole),
        }
    }
}

/// Why a change to a user was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UserRuleError {
    /// Nobody changes their own role (an admin demoting themselves could leave no admin;
    /// anyone else would be promoting themselves).
    #[error("no one may change their own role")]
    OwnRole,
    /// Only an admin creates users or gives roles.
    #[error("only an admin may create users or change roles")]
    NotAdmin,
}

/// Whether `actor` (with id `actor_id`) may give `target_id` a role: admins only, and never
/// to themselves.
pub fn may_set_role(actor: Role, actor_id: &str, target_id: &str) -> Result<(), UserRuleError> {
    if actor_id == target_id {
        return Err(UserRuleError::OwnRole);
    }
    if actor != Role::Admin {
        return Err(UserRuleError::NotAdmin);
    }
    Ok(())
}

/// Whether `actor` may create a user with any role: admins only (so a member cannot
/// create an admin, nor anyone).
pub fn may_create_user(actor: Role) -> Result<(), UserRuleError> {
    if actor != Role::Admin {
        return Err(UserRuleError::NotAdmin);
    }
    Ok(())
}

/// A new random user id.
pub fn new_user_id() -> String {
    format!("usr_{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// Why creating or changing a user failed.
#[derive(Debug, Error)]
pub enum UserError {
    /// The name is empty, too long or holds control characters.
    #[error("user name must be 1 to 200 characters, without control characters")]
    BadName,
    /// The password breaks the policy.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Another user has the name.
    #[error("a user named `{0}` exists")]
    Taken(String),
    /// No user has that name or id.
    #[error("no user `{0}`")]
    NoSuchUser(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A user name, trimmed, as keys and budgets carry it.
pub fn user_name(name: &str) -> Result<String, UserError> {
    crate::keys::owner_name("user", name).map_err(|_| UserError::BadName)
}

/// The Argon2id hash of `password` after checking the policy, computed on a blocking
/// thread (it takes tens of milliseconds of CPU by design).
pub async fn hash_password(password: String) -> Result<String, UserError> {
    tokio::task::spawn_blocking(move || passwords::hash(&password))
        .await
        .map_err(|e| UserError::Password(PasswordError::Hash(e.to_string())))?
        .map_err(UserError::from)
}

/// Creates a user named `name` with `role` and `password`.
pub async fn create(
    store: &Store,
    clock: &Clock,
    name: &str,
    role: Role,
    password: String,
) -> Result<UserRow, UserError> {
    let name = user_name(name)?;
    let row = UserRow {
        id: new_user_id(),
        name,
        role,
        password_hash: hash_password(password).await?,
        created_at_ms: clock.now_ms(),
        disabled_at_ms: None,
    };
    if !store.insert_user(&row).await? {
        return Err(UserError::Taken(row.name));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_by_name_and_only_known_names_parse() {
        for role in [Role::Viewer, Role::Member, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::Value::String(role.as_str().into())
            );
        }
        for bad in ["Admin", "root", "", "admin' --"] {
            assert_eq!(bad.parse::<Role>(), Err(UnknownRole), "{bad}");
        }
    }

    #[test]
    fn only_viewers_may_not_write() {
        assert!(!Role::Viewer.may_write());
        assert!(Role::Member.may_write());
        assert!(Role::Admin.may_write());
    }

    #[test]
    fn no_one_sets_their_own_role_and_only_admins_set_others() {
        assert_eq!(
            may_set_role(Role::Admin, "u1", "u1"),
            Err(UserRuleError::OwnRole)
        );
        assert_eq!(
            may_set_role(Role::Member, "u1", "u1"),
            Err(UserRuleError::OwnRole)
        );
        assert_eq!(
            may_set_role(Role::Member, "u1", "u2"),
            Err(UserRuleError::NotAdmin)
        );
        assert_eq!(
            may_set_role(Role::Viewer, "u1", "u2"),
            Err(UserRuleError::NotAdmin)
        );
        assert_eq!(may_set_role(Role::Admin, "u1", "u2"), Ok(()));
        assert_eq!(may_create_user(Role::Member), Err(UserRuleError::NotAdmin));
        assert_eq!(may_create_user(Role::Admin), Ok(()));
    }
}
