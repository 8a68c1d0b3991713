"""Power-loss test: the crash test's load and checker, with every crash a power cut under the data directory.

`bench.chaos` runs the producers, consumers, histories, drain and `check()`; this module swaps in one
`Fault`: the server's `--data` directory lives on `bench.lazyfs`, and each crash freezes the server
(SIGSTOP, so that it sends nothing more), cuts the filesystem's power (every write not fsync'd is
dropped), SIGKILLs the server, then remounts and lets `chaos.run` restart it. A real power cut is one
instant; SIGSTOP first makes the order exact: no reply leaves the server after the cut.

What must hold, by durability mode (SPEC section 4):
- `fsync`: nothing acknowledged is lost and nothing completed comes back (every `check()` count 0),
  and every queue whose QCREATE was acknowledged exists after every cut.
- `flush`: a reply only means "written to the OS", so a power cut may lose acknowledged work. The run
  reports how much, and the window: the age, at its cut, of the oldest acknowledgement that was lost.
  That it sees any loss at all is the proof that the test can see one (no bound is asserted yet).

Deduplication (SPEC section 7: a key is remembered for its queue's dedup window, across restarts): a
probe queue with a one-day DEDUP-WINDOW takes a `QPRODUCE ... DEDUP key` with a fresh key after each
restart and just before each cut (not before the cuts aimed at a redrive, whose moment must stay), and
the run keeps each acknowledged call, its ids and when its reply was read. After each restart it repeats
every kept call: a remembered key returns the same ids and counts one `deduplicated`, no `produced`. A
forgotten key stores its items again; that call is then the key's first use. `fsync` must forget
nothing; `flush` reports what it forgot and the age, at its cut, of the oldest forgotten acknowledgement.

Queues: the chaos queue, its dead queue and the dedup probe queue are created before the first cut, and
one probe queue after each restart; after each restart the test lists the queues and counts those whose
QCREATE was acknowledged but that are gone (then recreates the chaos and dedup queues, so the run goes
on).

    python -m bench.power_loss [--cuts N] [--durability fsync|flush|both] [--quick] [--json PATH]
                               [--workdir DIR] [--keep] [--seed S]

Defaults: 30 cuts per mode (3 with --quick), both modes, 2 producers, 4 consumers. The exit status is 1
when the `fsync` run breaks the contract (or any run fails to complete); flush-mode losses only report.
Every mount is unmounted and every process killed in a `finally`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import chaos
from bench.lazyfs import CutReport, LazyFS, unavailable


@dataclass
class QueueSurvival:
    """Queues whose QCREATE was acknowledged, checked after each later cut."""

    checked: int = 0  # (queue, cut) pairs checked
    missing: list[str] = field(default_factory=list)  # "queue after cut k"


DEDUP_QUEUE = "dedup-probe"
DEDUP_WINDOW_MS = 86_400_000  # the longest: nothing expires during a run


@dataclass
class DedupProbe:
    """One acknowledged `QPRODUCE DEDUP_QUEUE DEDUP key ITEMS payload`."""

    key: str
    payload: str
    ids: list[str]
    acked: float  # monotonic time its reply was read (the server sent it no later)


@dataclass
class DedupSurvival:
    """Acknowledged DEDUP produces, repeated after every later cut."""

    produced: int = 0  # acknowledged probe calls (first uses of a key)
    checked: int = 0  # (key, cut) pairs checked
    forgotten: list[str] = field(default_factory=list)  # "key after cut k (age s)": stored again
    different: list[str] = field(default_factory=list)  # remembered, but other ids than the first call's
    unexplained: list[str] = field(default_factory=list)  # no reply, or counters that fit neither case
    forgotten_window_s: float = 0.0  # age at its cut of the oldest forgotten acknowledgement

    @property
    def broken(self) -> bool:
        return bool(self.forgotten or self.different or self.unexplained)


class PowerCut(chaos.Fault):
    """The data directory on lazyfs; each crash is SIGSTOP, power cut, SIGKILL, remount."""

    name = "power cut"

    def __init__(self) -> None:
        self.fs: LazyFS | None = None
        self.cut_mono: list[float] = []
        self.cuts: list[CutReport] = []
        self.queues: list[str] = [chaos.QUEUE, chaos.DEAD_QUEUE]  # acknowledged QCREATEs
        self.survival = QueueSurvival()
        self.dedup = DedupSurvival()
        self.probes: list[DedupProbe] = []  # the acknowledged DEDUP calls to repeat after the next cut
        self.next_key = 0

    def data_dir(self, workdir: Path) -> Path:
        self.fs = LazyFS(workdir / "backing", workdir / "mnt", log=workdir / "lazyfs.log").mount()
        return workdir / "mnt" / "data"

    def crash(self, server: chaos.ChaosServer) -> None:
        assert self.fs is not None and server.proc is not None
        if not self.cut_mono:
            self._create_dedup_queue(server.port)
        if (len(self.cut_mono) + 1) % chaos.REDRIVE_KILL_EVERY:  # chaos.run aims the others at a redrive
            self._dedup_probe(server.port)
        self.cut_mono.append(time.monotonic())  # the instant of the cut: nothing is sent after it
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            self.cuts.append(self.fs.cut_power())
        finally:
            server.kill()  # SIGKILL ends a stopped process too
        self.fs.remount()

    def restarted(self, server: chaos.ChaosServer) -> None:
        cut = len(self.cut_mono)
        present = set(_queue_names(server.port))
        for name in self.queues:
            self.survival.checked += 1
            if name not in present:
                self.survival.missing.append(f"{name} after cut {cut}")
        if chaos.DEAD_QUEUE not in present:  # without them every later call fails: recreate them,
            chaos._admin(server.port, "QCREATE", chaos.DEAD_QUEUE)  # counted above
        if chaos.QUEUE not in present:
            chaos._admin(
                server.port, "QCREATE", chaos.QUEUE, "PARTITIONS", chaos.PARTITIONS,
                "LEASE-TIMEOUT", chaos.LEASE_TIMEOUT_MS, "DEAD-QUEUE", chaos.DEAD_QUEUE,
            )  # fmt: skip
        probe = f"probe-{cut}"
        with contextlib.suppress(Exception):  # an unacknowledged QCREATE promises nothing
            chaos._admin(server.port, "QCREATE", probe)
            self.queues.append(probe)
        # A probe lost at a cut stays lost: check each one only at the first cut after its creation.
        self.queues = [q for q in self.queues if q in (chaos.QUEUE, chaos.DEAD_QUEUE, DEDUP_QUEUE, probe)]
        if DEDUP_QUEUE in self.queues and DEDUP_QUEUE not in present:
            self._create_dedup_queue(server.port)  # counted missing above; its keys count as forgotten
        self._check_dedup(server.port, cut)
        self._dedup_probe(server.port)

    def _create_dedup_queue(self, port: int) -> None:
        with contextlib.suppress(Exception):  # unacknowledged: no probe, and no queue to check
            chaos._admin(port, "QCREATE", DEDUP_QUEUE, "DEDUP-WINDOW", DEDUP_WINDOW_MS)
            if DEDUP_QUEUE not in self.queues:
                self.queues.append(DEDUP_QUEUE)

    def _dedup_probe(self, port: int) -> None:
        """A produce with a fresh key; kept only when acknowledged (an unknown outcome promises nothing)."""
        if DEDUP_QUEUE not in self.queues:
            return
        n = self.next_key
        self.next_key += 1
        with contextlib.suppress(Exception):
            key, payload = f"key-{n}", f"dedup-{n}"
            ids = chaos._admin(port, "QPRODUCE", DEDUP_QUEUE, "DEDUP", key, "ITEMS", payload)
            self.probes.append(DedupProbe(key, payload, [chaos._text(i) for i in ids], time.monotonic()))
            self.dedup.produced += 1

    def _check_dedup(self, port: int, cut: int) -> None:
        """Repeat every kept call, each between two QSTATS of the probe queue (nobody else writes there)."""
        client: Any = redis.Redis(host=chaos.HOST, port=port, protocol=2, socket_timeout=10)

        def counters() -> tuple[int, int]:
            stats = chaos._decode(client.execute_command("QSTATS", DEDUP_QUEUE))
            return int(stats["produced"]), int(stats["deduplicated"])

        kept: list[DedupProbe] = []
        done = 0  # probes judged (kept or dropped)
        try:
            before = counters() if self.probes else (0, 0)
            for p in self.probes:
                done += 1
                age = self.cut_mono[-1] - p.acked
                what = f"{p.key} after cut {cut} ({max(0.0, age):.2f} s old)"
                try:
                    call = ("QPRODUCE", DEDUP_QUEUE, "DEDUP", p.key, "ITEMS", p.payload)
                    reply = client.execute_command(*call)
                    after = counters()
                except Exception as e:  # an unknown outcome: this key cannot be judged any more
                    self.dedup.unexplained.append(f"{what}: {e!r}")
                    before = counters()
                    continue
                grew = (after[0] - before[0], after[1] - before[1])
                before = after
                ids = [chaos._text(i) for i in reply]
                self.dedup.checked += 1
                if grew == (0, 1):  # remembered: nothing stored, one duplicate counted
                    if ids != p.ids:
                        self.dedup.different.append(f"{what}: {ids} instead of {p.ids}")
                    kept.append(p)
                elif grew == (1, 0):  # forgotten: stored again, and this call is now the key's first use
                    self.dedup.forgotten.append(what)
                    self.dedup.forgotten_window_s = max(self.dedup.forgotten_window_s, age)
                    kept.append(DedupProbe(p.key, p.payload, ids, time.monotonic()))
                else:
                    self.dedup.unexplained.append(f"{what}: produced +{grew[0]}, deduplicated +{grew[1]}")
        except Exception as e:  # QSTATS failed: the keys not yet repeated wait for the next restart
            self.dedup.unexplained.append(f"QSTATS {DEDUP_QUEUE} after cut {cut}: {e!r}")
            kept += self.probes[done:]
        finally:
            client.close()
        self.probes = kept

    def close(self) -> None:
        if self.fs is not None:
            self.fs.unmount()


def _queue_names(port: int) -> list[str]:
    names: list[str] = []
    after: list[Any] = []
    for _ in range(1000):  # QLIST pages; bounded
        page = chaos._admin(port, "QLIST", *after, "LIMIT", 1000)
        names += [chaos._text(n) for n in page]
        if len(page) < 1000:
            return names
        after = ["AFTER", page[-1]]
    return names


@dataclass
class PowerLossResult:
    run: chaos.RunResult
    cuts: list[CutReport]
    lost_window_s: float  # age at its cut of the oldest lost acknowledgement (0 when nothing was lost)
    queue_survival: QueueSurvival
    dedup: DedupSurvival

    @property
    def durability(self) -> str:
        return self.run.durability

    @property
    def contract_kept(self) -> bool:
        """Everything `fsync` promises: no check violation, no worker error, every queue still there,
        every acknowledged DEDUP key remembered with its ids."""
        return self.run.ok and not self.queue_survival.missing and not self.dedup.broken

    def summary(self) -> str:
        c = self.run.check
        files = sum(r.files for r in self.cuts)
        dropped = sum(r.bytes_truncated + r.bytes_written_back for r in self.cuts)
        missing = self.queue_survival.missing
        d = self.dedup
        return (
            f"{self.durability}: {len(self.cuts)} power cuts; {c.lost:,} of {c.acknowledged:,} acknowledged "
            f"items lost (oldest lost acknowledgement {self.lost_window_s:.2f} s old at its cut); "
            f"resurrected after complete {c.redelivered_after_complete:,}; "
            f"concurrent leases {c.concurrent_leases:,}; "
            f"attempts not increasing {c.attempts_not_increasing:,}; "
            f"queues missing after a cut {len(missing)} of {self.queue_survival.checked} checked"
            f"{' (' + ', '.join(missing[:5]) + ')' if missing else ''}; "
            f"dedup keys forgotten after a cut {len(d.forgotten)}, with different ids {len(d.different)}, "
            f"of {d.checked} checked ({d.produced} acknowledged; oldest forgotten acknowledgement "
            f"{d.forgotten_window_s:.2f} s old at its cut)"
            f"{f', unexplained {len(d.unexplained)}' if d.unexplained else ''}; "
            f"unsynced data dropped: {dropped:,} bytes in {files} file cuts, "
            f"{sum(r.names_undone for r in self.cuts):,} name changes undone"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **self.run.to_json(),
            "contract_kept": self.contract_kept,
            "power_loss_summary": self.summary(),
            "lost_window_s": self.lost_window_s,
            "cuts": [asdict(r) for r in self.cuts],
            "queue_survival": asdict(self.queue_survival),
            "dedup": asdict(self.dedup),
        }


def lost_window(lost_produces: list[tuple[float, float]], cut_mono: list[float]) -> float:
    """The age, at the cut that lost it, of the oldest lost acknowledgement (seconds).

    `lost_produces` holds each lost item's produce (invoke, ok) times. The cut that lost an item is the
    first one after its invoke: a connection does not outlive a server, so the server that acknowledged
    it ran before that cut, and a later cut cannot lose what survived this one. (Dating by the ok time
    would blame the next cut for a reply read just after the cut.) The age is cut - ok, at least 0.
    """
    ages = []
    for invoked, acked in lost_produces:
        later = [c for c in cut_mono if c >= invoked]
        if later:  # a loss without a later cut is not a power loss; the checker reports it anyway
            ages.append(max(0.0, min(later) - acked))
    return max(ages, default=0.0)


def run(config: chaos.RunConfig, workdir: Path, verbose: bool = True) -> PowerLossResult:
    """One chaos run whose crashes are power cuts (`config.kills` of them)."""
    fault = PowerCut()
    result = chaos.run(config, workdir, verbose=verbose, fault=fault)
    return PowerLossResult(
        run=result,
        cuts=fault.cuts,
        lost_window_s=lost_window(result.check.lost_produce_mono, fault.cut_mono),
        queue_survival=fault.survival,
        dedup=fault.dedup,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.power_loss", description=__doc__.split("\n")[0])
    parser.add_argument("--cuts", type=int, default=None, help="power cuts per durability mode (default 30)")
    parser.add_argument("--quick", action="store_true", help="3 cuts per mode")
    chaos.add_run_arguments(parser)
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason is not None:
        print(f"power-loss: cannot run: {reason}", file=sys.stderr)
        return 2
    cuts = args.cuts if args.cuts is not None else (3 if args.quick else 30)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    modes = ["fsync", "flush"] if args.durability == "both" else [args.durability]
    own_workdir = args.workdir is None
    root = Path(tempfile.mkdtemp(prefix="querator-power-loss-")) if own_workdir else args.workdir
    chaos._log(
        f"power-loss: {cuts} cuts per mode, {args.producers} producers, {args.consumers} consumers, "
        f"seed {seed}, workdir {root}"
    )
    results: list[PowerLossResult] = []
    failed = False
    try:
        for i, mode in enumerate(modes):
            config = chaos.RunConfig(mode, cuts, args.producers, args.consumers, seed + i)
            result = run(config, root / mode)
            results.append(result)
            print(result.summary(), flush=True)
            print(result.run.summary(), flush=True)
            print(result.run.details(), flush=True)
            if mode == "fsync" and not result.contract_kept:
                failed = True
                chaos.print_violations(result.run)
                for kind in ("forgotten", "different", "unexplained"):
                    for line in getattr(result.dedup, kind)[:5]:
                        print(f"  DEDUP {kind}: {line}", flush=True)
            elif result.run.worker_errors:
                failed = True  # a worker that died cannot vouch for its history, in either mode
                chaos.print_violations(result.run)
            for line in result.run.disturbances:
                print(f"  DISTURBANCE {line}", flush=True)
    except BaseException:
        failed = True
        raise
    finally:
        ok = not failed and len(results) == len(modes)
        modes_json = {r.durability: r.to_json() for r in results}
        chaos.finish(args, "power-loss", {"cuts": cuts, "seed": seed}, ok, modes_json, root, own_workdir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
