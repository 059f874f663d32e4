"""`launch check --backend modal`: the modal client, a token (MODAL_TOKEN_ID/SECRET or ~/.modal.toml), and Modal
answering a hello with it (bounded by netpolicy.MODAL_CALL_S)."""
from __future__ import annotations

import os

from ..access import attempt, library
from ..base import Check


def checks(options=None) -> list[Check]:
    out = [library("modal", "modal")]
    if not out[0].ok:
        return out
    from modal.config import config

    from .app import TOKEN_HELP, check_token

    if not (config.get("token_id") and config.get("token_secret")):
        return [*out, Check("token", False, f"no Modal token: {TOKEN_HELP}")]
    source = "MODAL_TOKEN_ID" if os.environ.get("MODAL_TOKEN_ID") else "~/.modal.toml"
    out.append(Check("token", True, f"found ({source})"))

    def hello() -> str:
        check_token()
        return f"Modal answered at {config.get('server_url')}"

    out.append(attempt("workspace", hello))
    return out


def gpu_offers(options=None) -> list:
    """request.py's table: Modal's gpu string per count (up to its per-container maximum), the GPUs' list price."""
    from ..base import GpuOffer
    from .request import GPUS, MAX_GPUS, PRICE_TABLE_DATE

    return [GpuOffer(gpu, g.name if n == 1 else f"{g.name}:{n}", n, None, round(g.usd_per_gpu_hour * n, 2),
                     PRICE_TABLE_DATE)
            for gpu, g in GPUS.items() for n in (1, 2, 4, 8) if n <= MAX_GPUS.get(gpu, 8)]
