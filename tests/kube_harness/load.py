"""Many jobs on one operator, on a control plane of its own: JOBS FederatedJobs applied in one
`kubectl apply`, their pods on KWOK's simulated node except REAL jobs' (real aggregator and
trainer processes on the node agent), and what is measured meanwhile. What
`bench/operator_load.py` runs at length and `tests/kube/test_operator_load.py` briefly.

A control plane of its own: its API server keeps an audit log of the operator's requests, and
its pods are bound by the load run's binder, not by the shared node agent."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.kube_harness.controlplane import ControlPlane, binaries
from tests.kube_harness.jobs import example, get_job, with_free_ports
from tests.kube_harness.load_probes import (
    Binder,
    Kwok,
    LagWatch,
    PodClock,
    ProcessSampler,
    audit_args,
    operator_counters,
    operator_requests,
    percentile,
)
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import OperatorProcess

TENANT_NAMESPACES = 10


@dataclass
class LoadResult:
    jobs: int
    real: int
    pods_per_job: int
    apply_seconds: float
    applied_at: float  # wall-clock time the apply began
    # job -> (when the API server had it, when it had all its pods), wall-clock
    created: dict[tuple[str, str], tuple[float, float]]
    lags: list[float]  # seconds a round's close took to show in the job's status
    window_seconds: float
    cpu_cores: float
    peak_rss_mib: float
    requests: Counter[str]  # the operator's, in the window, by verb and resource
    counters: dict[str, float]  # reconciles, seconds, errors in the window
    phases: list[str | None]  # every job's phase at the end, the real ones first
    operator_log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_job_minute(self) -> float:
        return self.jobs * self.window_seconds / 60

    def real_succeeded(self) -> int:
        return self.phases[: self.real].count("Succeeded")


def job_docs(jobs: int, real: int, rounds: int) -> list[tuple[str, dict[str, Any]]]:
    """(namespace, manifest): the real jobs first, each in a namespace of its own (the binder
    sends those pods to the node agent), the rest spread over ten tenants' namespaces."""
    out = []
    for i in range(jobs):
        doc = with_free_ports(example(f"load-{i:03d}", rounds=rounds))
        # Rounds of about a second on two cores, so the status has rounds to follow.
        doc["spec"]["task"]["localEpochs"] = 20
        ns = f"real-{i}" if i < real else f"tenant-{i % TENANT_NAMESPACES}"
        doc["metadata"]["namespace"] = ns
        out.append((ns, doc))
    return out


def run_load(
    folder: Path,
    jobs: int,
    real: int,
    rounds: int,
    window: float,
    timeout: float,
    operator_args: tuple[str, ...] = (),
) -> LoadResult:
    cp = ControlPlane(
        "load", folder / "cp", binaries(), apiserver_args=audit_args(folder / "audit")
    ).start()
    agent = NodeAgent(cp.kubeconfig, folder / "node", bind_pending=False).start()
    kwok = Kwok(cp, folder / "kwok").start()
    operator = OperatorProcess(cp, folder / "operator", operator_args).start()
    docs = job_docs(jobs, real, rounds)
    binder = Binder(cp, {ns for ns, _ in docs[:real]}, agent.node)
    clock = PodClock(cp)
    assert operator.proc is not None
    sampler = ProcessSampler(operator.proc.pid)
    lag: LagWatch | None = None
    try:
        for ns in sorted({ns for ns, _ in docs}):
            cp.kubectl("create", "namespace", ns)
        for thread in (binder, clock, sampler):
            thread.start()
        pods_per_job = 1 + len(docs[0][1]["spec"]["sites"])
        applied_at = time.time()
        cp.kubectl("apply", "-f", "-", input="---\n".join(yaml.safe_dump(d) for _, d in docs))
        apply_seconds = time.time() - applied_at
        names = [(ns, doc["metadata"]["name"]) for ns, doc in docs]
        lag = LagWatch(
            cp,
            {
                (ns, name): (
                    doc["spec"]["aggregator"]["httpPort"],
                    operator.progress_token(ns, name),
                )
                for (ns, name), (_, doc) in zip(names[:real], docs[:real], strict=True)
            },
        )
        lag.start()
        end = time.time() + timeout
        while len(clock.job_times(pods_per_job)) < jobs and time.time() < end:
            time.sleep(0.5)
        created = clock.job_times(pods_per_job)
        # The window: every job exists and has its pods; the real ones are training.
        before = operator_counters(operator.metrics())
        window_from = time.time()
        time.sleep(window)
        window_to = time.time()
        after = operator_counters(operator.metrics())

        def phase(ns: str, name: str) -> str | None:
            found: str | None = get_job(cp, ns, name).get("status", {}).get("phase")
            return found

        while time.time() < end and any(
            phase(ns, name) not in ("Succeeded", "Failed") for ns, name in names[:real]
        ):
            time.sleep(1)
        phases = [phase(ns, name) for ns, name in names]
        time.sleep(2)  # the audit log is written in batches, once a second
        requests = operator_requests(folder / "audit" / "audit.log", window_from, window_to)
    finally:
        for stopping in (binder.stopping, clock.stopping, sampler.stopping):
            stopping.set()
        if lag is not None:
            lag.stopping.set()
        operator.stop()
        kwok.stop()
        agent.stop()
        cp.stop()
    return LoadResult(
        jobs=jobs,
        real=real,
        pods_per_job=pods_per_job,
        apply_seconds=apply_seconds,
        applied_at=applied_at,
        created=created,
        lags=[s for watch in lag.lags.values() for s in watch.seconds()],
        window_seconds=window_to - window_from,
        cpu_cores=sampler.cpu_cores(window_from, window_to),
        peak_rss_mib=sampler.peak_rss_mib(),
        requests=requests,
        counters={k: after[k] - before[k] for k in after},
        phases=phases,
        operator_log=operator.log(20000),
    )


def table(results: dict[str, LoadResult]) -> list[str]:
    """One column per run (e.g. the baseline operator and today's), one row per figure."""

    def rows(r: LoadResult) -> list[tuple[str, str]]:
        times = [done - seen for seen, done in r.created.values()]
        last = max((done for _, done in r.created.values()), default=r.applied_at)
        reconciles = r.counters["reconciles"]
        requests = sum(r.requests.values())
        return [
            ("`kubectl apply` of every job (s)", f"{r.apply_seconds:.1f}"),
            ("jobs with all their pods", f"{len(times)} of {r.jobs}"),
            ("job created -> its pods created, p50 (s)", f"{percentile(times, 50):.1f}"),
            ("job created -> its pods created, p99 (s)", f"{percentile(times, 99):.1f}"),
            ("apply -> every job's pods created (s)", f"{last - r.applied_at:.1f}"),
            ("status lag behind the aggregator, p50 (s)", f"{percentile(r.lags, 50):.2f}"),
            ("status lag behind the aggregator, p99 (s)", f"{percentile(r.lags, 99):.2f}"),
            ("rounds whose lag was measured", f"{len(r.lags)}"),
            ("operator CPU in the window (cores)", f"{r.cpu_cores:.2f}"),
            ("operator peak RSS (MiB)", f"{r.peak_rss_mib:.0f}"),
            ("API requests per job per minute", f"{requests / r.per_job_minute:.1f}"),
            ("full reconciles per job per minute", f"{reconciles / r.per_job_minute:.1f}"),
            ("mean reconcile (ms)", f"{1000 * r.counters['seconds'] / max(reconciles, 1):.0f}"),
            ("reconcile errors in the window", f"{r.counters['errors']:.0f}"),
            ("real jobs Succeeded", f"{r.real_succeeded()} of {r.real}"),
        ]

    columns = {name: rows(r) for name, r in results.items()}
    keys = [k for k, _ in next(iter(columns.values()))]
    width = max(len(k) for k in keys)
    lines = [f"{'':{width}s}" + "".join(f"  {name:>14s}" for name in columns)]
    for i, key in enumerate(keys):
        lines.append(f"{key:{width}s}" + "".join(f"  {col[i][1]:>14s}" for col in columns.values()))
    for name, r in results.items():
        lines.append(f"{name}: the operator's requests in the window, a job a minute:")
        for what, n in r.requests.most_common(8):
            lines.append(f"  {what:40s} {n / r.per_job_minute:8.2f}")
        ends = Counter(str(p) for p in r.phases)
        lines.append(
            "  phases at the end: " + ", ".join(f"{k} {v}" for k, v in sorted(ends.items()))
        )
    return lines
