"""A job's learning terms and their digest: what a site admits (and later approves) a job for.

The terms are everything that decides what leaves the site or how the model learns: task and
model, rounds, strategy, privacy, security (secure aggregation, mutual TLS), the aggregator,
the sites and their data, evaluation, statistics, communication. What only runs the job here
(suspend, backoffLimit, podCleanup, pod resources) is left out, so pausing a job or giving its
pods more memory does not change its terms. Defaults are written out before hashing, so a
manifest that spells a default and one that leaves it out have the same digest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fedkube.spec.job import FederatedJob

# Fields of the spec that run the job on a cluster and change nothing a site agreed to.
OPERATIONAL_FIELDS = frozenset({"suspend", "backoff_limit", "pod_cleanup", "pods"})


def learning_terms(job: FederatedJob) -> dict[str, Any]:
    """The job's name and its spec without the operational fields, defaults written out."""
    spec = job.spec.model_dump(mode="json", by_alias=True, exclude=set(OPERATIONAL_FIELDS))
    return {"job": job.name, "spec": spec}


def terms_digest(job: FederatedJob) -> str:
    """SHA-256 of the canonical JSON of the learning terms (hex)."""
    blob = json.dumps(learning_terms(job), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def describe_terms(job: FederatedJob, namespace: str) -> list[str]:
    """The terms in words, for the site admin who approves them: which data, which
    aggregator, what privacy, how many rounds."""
    spec = job.spec
    model = spec.task.model.name or spec.task.model.import_path
    lines = [
        f"job {namespace}/{job.name}: {spec.rounds} rounds of model {model}, strategy "
        f"{spec.strategy.name}, at least {spec.quorum()} site(s) a round",
    ]
    for s in spec.sites:
        if s.remote:
            lines.append(f"site {s.name}: trains in its own cluster")
        elif s.data is not None and s.data.file is not None:
            lines.append(
                f"site {s.name}: reads {s.data.file.path!r} (label {s.data.file.label_column!r}) "
                f"from this site's data volume; {s.data.held_out_fraction:.0%} held out"
            )
        elif s.data is not None and s.data.sklearn is not None:
            lines.append(f"site {s.name}: built-in dataset {s.data.sklearn.dataset}")
    endpoint = spec.aggregator.endpoint
    lines.append(
        f"aggregator: {endpoint} (at another organisation)"
        if endpoint
        else f"aggregator: in this cluster, namespace {namespace}"
    )
    dp = spec.privacy.record_level
    cap = f"epsilon at most {dp.epsilon_cap:g}" if dp and dp.epsilon_cap else "no epsilon cap"
    lines.append(
        f"privacy: DP-SGD per record, noise multiplier {dp.noise_multiplier:g}, clip "
        f"{dp.max_grad_norm:g}, delta {dp.delta:g}, {cap}"
        if dp
        else "privacy: no record-level differential privacy"
    )
    if spec.privacy.update_level:
        u = spec.privacy.update_level
        lines.append(
            f"privacy: DP-FedAvg over sites, noise multiplier {u.noise_multiplier:g}, clip "
            f"{u.clip_norm:g}"
        )
    secure = spec.security.secure_aggregation
    n = len(spec.sites)
    lines.append(
        f"secure aggregation: the aggregator sees only sums, {secure.threshold_for(n)} of {n} "
        "sites unmask them"
        if secure
        else "secure aggregation: none, the aggregator sees each site's update"
    )
    tls = spec.security.mutual_tls
    lines.append(
        f"mutual TLS: consortium {tls.consortium or '(any the CA issued)'}"
        if tls
        else "mutual TLS: none, clear text inside this cluster"
    )
    st = spec.statistics
    lines.append(
        f"statistics: bins of at least {st.min_bin_count} records, a site's own figures from "
        f"{st.min_site_rows} rows; batches of {spec.task.batch_size}"
    )
    lines.append(f"terms sha256: {terms_digest(job)}")
    return lines
