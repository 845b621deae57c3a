use super::*;

fn snap(uidvalidity: u32, uidnext: u32, highestmodseq: u64) -> Snapshot {
    Snapshot {
        uidvalidity,
        uidnext,
        highestmodseq,
    }
}

/// A small deterministic generator, so a failing case reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u32 {
        (self.next() % n) as u32
    }
}

/// A random monotonic map as a migration leaves it: some old UIDs expunged
/// before the copy, some copies failed, some new UIDs skipped.
fn random_map(rng: &mut Rng) -> (FolderMap, Vec<(u32, u32)>) {
    let mut pairs = Vec::new();
    let (mut o, mut n) = (1 + rng.below(3), 1 + rng.below(3));
    let count = rng.below(40);
    for _ in 0..count {
        pairs.push((o, n));
        o += 1 + if rng.below(4) == 0 { rng.below(5) } else { 0 };
        n += 1 + if rng.below(6) == 0 { rng.below(3) } else { 0 };
    }
    let oun = o + rng.below(4);
    let nun = n + rng.below(4);
    let map = FolderMap::new(
        snap(7, oun, 100 + u64::from(rng.below(50))),
        snap(9, nun, u64::from(rng.below(200))),
        pairs.iter().copied(),
    )
    .expect("valid map");
    (map, pairs)
}

fn union(f: impl Fn(u32) -> Option<u32>, lo: u32, hi: u32) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for x in lo..=hi {
        if let Some(y) = f(x) {
            match out.last_mut() {
                Some(last) if last.1 + 1 == y => last.1 = y,
                _ => out.push((y, y)),
            }
        }
    }
    out
}

#[test]
fn random_monotonic_maps_hold_the_invariant() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let (map, pairs) = random_map(&mut rng);
        let top = map.old_uidnext.max(map.new_uidnext) + 12;
        // Every pair maps both ways; every UID in between is absent.
        for &(o, n) in &pairs {
            assert_eq!(map.to_store_uid(o), Some(n));
            assert_eq!(map.to_client_uid(n), Some(o));
        }
        let mut seen = std::collections::HashMap::new();
        for c in 0..top {
            let s = map.to_store_uid(c);
            if c == 0 {
                assert_eq!(s, None);
            }
            if c < map.old_uidnext {
                assert_eq!(s, pairs.iter().find(|p| p.0 == c).map(|p| p.1), "{c}");
            } else {
                assert!(s.expect("above uidnext") >= map.new_uidnext);
            }
            if let Some(s) = s {
                assert_eq!(map.to_client_uid(s), Some(c), "round trip of {c}");
                // Never two client UIDs for one store UID.
                assert!(seen.insert(s, c).is_none(), "{s} named twice");
            }
        }
        for s in 0..top {
            if let Some(c) = map.to_client_uid(s) {
                assert_eq!(map.to_store_uid(c), Some(s));
            }
        }
        // Ranges are the union of single lookups.
        for _ in 0..20 {
            let lo = rng.below(u64::from(top));
            let hi = lo + rng.below(u64::from(top));
            assert_eq!(
                map.to_store_ranges(lo, hi),
                union(|x| map.to_store_uid(x), lo, hi),
                "{lo}:{hi} in {map:?}"
            );
            assert_eq!(
                map.to_client_ranges(lo, hi),
                union(|x| map.to_client_uid(x), lo, hi),
                "{lo}:{hi} in {map:?}"
            );
        }
        assert_eq!(FolderMap::decode(&map.encode()).as_ref(), Ok(&map));
        assert_eq!(map.len(), pairs.len());
    }
}

#[test]
fn uids_after_cutover_continue_above_the_old_uidnext() {
    let map = FolderMap::new(
        snap(1, 101, 0),
        snap(2, 51, 0),
        (1..=50).map(|i| (i * 2, i)),
    )
    .expect("valid map");
    assert_eq!(map.to_store_uid(100), Some(50));
    assert_eq!(map.to_store_uid(99), None);
    assert_eq!(map.to_store_uid(101), Some(51));
    assert_eq!(map.to_client_uid(51), Some(101));
    assert_eq!(map.to_client_uid(55), Some(105));
    assert_eq!(map.client_uidnext(51), 101);
    assert_eq!(map.client_uidnext(56), 106);
    assert_eq!(map.to_store_ranges(95, 102), vec![(48, 52)]);
    assert_eq!(map.to_client_ranges(49, 52), vec![(98, 98), (100, 102)]);
}

#[test]
fn overflow_at_u32_max_is_none_or_clamped() {
    // The store is further along than the old store: client UIDs near the top
    // have no store UID.
    let map = FolderMap::new(snap(1, 10, 0), snap(2, 1000, 0), [(1, 500)]).expect("valid map");
    assert_eq!(map.to_store_uid(u32::MAX), None);
    assert_eq!(map.to_store_uid(u32::MAX - 990), Some(u32::MAX));
    assert_eq!(map.to_client_uid(u32::MAX), Some(u32::MAX - 990));
    assert_eq!(
        map.to_store_ranges(5, u32::MAX),
        vec![(1000, u32::MAX)],
        "`*` runs to the top"
    );
    assert_eq!(map.to_store_ranges(u32::MAX - 5, u32::MAX), vec![]);
    assert_eq!(map.client_uidnext(u32::MAX), u32::MAX - 990);
    // And the other way round: store UIDs near the top have no client UID.
    let map = FolderMap::new(snap(1, 1000, 0), snap(2, 10, 0), [(500, 1)]).expect("valid map");
    assert_eq!(map.to_client_uid(u32::MAX), None);
    assert_eq!(map.client_uidnext(u32::MAX), u32::MAX);
    assert_eq!(
        map.to_store_ranges(1, u32::MAX),
        vec![(1, 1), (10, u32::MAX - 990)]
    );
    // A run that would pass u32::MAX is refused.
    assert!(FolderMap::new(snap(1, u32::MAX, 0), snap(2, u32::MAX, 0), [(u32::MAX, 1)]).is_err());
}

#[test]
fn pairs_out_of_order_or_past_uidnext_are_refused() {
    let s = |n| snap(1, n, 0);
    assert!(matches!(
        FolderMap::new(s(10), s(10), [(2, 2), (3, 1)]),
        Err(MapError::NotMonotonic { old: 3, new: 1 })
    ));
    assert!(matches!(
        FolderMap::new(s(10), s(10), [(2, 2), (2, 3)]),
        Err(MapError::NotMonotonic { .. })
    ));
    assert!(matches!(
        FolderMap::new(s(10), s(5), [(2, 5)]),
        Err(MapError::OutOfRange { uid: 5, uidnext: 5 })
    ));
    assert!(FolderMap::new(s(10), s(10), [(0, 1)]).is_err());
    assert!(FolderMap::new(s(0), s(10), []).is_err());
}

#[test]
fn modseqs_after_cutover_stay_above_the_old_highestmodseq() {
    let map = FolderMap::new(snap(1, 10, 5000), snap(2, 10, 300), [(1, 1)]).expect("valid map");
    assert_eq!(map.to_client_modseq(300), 5000);
    assert_eq!(map.to_client_modseq(301), 5001);
    assert_eq!(map.to_client_modseq(1), 4701);
    assert_eq!(
        map.changedsince_to_store(5000),
        300,
        "exactly the changes since cutover"
    );
    assert_eq!(map.changedsince_to_store(5007), 307);
    assert_eq!(
        map.changedsince_to_store(4999),
        1,
        "from before cutover: all flags"
    );
    assert_eq!(map.unchangedsince_to_store(5001), 301);
    assert_eq!(map.unchangedsince_to_store(0), 0);

    // The new store is further along: low store MODSEQs clamp to 1, never 0.
    let map = FolderMap::new(snap(1, 10, 100), snap(2, 10, 900), [(1, 1)]).expect("valid map");
    assert_eq!(map.to_client_modseq(5), 1);
    assert_eq!(map.to_client_modseq(901), 101);
    assert_eq!(map.changedsince_to_store(100), 900);
    assert_eq!(map.unchangedsince_to_store(1), 801);
    assert_eq!(map.to_client_modseq(u64::MAX), u64::MAX - 800);

    // The old store had no CONDSTORE: MODSEQs pass as they are.
    let map = FolderMap::new(snap(1, 10, 0), snap(2, 10, 900), [(1, 1)]).expect("valid map");
    assert_eq!(map.to_client_modseq(950), 950);
    assert_eq!(map.changedsince_to_store(3), 3);
}

#[test]
fn unchangedsince_is_exact_where_the_client_can_see_it() {
    let mut rng = Rng(42);
    for _ in 0..200 {
        let (map, _) = random_map(&mut rng);
        for c in 0..400u64 {
            let s_lim = map.unchangedsince_to_store(c);
            for m in 1..400u64 {
                assert_eq!(
                    map.to_client_modseq(m) <= c,
                    m <= s_lim,
                    "UNCHANGEDSINCE {c}, store modseq {m}, {map:?}"
                );
            }
            if c >= map.old_highestmodseq {
                let s_lim = map.changedsince_to_store(c);
                for m in 1..400u64 {
                    // What the client would call a change, the store reports.
                    if map.to_client_modseq(m) > c {
                        assert!(m > s_lim, "CHANGEDSINCE {c}, store modseq {m}, {map:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn fresh_map_presents_store_uids_under_a_new_uidvalidity() {
    let map = FolderMap::fresh(snap(77, 20, 40), 1234);
    assert_eq!(map.presented_uidvalidity, 1234);
    for u in 1..40 {
        assert_eq!(map.to_store_uid(u), Some(u));
        assert_eq!(map.to_client_uid(u), Some(u));
    }
    assert_eq!(map.to_client_modseq(33), 33);
    assert_eq!(map.changedsince_to_store(33), 33);
    assert_eq!(FolderMap::decode(&map.encode()), Ok(map));
    let empty = FolderMap::fresh(snap(77, 1, 0), 5);
    assert!(empty.is_empty());
    assert_eq!(empty.to_store_uid(1), Some(1));
}

#[test]
fn encoding_is_versioned_and_ignores_unknown_keys() {
    let mut map = FolderMap::new(
        snap(1700000000, 1201, 5000),
        snap(1800000000, 1001, 3100),
        (1..=400)
            .map(|u| (u, u))
            .chain((404..=1003).map(|u| (u, u - 3))),
    )
    .expect("valid map");
    assert_eq!(
        map.encode(),
        "v1 ouv=1700000000 oun=1201 ohm=5000 nuv=1800000000 nun=1001 nhm=3100 \
         puv=1700000000 runs=..400,3..600"
    );
    map.uidls = vec![(1, "0000000165a1b2c3".into()), (7, "a,b:c%d=e é".into())];
    let text = map.encode();
    assert!(text.ends_with(" uidls=1:0000000165a1b2c3,7:a%2Cb%3Ac%25d%3De%20%C3%A9"));
    assert_eq!(FolderMap::decode(&text).as_ref(), Ok(&map));
    let later = text.replace("v1 ", "v1 future=stuff ") + " more=1,2";
    assert_eq!(FolderMap::decode(&later), Ok(map));
    assert_eq!(
        FolderMap::decode("v2 ouv=1"),
        Err(MapError::Version("v2".into()))
    );
    assert_eq!(
        FolderMap::decode("v1 ouv=1 oun=2 ohm=0 nuv=3 nun=4 nhm=0"),
        Err(MapError::Missing("puv"))
    );
}

#[test]
fn garbage_never_panics() {
    let good = FolderMap::new(
        snap(1, 100, 10),
        snap(2, 90, 20),
        (1..50).map(|u| (u * 2, u)),
    )
    .expect("valid map")
    .encode();
    let mut rng = Rng(7);
    let alphabet = b"v1 =.,:%0123456789runsoahmpuidlx\n";
    for _ in 0..20_000 {
        let mut bytes = good.clone().into_bytes();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(bytes.len() as u64) as usize;
            match rng.below(3) {
                0 => bytes[i] = alphabet[rng.below(alphabet.len() as u64) as usize],
                1 => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, alphabet[rng.below(alphabet.len() as u64) as usize]),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(map) = FolderMap::decode(&text) {
            // Whatever decodes holds the invariant.
            let mut seen = std::collections::HashSet::new();
            for c in 0..300 {
                if let Some(s) = map.to_store_uid(c) {
                    assert!(seen.insert(s));
                    assert_eq!(map.to_client_uid(s), Some(c));
                }
            }
        }
    }
    for junk in [
        "",
        "v1",
        "v1 runs=...",
        "v1 runs=4294967295.0.1",
        "%%%",
        "v1 uidls=1:%",
    ] {
        assert!(FolderMap::decode(junk).is_err(), "{junk}");
    }
}

#[test]
fn a_large_folder_with_few_gaps_encodes_to_kilobytes() {
    let pairs = (1..=100_000u32)
        .filter(|u| u % 997 != 0)
        .enumerate()
        .map(|(i, u)| (u, i as u32 + 1));
    let map = FolderMap::new(snap(1, 100_001, 900_000), snap(2, 99_901, 300_000), pairs)
        .expect("valid map");
    let text = map.encode();
    assert!(text.len() < 4096, "{} bytes", text.len());
    assert!(map.memory() < 1 << 20);
    assert_eq!(FolderMap::decode(&text), Ok(map));
}

#[test]
fn user_map_sums_its_folders() {
    let mut user = UserMap::new();
    user.insert(
        "INBOX",
        FolderMap::new(snap(1, 10, 0), snap(2, 10, 0), [(1, 1), (2, 2), (5, 3)])
            .expect("valid map"),
    );
    user.insert("Sent", FolderMap::fresh(snap(3, 4, 0), 99));
    assert_eq!(user.len(), 2);
    assert_eq!(user.messages(), 6);
    assert_eq!(
        user.folder("INBOX").map(|m| m.to_store_uid(5)),
        Some(Some(3))
    );
    assert!(user.folder("Trash").is_none());
    assert!(user.encoded_bytes() > 100);
}
