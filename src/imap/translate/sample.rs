//! A folder map kept as sorted pairs: for the unit tests, the fuzz target
//! and the benchmark (the real map, with runs, lives in `continuity`).

use super::FolderMapping;

/// One folder's map as pairs (client UID, store UID), both ascending.
#[derive(Debug, Clone)]
pub struct SampleFolder {
    /// The old store's UIDVALIDITY.
    pub client_uidvalidity: u32,
    /// The new store's UIDVALIDITY.
    pub store_uidvalidity: u32,
    /// Migrated messages: (client UID, store UID), ascending in both.
    pub pairs: Vec<(u32, u32)>,
    /// The old store's UIDNEXT at cutover.
    pub client_uidnext: u32,
    /// The new store's UIDNEXT at cutover.
    pub store_uidnext: u32,
    /// The old store's HIGHESTMODSEQ at cutover.
    pub client_modseq: u64,
    /// The new store's HIGHESTMODSEQ at cutover.
    pub store_modseq: u64,
}

impl SampleFolder {
    /// `n` messages with old UIDs 1, 3, 5, ... and new UIDs 1, 2, 3, ...
    pub fn odd(n: u32) -> SampleFolder {
        SampleFolder {
            client_uidvalidity: 1111,
            store_uidvalidity: 2222,
            pairs: (1..=n).map(|i| (2 * i - 1, i)).collect(),
            client_uidnext: 2 * n + 10,
            store_uidnext: n + 1,
            client_modseq: 5000,
            store_modseq: 300,
        }
    }

    /// The smallest store UID whose client UID is at least `c`.
    fn store_ceil(&self, c: u32) -> Option<u32> {
        if c >= self.client_uidnext {
            return (c - self.client_uidnext).checked_add(self.store_uidnext);
        }
        let i = self.pairs.partition_point(|p| p.0 < c);
        Some(self.pairs.get(i).map_or(self.store_uidnext, |p| p.1))
    }

    /// The largest store UID whose client UID is at most `c`.
    fn store_floor(&self, c: u32) -> Option<u32> {
        if c >= self.client_uidnext {
            return (c - self.client_uidnext).checked_add(self.store_uidnext);
        }
        let i = self.pairs.partition_point(|p| p.0 <= c);
        i.checked_sub(1).map(|i| self.pairs[i].1)
    }

    fn client_ceil(&self, s: u32) -> Option<u32> {
        if s >= self.store_uidnext {
            return (s - self.store_uidnext).checked_add(self.client_uidnext);
        }
        let i = self.pairs.partition_point(|p| p.1 < s);
        Some(self.pairs.get(i).map_or(self.client_uidnext, |p| p.0))
    }

    fn client_floor(&self, s: u32) -> Option<u32> {
        if s >= self.store_uidnext {
            return (s - self.store_uidnext).checked_add(self.client_uidnext);
        }
        let i = self.pairs.partition_point(|p| p.1 <= s);
        i.checked_sub(1).map(|i| self.pairs[i].0)
    }
}

impl FolderMapping for SampleFolder {
    fn client_uidvalidity(&self) -> u32 {
        self.client_uidvalidity
    }

    fn store_uidvalidity(&self) -> u32 {
        self.store_uidvalidity
    }

    fn to_store_uid(&self, client: u32) -> Option<u32> {
        if client >= self.client_uidnext {
            return (client - self.client_uidnext).checked_add(self.store_uidnext);
        }
        let i = self.pairs.binary_search_by_key(&client, |p| p.0).ok()?;
        Some(self.pairs[i].1)
    }

    fn to_client_uid(&self, store: u32) -> Option<u32> {
        if store >= self.store_uidnext {
            return (store - self.store_uidnext).checked_add(self.client_uidnext);
        }
        let i = self.pairs.binary_search_by_key(&store, |p| p.1).ok()?;
        Some(self.pairs[i].0)
    }

    fn to_store_range(&self, lo: u32, hi: u32) -> Option<(u32, u32)> {
        let (a, b) = (self.store_ceil(lo)?, self.store_floor(hi)?);
        (a <= b).then_some((a, b))
    }

    fn to_client_range(&self, lo: u32, hi: u32) -> Option<(u32, u32)> {
        let (a, b) = (self.client_ceil(lo)?, self.client_floor(hi)?);
        (a <= b).then_some((a, b))
    }

    fn client_uidnext(&self, store_uidnext: u32) -> u32 {
        store_uidnext
            .saturating_sub(self.store_uidnext)
            .saturating_add(self.client_uidnext)
    }

    fn to_client_modseq(&self, store: u64) -> u64 {
        store
            .saturating_sub(self.store_modseq)
            .saturating_add(self.client_modseq)
    }

    fn changedsince_to_store(&self, client: u64) -> u64 {
        if client >= self.client_modseq {
            (client - self.client_modseq).saturating_add(self.store_modseq)
        } else {
            1
        }
    }

    fn unchangedsince_to_store(&self, client: u64) -> u64 {
        if client >= self.client_modseq {
            (client - self.client_modseq).saturating_add(self.store_modseq)
        } else {
            0
        }
    }
}

/// A user's sample maps by folder name.
#[derive(Debug, Default, Clone)]
pub struct SampleUser {
    /// (folder name, its map).
    pub folders: Vec<(String, SampleFolder)>,
}

impl super::UserMapping for SampleUser {
    fn folder(&self, name: &str) -> Option<&dyn FolderMapping> {
        self.folders
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f as &dyn FolderMapping)
    }
}
