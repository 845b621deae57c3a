//! Client continuity: clients of a user mailshift moved keep the UIDVALIDITY,
//! UIDs and MODSEQs they cached before the cutover, so they resync flags, not
//! bodies, and mbsync/offlineimap do not stop on a UIDVALIDITY change.
//!
//! At cutover the engine's UID map (old UID → new UID, monotonic because it
//! appends in source UID order) is frozen per folder into a [`FolderMap`] and
//! written into the new mailbox itself (by `migrate::uid_maps`, through
//! [`stored`]); every mailshift instance in front of the store loads it on
//! the user's first login and the translating relay presents old UIDs. The
//! directory carries the mark that says a user has maps
//! ([`crate::directory::schema::UID_MAP`]).
//!
//! # The invariant
//!
//! Under one presented UIDVALIDITY a UID never names two different messages:
//! not across cutover, the post-cutover sweep, rollback or a later
//! re-migration, in no session and on no instance. A [`FolderMap`] is a
//! bijection between the client UIDs it covers and the store UIDs it covers
//! (checked when built and when decoded); where a move cannot keep the
//! clients' UIDs, the map presents a fresh UIDVALIDITY instead
//! ([`FolderMap::fresh`]) and clients resync that folder.

pub mod cache;
pub mod map;
pub mod stored;
pub mod view;

pub use cache::Maps;
pub use map::{FolderMap, MapError, Snapshot, UserMap};
pub use stored::load;

/// Why maps could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Talking to the store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The store refused what the maps need.
    #[error("{0}")]
    Refused(String),
    /// A map could not be built.
    #[error("{folder}: {error}")]
    Map {
        /// The folder.
        folder: String,
        /// Why.
        error: MapError,
    },
}
