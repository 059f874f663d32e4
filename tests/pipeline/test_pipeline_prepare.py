"""`--prepare-only` (the seed's prepare_exp): layout, base model, raw data copied + merged + shuffled, idempotent."""
from __future__ import annotations

import json

from launcher.layout import LAYOUT_DIRS

from .conftest import files_under, script_config, write_project

STEPS = [{"id": "tokenize_cpt_0", "type": "tokenize_cpt", "enabled": False}, {"id": "script_0", "type": "script"}]
CONFIGS = {"tokenize_cpt_0.py": "RAW = ['raw/a.txt', 'raw/b.jsonl']\n", "script_0.py": script_config("script_0", "x")}


def fake_model(root):
    model = root / "models" / "fake-lm"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "sub" / "weights.bin").write_bytes(b"\0" * 1000)
    return model


def test_prepare_only_builds_the_datapool_once(proj, pl, tmp_path):
    pool = tmp_path / "pool"
    fake_model(proj)
    path = write_project(proj, STEPS, CONFIGS, {"DATAPOOL": f"file://{pool}", "BASE_MODEL": "models/fake-lm"})
    code, out, err = pl("-c", str(path), "--prepare-only")
    assert code == 0, err
    exp = pool / "experiments" / "exp"
    assert all((exp / d).is_dir() for d in LAYOUT_DIRS)
    assert (exp / "model/base/fake-lm/sub/weights.bin").read_bytes() == b"\0" * 1000
    # The disabled tokenize step is prepared all the same; nothing runs.
    assert (exp / "data/raw/cpt/tokenize_cpt_0/a.txt").read_text() == "one\ntwo\nthree\n"
    merged = (exp / "data/raw/cpt/tokenize_cpt_0.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["text"] for r in merged) == ["five", "four", "one", "three", "two"]
    report = json.loads((exp / "reports/prepare.json").read_text())
    assert report["base_model"]["kind"] == "local" and report["raw"]["tokenize_cpt_0"]["rows"] == 5
    assert "data/raw/cpt/tokenize_cpt_0.jsonl" in report["copied"]
    assert "model/base/fake-lm/sub/weights.bin" in report["copied"]
    assert not (exp / "reports/pipeline").exists() and files_under(tmp_path / "home") == []
    stamps = {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file() and p.name != "prepare.json"}

    code, _, err = pl("-c", str(path), "--prepare-only")
    assert code == 0 and "nothing new to copy" in err, err
    assert json.loads((exp / "reports/prepare.json").read_text())["copied"] == []
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # One raw source changed: it and the merged file are written again, nothing else.
    (proj / "raw" / "b.jsonl").write_text('{"text": "six"}\n')
    code, _, err = pl("-c", str(path), "--prepare-only")
    assert code == 0, err
    assert json.loads((exp / "reports/prepare.json").read_text())["copied"] == [
        "data/raw/cpt/tokenize_cpt_0/b.jsonl", "data/raw/cpt/tokenize_cpt_0.jsonl"]


def test_merge_and_shuffle_is_seeded(proj, pl, tmp_path):
    merged = {}
    for name, seed in (("p1", 0), ("p2", 0), ("p3", 5)):
        path = write_project(proj, STEPS, CONFIGS, {"DATAPOOL": f"file://{tmp_path / name}", "SEED": seed})
        assert pl("-c", str(path), "--prepare-only")[0] == 0
        merged[name] = (tmp_path / name / "experiments/exp/data/raw/cpt/tokenize_cpt_0.jsonl").read_text()
    assert merged["p1"] == merged["p2"]
    assert merged["p1"] != merged["p3"] and sorted(merged["p1"].splitlines()) == sorted(merged["p3"].splitlines())


def test_base_model_from_the_hugging_face_cache(proj, pl, tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    snap = cache / "hub" / "models--someorg--tiny-lm" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"model_type": "llama"}')
    (cache / "hub" / "models--someorg--tiny-lm" / "refs").mkdir()
    (cache / "hub" / "models--someorg--tiny-lm" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pool = tmp_path / "pool"
    path = write_project(proj, STEPS, CONFIGS, {"DATAPOOL": f"file://{pool}", "BASE_MODEL": "someorg/tiny-lm"})
    code, _, err = pl("-c", str(path), "--prepare-only")
    assert code == 0, err
    assert (pool / "experiments/exp/model/base/tiny-lm/config.json").read_text() == '{"model_type": "llama"}'


def test_base_model_missing_offline_is_one_line(proj, pl, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pool = tmp_path / "pool"
    path = write_project(proj, STEPS, CONFIGS, {"DATAPOOL": f"file://{pool}", "BASE_MODEL": "someorg/not-cached"})
    code, _, err = pl("-c", str(path), "--prepare-only")
    assert code == 2
    assert err == ("error: BASE_MODEL someorg/not-cached is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                   "set; download it once online (huggingface-cli download someorg/not-cached) or give a local "
                   "directory\n")
    assert not pool.exists()
