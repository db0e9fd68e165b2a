"""The state store protocol: what the scanner, the tick and ``icc status`` need from storage.

Kept narrow on purpose so that a PostgreSQL store for multi-server installs can follow: every method is one
transaction, and the only cross-process guarantee the tick relies on is :meth:`StateStore.claim` (and
:meth:`StateStore.claim_many`, the same for a batch) inserting a (job, slot) row at most once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import field
from typing import Any, Literal, NamedTuple, Protocol

from icc.records import record

Outcome = Literal[
    "pending", "running", "succeeded", "failed", "timed_out", "stopped", "abandoned", "skipped", "missed"
]
RunKind = Literal["scheduled", "manual", "missed"]
FINISHED: frozenset[str] = frozenset(
    {"succeeded", "failed", "timed_out", "stopped", "abandoned", "skipped", "missed"}
)
FAILURES: frozenset[str] = frozenset({"failed", "timed_out", "abandoned"})  # on_failure, alerts, last failure
UNRUN: frozenset[str] = frozenset({"missed", "skipped"})  # slots nothing ran for: pruned by their own limit

# icc_job_duration_seconds, a histogram: the upper bounds (seconds) of its buckets, from a tenth of a second to a
# day. Each run whose task started and ended adds one to its bucket's count and its milliseconds to the sum, kept
# in ``run_counts`` beside the outcome counts (as pseudo-outcomes starting with ``~``), apart from the history.
DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 86400)
TIMED_OUTCOMES: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "stopped"})
DURATION_PREFIX = "~le:"
DURATION_SUM_KEY = "~sum_ms"


def duration_counts(seconds: float) -> tuple[str, int]:
    """The ``run_counts`` key of the bucket ``seconds`` falls in (the smallest bound at or above it), and
    ``seconds`` in whole milliseconds for the sum."""
    bound = next((b for b in DURATION_BUCKETS if seconds <= b), None)
    return f"{DURATION_PREFIX}{'+Inf' if bound is None else f'{bound:g}'}", round(seconds * 1000)


@record(frozen=True)
class DurationHistogram:
    """A job's run durations: cumulative counts per upper bound (the last one ``inf``), their count and sum."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum: float


def duration_histogram(counts: Mapping[str, int]) -> DurationHistogram | None:
    """From a job's ``run_counts`` (:meth:`StateStore.run_counts`), or None when no run was timed."""
    per = {key[len(DURATION_PREFIX) :]: n for key, n in counts.items() if key.startswith(DURATION_PREFIX)}
    if not per:
        return None
    total = 0
    buckets: list[tuple[float, int]] = []
    for bound in (*DURATION_BUCKETS, float("inf")):
        total += per.get("+Inf" if bound == float("inf") else f"{bound:g}", 0)
        buckets.append((bound, total))
    return DurationHistogram(tuple(buckets), total, counts.get(DURATION_SUM_KEY, 0) / 1000)


@record(frozen=True)
class Claim:
    """One (job, slot) a tick means to run, for :meth:`StateStore.claim_many`; ``scope`` as for
    :meth:`StateStore.claim`."""

    job: str
    slot: int
    kind: RunKind
    scope: str = ""


@record(frozen=True)
class JobRecord:
    """A job as the state store keeps it: enough to evaluate its schedule without importing its plugin."""

    name: str
    kind: Literal["callable", "command"]
    definition: Mapping[str, Any]  # schedule definition, argv for commands, description
    plugin: str
    distribution: str | None = None
    version: str | None = None
    enabled: bool = True
    removed_at: float | None = None
    next_due: int | None = None  # epoch seconds of the next slot, for the idle tick

    def same_definition(self, other: JobRecord) -> bool:
        return (
            self.kind == other.kind
            and _comparable(self.definition) == _comparable(other.definition)
            and (self.plugin, self.distribution, self.version)
            == (other.plugin, other.distribution, other.version)
        )


class JobSummary(NamedTuple):
    """What ``icc status`` shows of a job (:meth:`StateStore.job_summaries`): its row, with only the schedule and
    the description of its definition. ``schedule`` is shared by the jobs whose stored schedules are equal: read
    it, never change it."""

    name: str
    kind: str
    plugin: str
    distribution: str | None
    version: str | None
    enabled: bool
    removed_at: float | None
    next_due: int | None
    schedule: Mapping[str, Any]
    description: str | None


def _comparable(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A definition without its ``compiled`` masks and declaration ``order``: derived data, so a scan after an
    upgrade that adds or changes them, or a job declared in a new place, does not report jobs as changed (the
    store still rewrites the stored definition)."""
    return {key: value for key, value in definition.items() if key not in ("compiled", "order")}


def run_duration(started_at: float | None, ended_at: float | None) -> float | None:
    """A run's duration in seconds (never negative: a clock stepped back), None until it started and ended."""
    if started_at is None or ended_at is None:
        return None
    return max(0.0, ended_at - started_at)


@record(frozen=True)
class RunRecord:
    """One run of a job, or one slot that was missed or skipped."""

    id: int
    job: str
    slot: int | None
    kind: RunKind
    outcome: Outcome
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    pid: int | None = None
    host: str | None = None
    output: str = ""
    error: str | None = None
    task_pid: int | None = None  # the task's own process (its process group leader)

    @property
    def duration(self) -> float | None:
        return run_duration(self.started_at, self.ended_at)


@record(frozen=True)
class ActionRecord:
    """An action taken through the dashboard (``icc web``): what (``run``, ``disable``, ``retry``, ...), on what
    (a job's name, ``queue:<name>:<id>``, ``pause``), when (epoch seconds), from which address, and its result."""

    id: int
    at: float
    action: str
    target: str
    remote: str
    detail: str | None = None


@record(frozen=True)
class RunBrief:
    """A run without its output: the jobs page's strip of last outcomes and the duration chart."""

    id: int
    job: str
    slot: int | None
    outcome: Outcome
    started_at: float | None
    ended_at: float | None
    exit_code: int | None = None
    host: str | None = None
    error: str | None = None

    @property
    def duration(self) -> float | None:
        return run_duration(self.started_at, self.ended_at)


@record(frozen=True)
class HostRecord:
    """A host that ticks on a shared store, as its last full tick recorded it."""

    host_id: str
    hostname: str
    last_seen: float  # the database server's clock
    clock_offset: float  # this host's clock minus the server's, seconds


@record
class SyncReport:
    """What ``icc scan`` changed (or would change, with ``--dry-run``)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)


class UnchangedGone(Exception):
    """``sync_jobs``: a job given as unchanged is no longer a present row of its plugin; nothing was written."""


class StateStore(Protocol):
    """Storage for jobs, runs (which double as per-(job, slot) claims) and the tick watermark."""

    # -- jobs --------------------------------------------------------------------------------------------
    def jobs(
        self, *, include_removed: bool = False, plugins: Collection[str] | None = None
    ) -> list[JobRecord]:
        """All jobs, by name; with ``plugins``, only the jobs of those plugins."""

    def definition_totals(self) -> dict[str, tuple[int, int]]:
        """Per plugin, its present jobs: how many, and the total length of their stored definitions (one grouped
        query: ``icc scan`` checks that the rows are as its last scan left them)."""

    def job_summaries(self) -> list[JobSummary]:
        """Every job, removed ones too, by name, as ``icc status`` shows it: one query, and each distinct stored
        schedule decoded once (10,000 jobs: issue 17)."""

    def due_jobs(self, slot: int) -> list[JobRecord]:
        """The enabled, present jobs a tick at ``slot`` must evaluate, by name: next slot reached (``next_due``
        at or before ``slot``), never evaluated (0) or none (NULL); a shared store adds every ``on_each_host()``
        job, whose progress each host keeps itself. Read through an index on ``next_due``: a tick's planning does
        not grow with the jobs that are not due."""

    def job(self, name: str) -> JobRecord | None:
        """One job, removed or not."""

    def sync_jobs(
        self,
        records: Sequence[JobRecord],
        *,
        prune: bool,
        dry_run: bool,
        now: float,
        meta: Mapping[str, str],
        unchanged: Mapping[str, str] | None = None,
    ) -> SyncReport:
        """Make the stored jobs match ``records`` in one transaction; keeps enabled flags and history.

        ``unchanged``: jobs the caller knows are stored as they are ({name: plugin}; their plugin's digest did
        not change since the last scan), wanted too, without a record. Each must be a present row of that plugin,
        else :class:`UnchangedGone` is raised and nothing is written (the caller builds their records)."""

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable a job (kept across scans)."""

    def set_next_due(self, updates: Mapping[str, int | None]) -> None:
        """Store each job's next slot (epoch seconds), read by the idle tick."""

    def earliest_due(self) -> int | None:
        """The smallest next slot of any enabled, present job."""

    # -- meta and watermark --------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """A value of the meta table (watermark, plugin fingerprint, last scan)."""

    def update_meta(self, key: str, change: Callable[[str | None], str | None]) -> str | None:
        """Replace a meta value by ``change(current)`` in one write transaction (None deletes it); return it.

        Concurrent callers are serialised: each ``change`` sees the value the one before it wrote. An exception
        in ``change`` writes nothing. Notifications keep per-job state under ``ping:<job>`` and
        ``mail.alert:<job>`` this way."""

    def save_evaluation(self, next_dues: Mapping[str, int | None], slot: int) -> None:
        """In one write: each job's next slot after ``slot``, and ``slot`` itself as the watermark.

        Together they are a cache, valid for ticks at ``slot`` or later; a tick at an earlier slot (the clock
        went back, or an earlier ``--at``) ignores it and saves its own, so the watermark may move back."""

    # -- runs --------------------------------------------------------------------------------------------
    def claim(
        self, job: str, slot: int, kind: RunKind, *, pid: int, host: str, scope: str = ""
    ) -> int | None:
        """Insert a pending run for (job, slot, scope); None when it was claimed before. ``scope`` is ``""`` for
        once per slot across every host sharing the store, a host id for ``on_each_host()`` jobs (a store only
        one host uses may ignore it)."""

    def claim_many(self, claims: Sequence[Claim], *, pid: int, host: str) -> list[int | None]:
        """:meth:`claim` for each of ``claims`` in one write (one statement, one round trip, on a shared store):
        the run id of each claim won, None for each claimed before (by anyone, or earlier in ``claims``), in
        the order of ``claims``. A claim is won exactly once cluster-wide, as with :meth:`claim`."""

    def start_manual(self, job: str, *, pid: int, host: str) -> int:
        """A pending run for ``icc exec``: no slot, never conflicts."""

    def record(
        self,
        job: str,
        slots: Sequence[int],
        outcome: Outcome,
        kind: RunKind,
        *,
        error: str | None = None,
        scope: str = "",
    ) -> list[int]:
        """Finished rows for missed or skipped slots, in one write; returns the slots not claimed before (in
        ``scope``, as for :meth:`claim`)."""

    def forget_unrun(self, since: int) -> int:
        """Delete the ``missed`` rows this host recorded for slots at or after ``since`` (a tick that ran ahead of
        the clock wrote them; those slots are still to come, and nothing ran for them); return how many.

        ``skipped`` rows (paused, overlapping, a condition) record a decision and are never deleted, nor is any
        row another host recorded."""

    def take_exclusive(self, run_id: int, *, pid: int) -> str | None:
        """Before the task of a ``without_overlapping()`` run starts: make it the one running exclusive run of
        its job (in its claim scope) on every host sharing the store, under supervisor ``pid``. None when it is;
        else who runs the other one (``"host web-1, pid 4242"``), and nothing is written. A store only one host
        uses may return None at once (the job lock already keeps runs apart there)."""

    def mark_running(self, run_id: int, *, pid: int, task_pid: int | None, now: float) -> None:
        """The run's supervisor (``pid``) started the task (``task_pid``); nothing is written when the run has
        already ended (another tick recorded it abandoned)."""

    def hand_over(self, supervisors: Mapping[int, int], *, now: float) -> None:
        """Runs (id -> pid) handed to background supervisors: running under that pid, unless they already
        recorded more themselves."""

    def finish(
        self,
        run_id: int,
        outcome: Outcome,
        *,
        now: float,
        exit_code: int | None = None,
        output: str = "",
        error: str | None = None,
    ) -> None:
        """Record how a run ended."""

    def add_note(self, run_id: int, note: str) -> None:
        """Append ``note`` (a hook or callback that failed) to the run's error; the outcome stays."""

    def add_output(self, run_id: int, output: str) -> None:
        """Append ``output`` (what a callback or hook printed after the run was recorded) to the run's output."""

    def run(self, run_id: int) -> RunRecord | None:
        """One run by id."""

    def unfinished(self) -> list[RunRecord]:
        """Runs that are pending or running."""

    def runs(self, job: str, *, limit: int = 20, before: int | None = None) -> list[RunRecord]:
        """The latest runs of a job, newest first; with ``before``, those with a smaller id (the next page)."""

    def last_runs_of(self, job: str) -> dict[str, RunRecord]:
        """One job's newest run (not missed, skipped or pending), newest success and newest failure, under the keys
        ``"last"``, ``"success"`` and ``"failure"`` (absent when there is none): index walks of that job's runs."""

    def missed_count(self, job: str, since: int, until: int) -> int:
        """How many slots of ``job`` from ``since`` to ``until`` were recorded missed (its ``(job, slot)`` index)."""

    def run_briefs(self, job: str, *, limit: int, before: int | None = None) -> list[RunBrief]:
        """As :meth:`runs`, without output and error: an index walk of ``(job, id)``."""

    def change_stamp(self) -> tuple[Any, ...]:
        """A few cheap figures that change when a run is claimed, starts or ends, a job is enabled, disabled or
        scanned, the pause changes or an action is recorded: the dashboard's live update polls it."""

    # -- dashboard actions --------------------------------------------------------------------------------------
    def record_action(self, action: str, target: str, *, remote: str, at: float, detail: str | None) -> int:
        """Record an action taken through the dashboard; return its id."""

    def actions(self, target: str | None = None, *, limit: int = 50) -> list[ActionRecord]:
        """The newest actions (on ``target`` only, when given), newest first."""

    def latest_runs(self) -> dict[str, RunRecord]:
        """The newest finished or running run of every job (not counting missed/skipped rows)."""

    def outcomes_between(self, since: float, until: float) -> list[tuple[int, str, float, str]]:
        """``(run id, job, when, outcome)`` of the runs whose slot (a manual run: its start) is in
        ``[since, until)``, oldest first: the data of ``icc status --timeline``."""

    def missed_counts(self, since: int, until: int) -> dict[str, int]:
        """How many slots each job missed from ``since`` to ``until`` (not those of an ``--at`` tick later on)."""

    def run_counts(self) -> dict[str, dict[str, int]]:
        """Finished runs and recorded slots per job and outcome since the store was made (not pruned)."""

    def duration_counts(self) -> dict[str, dict[str, int]]:
        """Per job, its runs' durations as ``run_counts`` keeps them: ``{"~le:<bound>": n, "~sum_ms": ms}``
        (:func:`duration_histogram` reads them); counted once when a run whose task started first finishes."""

    def last_outcomes(self) -> dict[str, dict[str, RunRecord]]:
        """Per job, its newest ``succeeded`` run and its newest failure (``failed``, ``timed_out``,
        ``abandoned``), under the keys ``"success"`` and ``"failure"`` (absent when there is none)."""

    def prune_runs(self, keep: int, keep_unrun: int = 100) -> int:
        """Keep the newest ``keep`` runs and the newest ``keep_unrun`` missed or skipped rows per job, and always
        its last success and last failure; return how many were deleted."""

    def prune_old_runs(self, before: float, limit: int) -> int:
        """Delete at most ``limit`` finished runs and unrun slots that ended before ``before`` (epoch seconds),
        the oldest first, keeping each job's last success and last failure (``[icc] keep_runs_days``)."""

    def close(self) -> None:
        """Release the connection."""

    # -- hosts (a store several hosts share) ------------------------------------------------------------------
    def register_host(self, hostname: str) -> float | None:
        """Record this host (its ``host_id``, ``hostname``, last seen on the store's clock) and measure its
        clock against the store's: return host clock minus store clock in seconds, half the round trip
        accounted. None for a store only one host uses (its clock is the host's own)."""

    def hosts(self) -> list[HostRecord]:
        """The hosts that ticked on this store, by host id; empty for a store only one host uses."""

    # -- leases (a store several hosts share) -----------------------------------------------------------------
    @property
    def lease(self) -> float | None:
        """Seconds a run stays owned by its host without a renewal (server clock); None: no leases (a store
        only this host uses, where the local checks of pid and job lock suffice)."""

    def renew(self, run_ids: Sequence[int]) -> list[int]:
        """Extend the leases of these runs of this host by :attr:`lease` from now on the server's clock, for those
        still unfinished and held by this host; return the ids renewed. A store without leases returns those
        still unfinished. Called from a thread of its own: it uses a connection of its own."""

    def expired_leases(self) -> dict[int, str]:
        """Unfinished runs whose lease passed on the server's clock: run id -> the host that held it."""

    def reconnect(self) -> None:
        """Drop the connection without waiting on it (it may hang: a host that lost its lease writes its run's
        end on a new one); the next call opens a new one. A store without leases does nothing."""
