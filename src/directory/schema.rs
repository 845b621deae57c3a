//! mailshift's own LDAP attributes (`deploy/ldap/mailshift.schema`), named in
//! one place below everything that reads or writes them: the directory's
//! lookup, the cutover, the scheduler, the fleet view and client continuity.
//! The directory's own attributes (`mailHost`, `mailUserStatus`, the login)
//! are configured under `[directory]` instead.

/// The user's migration state (`queued`, `syncing`, `cutover`, `done`,
/// `failed`, `rolled-back`).
pub const STATE: &str = "mailshiftMigrationState";
/// `instance-id until-unix-time`.
pub const LEASE: &str = "mailshiftMigrationLease";
/// The mailHost the user came from.
pub const FROM: &str = "mailshiftMigrationFrom";
/// The mailHost the user goes to.
pub const TO: &str = "mailshiftMigrationTo";
/// When the state last changed (GeneralizedTime).
pub const UPDATED: &str = "mailshiftMigrationUpdated";
/// The last error.
pub const ERROR: &str = "mailshiftMigrationError";
/// `messages messages_total bytes bytes_total started_unix at_unix` of the
/// user's current (or last) pass.
pub const PROGRESS: &str = "mailshiftMigrationProgress";
/// Milliseconds the last cutover held the user.
pub const HOLD: &str = "mailshiftMigrationHold";
/// Says a user's sessions are translated ([`crate::continuity`]):
/// `MAILHOST STAMP`, the mailHost whose store holds the maps and when they
/// were written (unix seconds). Set in the same compare-and-swap as the
/// cutover's flip, removed when a move leaves no map. Instances decide from
/// it alone, so users without it pay no round trip at login.
pub const UID_MAP: &str = "mailshiftUidMap";
