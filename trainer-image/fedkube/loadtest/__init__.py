"""Light synthetic sites for load tests: many real gRPC clients of the real protocol in one
process, on one asyncio loop, with no torch and no data.

Each site holds its own channel (its own TCP connection, as a real site would), subscribes,
fetches the model when tasked, reports a score when asked to evaluate, and sends an update
of the model's shape whose every value is the site's constant (``site_value``), weighted by
``site_samples``: the aggregate a round must produce is known in closed form, so a load test
checks the sums, not only that rounds close. Sites join late, drop (before answering, or
halfway through their upload) and rejoin, at rates the caller sets.

    python -m fedkube.loadtest --endpoint 127.0.0.1:7070 --job big --first 0 --count 250

prints one JSON line of counters when every site has heard the job finish.
"""

from fedkube.loadtest.harness import LoadRun, load_manifest, mlp_parameters, run_load
from fedkube.loadtest.sites import Churn, Counters, round_mean, run_sites

__all__ = [
    "Churn",
    "Counters",
    "LoadRun",
    "load_manifest",
    "mlp_parameters",
    "round_mean",
    "run_load",
    "run_sites",
]
