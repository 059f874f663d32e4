"""`launch pipeline status` fits 80 columns: job ids in the table, the logs' place relative to the pool below it."""
from __future__ import annotations

from launcher.pipeline.run import table

POOL = "/root/some/rather/deep/project/folder/with/a/long/name/datapool"


def _row(step: str, job: str | None, state: str = "succeeded") -> dict:
    log = f"{POOL}/experiments/demo/reports/jobs/{job}/log.txt" if job else "-"
    return {"step": step, "type": "x", "backend": "local", "state": state, "duration_s": 3725 if job else None,
            "cost_usd": 0.0 if job else None, "log": log, "job_id": job}


def test_status_table_fits_80_columns_with_paths_relative_to_the_pool():
    rows = [_row("tokenize_sft_0", "tokenize-sft-0-3f9a1c"), _row("train_sft_0", "train-sft-0-b20e44"),
            _row("train_rl_0", "train-rl-0-77aa01", "running"), _row("eval_0", None, "never ran")]
    text = table(rows)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert POOL not in text
    assert lines[0].split() == ["STEP", "BACKEND", "STATE", "DURATION", "COST", "JOB"]
    assert lines[1].split()[:3] == ["tokenize_sft_0", "local", "succeeded"]
    assert lines[1].split()[-1] == "tokenize-sft-0-3f9a1c"
    assert lines[-1] == "logs: launch logs JOB, or experiments/demo/reports/jobs/JOB/log.txt in the pool"


def test_status_table_without_any_job_has_no_logs_line():
    text = table([_row("eval_0", None, "never ran")])
    assert "logs:" not in text and max(len(line) for line in text.splitlines()) <= 80
