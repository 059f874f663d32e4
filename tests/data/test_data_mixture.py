"""Mixtures: ratios honoured, deterministic per seed, validation split, refusals that name the source."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from runners.data import mixture as mx
from runners.data.errors import DataError
from runners.data.readers import to_record

from data_helpers import write_jsonl


@pytest.fixture
def raw(tmp_path):
    d = tmp_path / "raw"
    write_jsonl(d / "a.jsonl", [{"text": f"a{i}"} for i in range(3000)])
    write_jsonl(d / "b.jsonl", [{"text": f"b{i}"} for i in range(1000)])
    write_jsonl(d / "c" / "part1.jsonl", [{"body": f"c{i}"} for i in range(600)])
    write_jsonl(d / "c" / "part2.jsonl", [{"body": f"c{i}"} for i in range(600, 1200)])
    (d / "empty.jsonl").write_text("")
    return d


def _spec(**kw):
    spec = {"seed": 0, "validation_fraction": 0.1, "sources": [
        {"name": "a", "path": "a.jsonl", "ratio": 0.5},
        {"name": "b", "path": "b.jsonl", "ratio": 0.3},
        {"name": "c", "path": "c", "ratio": 0.2, "fields": {"text_field": "body"}},
    ]}
    spec.update(kw)
    return spec


def _run(spec, raw):
    mix = mx.load_mixture(spec, raw, "m")
    mx.plan(mix)
    rows = [(i, mix.sources[i].fields.text(to_record(r)), split) for i, r, split in mx.draw(mix)]
    return mix, rows


def test_ratios_honoured_and_limited_by_the_scarcest_source(raw):
    mix, rows = _run(_spec(), raw)
    # b holds 1000 at ratio 0.3 -> the mixture can hold at most 3333 records.
    n = len(rows)
    assert n == pytest.approx(1000 / 0.3, abs=2)
    by_src = Counter(i for i, _, _ in rows)
    for i, ratio in enumerate((0.5, 0.3, 0.2)):
        assert abs(by_src[i] / n - ratio) <= 1.0 / n + 1e-9
    # Records are drawn without repeats, from the right source.
    texts = [t for _, t, _ in rows]
    assert len(set(texts)) == n
    assert all(t[0] == "abc"[i] for i, t, _ in rows)
    # Validation: exactly the fraction overall, and each source within sampling error of its share.
    val = [i for i, _, s in rows if s == "validation"]
    assert len(val) == round(n * 0.1)
    vc = Counter(val)
    for i, ratio in enumerate((0.5, 0.3, 0.2)):
        expect = len(val) * ratio
        assert abs(vc[i] - expect) < 4 * (expect * (1 - ratio)) ** 0.5 + 1
    m = mx.manifest(mix)
    assert [s["drawn"] for s in m["sources"]] == [by_src[0], by_src[1], by_src[2]]
    assert sum(s["validation"] for s in m["sources"]) == len(val)
    assert m["sources"][2]["files"][0].endswith("part1.jsonl")


def test_interleave_keeps_the_ratio_along_the_stream(raw):
    _, rows = _run(_spec(validation_fraction=0.0), raw)
    first = rows[: len(rows) // 4]
    share_a = sum(1 for i, _, _ in first if i == 0) / len(first)
    # The first quarter is a random sample of the draw: within ~4 sigma of 0.5.
    assert abs(share_a - 0.5) < 4 * (0.25 / len(first)) ** 0.5


def test_caps_weights_and_total(raw):
    spec = {"seed": 3, "total_samples": 800, "sources": [
        {"name": "a", "path": "a.jsonl", "weight": 3},
        {"name": "b", "path": "b.jsonl", "weight": 1, "max_samples": 150},
    ]}
    mix, rows = _run(spec, raw)
    c = Counter(i for i, _, _ in rows)
    # b capped at 150 at share 0.25 -> 600 total, under total_samples.
    assert c == {0: 450, 1: 150}
    spec["sources"][1].pop("max_samples")
    _, rows = _run(spec, raw)
    assert Counter(i for i, _, _ in rows) == {0: 600, 1: 200}


def test_deterministic_for_a_seed(raw):
    _, r1 = _run(_spec(), raw)
    _, r2 = _run(_spec(), raw)
    _, r3 = _run(_spec(seed=1), raw)
    assert r1 == r2
    assert r1 != r3 and len(r1) == len(r3)


@pytest.mark.parametrize("change,match", [
    (lambda s: s["sources"][1].update(ratio=0.4), r"ratios sum to 1\.1000.*a=0\.5, b=0\.4, c=0\.2"),
    (lambda s: s["sources"][1].update(path="nope.jsonl"), r"mixture source 'b': .*nope\.jsonl does not exist"),
    (lambda s: s["sources"][2].update(path="empty.jsonl", fields={}), r"mixture source 'c': has weight .* no records"),
    (lambda s: s["sources"][0].pop("ratio"), r"mixture source 'a': other sources use `ratio:`"),
    (lambda s: s["sources"][0].update(ratio=1.5), r"mixture source 'a': ratio 1\.5 out of range"),
    (lambda s: s["sources"][1].update(name="a"), r"mixture source 'a': duplicate"),
    (lambda s: s["sources"][0].update(wieght=1), r"mixture source 'a': unknown key"),
    (lambda s: s.update(validation_fraction=1.0), r"validation_fraction"),
])
def test_impossible_mixtures_refused_naming_the_source(raw, change, match):
    spec = json.loads(json.dumps(_spec()))
    change(spec)
    with pytest.raises(DataError, match=match):
        mix = mx.load_mixture(spec, raw, "m")
        mx.plan(mix)


def test_ratio_tolerance(raw):
    spec = _spec()
    spec["sources"][0]["ratio"] = 0.5004
    mx.load_mixture(spec, raw, "m")  # within the default 1e-3
    spec["tolerance"] = 1e-4
    with pytest.raises(DataError, match="ratios sum"):
        mx.load_mixture(spec, raw, "m")


def test_mixture_through_the_tokenizer_writes_manifest_beside_output(exp, tok_dir, tokenize, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = exp / "data/raw/cpt"
    write_jsonl(raw / "web.jsonl", [{"text": f"the cat {i}"} for i in range(400)])
    pq.write_table(pa.Table.from_pylist([{"content": f"dogs ran {i}"} for i in range(100)]), raw / "code.parquet")
    mix = tmp_path / "mix.yaml"
    mix.write_text(json.dumps({"name": "blend", "seed": 4, "validation_fraction": 0.1, "sources": [
        {"name": "web", "path": "web.jsonl", "ratio": 0.75},
        {"name": "code", "path": "code.parquet", "ratio": 0.25, "fields": {"text_field": "content"}}]}))
    rc, _, err = tokenize("--mode", "cpt", "--mixture", mix, "--tokenizer", tok_dir, "--block-size", 8,
                          "--workers", 1)
    assert rc == 0, err
    out = exp / "data/tokenized/cpt/blend"
    manifest = json.loads((out / "mixture_manifest.json").read_text())
    assert [(s["name"], s["drawn"], s["available"]) for s in manifest["sources"]] == [
        ("web", 300, 400), ("code", 100, 100)]
    assert sum(s["validation"] for s in manifest["sources"]) == 40
    meta = json.loads((out / "meta.json").read_text())
    assert meta["docs"] == 400 and meta["sources"] == manifest["sources"]
    assert set(meta["splits"]) == {"train", "validation"}
