"""Dataset mixtures: weighted/ratio'd sources, per-source caps, seeded draw, validation split, manifest.

Mixture YAML:
  name: cpt_mix                # output name (default: the file stem)
  seed: 0
  validation_fraction: 0.01
  total_samples: 100000        # optional: cap the mixture size
  tolerance: 0.001             # how far ratios may sum from 1
  sources:
    - name: wiki
      path: wiki/              # relative to data/raw/<mode> of the experiment, or absolute; a path starting
                               # with ./ is relative to the mixture YAML's own folder (shipped small files)
      ratio: 0.7               # or `weight:` (relative, normalised); all sources use the same one
      max_samples: 50000       # optional cap on what this source may contribute
      format: jsonl            # optional; auto-detected
      fields: {text_field: body}

The draw honours the ratios exactly (up to rounding): the mixture size N is the largest that every source
can fill (`available / ratio`), capped by `total_samples`; each source contributes round(ratio * N) records
chosen uniformly at random (selection sampling, one streaming pass, O(1) memory) and the sources are
interleaved at random. Same seed + same inputs = the same draw, record for record.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from runners.data.errors import DataError
from runners.data.fields import FieldMap
from runners.data.readers import FORMATS, count_records, detect_format, iter_raw, list_files

_SOURCE_KEYS = {"name", "path", "ratio", "weight", "max_samples", "format", "fields"}
_TOP_KEYS = {"name", "seed", "validation_fraction", "total_samples", "tolerance", "sources", "mode"}


@dataclass
class Source:
    name: str
    files: list[Path]
    fmt: str | None
    fields: FieldMap
    share: float  # normalised ratio in [0, 1]
    max_samples: int | None = None
    available: int = 0
    take: int = 0
    counts: dict = field(default_factory=lambda: {"train": 0, "validation": 0})

    def formats(self) -> list[str]:
        return [self.fmt or detect_format(f) for f in self.files]


@dataclass
class Mixture:
    name: str
    sources: list[Source]
    seed: int = 0
    validation_fraction: float = 0.0
    total_samples: int | None = None
    planned: bool = False
    spec: dict = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        return [f for s in self.sources for f in s.files]


def _seed_for(seed: int, *parts: str) -> int:
    h = hashlib.sha256(("\0".join([str(seed), *parts])).encode()).digest()
    return int.from_bytes(h[:8], "big")


def load_mixture(spec: dict, raw_dir: Path, default_name: str, base_dir: Path | None = None,
                 mode: str | None = None) -> Mixture:
    """Validate a mixture spec; every refusal names the source at fault. `base_dir`: the YAML's folder, which
    `./` paths are relative to; `mode`: the tokenize/prepare mode, which decides the field mapping keys."""
    if not isinstance(spec, dict):
        raise DataError("mixture must be a mapping with a `sources:` list")
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        raise DataError(f"mixture: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    srcs = spec.get("sources")
    if not isinstance(srcs, list) or not srcs:
        raise DataError("mixture: `sources:` must be a non-empty list")
    tol = float(spec.get("tolerance", 1e-3))
    vf = float(spec.get("validation_fraction", 0.0))
    if not 0.0 <= vf < 1.0:
        raise DataError(f"mixture: validation_fraction {vf} must be in [0, 1)")
    total = spec.get("total_samples")
    if total is not None and (not isinstance(total, int) or total <= 0):
        raise DataError(f"mixture: total_samples {total!r} must be a positive integer")

    names: set[str] = set()
    use_ratio = any("ratio" in s for s in srcs if isinstance(s, dict))
    parsed = []
    for i, s in enumerate(srcs):
        if not isinstance(s, dict):
            raise DataError(f"mixture: source #{i} must be a mapping with name/path/ratio")
        name = str(s.get("name") or Path(str(s.get("path", f"source{i}"))).stem)
        where = f"mixture source {name!r}"
        bad = set(s) - _SOURCE_KEYS
        if bad:
            raise DataError(f"{where}: unknown key(s) {sorted(bad)}; allowed: {sorted(_SOURCE_KEYS)}")
        if name in names:
            raise DataError(f"{where}: duplicate source name; give each source its own `name:`")
        names.add(name)
        if "path" not in s:
            raise DataError(f"{where}: missing `path:` (file or directory under {raw_dir})")
        if ("ratio" in s) and ("weight" in s):
            raise DataError(f"{where}: set either ratio or weight, not both")
        if use_ratio and "ratio" not in s:
            raise DataError(f"{where}: other sources use `ratio:`; give this one a ratio too (or use weights everywhere)")
        key = "ratio" if use_ratio else "weight"
        try:
            val = float(s.get(key, 1.0))
        except (TypeError, ValueError):
            raise DataError(f"{where}: {key} {s.get(key)!r} is not a number") from None
        if val < 0 or (use_ratio and val > 1):
            raise DataError(f"{where}: {key} {val} out of range ({'0..1' if use_ratio else '>= 0'})")
        cap = s.get("max_samples")
        if cap is not None and (not isinstance(cap, int) or cap <= 0):
            raise DataError(f"{where}: max_samples {cap!r} must be a positive integer")
        fmt = s.get("format")
        if fmt not in (None, "auto", *FORMATS):
            raise DataError(f"{where}: format {fmt!r} unknown; use one of {', '.join(FORMATS)}")
        path = Path(str(s["path"])).expanduser()
        beside = str(s["path"]).startswith("./") and base_dir is not None
        if not path.is_absolute():
            path = (base_dir / path) if beside else raw_dir / path
        if not path.exists():
            under = f"./ paths are under {base_dir}" if beside else f"relative paths are under {raw_dir}"
            raise DataError(f"{where}: {path} does not exist; fix `path:` ({under})")
        try:
            files = list_files(path)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        parsed.append((name, files, None if fmt in (None, "auto") else fmt,
                       FieldMap.from_config(s.get("fields"), source=name, mode=mode), val, cap))

    total_w = sum(p[4] for p in parsed)
    if use_ratio and abs(total_w - 1.0) > tol:
        listing = ", ".join(f"{p[0]}={p[4]}" for p in parsed)
        raise DataError(f"mixture: ratios sum to {total_w:.4f}, not 1 (tolerance {tol}): {listing}; fix the ratios")
    if total_w <= 0:
        raise DataError("mixture: every source has weight 0; give at least one source a positive weight")
    sources = [Source(n, f, fmt, fm, w / total_w, cap) for n, f, fmt, fm, w, cap in parsed]
    return Mixture(
        name=str(spec.get("name") or default_name), sources=sources, seed=int(spec.get("seed", 0)),
        validation_fraction=vf, total_samples=total, spec=spec,
    )


def single_source(path: Path, fields: FieldMap, fmt: str | None, validation_fraction: float, seed: int,
                  name: str) -> Mixture:
    files = list_files(path)
    return Mixture(name=name, sources=[Source(fields.source, files, fmt, fields, 1.0)], seed=seed,
                   validation_fraction=validation_fraction)


def plan(mix: Mixture) -> None:
    """Count what each source holds and decide how many records to draw from each."""
    needs_counts = len(mix.sources) > 1 or mix.validation_fraction > 0 or mix.total_samples or any(
        s.max_samples for s in mix.sources)
    if not needs_counts:
        mix.planned = False  # one source, take everything: stream without a counting pass
        return
    for s in mix.sources:
        s.available = sum(count_records(f, s.fmt) for f in s.files)
        if s.share > 0 and s.available == 0:
            raise DataError(f"mixture source {s.name!r}: has weight {s.share:.3f} but holds no records; "
                            "drop it or set its weight to 0")
    live = [s for s in mix.sources if s.share > 0]
    n_total = min(min(s.available, s.max_samples or s.available) / s.share for s in live)
    if mix.total_samples:
        n_total = min(n_total, mix.total_samples)
    for s in mix.sources:
        s.take = min(int(round(s.share * n_total)), s.available, s.max_samples or s.available) if s.share > 0 else 0
    mix.planned = True


def _select(n: int, k: int, rng: random.Random) -> Iterator[bool]:
    """Knuth's selection sampling: exactly k of n, uniformly, in one pass."""
    chosen = 0
    for t in range(n):
        if k - chosen > 0 and (n - t) * rng.random() < (k - chosen):
            chosen += 1
            yield True
        else:
            yield False


def _source_stream(s: Source, seed: int, planned: bool) -> Iterator:
    keep = None
    if planned:
        if s.take == 0:
            return
        keep = _select(s.available, s.take, random.Random(_seed_for(seed, "source", s.name)))
    for f in s.files:
        for raw in iter_raw(f, s.fmt):
            if keep is None or next(keep, False):
                yield raw


def draw(mix: Mixture) -> Iterator[tuple[int, object, str]]:
    """Yield (source index, raw record, split) in the mixture's deterministic order."""
    if not mix.planned:
        s = mix.sources[0]
        for raw in _source_stream(s, mix.seed, False):
            s.counts["train"] += 1
            yield 0, raw, "train"
        return
    streams = [_source_stream(s, mix.seed, True) for s in mix.sources]
    remaining = [s.take for s in mix.sources]
    total = sum(remaining)
    order_rng = random.Random(_seed_for(mix.seed, "interleave"))
    val_keep = _select(total, int(round(total * mix.validation_fraction)),
                       random.Random(_seed_for(mix.seed, "validation")))
    left = total
    while left:
        # Pick the next source with probability proportional to what it still has to give.
        r = order_rng.random() * left
        i = 0
        while r >= remaining[i]:
            r -= remaining[i]
            i += 1
        remaining[i] -= 1
        left -= 1
        raw = next(streams[i])
        split = "validation" if next(val_keep) else "train"
        mix.sources[i].counts[split] += 1
        yield i, raw, split


def manifest(mix: Mixture) -> dict:
    drawn = sum(s.counts["train"] + s.counts["validation"] for s in mix.sources) or 1
    return {
        "name": mix.name,
        "seed": mix.seed,
        "validation_fraction": mix.validation_fraction,
        "total_samples": mix.total_samples,
        "sources": [
            {
                "name": s.name,
                "files": [str(f) for f in s.files],
                "target_ratio": round(s.share, 6),
                "available": s.available if mix.planned else None,
                "max_samples": s.max_samples,
                "drawn": s.counts["train"] + s.counts["validation"],
                "train": s.counts["train"],
                "validation": s.counts["validation"],
                "actual_ratio": round((s.counts["train"] + s.counts["validation"]) / drawn, 6),
            }
            for s in mix.sources
        ],
    }
