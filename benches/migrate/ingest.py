#!/usr/bin/env python3
"""Raw-ingest baseline for benches/migrate.rs: runs the peers' gen.py corpus + loader
(imported in place, not copied) against a store whose hierarchy separator is not '/'.

gen.py names its folders with '/' (the OLD store's separator); the lab's NEW sdbox store
uses '.', where CREATE "Archive/2023" is refused. This maps '/' to SEP in the folder
names (gen.FOLDERS and each message's folder) and then calls gen.load unchanged, so the
messages, flags, dates and the pipelined LITERAL+ APPEND path are exactly gen.py's.

  ingest.py --gen /work/shared/peers/corpus/gen.py --sep . --user U --port P --n 5000 --seed 1 --conns 4
Prints gen.py's own summary lines ("N msgs ..." and "APPEND ... s").
"""
import argparse, importlib.util, os, sys

ap = argparse.ArgumentParser()
ap.add_argument("--gen", default="/work/shared/peers/corpus/gen.py")
ap.add_argument("--sep", default=".")
ap.add_argument("--user", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--n", type=int, default=5000)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--tag", default="base")
ap.add_argument("--conns", type=int, default=4)
a = ap.parse_args()

sys.path.insert(0, os.path.dirname(os.path.abspath(a.gen)))
spec = importlib.util.spec_from_file_location("gen", a.gen)
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)

fix = lambda f: f.replace("/", a.sep)
gen.FOLDERS = [(fix(f), w) for f, w in gen.FOLDERS]
msgs = [(fix(f), fl, ep, d) for f, fl, ep, d in gen.messages(a.seed, a.n, a.tag)]
sizes = sorted(len(m[3]) for m in msgs)
print(f"{len(msgs)} msgs, {sum(sizes)/1e6:.1f} MB, folders sep {a.sep!r}", flush=True)
n, b, dt = gen.load("127.0.0.1", a.port, a.user, msgs, a.conns)
print(f"APPEND {n} msgs {b/1e6:.1f} MB to {a.user}@{a.port} conns={a.conns}: {dt:.2f} s, "
      f"{n/dt:.0f} msg/s, {b/1e6/dt:.1f} MB/s")
