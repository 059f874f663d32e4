"""`launch gpus [--backend NAME]`: the GPU catalog (launcher/gpus.py) as a table, with what each backend calls a
type (`Backend.gpu_offers`: its own table, no network); with --backend, that backend's rows per GPU count: the
machine and its list price. Fits 80 columns."""
from __future__ import annotations

import click

from .flags import entries


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    """Plain columns, two spaces apart; columns with nothing in any row are dropped."""
    keep = [i for i in range(len(header)) if any(r[i] for r in rows)]
    header, rows = [header[i] for i in keep], [[r[i] for i in keep] for r in rows]
    right = {keep.index(i) for i in right if i in keep}
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), *(line(r) for r in rows)]


@click.command()
@click.option("--backend", "-b", default=None, metavar="NAME",
              shell_complete=lambda ctx, param, incomplete: [n for n in entries() if n.startswith(incomplete)],
              help="that backend's table: each GPU count, its machine and list price")
def gpus(backend):
    """The GPUs you can ask for (--gpu TYPE[:N]), their memory and what each backend calls them."""
    from ..backends import check_backend, get_backend
    from ..gpus import CATALOG

    if backend:
        check_backend(backend)
        names = [backend]
    else:
        names = list(entries())
    offers = {name: get_backend(name).gpu_offers() for name in names}
    with_table = [n for n in names if offers[n]]
    without = [n for n in names if not offers[n]]
    lines: list[str] = []
    if backend and offers[backend]:
        rows = []
        for o in offers[backend]:
            gpu = CATALOG[o.gpu]
            rows.append([o.gpu, f"{gpu.memory_gb}GB", "any" if o.count is None else str(o.count),
                         o.machine or o.name, _usd(o.usd_per_hour) if o.usd_per_hour is not None else ""])
        head = ["GPU", "MEMORY", "COUNT", "MACHINE" if any(o.machine for o in offers[backend]) else "NAME", "$/HOUR"]
        lines += _table(head, rows, right={4})
    elif with_table:
        rows = []
        for gpu in CATALOG.values():
            row = [gpu.name, f"{gpu.memory_gb}GB"]
            cheapest = None
            for name in with_table:
                mine = sorted((o for o in offers[name] if o.gpu == gpu.name), key=lambda o: o.count or 0)
                row.append((mine[0].machine or mine[0].name) if mine else "-")
                for o in mine:
                    if o.usd_per_hour is not None and o.count:
                        per = o.usd_per_hour / o.count
                        if cheapest is None or per < cheapest[0]:
                            cheapest = (per, name)
            row.append(f"{_usd(cheapest[0])} {cheapest[1]}" if cheapest else "")
            rows.append(row)
        lines += _table(["GPU", "MEMORY", *with_table, "FROM $/GPU-H"], rows)
    dates = sorted({o.price_date for n in with_table for o in offers[n] if o.price_date})
    if dates:
        lines.append(f"prices: list, on-demand, as of {', '.join(dates)}; the plan (--dry-run) prices a job")
    if not backend and with_table:
        lines.append("per count, machine and price: launch gpus --backend " + "|".join(with_table))
    if without:
        lines.append(f"{', '.join(without)}: whatever GPUs the machine has (--gpu not checked)")
    for line in lines:
        click.echo(line)
