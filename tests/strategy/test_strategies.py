"""Strategies: their server maths against hand computation, and what they converge to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fedkube.simulation import simulate
from fedkube.spec import load_job, parse_job
from fedkube.strategy import FedAvgM, FedOpt, Scaffold
from fedkube.testing import manifest
from fedkube.wire.tensors import specs_of


def test_one_fedadam_step_equals_a_hand_computed_adam_step() -> None:
    x = {"w": np.array([1.0, -2.0, 0.5], np.float32)}
    deltas = [np.array([0.1, -0.2, 0.0], np.float32), np.array([0.3, 0.1, -0.4], np.float32)]
    lr, b1, b2, tau = 0.05, 0.9, 0.99, 1e-3
    s = FedOpt("fedadam", lr, b1, b2, tau)
    m = v = np.zeros(3, np.float64)
    expected = x["w"].astype(np.float64)
    for r, d in enumerate(deltas, start=1):
        x = s.apply(x, {"w": d.copy()}, r, participants=2)
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d.astype(np.float64) ** 2
        expected = expected + lr * m / (np.sqrt(v) + tau)
    np.testing.assert_allclose(x["w"], expected, rtol=1e-6)


def test_fedyogi_and_fedadagrad_second_moments() -> None:
    d = np.array([0.2, -0.5], np.float32)
    yogi = FedOpt("fedyogi", 1.0, 0.0, 0.5, 1.0)
    out = yogi.apply({"w": np.zeros(2, np.float32)}, {"w": d.copy()}, 1, 1)
    v = 0 - 0.5 * d**2 * np.sign(0 - d**2)  # v grows by (1 - beta2) d^2 from zero
    np.testing.assert_allclose(out["w"], d / (np.sqrt(v) + 1.0), rtol=1e-6)
    ada = FedOpt("fedadagrad", 1.0, 0.0, 0.5, 1.0)
    out = ada.apply({"w": np.zeros(2, np.float32)}, {"w": d.copy()}, 1, 1)
    np.testing.assert_allclose(out["w"], d / (np.abs(d) + 1.0), rtol=1e-6)


def test_fedavgm_accumulates_momentum() -> None:
    s = FedAvgM(server_learning_rate=0.5, momentum=0.9)
    x = {"w": np.zeros(1, np.float32)}
    x = s.apply(x, {"w": np.ones(1, np.float32)}, 1, 1)  # v = 1
    x = s.apply(x, {"w": np.ones(1, np.float32)}, 2, 1)  # v = 1.9
    np.testing.assert_allclose(x["w"], [0.5 * 1 + 0.5 * 1.9])


def test_scaffold_moves_its_control_variate_by_the_participating_share() -> None:
    s = Scaffold(server_learning_rate=1.0, total_sites=4)
    infos = specs_of({"w": np.zeros(2, np.float32)})
    extras = s.update_extras(infos)
    assert [i.name for i in extras] == ["scaffold.dc/w"]
    mean = {
        "w": np.array([0.1, 0.2], np.float32),
        "scaffold.dc/w": np.array([1.0, -1.0], np.float32),
    }
    x = s.apply({"w": np.zeros(2, np.float32)}, mean, 1, participants=2)
    np.testing.assert_allclose(x["w"], [0.1, 0.2])
    np.testing.assert_allclose(s.broadcast_arrays()["scaffold.c/w"], [0.5, -0.5])


def test_fedprox_with_mu_zero_gives_exactly_fedavg() -> None:
    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "examples" / "breast-cancer.yaml").read_text())
    doc["spec"]["rounds"] = 5
    fedavg = simulate(parse_job(doc))
    doc["spec"]["strategy"] = {"name": "fedprox", "mu": 0.0}
    fedprox = simulate(parse_job(doc))
    for k in fedavg.params:
        assert np.array_equal(fedavg.params[k], fedprox.params[k])
    doc["spec"]["strategy"] = {"name": "fedprox", "mu": 1.0}
    pulled = simulate(parse_job(doc))
    assert not np.array_equal(fedavg.params["weight"], pulled.params["weight"])


def two_hospitals(tmp_path: Path) -> Path:
    """Two sites whose own optima differ: the same two overlapping classes, but one site sees
    mostly class 0 and the other mostly class 1 (and shifted features)."""
    rng = np.random.default_rng(0)
    for site, (n0, n1, shift) in {"a": (180, 20, 0.0), "b": (20, 180, 1.0)}.items():
        x0 = rng.normal([0.0 + shift, 0.0], 1.0, (n0, 2))
        x1 = rng.normal([1.0 + shift, 1.0], 1.0, (n1, 2))
        rows = np.vstack([np.c_[x0, np.zeros(n0)], np.c_[x1, np.ones(n1)]])
        np.savetxt(tmp_path / f"{site}.csv", rows, delimiter=",", header="f1,f2,y", comments="")
    doc = manifest("drift", sites=2, rounds=150, local_epochs=20)
    doc["spec"]["task"].update(numFeatures=2, numClasses=2, batchSize=1000, learningRate=0.5)
    for i, site in enumerate("ab"):
        doc["spec"]["sites"][i]["data"] = {
            "file": {"path": f"{site}.csv", "labelColumn": "y"},
            "heldOutFraction": 0.02,
            "standardize": "none",
        }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def global_optimum(path: Path) -> dict[str, np.ndarray]:
    """Full-batch gradient descent on the union of the sites' training rows, to convergence."""
    from fedkube.data import load_site_data
    from fedkube.models.registry import build_model

    job = load_job(path)
    data = [load_site_data(job.spec, s.name, path) for s in job.spec.sites]
    x = torch.from_numpy(np.concatenate([d.x_train for d in data]))
    y = torch.from_numpy(np.concatenate([d.y_train for d in data]))
    model = build_model(job.spec.task, 2, 2)
    opt = torch.optim.LBFGS(
        model.parameters(), max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def distance(params: dict[str, np.ndarray], optimum: dict[str, np.ndarray]) -> float:
    # Softmax is unchanged by adding a constant to every class's logit: compare differences.
    def canonical(p: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([p["weight"][1] - p["weight"][0], [p["bias"][1] - p["bias"][0]]])

    return float(np.linalg.norm(canonical(params) - canonical(optimum)))


def test_scaffold_reaches_the_global_optimum_where_fedavg_stays_biased(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    path = two_hospitals(tmp_path)
    optimum = global_optimum(path)
    job = load_job(path)
    fedavg = simulate(job, path, evaluate_every=1000)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["strategy"] = {"name": "scaffold"}
    scaffold = simulate(parse_job(doc), path, evaluate_every=1000)
    d_fedavg, d_scaffold = distance(fedavg.params, optimum), distance(scaffold.params, optimum)
    assert d_fedavg > 0.1, f"FedAvg should stay away from the optimum (distance {d_fedavg:.4f})"
    assert d_scaffold < 0.01, f"SCAFFOLD should reach it (distance {d_scaffold:.4f})"


@pytest.mark.parametrize(
    "strategy", [{"name": "scaffold"}, {"name": "fedadam", "serverLearningRate": 0.05}]
)
def test_spec_refuses_scaffold_with_a_custom_loop_but_takes_the_rest(strategy: dict) -> None:
    doc = manifest()
    doc["spec"]["strategy"] = strategy
    parse_job(doc)
    doc["spec"]["task"]["trainFunction"] = "my.mod:train"
    if strategy["name"] == "scaffold":
        with pytest.raises(Exception, match="scaffold needs the built-in training loop"):
            parse_job(doc)
    else:
        parse_job(doc)


def test_ditto_personal_models_help_under_label_skew_and_stay_home() -> None:
    doc = manifest("ditto", sites=5, rounds=8, dataset="digits", model={"name": "mlp"})
    for s in doc["spec"]["sites"]:
        s["data"]["sklearn"].update(partitioner="dirichlet", alpha=0.1)
    doc["spec"]["personalization"] = {"method": "ditto", "dittoLambda": 0.1}
    job = parse_job(doc)
    result = simulate(job)
    sizes = {name: 1 for name in result.sites}
    personal = np.mean([m["personal_accuracy"] for m in result.sites.values()])
    shared = np.mean([m["accuracy"] for m in result.sites.values()])
    assert personal > shared, (personal, shared, sizes)

    from fedkube.data import load_site_data
    from fedkube.models.registry import initial_params
    from fedkube.trainer.local import LocalTrainer

    trainer = LocalTrainer(
        job.spec.task, load_site_data(job.spec, "site-0"), "site-0", job.spec.personalization
    )
    params = initial_params(job.spec.task, 64, 10)
    update, _ = trainer.train(params, 1, {})
    assert set(update) == set(params), "the update holds the shared model's delta only"
