"""Many sites against one real aggregator process: the load harness of
`bench/many_sites.py` (synthetic sites, real gRPC, one connection each) at a smaller count."""

from __future__ import annotations

import resource
from pathlib import Path

from fedkube.loadtest import Churn, load_manifest, mlp_parameters, run_load

SITES = 150
HIDDEN = [128, 64]


def test_a_hundred_and_fifty_sites_joining_and_dropping_train_exact_sums(tmp_path: Path) -> None:
    """Rounds close with quorum while sites join late, drop before answering or halfway
    through an upload, and come back; each round's model change is the FedAvg mean of what
    its sites sent, and every site sees the same model. The aggregator starts with a soft
    open-file limit below one descriptor per site and raises it itself."""
    doc = load_manifest("many", SITES, 4, HIDDEN, sitesPerRound=120)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))  # inherited by the processes
    try:
        run = run_load(tmp_path, doc, processes=3, churn=Churn(drop=0.05, late=0.05))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    history = run.result.history
    c = run.counters
    assert [h.round for h in history] == [1, 2, 3, 4]
    for h in history:
        assert SITES // 2 <= len(h.sites) <= 120  # the quorum, and the sample's size
    assert c.finished == c.succeeded == SITES
    assert c.drops_before_answer > 0 and c.drops_mid_upload > 0
    assert c.model_sum_disagreements == 0
    assert max(run.sum_errors(mlp_parameters(HIDDEN))) < 1e-7
    # Every site held its own connection at once: more descriptors than the limit it got.
    assert run.fds > 128
    # The final model is scored by every site connected when it was sent out: all but
    # those that dropped in the last round and came back too late.
    scored = [s for s in run.result.sites if s.eval_samples > 0 and s.loss is not None]
    assert len(scored) >= SITES - 10, [s.name for s in run.result.sites if s not in scored]
