"""Tokenize raw corpora into training-ready shards in the datapool.

  python runners/tokenize_run.py --mode cpt --input data/raw/cpt --tokenizer model/base --block-size 2048
  python runners/tokenize_run.py --mode sft --mixture configs/data/posttrain/sft/smoke.yaml \
      --train-tokenizer --vocab-size 8000
  python runners/tokenize_run.py --config configs/tokenize/smoke.yaml

See docs/tokenize.md.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python runners/x.py` puts runners/, not the root

import argparse  # noqa: E402

from runners.common.errors import RunnerError  # noqa: E402
from runners.data.errors import DataError  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are user errors like any other: one `error:` line and exit 2, no usage dump."""

    def error(self, message):
        raise DataError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="runners/tokenize_run.py", description=__doc__.split("\n")[1])
    p.add_argument("--config", help="YAML with any of the options below (command-line flags win)")
    p.add_argument("--mode", choices=["cpt", "sft", "dpo", "rlaif"])
    p.add_argument("--input", help="file or dir of raw data (default: $EXPERIMENT_DIR/data/raw/<mode>)")
    p.add_argument("--input-format", help="jsonl|json|parquet|arrow|text (default: auto-detect)")
    p.add_argument("--mixture", help="mixture YAML (sources, ratios/weights, caps, seed, validation fraction)")
    p.add_argument("--name", help="output name: data/tokenized/<mode>/<name>")
    p.add_argument("--out", help="output dir (overrides --name)")
    p.add_argument("--tokenizer", help="local tokenizer/model dir (default: $EXPERIMENT_DIR/model/base)")
    p.add_argument("--train-tokenizer", action="store_true", default=None,
                   help="train a byte-level BPE tokenizer on the data and save it beside the output")
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--block-size", type=int, help="CPT block length (default 2048)")
    p.add_argument("--max-length", type=int, help="SFT max sequence length; longer rows are truncated")
    p.add_argument("--add-bos", action="store_true", default=None, help="CPT: start every document with BOS")
    p.add_argument("--format", help="output: cpt bin|arrow|parquet (default bin), sft arrow|parquet (default arrow)")
    p.add_argument("--text-field")
    p.add_argument("--messages-field")
    p.add_argument("--prompt-field")
    p.add_argument("--response-field")
    p.add_argument("--validation-fraction", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="encoding processes (default: all cores)")
    p.add_argument("--batch-docs", type=int, help="documents per encoding task (default 256)")
    p.add_argument("--force", action="store_true", default=None, help="rebuild even if up to date")
    return p


def config_from_args(argv: list[str] | None = None):
    from runners.data.pipeline import TokenizeConfig

    args = build_parser().parse_args(argv)
    data: dict = {}
    if args.config:
        from runners.common.config import read_yaml  # the runners' one YAML reader

        data = read_yaml(args.config)
    fields = dict(data.pop("fields", None) or {})
    for key in ("text_field", "messages_field", "prompt_field", "response_field"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    for key, val in vars(args).items():
        if key in ("config", "text_field", "messages_field", "prompt_field", "response_field") or val is None:
            continue
        data[key] = val
    data["fields"] = fields
    if "mode" not in data:
        raise DataError("--mode is required (cpt or sft), on the command line or in the config")
    return TokenizeConfig.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # parallelism comes from our worker processes
    from runners.data.pipeline import TokenizeJob

    try:
        cfg = config_from_args(argv)
        job = TokenizeJob(cfg)
        job.run()
    except RunnerError as e:  # DataError is one
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    import signal

    # SIGTERM (launch down, spot notice) unwinds like an exception, so the temp output is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
