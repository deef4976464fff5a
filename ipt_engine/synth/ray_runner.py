"""``ipt synthesize --ray``: parts run on Ray actors, one long-lived engine each, across a cluster.

Each actor builds one engine from the same :class:`~ipt_engine.synth.stage.EngineSpec` as the local
path (:func:`ipt_engine.synth.stage.get_engine`) and runs whole parts through the same
:func:`~ipt_engine.synth.stage.process_part`, so the planner, chain pipelining and the prefix
cache all stay inside one engine and a part's rows do not depend on which actor ran it.

The driver keeps the manifest: :class:`RayPartExecutor` is a :class:`~ipt_engine.io.parts.PartExecutor`,
so parts are committed atomically and in order by :func:`~ipt_engine.io.parts.run_part_stage`, exactly
as with the local process pool. Parts are handed to whichever actor is free (one at a time per actor, at
most ``2 × actors`` read ahead), so a slow part does not hold a queue behind it on one actor.

Faults: an actor that dies (killed process, OOM, lost node) surfaces as ``ActorDiedError`` /
``ActorUnavailableError`` on its in-flight part. Ray restarts the actor (a new engine); the part goes
back to the front of the queue and runs on the next free actor, at most ``max_part_retries`` more
times; then it is given up (:class:`~ipt_engine.io.parts.PartFailed`): the run finishes the other
parts, records the failure in the manifest and ends non-zero. An exception raised by the part itself
(a bug, not a lost worker) is not retried: it ends the run as it would locally.

Ray is imported only here, and this module only when ``--ray`` is given.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipt_engine.errors import UserError

if TYPE_CHECKING:
    from ipt_engine.synth.stage import EngineSpec

# Environment an actor's engine needs to see as the driver does (vLLM's CPU KV cache size, the asset
# cache with the format model, ...). An actor on another node gets the driver's values.
FORWARDED_ENV_PREFIXES = ("VLLM_", "IPT_", "HF_", "TOKENIZERS_", "TRANSFORMERS_")


def _lost_worker_errors() -> tuple[type[BaseException], ...]:
    """What a part's result raises when its worker, not the part, failed: the actor died or was
    unreachable (ActorDiedError, ActorUnavailableError), its process was killed for memory, its node
    died, or its returned rows were lost with the node that held them."""
    import ray.exceptions as rex

    return (rex.RayActorError, rex.OutOfMemoryError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError)


def normal_priority() -> None:
    """Put every thread of this process back at niceness 0.

    Ray starts its worker processes at niceness 15 (its ``worker_niceness``) so that its own daemons
    stay responsive. An engine actor is the node's main work: at niceness 15 it loses the CPU to any other
    process on the node (on a shared 2-core machine the actor ran at half the local engine's rate). Only
    lowering niceness needs privilege (root or CAP_SYS_NICE); without it nothing changes, and a cluster
    started with ``RAY_worker_niceness=0`` (as ``--ray local`` does) never raised it.
    """
    tasks = Path("/proc/self/task")
    tids = [int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) > 0:
                os.setpriority(os.PRIO_PROCESS, tid, 0)
        except PermissionError:  # no privilege: no other thread would fare better
            return
        except ProcessLookupError:  # the thread ended meanwhile
            continue


class PartActor:
    """One engine in one Ray actor process (wrapped with ``ray.remote`` by :func:`_actor_class`)."""

    def __init__(self, env: dict[str, str], spec: EngineSpec, slot: int) -> None:
        os.environ.update(env)
        normal_priority()
        # The engine core runs in this process (no child process per engine): a restarted actor then
        # takes its engine down with it, and vLLM's CPU build keeps its thread binding here.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        cpus = os.environ.get("IPT_CPU_AFFINITY")
        if cpus:  # "0,1": pin this engine to those cores (before torch starts its threads)
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        self.spec = spec
        self.slot = slot

    def ready(self) -> dict[str, Any]:
        """Build the engine now (so a bad model fails at start, once) and say where this actor runs."""
        import socket

        from ipt_engine.synth.stage import get_engine

        t0 = time.perf_counter()
        get_engine(self.spec)
        normal_priority()  # the engine's own threads, started just now
        return {"pid": os.getpid(), "node": socket.gethostname(), "start_seconds": time.perf_counter() - t0}

    def pid(self) -> int:
        return os.getpid()

    def niceness(self) -> int:
        """This actor's scheduling niceness (0 unless it lacked the privilege to lower Ray's 15)."""
        return os.getpriority(os.PRIO_PROCESS, 0)

    def reset_prefix_cache(self) -> None:
        """Forget cached prompts (benchmarks: no timed run inherits another's prefixes)."""
        from ipt_engine.synth.engines.vllm_engine import VLLMEngine
        from ipt_engine.synth.stage import get_engine

        engine = get_engine(self.spec)
        if isinstance(engine, VLLMEngine):  # the only engine with a prefix cache of its own
            engine.llm.reset_prefix_cache()

    def process(self, rounds: int, index: int, records: list[Any]) -> tuple[list[Any], dict[str, float]]:
        from ipt_engine.synth.stage import process_part

        rows, stats = process_part(self.spec, rounds, None, None, index, records)
        return rows, {**stats, "_pid": os.getpid()}


def _actor_class() -> Any:
    import ray

    return ray.remote(PartActor)


def connect(address: str, *, num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address`` (auto, ray://host:port, host:port) or start ``local``.

    Returns whether this call connected (so :func:`ray.shutdown` belongs to us: it disconnects from a
    cluster, and stops a ``local`` one); False when the caller had connected already.
    """
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: install the synth extra again (`pip install 'ray[data]==2.60.0'`)") from None
    if ray.is_initialized():
        return False
    import logging

    # Actors' output (vLLM's start-up log) stays in the cluster's log files; Ray's own INFO lines too.
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == "local":
            # Workers at niceness 0 (Ray's default is 15): the engines are this machine's main work.
            os.environ.setdefault("RAY_worker_niceness", "0")
            # address="local": a new cluster even when another one runs on this machine (plain
            # ray.init() would join that one)
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **kwargs)
            return True
        ray.init(address=address, **kwargs)
        return True
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({first})") from None


@dataclass
class ActorState:
    """The driver's view of one actor slot: the handle, where it runs, what it did."""

    slot: int
    handle: Any
    pid: int | None = None
    node: str | None = None
    busy: int | None = None  # the part index it is running (-1: restarting after a death)
    parts: int = 0
    chains: int = 0
    generated_tokens: int = 0
    generate_seconds: float = 0.0
    deaths: int = 0


@dataclass
class _Part:
    index: int
    records: list[Any]
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    outcome: Any = None  # (rows, stats) or a PartFailed
    done: bool = False


class RayPartExecutor:
    """Hands parts to ``actors`` Ray actors (see module docstring); a :class:`PartExecutor`.

    ``resources`` are the Ray resources each actor holds: ``{"GPU": g}`` on GPU clusters (Ray then sets
    ``CUDA_VISIBLE_DEVICES`` for it), ``{"CPU": c}`` or a custom resource on CPU ones.
    ``on_dispatch(actor_state, part_index, attempt)`` is called as a part is handed over (tests use it
    to kill an actor mid-part).
    """

    def __init__(
        self,
        *,
        address: str,
        actors: int | None,
        gpus_per_actor: float,
        spec: EngineSpec,
        rounds: int,
        max_part_retries: int = 2,
        cpus_per_actor: float | None = None,
        resources: dict[str, float] | None = None,
        actor_env: Callable[[int], dict[str, str]] | None = None,
        on_dispatch: Callable[[ActorState, int, int], None] | None = None,
    ) -> None:
        if max_part_retries < 0:
            raise UserError(f"--max-part-retries must be at least 0, got {max_part_retries}")
        self.address = address
        self.spec = spec
        self.rounds = rounds
        self.max_part_retries = max_part_retries
        self.gpus_per_actor = gpus_per_actor
        self.cpus_per_actor = cpus_per_actor
        self.resources = resources or {}
        self.actor_env = actor_env
        self.on_dispatch = on_dispatch
        self.requested_actors = actors
        self.actors: list[ActorState] = []
        self.capacity = 2 * actors if actors else 2
        self._connected = False
        self._n: int | None = None
        self._gpus = 0.0
        self._queue: collections.deque[_Part] = collections.deque()
        self._running: dict[Any, tuple[ActorState, _Part | None]] = {}  # None: a restarting actor's ready()
        self.retries: list[dict[str, Any]] = []
        self.t0: float | None = None
        self.seconds = 0.0

    # -- start -------------------------------------------------------------------------------------

    def size(self) -> int:
        """Connect (once) and decide how many actors to start: --ray-actors, else one per
        ``gpus_per_actor`` GPUs. Called before the output is touched, so a bad count is a clean error."""
        import ray

        if self._n is not None:
            return self._n
        self._connected = connect(self.address, num_cpus=None)
        total = ray.cluster_resources()
        self._gpus = float(total.get("GPU", 0))
        n = self.requested_actors
        if n is None:
            if self._gpus <= 0:
                raise UserError(
                    f"--ray {self.address}: the cluster has no GPUs ({int(total.get('CPU', 0))} CPUs); "
                    "say how many engines to start with --ray-actors N"
                )
            n = int(self._gpus // self.gpus_per_actor)
            if n < 1:
                raise UserError(
                    f"--ray-gpus-per-actor {self.gpus_per_actor:g}: the cluster has only {self._gpus:g} GPUs")
        self._n = n
        self.capacity = 2 * n
        return n

    def _start(self) -> None:
        import ray

        n = self.size()
        self.t0 = time.perf_counter()
        total = ray.cluster_resources()
        gpus = self._gpus
        options: dict[str, Any] = {
            "max_restarts": -1,  # a dead actor comes back with a fresh engine; part retries bound the cost
            "max_task_retries": 0,  # the driver, not Ray, decides where a lost part runs again
            "num_gpus": self.gpus_per_actor if gpus > 0 else 0,
            "num_cpus": self.cpus_per_actor if self.cpus_per_actor is not None else (1 if gpus <= 0 else 0),
        }
        if self.resources:
            options["resources"] = dict(self.resources)
        cls = _actor_class()
        base_env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
        for slot in range(n):
            env = {**base_env, **(self.actor_env(slot) if self.actor_env else {})}
            handle = cls.options(**options).remote(env, self.spec, slot)
            self.actors.append(ActorState(slot=slot, handle=handle))
        pending = {a.handle.ready.remote(): a for a in self.actors}
        try:
            infos = ray.get(list(pending), timeout=float(os.environ.get("IPT_RAY_START_TIMEOUT", "1800")))
        except ray.exceptions.GetTimeoutError:
            raise UserError(
                f"--ray {self.address}: {n} actors could not all be placed within the start timeout "
                f"(each needs {options['num_gpus']:g} GPU, {options['num_cpus']:g} CPU"
                f"{', ' + str(self.resources) if self.resources else ''}; the cluster has {total})"
            ) from None
        except ray.exceptions.RayActorError as e:
            cause = str(getattr(e, "cause", None) or e).strip().splitlines()
            raise UserError(f"a Ray actor could not start its engine: {cause[-1] if cause else e}") from None
        for actor, info in zip(pending.values(), infos):
            actor.pid, actor.node = info["pid"], info["node"]

    # -- the PartExecutor protocol -----------------------------------------------------------------

    def submit(self, index: int, records: list[Any]) -> _Part:
        if not self.actors:
            self._start()
        part = _Part(index, records)
        self._queue.append(part)
        self._dispatch()
        return part

    def result(self, part: _Part) -> tuple[list[Any], dict[str, float]]:
        from ipt_engine.io.parts import PartFailed

        while not part.done:
            self._pump()
        part.records = []
        if isinstance(part.outcome, PartFailed):
            raise part.outcome
        result: tuple[list[Any], dict[str, float]] = part.outcome
        return result

    def close(self) -> None:
        if self.t0 is not None:
            self.seconds = time.perf_counter() - self.t0
        if not self.actors and not self._connected:
            return
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._running.clear()
        if self._connected:
            ray.shutdown()

    # -- scheduling --------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        for actor in self.actors:
            if not self._queue:
                return
            if actor.busy is not None:
                continue
            part = self._queue.popleft()
            part.attempts += 1
            ref = actor.handle.process.remote(self.rounds, part.index, part.records)
            actor.busy = part.index
            self._running[ref] = (actor, part)
            if self.on_dispatch is not None:
                self.on_dispatch(actor, part.index, part.attempts)

    def _pump(self) -> None:
        """Wait for one running part to end, record it (or requeue it), hand out more work."""
        import ray

        from ipt_engine.io.parts import PartFailed

        if not self._running:
            self._dispatch()
            if not self._running:
                raise RuntimeError("no part is running and none can be dispatched")
        done, _ = ray.wait(list(self._running), num_returns=1)
        ref = done[0]
        actor, part = self._running.pop(ref)
        actor.busy = None
        if part is None:  # a restarted actor is up again (or could not come back)
            try:
                info = ray.get(ref)
                actor.pid, actor.node = info["pid"], info["node"]
            except ray.exceptions.RayError:
                pass  # its next part will fail over like any other
            self._dispatch()
            return
        try:
            rows, stats = ray.get(ref)
        except _lost_worker_errors() as e:  # the actor died under this part: not the part's fault
            actor.deaths += 1
            error = f"{type(e).__name__} on actor {actor.slot} (pid {actor.pid}, {actor.node})"
            part.errors.append(error)
            self.retries.append({"part": part.index, "actor": actor.slot, "error": error})
            if part.attempts > self.max_part_retries:
                part.outcome = PartFailed(part.index, "; ".join(part.errors), part.attempts)
                part.done = True
            else:
                self._queue.appendleft(part)  # first in line: the driver commits in order
            self._restarting(actor)
            self._dispatch()
            return
        except ray.exceptions.RayTaskError as e:  # the part raised: a bug or bad input, as locally
            raise e.as_instanceof_cause() from None
        actor.pid = int(stats.pop("_pid", actor.pid or 0)) or actor.pid
        actor.parts += 1
        actor.chains += int(stats.get("chains", 0))
        actor.generated_tokens += int(stats.get("generated_tokens", 0))
        actor.generate_seconds += float(stats.get("generate_seconds", 0.0))
        stats["part_retries"] = part.attempts - 1
        stats["_part"] = {"actor": actor.slot, "node": actor.node, "attempts": part.attempts,
                          **({"errors": part.errors} if part.errors else {})}
        part.outcome, part.done = (rows, stats), True
        self._dispatch()

    def _restarting(self, actor: ActorState) -> None:
        """After a death Ray restarts the actor as a new process with a new engine: the slot counts as
        busy until its ``ready`` answers (with the new pid), so no part waits behind an engine build."""
        actor.busy = -1
        actor.pid = None
        self._running[actor.handle.ready.remote()] = (actor, None)

    # -- reporting ---------------------------------------------------------------------------------

    def progress_postfix(self) -> str:
        chains = sum(a.chains for a in self.actors)
        busy = sum(a.busy is not None and a.busy >= 0 for a in self.actors)
        retried = f", {len(self.retries)} retried" if self.retries else ""
        return f"{chains} chains, {busy}/{len(self.actors)} actors busy{retried}"

    def summary_rows(self) -> list[tuple[str, object]]:
        rows: list[tuple[str, object]] = []
        for a in self.actors:
            rate = f"{a.generated_tokens / a.generate_seconds:,.1f} tok/s" if a.generate_seconds else "-"
            deaths = f", {a.deaths} restart(s)" if a.deaths else ""
            rows.append((f"actor {a.slot} ({a.node})",
                         f"{a.parts} parts, {a.chains} chains, {a.generated_tokens:,} tokens, {rate}{deaths}"))
        if self.retries:
            rows.append(("part retries", ", ".join(f"part {r['part']} (actor {r['actor']})" for r in self.retries)))
        return rows
