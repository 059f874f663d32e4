"""Run a pipeline: check every step, prepare once, then each enabled step as a job through launcher.api.

    load + check every step's job (nothing runs when one is wrong) -> [--dry-run: print each plan, stop]
    -> prepare -> [--prepare-only: stop] -> for each step: up to date? skip : write its env file, launch it
    (foreground), record the outcome -> a failed step stops the pipeline -> the summary table
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .load import Pipeline, load_pipeline
from .spec import pick
from .stepenv import StepJob, build_step


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


@dataclass
class Checked:
    pipe: Pipeline
    steps: list[tuple[StepJob, Any]]  # (step job, launcher.job.Job), enabled steps in order


def check(path: str, *, project: str | Path = ".", datapool: str | None = None,
          profile: str | None = None) -> Checked:
    """Everything a user can get wrong in the files, before anything is written: the rules, each step's job, its
    script, what its backend can do. (Secrets are checked only when steps are about to run: a dry run and
    `status` work without them.)"""
    from ..backends import get_backend
    from ..job import build_job
    from ..planner import capability_notes
    from ..profile import load_default_profile, load_profile, merge_sections

    pipe = load_pipeline(path, project)
    prof_path = profile or pipe.profile  # relative to the project root, like every path in a pipeline
    # The default profile under it, as for `launch`; its backend sections stay: steps may run on several backends,
    # and each job sets aside the sections it does not use.
    prof = merge_sections(load_default_profile(), load_profile(pipe.project / prof_path) if prof_path else {})
    pipe.datapool = datapool or pipe.datapool or prof.get("datapool")
    pipe.endpoint_url = pipe.endpoint_url or prof.get("endpoint_url")
    enabled = pipe.enabled
    if not enabled:
        raise UserError(f"{path}: every step is disabled (enabled: False); enable one to run the pipeline")
    out = []
    for i, step in enumerate(enabled):
        sj = build_step(pipe, step, enabled[:i], prof)
        job = build_job(f"step {step.id}", **sj.fields)
        try:
            job.check_script()
            backend = get_backend(job.backend)
            capability_notes(backend, job)
            backend.check(job)
        except UserError as exc:  # the launcher's own words (flags), said of this step
            raise UserError(f"step {step.id}: {exc}") from None
        out.append((sj, job))
    return Checked(pipe, out)


def _check_secrets(steps) -> None:
    import os

    for sj, job in steps:
        missing = [s for s in job.secrets if s not in os.environ]
        if missing:
            raise UserError(f"step {sj.step.id}: secret {missing[0]} is not set in your environment; export "
                            f"{missing[0]}=... before the pipeline starts (the value never goes into a plan)")


def _selection(checked: Checked, start: str | None, only: str | None, force: tuple[str, ...]):
    """(steps to consider, steps that run even when up to date)."""
    steps = checked.pipe.steps
    if start and only:
        raise UserError("give --from STEP or --only STEP, not both")
    ids = [sj.step.id for sj, _ in checked.steps]
    first, one = pick(steps, start, "--from"), pick(steps, only, "--only")
    forced = {pick(steps, f, "--force").id for f in force}
    if one is not None:
        return {one.id}, forced | {one.id}
    if first is not None:
        chosen = set(ids[ids.index(first.id):])
        return chosen, forced | chosen
    return set(ids), forced


def _priced(checked: Checked, selected: set[str]) -> bool:
    """A selected step's plan shows a price above 0 (offline, as --dry-run)."""
    from .. import api
    from ..summary import priced

    return any(priced(api.plan(job)) for sj, job in checked.steps if sj.step.id in selected)


def dry_run(checked: Checked, selected: set[str], output: str = "yaml") -> str:
    """Every selected step's plan (backend request, deadline, price) and the worst-case total, offline. `output`:
    "summary" (one row per step, launcher/summary.py), "yaml" (one document per step) or "json" (a list)."""
    import yaml

    from .. import api

    docs, total, unknown, rows = [], 0.0, [], []
    for sj, job in checked.steps:
        if sj.step.id not in selected:
            continue
        plan = api.plan(job)
        d = plan.to_dict()
        price = dict(d.get("price") or {})
        worst = price.get("worst_case_usd")
        hourly = price.get("usd_per_hour")
        if worst is None and hourly is not None:  # free (local) or priced by the hour and bounded by max runtime
            worst = 0.0 if hourly == 0 else round(hourly * plan.job.billed_seconds / 3600, 2) \
                if plan.job.max_runtime else None
        if worst is None:
            unknown.append(sj.step.id)
        else:
            total += worst
        notes = [*(d.get("notes") or []), *([sj.note] if sj.note else [])]  # SCRIPT replacing the type's runner
        docs.append({"step": sj.step.id, "type": sj.step.type, "backend": plan.backend, "script": job.script,
                     **({"replaces": sj.replaces} if sj.replaces else {}),
                     "args": job.args, "env_file": sj.env_path, "outputs": sj.outputs, "deadline": d["deadline"],
                     "price": price, "worst_case_usd": worst, "request": d["request"],
                     **({"warnings": d["warnings"]} if d.get("warnings") else {}),
                     **({"notes": notes} if notes else {})})
        if output == "summary":
            from ..backends import get_backend
            from ..units import format_duration

            machine = dict(get_backend(plan.backend).where(plan)).get("machine", "-")
            rows.append({"step": sj.step.id, "backend": plan.backend, "machine": machine, "worst": worst,
                         "runtime": format_duration(job.max_runtime) if job.max_runtime else "-",
                         "warnings": plan.warnings})
    if output == "summary":
        from ..summary import _wrapped, pipeline_lines

        lines = pipeline_lines(rows, round(total, 2), unknown, color=sys.stdout.isatty())
        # A step whose SCRIPT replaced its type's runner is said so, above the last line (the --full hint).
        said = [x for sj, _ in checked.steps if sj.step.id in selected and sj.note
                for x in _wrapped(f"note: {sj.step.id}: ", sj.note)]
        return "\n".join(lines[:-1] + said + lines[-1:]) + "\n"
    if output == "json":
        import json

        return json.dumps({"steps": docs, "worst_case_total_usd": round(total, 2), "unpriced": unknown},
                          indent=2) + "\n"
    text = yaml.safe_dump_all(docs, sort_keys=False, width=120)
    text += f"---\nworst_case_total_usd: {round(total, 2)}\n"
    if unknown:
        text += f"# no price known for {', '.join(unknown)} (not counted: a box you own, or no max runtime)\n"
    return text


def _row(step, rec: dict | None, state: str | None = None) -> dict:
    rec = rec or {}
    return {"step": step.id, "type": step.type, "backend": rec.get("backend", step.placement.get("backend", "-")),
            "state": state or rec.get("state", "-"), "duration_s": rec.get("duration_s"),
            "cost_usd": rec.get("cost_usd"), "log": rec.get("log", "-"), "job_id": rec.get("job_id")}


def table(rows: list[dict]) -> str:
    from ..units import format_duration

    # 80 columns: the job id, not its log's path (an absolute path or URL alone is wider); the last line says
    # where the logs are, relative to the pool.
    cols = ("STEP", "BACKEND", "STATE", "DURATION", "COST", "JOB")
    spent = 0.0
    lines = []
    where = None
    for r in rows:
        spent += r["cost_usd"] or 0.0
        cost = "-" if r["cost_usd"] is None else f"${r['cost_usd']:.2f}"
        dur = "-" if r["duration_s"] is None else format_duration(r["duration_s"])
        lines.append((r["step"], r["backend"] or "-", r["state"], dur, cost, r.get("job_id") or "-"))
        log = r.get("log") or ""
        if where is None and r.get("job_id") and "experiments/" in log:
            where = log[log.rindex("experiments/"):].replace(r["job_id"], "JOB")
    widths = [max(len(c), *(len(str(line[i])) for line in lines)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    out = [fmt.format(*cols)] + [fmt.format(*line) for line in lines]
    out.append(f"cost so far: ${spent:.2f}")
    if where:
        out.append(f"logs: launch logs JOB, or {where} in the pool")
    return "\n".join(out) + "\n"


def _log_path(bind, job_id: str) -> str:
    rel = f"experiments/{bind.experiment}/reports/jobs/{job_id}/log.txt"
    if bind.store_url and not bind.store_url.startswith("file://"):
        return f"{bind.store_url.rstrip('/')}/{rel}"
    return str(bind.root / rel)


def run(path: str, *, project: str | Path = ".", datapool: str | None = None, profile: str | None = None,
        prepare_only: bool = False, dry: bool = False, start: str | None = None, only: str | None = None,
        force: tuple[str, ...] = (), out=None, output: str = "yaml", confirm=None) -> int:
    """`confirm(summary)`: asked when a selected step is priced, before anything is prepared or run (the CLI's
    [Y/n]); False raises NotLaunched. None (the default, and the SDK's): never asked."""
    out = out or (lambda s: sys.stdout.write(s))
    checked = check(path, project=project, datapool=datapool, profile=profile)
    selected, forced = _selection(checked, start, only, force)
    if dry:
        out(dry_run(checked, selected, output))
        return 0
    _check_secrets([s for s in checked.steps if s[0].step.id in selected])
    if confirm is not None and _priced(checked, selected) and not confirm(dry_run(checked, selected, "summary")):
        from ..errors import NotLaunched

        raise NotLaunched("pipeline not run: nothing was prepared or started")
    from .prepare import binding, prepare
    from .state import PipelineStore, inputs_of, why_not_done

    pipe = checked.pipe
    bind = binding(pipe)
    prepared = prepare(pipe, bind, log=_log)
    if prepare_only:
        return 0
    store = PipelineStore(bind)
    try:
        records = {s.id: _refreshed(store, s.id, store.record(s.id)) for s in pipe.steps}
        rows: list[dict] = []
        done_ids: list[str] = []
        code, failed = 0, None
        for sj, job in checked.steps:
            step = sj.step
            before = list(done_ids)
            done_ids.append(step.id)
            if step.id not in selected:
                rows.append(_row(step, records.get(step.id), "not selected"))
                continue
            inputs = inputs_of(prepared.fingerprint, before, records)
            rec = records.get(step.id)
            if step.id in forced:
                why = "forced"
            else:
                missing = [o for o in sj.outputs if not store.has(o)] if rec and rec.get("state") == "succeeded" else []
                why = why_not_done(rec, sj.config_hash, inputs, missing)
            if why is None:
                _log(f"[pipeline] {step.id}: up to date (job {rec.get('job_id')}), skipped")
                rows.append(_row(step, rec, "skipped (up to date)"))
                continue
            _log(f"[pipeline] {step.id}: {why}; running {job.script} on {job.backend}"
                 + (f" (its SCRIPT, in place of {sj.replaces})" if sj.replaces else ""))
            rec, code = _run_step(sj, job, bind, store, inputs)
            records[step.id] = rec
            rows.append(_row(step, rec))
            if rec["state"] != "succeeded":
                failed = rec
                break
        for step in pipe.steps:
            if not step.enabled:
                rows.append(_row(step, records.get(step.id), "disabled"))
            elif step.id not in {r["step"] for r in rows}:
                rows.append(_row(step, records.get(step.id), "not run"))
        order = [s.id for s in pipe.steps]
        rows.sort(key=lambda r: order.index(r["step"]))
        sys.stdout.flush()
        out(table(rows))
        if failed is not None:
            _log(f"[pipeline] {failed['step']} {failed['state']}: the pipeline stopped there; fix it and re-run "
                 f"(finished steps are skipped). Its log: launch logs {failed.get('job_id')}")
        return code
    finally:
        store.close()


def _refreshed(store, step_id: str, rec: dict | None) -> dict | None:
    """A step that ended push_failed is done once `launch sync up --from-job` has pushed its outputs: its job's
    state (this machine's registry) says so, and the step's record follows."""
    if not rec or rec.get("state") != "push_failed" or not rec.get("job_id"):
        return rec
    from .. import api

    try:
        state, code = api.status(rec["job_id"])
    except Exception:  # noqa: BLE001 - a job this machine does not know: the record stands
        return rec
    if state != rec["state"]:
        rec.update(state=str(state), exit_code=code)
        store.save(step_id, rec)
    return rec


def _run_step(sj: StepJob, job, bind, store, inputs: dict) -> tuple[dict, int]:
    from .. import api

    store.write(sj.env_path, sj.env_file.encode())
    rec: dict[str, Any] = {"step": sj.step.id, "type": sj.step.type, "backend": job.backend, "state": "submitting",
                           "config_hash": sj.config_hash, "inputs": inputs, "outputs": sj.outputs,
                           "started": time.time(), "script": job.script, "args": job.args}

    def started(run) -> None:
        for note in run.plan.notes:
            _log(f"[launcher] note: {note}")
        rec.update(state="running", job_id=run.job_id, log=_log_path(bind, run.job_id),
                   usd_per_hour=(run.plan.price or {}).get("usd_per_hour"))
        store.save(sj.step.id, rec)
        _log(f"[pipeline] {sj.step.id}: job {run.job_id} on {job.backend}; follow from another terminal: "
             f"launch logs {run.job_id} -f")

    try:
        run = api.launch(job, on_start=started)
        state, code = run.state, run.exit_code
    except KeyboardInterrupt:
        state, code = "cancelled", 130
    except UserError as exc:
        rec.update(state="failed", ended=time.time(), error=str(exc))
        rec["duration_s"] = round(rec["ended"] - rec["started"], 1)
        store.save(sj.step.id, rec)
        raise
    rec["ended"] = time.time()
    rec["duration_s"] = round(rec["ended"] - rec["started"], 1)
    rec["state"], rec["exit_code"] = state, code
    hourly = rec.get("usd_per_hour")
    rec["cost_usd"] = None if hourly is None else round(hourly * rec["duration_s"] / 3600, 4)
    store.save(sj.step.id, rec)
    if state != "succeeded":
        return rec, code or 1
    return rec, 0


def status(path: str, *, project: str | Path = ".", datapool: str | None = None,
           profile: str | None = None) -> str:
    """The summary table from the store's records, at any time (running steps refreshed from their jobs)."""
    return table(status_rows(path, project=project, datapool=datapool, profile=profile))


def status_rows(path: str, *, project: str | Path = ".", datapool: str | None = None,
                profile: str | None = None) -> list[dict]:
    """Each step's row (step, type, backend, state, duration_s, cost_usd, log, job_id): what `status` prints and
    `launch pipeline status --json` gives."""
    from .. import api
    from .prepare import binding
    from .state import PipelineStore

    checked = check(path, project=project, datapool=datapool, profile=profile)
    pipe = checked.pipe
    bind = binding(pipe)
    store = PipelineStore(bind)
    try:
        rows = []
        for step in pipe.steps:
            rec = store.record(step.id)
            if not step.enabled:
                rows.append(_row(step, rec, "disabled"))
                continue
            if rec and rec.get("state") in ("submitting", "running", "push_failed") and rec.get("job_id"):
                try:
                    rec["state"] = api.status(rec["job_id"])[0]
                except Exception:  # noqa: BLE001 - a job this machine does not know: the record stands
                    pass
            rows.append(_row(step, rec, None if rec else "never ran"))
        return rows
    finally:
        store.close()

