"""Issue 26 item 3, one changed file: a big tree's snapshot is a run of chunks (launcher/snapshot.py), and a box
that holds the last launch's snapshot gets only the changed chunks; it composes the new tarball from the old one's
byte ranges, checked against the new sha256 (and by the bootstrap again). Run on the real sshd and a moto store."""
from __future__ import annotations

import random
import re

import pytest

from ..backends.conftest import BUCKET, ssh_target
from ..motoserver import moto_with_bucket

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, BUCKET)


def _sizes(text: str) -> tuple[float, float]:
    m = re.search(r"sent ([\d.]+) (\w+) of ([\d.]+) (\w+) \(the changed chunks\)", text)
    assert m, text
    unit = {"B": 1, "KB": 1e3, "KiB": 1024, "MB": 1e6, "MiB": MiB}
    return float(m[1]) * unit[m[2]], float(m[3]) * unit[m[4]]


def test_an_edit_sends_only_its_chunk_and_the_box_composes_the_rest(tmp_path, sshd, moto):
    t = ssh_target(tmp_path, sshd, moto)
    rng = random.Random(5)
    # Over 16 MiB (a "big" tree: chunked): five 4 MiB files (chunks of their own) and a package of small ones.
    for i in range(5):
        (t.project / f"weights{i}.bin").write_bytes(rng.randbytes(4 * MiB))
    for i in range(60):
        (t.project / "pkg").mkdir(exist_ok=True)
        (t.project / "pkg" / f"m{i:02d}.py").write_text(f"VALUE = {i}\n" * 50)
    (t.project / "show.py").write_text("import pkg.m07 as m\nprint('value', m.VALUE)\n")
    (t.project / "pkg" / "__init__.py").write_text("")
    first = t.launch("show.py")
    assert first.returncode == 0, first.stderr
    assert "value 7" in first.stdout
    assert "uploaded" in first.stderr and "composed" not in first.stderr, first.stderr

    (t.project / "pkg" / "m07.py").write_text("VALUE = 'edited'\n")
    second = t.launch("show.py")
    assert second.returncode == 0, second.stderr
    assert "value edited" in second.stdout  # the composed tarball is the new code (the bootstrap checked its sha)
    sent, whole = _sizes(second.stderr)
    assert whole > 20 * MiB and sent < MiB, second.stderr  # the edited file's chunk, not the 20 MiB
    code = tmp_path / "node" / "code"
    assert sorted(p.name for p in code.iterdir() if p.name.startswith(".")) == []  # no delta, ops or part left
    assert len(list(code.glob("*.tar.gz"))) == 2
