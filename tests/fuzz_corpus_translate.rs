//! Replays the seed corpus (and any saved crash) of the `translate` fuzz
//! target on stable: no panic, the same output however the bytes are cut,
//! and the realistic seeds translated the way a client needs them.

use std::collections::BTreeMap;

use mailshift::imap::translate::exercise;

fn files(dir: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = format!("{}/fuzz/{dir}", env!("CARGO_MANIFEST_DIR"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn translate_corpus() {
    let corpus = files("corpus/translate");
    assert!(corpus.len() >= 10, "seed corpus missing: {}", corpus.len());
    let mut all = corpus.clone();
    all.extend(files("regressions/translate"));
    for (name, data) in &all {
        let Some((_, data)) = data.split_first() else {
            continue;
        };
        let whole = exercise(data, usize::MAX);
        for cut in 1..=17 {
            assert!(exercise(data, cut) == whole, "{name}: cut {cut} differs");
        }
    }
    let out = |name: &str| {
        let (_, data) = corpus[name].split_first().expect("seed");
        let (up, down) = exercise(data, usize::MAX);
        (text(&up), text(&down.expect("no store error")))
    };
    let (up, down) = out("select_fetch");
    assert!(up.contains("(CHANGEDSINCE 300)"), "{up}");
    assert!(
        down.contains("[UIDVALIDITY 1111]") && down.contains("[UIDNEXT 210]"),
        "{down}"
    );
    assert!(
        down.contains("* 2 FETCH (UID 3 FLAGS () MODSEQ (5002))"),
        "{down}"
    );
    let (up, down) = out("copy_move_append");
    assert!(up.contains("a UID COPY 1:5 Archive"), "{up}");
    assert!(down.contains("[COPYUID 4444 1,3,5,7,9 110:114]"), "{down}");
    assert!(down.contains("[APPENDUID 4444 116]"), "{down}");
    let (up, down) = out("refused");
    for tag in ["a", "b", "c", "e"] {
        assert!(
            !up.contains(&format!("\n{tag} ")),
            "{tag} reached the store: {up}"
        );
        assert!(
            down.contains(&format!("{tag} BAD")) || down.contains(&format!("{tag} NO")),
            "{down}"
        );
    }
    assert!(up.contains("abc )))"), "{up}");
    let (_, down) = out("capability_gap");
    assert!(!down.contains("OBJECTID") && !down.contains("COMPRESS") && !down.contains("NOTIFY"));
    assert!(
        down.contains("* 2 FETCH ()") && down.contains("* 3 FETCH (UID 7)"),
        "{down}"
    );
    let (up, down) = out("idle_plain_folder");
    assert!(up.contains("b UID FETCH 1:* FLAGS") && down.contains("(UID 7 FLAGS ())"));
}
