"""Trainer behaviour on the tiny smoke config: dry run, checkpoints, resume, best model, auto-exit, SIGTERM."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from hrm_helpers import REPO, SMOKE, metrics, run_dir, subprocess_env, train


def test_dry_run_prints_loss_and_writes_nothing(datapool, capsys):
    assert train("--dry_run") == 0
    out = capsys.readouterr().out
    assert out.startswith("dry run: loss=")
    loss = float(out.split("loss=")[1].split()[0])
    assert 0 < loss < 20
    assert not datapool.exists()


def test_run_writes_layout_metrics_and_sidecars(datapool):
    assert train("--run_name", "r", "--steps", "4", "--val_every", "2", "--log_steps", "2") == 0
    d = run_dir(datapool, "r")
    assert {p.name for p in d.iterdir()} >= {"final.pt", "config.yaml", "tokenizer.json", "meta.json", "step_2.pt"}
    rows = metrics(datapool, "r")
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4]
    assert all(k in train_rows[0] for k in ("lr", "grad_norm", "tokens_per_s"))
    assert [r["step"] for r in eval_rows] == [2, 4]
    assert 0.0 <= eval_rows[-1]["val_exact_match"] <= 1.0
    ck = torch.load(d / "final.pt", weights_only=False)
    assert ck["step"] == 4 and {"model", "optimizer", "scheduler", "scaler", "best_val_loss"} <= set(ck)
    assert ck["best_val_loss"] == min(r["val_loss"] for r in eval_rows)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["vocab_size"] == ck["config"]["model"]["vocab_size"] == 99


def test_checkpoint_rotation_keeps_exactly_limit(datapool):
    assert train("--run_name", "rot", "--steps", "10", "--save_every", "2", "--val_every", "100",
                 "--checkpoint_limit", "2") == 0
    names = sorted(p.name for p in run_dir(datapool, "rot").glob("*.pt"))
    assert names == ["final.pt", "step_6.pt", "step_8.pt"]
    assert sorted(p.name for p in run_dir(datapool, "rot").glob("step_*.yaml")) == ["step_6.yaml", "step_8.yaml"]


def _weights(path):
    return torch.load(path, weights_only=False)


def test_resume_continues_with_identical_state(datapool, capsys):
    common = ["--lr_scheduler", "constant", "--val_every", "100", "--save_every", "3"]
    assert train("--run_name", "straight", "--steps", "6", *common) == 0
    assert train("--run_name", "split", "--steps", "3", *common) == 0
    saved = _weights(run_dir(datapool, "split") / "final.pt")
    capsys.readouterr()

    # The optimizer a resumed trainer holds is the one that was saved, moment by moment.
    from runners.hrm_lm.train import Trainer, build_parser, resolve

    plan = resolve(build_parser().parse_args(["--config", str(SMOKE), "--run_name", "split", "--steps", "6",
                                              *common]))
    assert plan.resume_step == 3
    t = Trainer(plan)
    t.load_state(plan.resume_from)
    assert t.step == 3
    loaded = t.optimizer.state_dict()
    assert loaded["param_groups"] == saved["optimizer"]["param_groups"]
    for k, st in saved["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(loaded["state"][k][name], st[name], rtol=0, atol=0)

    assert train("--run_name", "split", "--steps", "6", *common) == 0
    assert "resumed from" in capsys.readouterr().out
    a = _weights(run_dir(datapool, "straight") / "final.pt")
    b = _weights(run_dir(datapool, "split") / "final.pt")
    assert a["step"] == b["step"] == 6
    # Same data order, optimizer moments and schedule: bit-identical weights to the uninterrupted run.
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    steps_logged = [r["step"] for r in metrics(datapool, "split") if "loss" in r]
    assert steps_logged == sorted(set(steps_logged)) and max(steps_logged) == 6


def test_auto_exit_when_done(datapool, capsys):
    assert train("--run_name", "done", "--steps", "3", "--val_every", "100") == 0
    final = run_dir(datapool, "done") / "final.pt"
    before = (final.stat().st_mtime_ns, len(metrics(datapool, "done")))
    capsys.readouterr()
    assert train("--run_name", "done", "--steps", "3", "--val_every", "100") == 0
    out = capsys.readouterr().out
    assert "already reached step 3" in out
    assert (final.stat().st_mtime_ns, len(metrics(datapool, "done"))) == before


def test_best_model_only_on_improvement(datapool):
    from runners.hrm_lm.train import Logger, Trainer, build_parser, resolve

    plan = resolve(build_parser().parse_args(["--config", str(SMOKE), "--run_name", "best", "--steps", "30",
                                              "--val_every", "1000", "--save_best_model"]))
    t = Trainer(plan)
    assert t.train() == 0
    log = Logger(plan.reports_dir / "metrics.jsonl")
    best = run_dir(datapool, "best") / "best-model" / "best.pt"
    # train() ended with an eval: that is the first best.
    first = _weights(best)
    assert first["step"] == 30 and {p.name for p in best.parent.iterdir()} == {"best.pt", "best.yaml",
                                                                                 "tokenizer.json", "meta.json"}

    trained = {k: v.clone() for k, v in t.model.state_dict().items()}
    with torch.no_grad():  # wreck the model: a worse val loss must leave best.pt alone
        t.model.embed.weight.mul_(-3.0)
    t.step = 31
    worse = t.evaluate(log)
    assert worse["val_loss"] > first["best_val_loss"]
    assert _weights(best)["step"] == 30

    t.model.load_state_dict(trained)
    t.model.train()
    from runners.hrm_lm.train import batch_stream
    from runners.hrm_lm.steps import train_step
    stream = batch_stream(plan, 30)
    for _ in range(20):
        t.optimizer.zero_grad()
        train_step(t.model, next(stream), t.cfg.model)
        t.optimizer.step()
    t.step = 51
    better = t.evaluate(log)
    assert better["val_loss"] < first["best_val_loss"]
    now = _weights(best)
    assert now["step"] == 51 and now["best_val_loss"] == better["val_loss"]


def test_sigterm_saves_and_exits_143(tmp_path):
    pool = tmp_path / "pool"
    env = subprocess_env(DATAPOOL_ROOT=str(pool))
    proc = subprocess.Popen([sys.executable, "runners/hrm_lm_run.py", "--config", str(SMOKE), "--run_name", "sig",
                             "--steps", "100000", "--log_steps", "1", "--val_every", "100000"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics_file = pool / "experiments" / "default" / "reports" / "sig" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (metrics_file.exists() and metrics_file.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "trainer never logged a step"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    ckpts = list((pool / "experiments" / "default" / "model" / "hrm_lm" / "sig").glob("step_*.pt"))
    assert len(ckpts) == 1
    step = torch.load(ckpts[0], weights_only=False)["step"]
    assert step >= 1 and ckpts[0].name == f"step_{step}.pt"
    assert "SIGTERM" in out


def test_act_deep_supervision_and_bf16_through_the_trainer(datapool, tmp_path):
    cfg = tmp_path / "act.yaml"
    cfg.write_text("model: {d_model: 32, n_heads: 4, h_layers: 1, l_layers: 1, dec_layers: 1, segments: 2,\n"
                   "        act: {enabled: true, max_segments: 3, exploration_prob: 1.0}}\n"
                   "train: {dataset: synthetic, steps: 3, batch_size: 8, val_every: 3, log_steps: 1, mixed_precision: bf16,\n"
                   "        eval_max_samples: 16}\n")
    from runners.hrm_lm.train import main

    assert main(["--config", str(cfg), "--run_name", "act"]) == 0
    rows = [r for r in metrics(datapool, "act") if "loss" in r]
    assert len(rows) == 3 and all(r["segments"] >= 2 for r in rows)  # exploration forces >= 2 segments
    assert all("q_loss" in r for r in rows)
    ck = torch.load(run_dir(datapool, "act") / "final.pt", weights_only=False)
    assert ck["config"]["model"]["act"]["enabled"] is True


def test_schedules_and_epochs(datapool):
    from runners.hrm_lm.train import lr_lambda

    cos, lin, const = (lr_lambda(k, 2, 12, 0.1) for k in ("cosine", "linear", "constant"))
    assert [round(cos(s), 3) for s in (0, 1, 2, 7, 12)] == [0.5, 1.0, 1.0, 0.55, 0.1]
    assert [round(lin(s), 3) for s in (0, 2, 7, 12)] == [0.5, 1.0, 0.55, 0.1]
    assert {const(s) for s in range(2, 20)} == {1.0}

    # 160 synthetic train samples / batch 16 = 10 steps per epoch
    assert train("--run_name", "ep", "--epochs", "1.5", "--val_every", "1000", "--log_steps", "5",
                 "--lr_scheduler", "linear", "--warmup_steps", "5") == 0
    rows = [r for r in metrics(datapool, "ep") if "loss" in r]
    assert [r["step"] for r in rows] == [5, 10, 15]
    assert rows[0]["lr"] == pytest.approx(3e-3) and rows[2]["lr"] < rows[1]["lr"] < rows[0]["lr"]
    assert torch.load(run_dir(datapool, "ep") / "final.pt", weights_only=False)["step"] == 15
