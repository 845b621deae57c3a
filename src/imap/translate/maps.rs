//! The continuity maps ([`FolderMap`], [`UserMap`]) as the translator reads them.

use crate::continuity::{FolderMap, UserMap};

use super::{FolderMapping, UserMapping};

/// The one store range covering `ranges` (ascending, merged): the store UIDs
/// in the gaps between them hold no message that has a client UID, so one
/// range names the same messages and keeps `1:*` one range for the store
/// (a folder of many runs would otherwise exceed the store's line limit).
fn hull(ranges: &[(u32, u32)]) -> Option<(u32, u32)> {
    Some((ranges.first()?.0, ranges.last()?.1))
}

impl FolderMapping for FolderMap {
    fn client_uidvalidity(&self) -> u32 {
        self.presented_uidvalidity
    }

    fn store_uidvalidity(&self) -> u32 {
        self.new_uidvalidity
    }

    fn to_store_uid(&self, client: u32) -> Option<u32> {
        FolderMap::to_store_uid(self, client)
    }

    fn to_client_uid(&self, store: u32) -> Option<u32> {
        FolderMap::to_client_uid(self, store)
    }

    fn to_store_range(&self, lo: u32, hi: u32) -> Option<(u32, u32)> {
        hull(&self.to_store_ranges(lo, hi))
    }

    fn to_client_range(&self, lo: u32, hi: u32) -> Option<(u32, u32)> {
        hull(&self.to_client_ranges(lo, hi))
    }

    fn client_uidnext(&self, store_uidnext: u32) -> u32 {
        FolderMap::client_uidnext(self, store_uidnext)
    }

    fn to_client_modseq(&self, store: u64) -> u64 {
        FolderMap::to_client_modseq(self, store)
    }

    fn changedsince_to_store(&self, client: u64) -> u64 {
        FolderMap::changedsince_to_store(self, client)
    }

    fn unchangedsince_to_store(&self, client: u64) -> u64 {
        FolderMap::unchangedsince_to_store(self, client)
    }
}

impl UserMapping for UserMap {
    fn folder(&self, name: &str) -> Option<&dyn FolderMapping> {
        UserMap::folder(self, name).map(|f| &**f as &dyn FolderMapping)
    }
}
