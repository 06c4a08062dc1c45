"""progress.png: the dashboard's main panels drawn from result.json, for a user without
Grafana. The same quantities: global accuracy and loss, sites in each round, round time,
tensor bytes per round."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fedkube.spec.progress import JobResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_FILE = "progress.png"


def plot_progress(result: JobResult, folder: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = progress_figure(result)
    path = folder / PLOT_FILE
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def progress_figure(result: JobResult) -> Figure:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    history = result.history
    rounds = [h.round for h in history]
    scored = [h for h in history if h.accuracy is not None]
    sites = [s.name for s in result.sites]
    fig, ((acc, grid), (time_ax, bytes_ax)) = plt.subplots(2, 2, figsize=(12, 8))
    fig.suptitle(f"{result.job}: {result.rounds_completed} of {result.total_rounds} rounds")

    acc.plot([h.round for h in scored], [h.accuracy for h in scored], marker=".", label="accuracy")
    loss = acc.twinx()
    loss.plot([h.round for h in scored], [h.loss for h in scored], color="tab:red", label="loss")
    acc.set(title="Global model on the sites' held-out data", xlabel="round", ylabel="accuracy")
    loss.set_ylabel("loss")
    acc.legend(loc="lower left")
    loss.legend(loc="upper right")

    taken = [[1.0 if name in h.sites else 0.0 for h in history] for name in sites]
    grid.imshow(
        taken,
        aspect="auto",
        cmap="Greens",
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=(0.5, len(history) + 0.5, len(sites) - 0.5, -0.5),
    )
    grid.set_yticks(range(len(sites)), sites)
    grid.set(title="Sites in each round (green: its update made the round)", xlabel="round")

    time_ax.plot(rounds, [h.duration_seconds for h in history], label="round")
    time_ax.plot(rounds, [h.max_train_seconds for h in history], label="slowest site's training")
    time_ax.set(title="Round time", xlabel="round", ylabel="seconds")
    time_ax.legend()

    most = max((max(h.bytes_received, h.bytes_sent) for h in history), default=0)
    scale, unit = next(
        (s, u) for s, u in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1, "B")) if most >= s or s == 1
    )
    bytes_ax.plot(rounds, [h.bytes_received / scale for h in history], label="updates received")
    bytes_ax.plot(rounds, [h.bytes_sent / scale for h in history], label="models sent")
    bytes_ax.set(title="Tensor bytes per round", xlabel="round", ylabel=unit)
    bytes_ax.legend()

    for ax in (acc, grid, time_ax, bytes_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole
    fig.tight_layout()
    return fig
