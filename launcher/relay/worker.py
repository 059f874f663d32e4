"""The worker's side of a relay run, inside the agent on the node.

    acquire (waiting while another worker holds the run) -> CHECKPOINT_DIR = model/relay/<run>/epoch-<E>/, seeded
    with the checkpoint the run's pointer names -> the script runs -> renew every TTL/4; after each push of a
    complete new checkpoint, commit it -> at the end: commit the last one, then `finish` (exit 0) or `release`.

Timing, from the worker's side (the commander's TTL counts from when it answered, which is after we asked):

    dead_by = last acknowledged renewal (the time we *sent* it) + TTL - margin      margin = max(0.5 s, TTL/10)
    stop_at = dead_by - grace                                                      SIGTERM; SIGKILL at dead_by

so a worker cut off from the commander has stopped its script before the commander can give the run to another
worker. A commit refused for a stale epoch means a successor holds the run: the script is stopped at once and
nothing more is published. Checkpoints are complete when their trainer_state.json (written last) parses.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

from .client import RelayAuthError, RelayClient, RelayError, RelayRefused, RelayUnreachable
from .config import RelayBinding, renew_every, stop_margin

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(folder: Path, depth: int = 3) -> list[tuple[int, Path]]:
    """(step, path) of every complete `checkpoint-N` folder under `folder` (at most `depth` levels down), oldest
    first. Complete: its trainer_state.json, which trainers write last, is there and parses."""
    found: list[tuple[int, Path]] = []

    def walk(d: Path, left: int) -> None:
        try:
            children = [c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
        except OSError:
            return
        for child in children:
            m = _CKPT.match(child.name)
            if m:
                try:
                    json.loads((child / "trainer_state.json").read_text())
                except (OSError, ValueError):
                    continue
                found.append((int(m.group(1)), child))
            elif left > 1:
                walk(child, left - 1)

    walk(Path(folder), depth)
    return sorted(found)


def _request_timeout(ttl: float) -> float:
    """A commander request may take a sixth of the lease (1 to 10 s): several tries fit before the stop time."""
    return max(1.0, min(10.0, ttl / 6))


def epoch_dir(exp_dir: Path, run_id: str, epoch: int) -> Path:
    return Path(exp_dir) / "model" / "relay" / run_id / f"epoch-{epoch}"


class RelaySession:
    """One lease held by this agent. `stop(reason)` is the agent's: SIGTERM the script, SIGKILL after its grace."""

    def __init__(self, binding: RelayBinding, worker: str, exp_dir: Path, grace: float, *, say=None,
                 client: RelayClient | None = None):
        self.binding = binding
        self.run_id = binding.run_id
        self.worker = worker
        self.exp_dir = Path(exp_dir)
        self.grace = grace
        self.ttl = binding.ttl
        self.say = say or (lambda msg: sys.stderr.write(f"[launcher] relay: {msg}\n"))
        if client is None:
            secret = os.environ.get(binding.secret_env, "")
            client = RelayClient(binding.url, secret, timeout=_request_timeout(binding.ttl))
        self.client = client
        self.epoch: int | None = None
        self.pointer: dict | None = None
        self.last_ack = 0.0
        self.lost: str | None = None  # why this worker no longer holds the run
        self.refused = False  # the commander said so (a stale epoch): nothing more is sent
        self.committed_step: int | None = None
        self.committed: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._commit_lock = threading.Lock()
        self._uploads: list[threading.Thread] = []  # Hub uploads run beside training, one after another

    # -- before the script ---------------------------------------------------------------------------------------

    def acquire(self, give_up) -> bool:
        """Waits until this worker holds the run. False when the run is finished or `give_up()` says so (a cancel,
        the deadline). A commander that does not answer is asked again with backoff; a wrong secret is final."""
        wait, said = 1.0, 0.0
        while True:
            if give_up():
                return False
            sent = time.time()
            try:
                lease = self.client.acquire(self.run_id, self.worker)
            except RelayAuthError:
                raise
            except RelayRefused as exc:
                if exc.status == 410:
                    self.say(f"run {self.run_id} is finished; nothing to do")
                    return False
                if exc.status != 409:
                    raise
                if time.time() - said > 60:
                    self.say(f"{exc.message}; lease ends in {exc.data.get('expires_in', '?')} s; waiting")
                    said = time.time()
                # A cheap question, asked often, and again right when the holder's lease is due to end.
                expires_in = float(exc.data.get("expires_in") or 2.0)
                time.sleep(max(0.05, min(2.0, renew_every(self.ttl), expires_in + 0.05)))
                continue
            except RelayUnreachable as exc:
                if time.time() - said > 60:
                    self.say(f"{exc}; asking again")
                    said = time.time()
                time.sleep(wait)
                wait = min(wait * 2, 30.0)
                continue
            self.epoch, self.pointer, self.last_ack = int(lease["epoch"]), lease.get("checkpoint"), sent
            self.ttl = float(lease.get("ttl", self.ttl))
            self.client.timeout = _request_timeout(self.ttl)  # the run's lease, not the one the job was planned with
            self.say(f"holding run {self.run_id} at epoch {self.epoch} (lease {self.ttl:g} s)"
                     + (f"; resuming from step {self.pointer.get('step')} ({self.pointer['path']})"
                        if self.pointer else "; no checkpoint committed yet: starting fresh"))
            return True

    @property
    def checkpoint_dir(self) -> Path:
        return epoch_dir(self.exp_dir, self.run_id, self.epoch)

    def pointer_path(self) -> Path | None:
        return self.exp_dir / self.pointer["path"] if self.pointer else None

    def seed(self) -> None:
        """Copies the committed checkpoint (pulled from the store already) into this epoch's folder, at the same
        place below its epoch folder, so the trainer finds it as its newest and resumes."""
        target_root = self.checkpoint_dir
        target_root.mkdir(parents=True, exist_ok=True)
        if not self.pointer:
            return
        source = self.pointer_path()
        source_epoch = epoch_dir(self.exp_dir, self.run_id, int(self.pointer["epoch"]))
        try:
            below = source.relative_to(source_epoch)
        except ValueError:
            below = Path(source.name)
        if not source.is_dir():
            raise RuntimeError(f"the committed checkpoint {self.pointer['path']} is not in the datapool store")
        target = target_root / below
        if not target.exists():
            tmp = target.with_name(f".{target.name}.seeding")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp)
            os.replace(tmp, target)
        self.committed_step = self.pointer.get("step")

    # -- while the script runs -----------------------------------------------------------------------------------

    def start(self, stop, push_now, commit_every: float) -> None:
        """Renews in one thread and commits new checkpoints in another. `stop(reason)` stops the script;
        `push_now(path)` pushes one folder to the store and returns once it is there."""
        self._threads = [
            threading.Thread(target=self._renew_loop, args=(stop,), name="relay-renew", daemon=True),
            threading.Thread(target=self._commit_loop, args=(stop, push_now, commit_every), name="relay-commit",
                             daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _renew_loop(self, stop) -> None:
        margin = stop_margin(self.ttl)
        next_at = self.last_ack + renew_every(self.ttl)
        while not self._stop.is_set():
            now = time.time()
            stop_at = self.last_ack + self.ttl - margin - self.grace
            if now >= stop_at and self.lost is None:
                self._lose(stop, f"no renewal acknowledged for {now - self.last_ack:.1f} s (lease {self.ttl:g} s): "
                                 "stopping the script before the lease can pass to another worker")
                return
            if now >= next_at:
                sent = time.time()
                try:
                    # Never blocked past the stop time: a blackholed request must not hold the clock check up.
                    self.client.renew(self.run_id, self.worker, self.epoch,
                                      timeout=max(0.2, min(self.client.timeout, stop_at - sent)))
                    self.last_ack = sent
                    next_at = sent + renew_every(self.ttl)
                except RelayRefused as exc:
                    self._lose(stop, f"renewal refused: {exc.message}", refused=True)
                    return
                except RelayError as exc:  # out of reach (or anything but a refusal): the clock above decides
                    self.say(f"renewal failed ({exc}); the script is stopped in "
                             f"{max(0.0, stop_at - time.time()):.1f} s unless a renewal lands")
                    next_at = time.time() + min(1.0, renew_every(self.ttl))
            self._stop.wait(max(0.05, min(next_at, stop_at) - time.time()))

    def _lose(self, stop, why: str, refused: bool = False) -> None:
        self.lost, self.refused = why, refused
        self.say(why)
        stop("relay_lease_lost")

    def _commit_loop(self, stop, push_now, every: float) -> None:
        while not self._stop.wait(every):
            if self.lost:
                return
            try:
                self.commit_newest(push_now)
            except RelayRefused as exc:
                self._lose(stop, f"commit refused: {exc.message}", refused=True)
                return
            except Exception as exc:  # noqa: BLE001 - a failed push or an unreachable commander: next round
                self.say(f"commit postponed: {exc}")

    def commit_newest(self, push_now) -> bool:
        """Push the newest complete checkpoint of this epoch, then move the run's pointer to it (compare-and-set
        at the commander). False when there is nothing newer than the last commit."""
        with self._commit_lock:
            found = complete_checkpoints(self.checkpoint_dir)
            if not found or self.refused:
                return False
            step, path = found[-1]
            if self.committed_step is not None and step <= self.committed_step:
                return False
            push_now(path)
            rel = path.relative_to(self.exp_dir).as_posix()
            self.client.commit(self.run_id, self.worker, self.epoch, rel, step)
            self.committed_step = step
            self.committed.append(rel)
            self.say(f"committed step {step} ({rel}) at epoch {self.epoch}")
            if self.binding.hf_repo and self.binding.hf_sync == "checkpoints":
                self._upload(path, f"checkpoints/{path.name}")
            return True

    def _upload(self, folder: Path, path_in_repo: str) -> None:
        """Upload a committed checkpoint to the Hub in the background, after the uploads before it: a slow or
        failing Hub never holds up training or the lease, and never fails the job (it is logged)."""
        from .hub import upload_checkpoint

        before = self._uploads[-1] if self._uploads else None

        def run() -> None:
            if before is not None:
                before.join()
            try:
                upload_checkpoint(folder, self.binding.hf_repo, path_in_repo=path_in_repo,
                                  dry_run=self.binding.hf_dry_run, say=self.say)
            except Exception as exc:  # noqa: BLE001 - the checkpoint is committed in the datapool either way
                self.say(f"Hub upload of {path_in_repo} failed: {exc}")

        thread = threading.Thread(target=run, name="relay-hub-upload", daemon=True)
        self._uploads.append(thread)
        thread.start()

    # -- after the script ----------------------------------------------------------------------------------------

    def end(self, exit_code: int, stopped_for: str | None, push_now) -> str | None:
        """After the final push: the last checkpoint is committed, then the run is finished (the script exited 0
        on its own) or released for the next worker. Returns an error to record, if any."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        if self.refused:
            return f"relay: {self.lost}"
        if self.lost:
            # Stopped by its own clock, the commander out of reach: the script's last checkpoint may still be
            # committed if nobody took the run meanwhile (the epoch is still current), which saves the successor
            # that work; if someone did, the commit is refused (fencing) and nothing moves.
            try:
                self.commit_newest(push_now)
                self.client.release(self.run_id, self.worker, self.epoch)
                self.say(f"committed the last checkpoint and released run {self.run_id} after all")
            except Exception as exc:  # noqa: BLE001 - refused (a successor holds it) or still out of reach
                self.say(f"last checkpoint not committed: {exc}")
            finally:
                self._wait_for_uploads()
            return f"relay: {self.lost}"
        try:
            self.commit_newest(push_now)
            if exit_code == 0 and stopped_for is None:
                self.client.finish(self.run_id, self.worker, self.epoch)
                self.say(f"run {self.run_id} finished at epoch {self.epoch}")
                if self.binding.hf_repo and self.binding.hf_sync == "final" and self.committed:
                    self._upload(self.exp_dir / self.committed[-1], "final")
            else:
                self.client.release(self.run_id, self.worker, self.epoch)
                self.say(f"released run {self.run_id} (epoch {self.epoch}) for the next worker")
        except RelayRefused as exc:
            return f"relay: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - out of reach, or the last push failed: never the agent's end
            # The lease runs out on its own and the run is not finished: the next worker resumes from the last
            # commit (a checkpoint is committed or not, never half).
            return f"relay: {exc}"
        finally:
            self._wait_for_uploads()
        return None

    def _wait_for_uploads(self, timeout: float = 600) -> None:
        if self._uploads and self._uploads[-1].is_alive():
            self.say("waiting for the Hub uploads to finish")
            self._uploads[-1].join(timeout)
            if self._uploads[-1].is_alive():
                self.say(f"Hub uploads still running after {timeout:.0f} s: left unfinished")
