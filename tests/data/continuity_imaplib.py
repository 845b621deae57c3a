"""imaplib through mailshift, before and after a cutover (tests/continuity_clients.rs).

usage: continuity_imaplib.py PORT before|after|dump STATE.json
before: records per folder UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and UID -> message.
after:  checks what a client relies on across the move, then acts on old UIDs.
dump:   prints what `before` records (to compare two instances).
"""
import imaplib
import json
import re
import sys

PORT, PHASE, PATH = int(sys.argv[1]), sys.argv[2], sys.argv[3]
FOLDERS = ("INBOX", "Kept")


def conn():
    m = imaplib.IMAP4("127.0.0.1", PORT)
    m.login("alice", "alicepw")
    return m


def status(m, f):
    typ, d = m.status(f, "(UIDVALIDITY UIDNEXT HIGHESTMODSEQ)")
    assert typ == "OK", d
    s = d[0].decode()
    return {k: int(re.search(k + r" (\d+)", s).group(1)) for k in ("UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ")}


def messages(m, f):
    typ, d = m.select(f, readonly=True)
    assert typ == "OK", d
    typ, d = m.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])")
    assert typ == "OK", d
    out = {}
    for item in d:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            out[uid] = " ".join(item[1].decode().split())
    return out


def snapshot(m):
    return {f: {"status": status(m, f), "messages": messages(m, f)} for f in FOLDERS}


def uid_set(s):
    out = set()
    for part in s.split(","):
        a, _, b = part.partition(":")
        a, b = int(a), int(b or a)
        out.update(range(min(a, b), max(a, b) + 1))
    return out


def code(data, name):
    for d in data:
        d = d.decode() if isinstance(d, bytes) else str(d)
        hit = re.search(r"\[" + name + r" ([^\]]+)\]", d)
        if hit:
            return hit.group(1).split()
    return None


if PHASE in ("before", "dump"):
    m = conn()
    snap = snapshot(m)
    m.logout()
    if PHASE == "before":
        json.dump(snap, open(PATH, "w"))
    else:
        print(json.dumps(snap, sort_keys=True))
    sys.exit(0)

before = json.load(open(PATH))
m = conn()
for f in FOLDERS:
    b = before[f]
    st = status(m, f)
    assert st["UIDVALIDITY"] == b["status"]["UIDVALIDITY"], (f, st, b["status"])
    assert st["HIGHESTMODSEQ"] >= b["status"]["HIGHESTMODSEQ"], (f, st, b["status"])
    typ, _ = m.select(f, readonly=True)
    assert int(m.response("UIDVALIDITY")[1][0]) == b["status"]["UIDVALIDITY"], f
    now = messages(m, f)
    for uid, key in b["messages"].items():
        assert now.get(int(uid)) == key, (f, uid, key, now.get(int(uid)))

inbox = before["INBOX"]
old_next = inbox["status"]["UIDNEXT"]
old_hms = inbox["status"]["HIGHESTMODSEQ"]
old_uidvalidity = inbox["status"]["UIDVALIDITY"]
now = messages(m, "INBOX")
new = [u for u, k in now.items() if "after-cutover" in k]
assert len(new) == 1 and new[0] >= old_next, (new, old_next)
uids = sorted(int(u) for u in inbox["messages"])
key = {int(u): k for u, k in inbox["messages"].items()}
u1, u2, u3, u4, u5 = uids[1], uids[3], uids[5], uids[7], uids[9]

m.select("INBOX")
# STORE and SEARCH on old UIDs act on the right messages.
typ, d = m.uid("STORE", str(u1), "+FLAGS", "($Moved)")
assert typ == "OK", d
typ, d = m.uid("SEARCH", "KEYWORD", "$Moved")
assert [int(x) for x in d[0].split()] == [u1], d
typ, d = m.uid("SEARCH", "UID", "%d:%d" % (u1, u2))
assert [int(x) for x in d[0].split()] == [u for u in uids if u1 <= u <= u2], d
# CHANGEDSINCE the old HIGHESTMODSEQ reports the change made after cutover.
typ, d = m.uid("FETCH", "1:*", "(UID FLAGS MODSEQ) (CHANGEDSINCE %d)" % old_hms)
changed = {int(re.search(rb"UID (\d+)", x).group(1)): int(re.search(rb"MODSEQ \((\d+)\)", x).group(1)) for x in d if x}
assert u1 in changed and changed[u1] > old_hms, (changed, old_hms)
assert all(u == u1 or u >= old_next for u in changed), changed
# COPY names the old source UID; the copy is the same message.
archive = before["Kept"]
# imaplib's uid() drops the tagged text the COPYUID code is in.
typ, d = m._simple_command("UID", "COPY", str(u2), "Kept")
assert typ == "OK", d
cu = code(d, "COPYUID")
assert cu and int(cu[0]) == archive["status"]["UIDVALIDITY"] and uid_set(cu[1]) == {u2}, d
dst = min(uid_set(cu[2]))
assert dst >= archive["status"]["UIDNEXT"], (dst, archive["status"])
# MOVE: gone here, there under the announced UID.
m.response("COPYUID")  # imaplib also keeps the COPY's tagged code there
typ, d = m._simple_command("UID", "MOVE", str(u3), "Kept")
assert typ == "OK", d
mv = m.response("COPYUID")[1]
mv = code([b"[COPYUID " + mv[0] + b"]"], "COPYUID") if mv and mv[0] else code(d, "COPYUID")
assert mv and uid_set(mv[1]) == {u3}, (mv, d)
typ, d = m.uid("SEARCH", "UID", str(u3))
assert d[0].split() == [], d
# EXPUNGE of one old UID removes that message only.
m.uid("STORE", str(u4), "+FLAGS.SILENT", "(\\Deleted)")
typ, d = m.uid("EXPUNGE", str(u4))
assert typ == "OK", d
after = messages(m, "INBOX")
assert set(after) == (set(now) - {u3, u4}), (sorted(after), sorted(now))
for u in after:
    if u in key:
        assert after[u] == key[u], (u, after[u], key[u])
arch = messages(m, "Kept")
assert arch[dst] == key[u2] and arch[int(mv[2])] == key[u3], (arch, dst, mv)
# Another session expunges u5; a QRESYNC client that knew the old state hears of it.
m.select("INBOX")
m.uid("STORE", str(u5), "+FLAGS.SILENT", "(\\Deleted)")
m.uid("EXPUNGE", str(u5))
m.logout()
q = conn()
typ, d = q._simple_command("ENABLE", "QRESYNC")
assert typ == "OK", d
typ, d = q._simple_command("SELECT", "INBOX (QRESYNC (%d %d))" % (old_uidvalidity, old_hms))
assert typ == "OK", d
vanished = q.untagged_responses.get("VANISHED", [])
gone = set()
for v in vanished:
    v = v.decode()
    assert v.startswith("(EARLIER) "), v
    gone |= uid_set(v.split()[1])
assert {u3, u4, u5} <= gone, (gone, u3, u4, u5)
assert not (gone & set(after) - {u5}), (gone, sorted(after))
assert int(q.untagged_responses["UIDVALIDITY"][0]) == old_uidvalidity
q.logout()
print("OK")
