"""A Flower site: loads the global arrays, trains on its rows (site_task), replies with its
arrays and its number of rows (FedAvg's weight)."""

from __future__ import annotations

import site_task
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()
_sites: dict[int, site_task.Site] = {}  # one per node (the simulation runs several in a process)


@app.train()
def train(msg: Message, context: Context) -> Message:
    index = int(context.node_config["partition-id"])
    site = _sites.get(index) or _sites.setdefault(index, site_task.Site("flower", index))
    model = site_task.build_model(site.job)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    metrics = site.train(model, int(msg.content["config"]["server-round"]))
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}
    )
    return Message(content=content, reply_to=msg)
