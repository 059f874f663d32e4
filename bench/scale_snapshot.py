"""Scale bench, snapshot row: launcher's code snapshot of a big tree against `git archive --format=tar.gz HEAD`.

The tree: FILES files, SIZE_MB in all, about half the bytes text (source-like lines, ~90% of the files) and half
binary (random bytes, ~10% of the files, as weights or images are: incompressible), in two directory levels, plus
a `.gitignore` and some ignored files (`build/`, `*.pyc`) so git's view of ignored files is part of the work.
It is committed to a git repository so `git archive` has a HEAD, and packed (neither is measured).

Rows, in one run on one machine:
  first snapshot      `launcher.snapshot.build` with an empty cache, against `git archive --format=tar.gz HEAD > f`
  unchanged re-launch `build` again on the same tree and cache (what a second `launch` pays before uploading)
  one changed file    one text file edited, `build` again (the unchanged chunks copied from the last tarball): the
                      bytes an ssh box holding the last snapshot is sent (the chunks it lacks; it composes the
                      rest), against that file's size; an S3 store is sent S3's 5 MiB part minimum around it

    python bench/scale_snapshot.py                          # 50,000 files, 1 GB, in a temp dir
    python bench/scale_snapshot.py --files 5000 --size-mb 100 --workdir /tmp/snapbench --keep
    PYTHONPATH=/tmp/old python bench/scale_snapshot.py ...  # the same rows for another copy of launcher

`rows()` is what bench/scale.py imports; the `__main__` prints a markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path and not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(REPO))

_WORDS = ("self return def class import from for in if else elif while try except with as lambda yield None True "
          "False and or not is pass break continue raise assert global model data batch loss step optimizer lr "
          "tensor torch numpy config path logger print len range list dict str int float value key index result "
          "train eval forward backward weight bias hidden layer dropout norm attention head token vocab embed "
          "checkpoint epoch seed device cuda cpu shape size dim args kwargs name file open read write").split()
_MARK = ".bench-tree"


def _git(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@example.com",
                           *args], check=True, capture_output=True, **kw)


def _text_corpus(rng: random.Random, n_bytes: int) -> bytes:
    """Source-like lines from a Zipf-ish vocabulary: gzip takes it to about a quarter, as it does real code."""
    weights = [1 / (i + 1) for i in range(len(_WORDS))]
    lines, total = [], 0
    while total < n_bytes:
        indent = "    " * rng.randint(0, 3)
        words = rng.choices(_WORDS, weights, k=rng.randint(2, 12))
        line = f"{indent}{' '.join(words)} = {rng.randint(0, 99999)}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def _sizes(rng: random.Random, n: int, total: int) -> list[int]:
    raw = [rng.lognormvariate(0, 1) for _ in range(n)]
    scale = total / sum(raw)
    sizes = [max(1, int(r * scale)) for r in raw]
    sizes[0] += total - sum(sizes)  # exact total
    if sizes[0] < 1:
        sizes[0] = 1
    return sizes


def make_tree(root: Path, files: int, size_mb: int, seed: int = 0) -> dict:
    """Write and commit the tree (reused when `root` already holds one of the same shape). Returns its facts."""
    mark = root / ".git" / _MARK
    want = f"{files} {size_mb} {seed}\n"
    if mark.is_file() and mark.read_text() == want:
        _git(root, "checkout", "-q", "--", ".")  # undo an earlier run's edit
        _git(root, "clean", "-qfd")  # and drop its untracked files, not the ignored ones
    else:
        shutil.rmtree(root, ignore_errors=True)
        rng = random.Random(seed)
        total = size_mb * 1024**2
        n_bin = max(1, files // 10)
        n_text = files - n_bin
        corpus = _text_corpus(rng, 8 * 1024**2)
        text_sizes = _sizes(rng, n_text, total // 2)
        bin_sizes = _sizes(rng, n_bin, total - total // 2)
        kinds = ["t"] * n_text + ["b"] * n_bin
        rng.shuffle(kinds)
        ti = bi = 0
        for i, kind in enumerate(kinds):
            d = root / f"pkg{i // 2500:02d}" / f"mod{(i // 50) % 50:02d}"
            if i % 50 == 0:
                d.mkdir(parents=True, exist_ok=True)
            if kind == "t":
                n = text_sizes[ti]
                ti += 1
                start = rng.randrange(0, len(corpus) - n) if n < len(corpus) else 0
                data = (corpus * (n // len(corpus) + 1))[start:start + n] if n >= len(corpus) else corpus[start:start + n]
                (d / f"f{i:05d}.py").write_bytes(data)
            else:
                n = bin_sizes[bi]
                bi += 1
                (d / f"f{i:05d}.bin").write_bytes(rng.randbytes(n))
        (root / ".gitignore").write_text("build/\n*.pyc\n")
        _git(root, "init", "-q")
        _git(root, "add", "-A")
        _git(root, "-c", "gc.auto=0", "commit", "-q", "-m", "bench tree")
        # Packed now, as a real repository is, rather than by the commit's auto gc in the background while the
        # rows are measured.
        _git(root, "repack", "-a", "-d", "-q")
        mark.write_text(want)
    # Ignored files: present on disk, absent from both outputs (written after the commit, every run).
    for i in range(200):
        b = root / "build" / f"out{i:03d}.o"
        b.parent.mkdir(exist_ok=True)
        b.write_bytes(b"\0" * 4096)
        (root / f"pkg00/mod00/cache{i:03d}.pyc").write_bytes(b"\1" * 1024)
    return {"files": files, "bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()
                                         and ".git" not in p.parts and "build" not in p.parts
                                         and p.suffix != ".pyc")}


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _git_archive(root: Path, out: Path) -> int:
    with open(out, "wb") as f:
        subprocess.run(["git", "-C", str(root), "archive", "--format=tar.gz", "HEAD"], stdout=f, check=True)
    return out.stat().st_size


def _settle(*dirs: Path) -> None:
    """The snapshot index leaves out a tree with a file changed in the last 2 s (it might change again in the same
    timestamp tick); a real re-launch comes later than that, so wait it out rather than measure a rare case."""
    newest = max(max(st.st_mtime, st.st_ctime) for d in dirs for p in d.rglob("*") for st in [os.lstat(p)])
    time.sleep(max(0.0, newest + 2.5 - time.time()))


def _freeze_launcher(dest: Path) -> Path:
    """A copy of the launcher this process imports (its .py files and the node's locks), which the measuring child
    imports: the snapshot carries the agent's own files, and in a shared checkout those change under the bench."""
    import launcher

    pkg = Path(launcher.__file__).resolve().parent
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(pkg, dest / "launcher", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if (pkg.parent / "images").is_dir():
        (dest / "images").mkdir()
        for lock in (pkg.parent / "images").glob("requirements*.lock"):
            shutil.copy2(lock, dest / "images" / lock.name)
    return dest


def _measure(root: Path, workdir: Path, runs: int, limit: int) -> dict:
    """In the child, with the frozen launcher on sys.path: every timed step."""
    from launcher import snapshot

    firsts, archives = [], []
    snap = arch_size = None
    for r in range(runs):  # alternate the two so drift in the machine's speed hits both
        cache = workdir / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        s, snap = _timed(lambda: snapshot.build(root, limit_bytes=limit, cache_dir=cache))
        firsts.append(s)
        a, arch_size = _timed(lambda: _git_archive(root, workdir / "archive.tar.gz"))
        archives.append(a)
    agains = []
    for _ in range(max(3, runs)):
        s, again = _timed(lambda: snapshot.build(root, limit_bytes=limit, cache_dir=cache))
        agains.append(s)
        assert again.sha256 == snap.sha256, "an unchanged tree gave another snapshot"
    texts = sorted(root.glob("pkg00/mod0*/f*.py"))
    edited = texts[len(texts) // 2]
    edited.write_bytes(edited.read_bytes() + b"# edited\n")
    _settle(edited.parent)
    s, changed = _timed(lambda: snapshot.build(root, limit_bytes=limit, cache_dir=cache))
    assert changed.sha256 != snap.sha256, "an edit gave the same snapshot"
    # An ssh box that holds the last snapshot gets the chunks it lacks and composes the rest (compose_plan); an S3
    # store copies the unchanged parts of a multipart upload from the last snapshot (store_parts), but each part
    # sent is at least 5 MiB.
    chunks, before = snapshot.chunk_list(changed), snapshot.chunk_list(snap)
    ops = snapshot.compose_plan(chunks, before) if chunks and before else [("new", 0, changed.size)]
    sent = sum(n for src, _, n in ops if src == "new")
    store_sent = sum(p[2] for p in snapshot.store_parts(ops) if p[0] == "put")
    return {"firsts": firsts, "archives": archives, "arch_size": arch_size, "size": snap.size, "members": snap.files,
            "agains": agains, "edited": str(edited.relative_to(root)), "edited_size": edited.stat().st_size,
            "changed_s": s, "sent": sent, "store_sent": store_sent}


def rows(files: int = 50_000, size_mb: int = 1024, workdir: Path | None = None, *, runs: int = 1,
         keep: bool = False) -> list[dict]:
    """Each row: {"row", "launcher_s", "peer", "peer_s", "ratio", "detail"} (ratio: launcher / peer; for the
    one-changed-file row, bytes sent / the file's size). The launcher measured is the one this process imports."""
    own_tmp = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="scale-snapshot-")) if own_tmp else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "tree"
    try:
        t_make, facts = _timed(lambda: make_tree(root, files, size_mb))
        frozen = _freeze_launcher(workdir / "frozen")
        _settle(root / "build", frozen)
        limit = 4 * size_mb * 1024**2 + 64 * 1024**2  # the size limit raised for the bench
        child = subprocess.run([sys.executable, __file__, "--measure", str(root), str(workdir), str(runs), str(limit)],
                               env={**os.environ, "PYTHONPATH": str(frozen)}, capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"the measuring child failed:\n{child.stderr}")
        m = json.loads(child.stdout.strip().splitlines()[-1])
        first_s, arch_s = statistics.median(m["firsts"]), statistics.median(m["archives"])
        again_s = statistics.median(m["agains"])
        mb = 1024**2
        return [
            {"row": "first snapshot", "launcher_s": first_s, "peer": "git archive --format=tar.gz HEAD",
             "peer_s": arch_s, "ratio": first_s / arch_s,
             "detail": f"{m['members']} members, {m['size'] / mb:.0f} MB tar.gz (git archive "
                       f"{m['arch_size'] / mb:.0f} MB); tree {facts['bytes'] / mb:.0f} MB in {facts['files']} files "
                       f"(+400 ignored); runs {runs}"},
            {"row": "unchanged re-launch", "launcher_s": again_s, "peer": "target 1 s", "peer_s": 1.0,
             "ratio": again_s / 1.0, "detail": f"median of {len(m['agains'])}: "
                                                + ", ".join(f"{x:.2f}" for x in m["agains"])},
            {"row": "one changed file", "launcher_s": m["changed_s"], "peer": f"the file ({m['edited_size'] / 1024:.1f} KB)",
             "peer_s": None, "ratio": m["sent"] / m["edited_size"],
             "detail": f"an ssh box gets {m['sent'] / 1024:.1f} KB for a {m['edited_size'] / 1024:.1f} KB edit "
                       f"({m['edited']}), an S3 store {m['store_sent'] / mb:.1f} MB; re-packed in "
                       f"{m['changed_s']:.1f} s"},
            {"row": "tree build + commit (not measured)", "launcher_s": None, "peer": "", "peer_s": None,
             "ratio": None, "detail": f"{t_make:.0f} s"},
        ]
    finally:
        if own_tmp and not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def table(rs: list[dict]) -> str:
    lines = ["| row | launcher s | peer | peer s | ratio | detail |", "|---|---:|---|---:|---:|---|"]
    for r in rs:
        f = (lambda v, p=2: "-" if v is None else f"{v:.{p}f}")
        lines.append(f"| {r['row']} | {f(r['launcher_s'])} | {r['peer']} | {f(r['peer_s'])} | "
                     f"{f(r['ratio'], 3 if (r['ratio'] or 0) < 10 else 0)} | {r['detail']} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:  # the child rows() starts
        root, workdir, runs, limit = sys.argv[2:6]
        print(json.dumps(_measure(Path(root), Path(workdir), int(runs), int(limit))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the tree here (reused by the next run)")
    ap.add_argument("--runs", type=int, default=1, help="first-snapshot / git-archive pairs (median)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    import launcher

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, nproc={os.cpu_count()}, "
          f"Python {platform.python_version()}, {subprocess.run(['git', '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"load {os.getloadavg()[0]:.2f}, commit {head}, launcher from {Path(launcher.__file__).parent}")
    rs = rows(a.files, a.size_mb, a.workdir, runs=a.runs, keep=a.keep)
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    print(table(rs))


if __name__ == "__main__":
    main()
