"""A FLARE site (its Client API, run in the client process): receives the global model, trains
on its rows (site_task, the same loop as the Flower site), sends back its weights and its
number of rows (the weight of its update in FLARE's FedAvg)."""

from __future__ import annotations

import nvflare.client as flare
import site_task
import torch


def main() -> None:
    flare.init()
    index = int(flare.get_site_name().split("-")[-1]) - 1  # FLARE names them site-1..site-N
    site = site_task.Site("flare", index)
    model = site_task.build_model(site.job)
    while flare.is_running():
        received = flare.receive()
        # Copies both ways: in FLARE's simulator the sites are threads of one process, and the
        # arrays handed over may be shared with the server or the other sites.
        model.load_state_dict({k: torch.tensor(v) for k, v in received.params.items()})
        metrics = site.train(model, received.current_round + 1)  # FLARE counts from 0
        # Tensors, as FLARE's PyTorch examples send (its Client API converts them for the
        # server; numpy arrays here are dropped as an empty result).
        params = {k: v.detach().clone() for k, v in model.state_dict().items()}
        flare.send(
            flare.FLModel(
                params=params,
                metrics={"train_loss": metrics["train_loss"]},
                meta={"NUM_STEPS_CURRENT_ROUND": int(metrics["num-examples"])},
            )
        )


if __name__ == "__main__":
    main()
