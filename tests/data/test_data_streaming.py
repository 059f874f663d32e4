"""Streaming: the reader runs at most a bounded window ahead of what has been written, whatever the corpus size."""
from __future__ import annotations

import numpy as np

from runners.data import pipeline
from runners.data.writers import CptPacker

from data_helpers import make_docs, write_jsonl


def test_reader_stays_a_bounded_window_ahead_of_the_writer(exp, tok_dir, monkeypatch):
    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in make_docs(3000, seed=11, hi=10)])
    pulled = [0]
    lag = []
    real_draw, real_add = pipeline.mx.draw, CptPacker.add

    def counting_draw(mix):
        for item in real_draw(mix):
            pulled[0] += 1
            yield item

    written_docs = [0]

    def watching_add(self, flat):
        written_docs[0] += int((flat == 0).sum())  # EOS id 0 in this tokenizer: one per document
        lag.append(pulled[0] - written_docs[0])
        return real_add(self, flat)

    monkeypatch.setattr(pipeline.mx, "draw", counting_draw)
    monkeypatch.setattr(CptPacker, "add", watching_add)
    cfg = pipeline.TokenizeConfig(mode="cpt", tokenizer=str(tok_dir), block_size=16, workers=2, batch_docs=8,
                                  shard_tokens=256)
    meta = pipeline.TokenizeJob(cfg, log=lambda *_: None).run()
    assert meta["docs"] == 3000 and written_docs[0] == 3000
    # 2 workers x 4 batches in flight x 8 docs, plus the batch being filled: never the whole corpus.
    assert max(lag) <= 2 * 4 * 8 + 8 + 8
    # ... and shards were written along the way, not at the end.
    assert len(meta["splits"]["train"]["shards"]) > 10


def test_packer_memory_holds_under_one_shard(tmp_path):
    p = CptPacker(tmp_path, block_size=4, shard_blocks=5, fmt="bin", vocab_size=100)
    rng = np.random.default_rng(0)
    total = []
    for _ in range(200):
        chunk = rng.integers(0, 100, size=rng.integers(0, 13)).astype(np.uint32)
        total.append(chunk)
        p.add(chunk)
        assert p.pending_len < 20  # never more than one shard's worth waiting
    info = p.close()
    got = np.concatenate([np.fromfile(tmp_path / s["file"], dtype=np.uint16) for s in info["shards"]])
    assert np.array_equal(got, np.concatenate(total))
