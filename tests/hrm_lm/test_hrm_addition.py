"""Learning, end to end: a tiny HRM-LM learns single-digit addition well enough to answer held-out problems.

Held-out problems (data.synthetic.holdout: mirror): `a + b` is never trained in any phrasing; `b + a` is. The model
must learn that the order does not matter. Fixed seed, deterministic on CPU with one thread.
"""
import pytest

from hrm_helpers import SMOKE, metrics, train

STEPS = 400


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import os

    pool = tmp_path_factory.mktemp("addpool")
    old = {k: os.environ.get(k) for k in ("DATAPOOL_ROOT", "CHECKPOINT_DIR", "EXPERIMENT", "EXPERIMENT_DIR")}
    os.environ["DATAPOOL_ROOT"] = str(pool)
    for k in ("CHECKPOINT_DIR", "EXPERIMENT", "EXPERIMENT_DIR"):
        os.environ.pop(k, None)
    try:
        rc = train("--run_name", "add", "--seed", "1", "--steps", str(STEPS), "--batch_size", "64",
                   "--learning_rate", "3e-3", "--weight_decay", "1.0", "--warmup_steps", "20",
                   "--val_every", str(STEPS), "--log_steps", "100", "--save_best_model")
        assert rc == 0
        yield pool
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_held_out_problems_are_unseen():
    from runners.hrm_lm.config import load_config
    from runners.hrm_lm.data import synthetic_problems

    cfg = load_config(SMOKE).data.synthetic
    train_p, val_p = synthetic_problems(cfg)
    assert len(val_p) == 20 and not set(train_p) & set(val_p)
    assert all((b, op, a) in set(train_p) for a, op, b in val_p)


def test_reaches_90_percent_exact_match_on_held_out(trained):
    evals = [r for r in metrics(trained, "add") if "val_exact_match" in r]
    assert evals[-1]["step"] == STEPS
    assert evals[-1]["val_exact_match"] >= 0.9, evals
    first_train = [r for r in metrics(trained, "add") if "loss" in r][0]
    assert first_train["loss"] > 10 * evals[-1]["val_loss"]  # it learned, not just started low


def test_generate_cli_answers_held_out_prompts(trained, monkeypatch, capsys):
    from runners.hrm_lm.config import load_config
    from runners.hrm_lm.data import render, synthetic_problems
    from runners.hrm_lm.generate import main

    monkeypatch.setenv("DATAPOOL_ROOT", str(trained))
    _, val_p = synthetic_problems(load_config(SMOKE).data.synthetic)
    prompts = [render(a, op, b, "question") for a, op, b in val_p]
    argv = ["--run_name", "add", "--max_new_tokens", "4"]
    for p in prompts:
        argv += ["--prompt", p]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "best-model/best.pt" in captured.err
    answers = dict(line.split("\t") for line in captured.out.strip().splitlines())
    right = sum(answers[render(a, op, b, "question")] == str(a + b) for a, op, b in val_p)
    assert right >= 0.9 * len(val_p)

    # sampling: temperature + top-k, reproducible with a seed; top_k=1 equals greedy
    assert main(["--run_name", "add", "--prompt", prompts[0], "--temperature", "5", "--top_k", "1"]) == 0
    assert capsys.readouterr().out == f"{prompts[0]}\t{answers[prompts[0]]}\n"
    outs = set()
    for seed in range(4):
        assert main(["--run_name", "add", "--prompt", prompts[0], "--temperature", "50", "--seed", str(seed),
                     "--checkpoint", "latest"]) == 0
        outs.add(capsys.readouterr().out)
    assert len(outs) > 1  # a very hot sampler does not always say the same thing
