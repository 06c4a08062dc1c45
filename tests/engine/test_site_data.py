"""Sites' own files: agreed preprocessing against centralised training, the schema check
before round one, empty values, and the trained model used on new rows (`fedkube predict`,
`fedkube evaluate`), with real processes where the user would run them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from fedkube.aggregator.checkpoint import load_checkpoint
from fedkube.data.site_data import held_out_rows, split_held_out
from fedkube.data.table import read_site_table
from fedkube.errors import DataError, JobFailed
from fedkube.simulation import simulate
from fedkube.spec.job import FederatedJob
from fedkube.spec.load import load_job
from fedkube.testing import write_manifest
from sklearn.linear_model import LogisticRegression

from tests.support.cli import fedkube_cli
from tests.support.site_files import (
    LABEL,
    breast_cancer_frame,
    file_job,
    split_by_site,
    write_site_files,
)

ROOT = Path(__file__).resolve().parents[2]


def job_of(doc: dict[str, Any]) -> FederatedJob:
    return FederatedJob.model_validate(doc)


def centralised_accuracy(job: FederatedJob, manifest: Path) -> float:
    """Logistic regression on the sites' pooled training rows with one shared
    standardisation, scored on their pooled held-out rows: the same rows fedkube uses."""
    train_x, train_y, test_x, test_y = [], [], [], []
    for site in job.spec.sites:
        table = read_site_table(job.spec, site.name, manifest)
        y = np.array([t == "malignant" for t in table.labels()], dtype=np.int64)
        x_tr, y_tr, x_te, y_te = split_held_out(
            site.name, table.features(), y, 0.2, job.spec.task.seed
        )
        train_x.append(x_tr), train_y.append(y_tr), test_x.append(x_te), test_y.append(y_te)
    x_train, x_test = np.concatenate(train_x), np.concatenate(test_x)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    model = LogisticRegression(max_iter=5000).fit((x_train - mean) / std, np.concatenate(train_y))
    return float(model.score((x_test - mean) / std, np.concatenate(test_y)))


def run_job(tmp_path: Path, doc: dict[str, Any], name: str) -> tuple[Any, dict[str, Any]]:
    manifest = write_manifest(tmp_path / f"{name}.yaml", doc)
    out = fedkube_cli(["run", str(manifest), "--output", str(tmp_path / name)], cwd=tmp_path)
    result = (
        json.loads((tmp_path / name / "result.json").read_text())
        if (tmp_path / name / "result.json").exists()
        else {}
    )
    return out, result


def test_federated_standardisation_matches_centralised_training(tmp_path: Path) -> None:
    paths = write_site_files(tmp_path / "data")
    assert {p.suffix for p in paths.values()} == {".csv", ".parquet"}
    federated_doc = file_job(paths, standardize="federated")
    central = centralised_accuracy(job_of(federated_doc), tmp_path / "x.yaml")
    out, federated = run_job(tmp_path, federated_doc, "federated")
    assert out.returncode == 0, out.stdout + out.stderr
    out, per_site = run_job(tmp_path, file_job(paths, standardize="site"), "site")
    assert out.returncode == 0, out.stdout + out.stderr
    fed_acc, site_acc = federated["global"]["accuracy"], per_site["global"]["accuracy"]
    print(
        f"\nheld-out accuracy: centralised {central:.2%}, standardize federated {fed_acc:.2%}, "
        f"standardize site {site_acc:.2%} ({(central - site_acc) * 100:.1f} points behind)"
    )
    assert fed_acc >= central - 0.02
    # Each site scaling by its own figures loses the label skew's signal: clearly worse.
    assert site_acc < fed_acc - 0.05
    # The preprocessing is stored beside the model and hashed in its card.
    folder = tmp_path / "federated"
    card = json.loads((folder / "model-card.json").read_text())
    pre = json.loads((folder / "preprocessing.json").read_text())
    assert pre["standardize"] == "federated" and pre["labels"] == ["benign", "malignant"]
    assert len(card["preprocessingSha256"]) == 64
    pooled = breast_cancer_frame().drop(columns=[LABEL]).to_numpy()
    assert np.allclose(pre["center"], pooled.mean(axis=0), rtol=1e-12)
    assert np.allclose(pre["scale"], pooled.std(axis=0), rtol=1e-9)
    # ... and in the checkpoint, so a restarted aggregator does not ask again.
    job = job_of(federated_doc)
    cp = load_checkpoint(folder / "checkpoints", job.name, job.spec.training_fingerprint())
    assert cp is not None and cp.preprocessing == pre
    # The trained model scores the held-out rows as the job did.
    rows = pd.concat(
        held_out_rows(job.spec, read_site_table(job.spec, s.name, None)).raw for s in job.spec.sites
    )
    rows.to_csv(tmp_path / "held-out.csv", index=False)
    scored = fedkube_cli(
        ["evaluate", "--model", str(folder), "--data", str(tmp_path / "held-out.csv"), "--json"]
    )
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["accuracy"] == pytest.approx(fed_acc, abs=1e-6)


def test_predict_reproduces_the_examples_accuracy(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "breast-cancer.yaml").read_text())
    doc["spec"]["rounds"] = 6
    out, result = run_job(tmp_path, doc, "bc")
    assert out.returncode == 0, out.stdout + out.stderr
    job = job_of(doc)
    held_out = pd.concat(
        held_out_rows(job.spec, read_site_table(job.spec, s.name, None)).raw for s in job.spec.sites
    )
    data = tmp_path / "held-out.parquet"
    held_out.to_parquet(data, index=False)
    predicted = fedkube_cli(
        ["predict", "--model", str(tmp_path / "bc"), "--data", str(data), "--out", "p.csv"],
        cwd=tmp_path,
    )
    assert predicted.returncode == 0, predicted.stderr
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert list(predictions.columns) == ["row", "prediction", "p_0", "p_1"]
    assert np.allclose(predictions[["p_0", "p_1"]].sum(axis=1), 1.0)
    truth = held_out["target"].astype(str).to_numpy()
    accuracy = float(np.mean(predictions["prediction"].astype(str).to_numpy() == truth))
    assert len(predictions) == result["global"]["evalSamples"]
    assert accuracy == pytest.approx(result["global"]["accuracy"], abs=1e-6)


def test_predict_refuses_a_model_trained_with_per_site_scaling(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "breast-cancer.yaml").read_text())
    doc["spec"]["rounds"] = 1
    for site in doc["spec"]["sites"]:
        site["data"]["standardize"] = "site"
    out, _ = run_job(tmp_path, doc, "bc")
    assert out.returncode == 0, out.stdout + out.stderr
    (tmp_path / "rows.csv").write_text("a\n1\n")
    refused = fedkube_cli(["predict", "--model", str(tmp_path / "bc"), "--data", "rows.csv"])
    assert refused.returncode == 2 and "standardize: site" in refused.stderr


def altered(frames: dict[str, pd.DataFrame], site: str, change: Any) -> dict[str, pd.DataFrame]:
    frames = {s: f.copy() for s, f in frames.items()}
    frames[site] = change(frames[site])
    return frames


def text_in_area(frame: pd.DataFrame) -> pd.DataFrame:
    frame["mean area"] = frame["mean area"].astype(str)  # Parquet keeps one type a column
    frame.iloc[3, frame.columns.get_loc("mean area")] = "pending"
    return frame


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            lambda f: f.drop(columns=["mean area"]),
            "site clinic-b: column 'mean area' is missing from its file "
            "(sites clinic-a, clinic-c have it)",
        ),
        (
            lambda f: f.rename(columns={"mean area": "area_mean"}),
            "site clinic-b: column 'area_mean' is in no other site's file",
        ),
        (text_in_area, "site clinic-b: column 'mean area' holds text where numbers belong"),
    ],
)
def test_a_site_whose_columns_differ_stops_the_job_before_round_one(
    tmp_path: Path, change: Any, needle: str
) -> None:
    frames = altered(split_by_site(breast_cancer_frame()), "clinic-b", change)
    paths = write_site_files(tmp_path, frames)
    with pytest.raises(JobFailed) as e:
        simulate(job_of(file_job(paths, rounds=2)))
    assert needle in str(e.value)
    assert "nothing was trained" in str(e.value)


def test_schema_failure_through_fedkube_run_names_site_and_column(tmp_path: Path) -> None:
    frames = altered(split_by_site(breast_cancer_frame()), "clinic-c", text_in_area)
    doc = file_job(write_site_files(tmp_path / "data", frames), rounds=2)
    out, result = run_job(tmp_path, doc, "bad")
    assert out.returncode == 1
    assert "site clinic-c: column 'mean area' holds text where numbers belong" in out.stdout
    assert not any(line.startswith("round ") for line in out.stdout.splitlines())
    assert result == {} and not (tmp_path / "bad" / "model.safetensors").exists()


def test_the_manifests_features_are_checked_by_name_and_type(tmp_path: Path) -> None:
    frames = split_by_site(breast_cancer_frame())
    paths = write_site_files(tmp_path, frames)
    doc = file_job(paths, rounds=2)
    names = [c for c in frames["clinic-a"].columns if c != LABEL]
    doc["spec"]["task"]["features"] = [
        {"name": n, "type": "integer" if n == "mean radius" else "number"} for n in names
    ]
    doc["spec"]["task"]["features"][5]["name"] = "compactness"
    with pytest.raises(JobFailed) as e:
        simulate(job_of(doc))
    message = str(e.value)
    assert "site clinic-a: column 'mean radius' holds numbers where task.features says" in message
    assert "site clinic-a: column 'compactness' is missing from its file (task.features" in message


def with_holes(frame: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    features = frame.drop(columns=[LABEL])
    holes = rng.random(features.shape) < share
    frame[features.columns] = features.mask(holes)
    return frame


def test_empty_values_are_refused_filled_or_dropped_as_agreed(tmp_path: Path) -> None:
    frames = split_by_site(breast_cancer_frame())
    frames = {s: with_holes(f, 0.05, i) for i, (s, f) in enumerate(frames.items())}
    paths = write_site_files(tmp_path, frames)
    with pytest.raises(DataError) as e:
        simulate(job_of(file_job(paths, rounds=2, missing="refuse")))
    assert "has an empty value at data row" in str(e.value) and "impute_mean" in str(e.value)
    filled = simulate(job_of(file_job(paths, rounds=20, missing="impute_mean")))
    assert filled.preprocessing is not None and filled.preprocessing.fill is not None
    pooled = pd.concat(frames.values()).drop(columns=[LABEL])
    assert np.allclose(filled.preprocessing.fill, pooled.mean(axis=0, skipna=True), rtol=1e-12)
    assert filled.statistics is not None
    assert filled.statistics.overall.features[0].missing == int(pooled.iloc[:, 0].isna().sum())
    assert filled.history[-1].accuracy is not None and filled.history[-1].accuracy > 0.9
    median = simulate(job_of(file_job(paths, rounds=2, missing="impute_median")))
    assert median.preprocessing is not None and median.preprocessing.fill is not None
    # The pooled median, read from the agreed bins: within their relative accuracy.
    true_median = pooled.median(axis=0, skipna=True).to_numpy()
    assert np.allclose(median.preprocessing.fill, true_median, rtol=0.03)
    dropped = simulate(job_of(file_job(paths, rounds=5, missing="drop_rows")))
    # Most rows have a hole in one of 30 columns: few are left, but the job trains on them.
    assert dropped.history[-1].samples < filled.history[-1].samples


def test_secure_aggregation_needs_agreed_text_labels(tmp_path: Path) -> None:
    paths = write_site_files(tmp_path)
    doc = file_job(paths, rounds=2, security={"secureAggregation": {}})
    with pytest.raises(DataError) as e:
        simulate(job_of(doc))
    assert "must be agreed in task.labels" in str(e.value)
    doc["spec"]["task"]["labels"] = ["benign", "malignant"]
    result = simulate(job_of(doc))
    assert result.statistics is not None and result.statistics.per_site == {}
    assert [c.count for c in result.statistics.overall.labels] == [357, 212]


def test_the_manifest_refuses_sites_that_prepare_rows_differently(tmp_path: Path) -> None:
    paths = write_site_files(tmp_path)
    doc = file_job(paths)
    doc["spec"]["sites"][2]["data"]["standardize"] = "site"
    with pytest.raises(ValueError, match=r"sites\[2\]\.data\.standardize is 'site'"):
        job_of(doc)
    manifest = write_manifest(tmp_path / "job.yaml", doc)
    out = fedkube_cli(["validate", str(manifest)])
    assert out.returncode == 2 and "sites[2].data.standardize" in out.stderr
    assert load_job  # the CLI and load_job share one validation


def test_a_site_refuses_a_preprocessing_its_manifest_did_not_agree(tmp_path: Path) -> None:
    from fedkube.trainer.site import PendingSite, site_trainer

    paths = write_site_files(tmp_path)
    job = job_of(file_job(paths))
    table = read_site_table(job.spec, "clinic-a", None)
    pending = PendingSite(job, table, lambda data: site_trainer(job, "clinic-a", data))
    features = table.feature_names
    honest = {
        "features": features,
        "standardize": "federated",
        "center": [0.0] * 30,
        "scale": [1.0] * 30,
        "labels": ["benign", "malignant"],
    }
    from fedkube.spec.preprocessing import Preprocessing

    for change in (
        {"standardize": "none", "center": None, "scale": None},
        {"features": [*features[1:], features[0]]},
        {"missing": "impute_mean", "fill": [0.0] * 30},
    ):
        with pytest.raises(DataError, match="differs from this site's manifest"):
            pending.trainer(Preprocessing.model_validate({**honest, **change}))
    assert pending.trainer(Preprocessing.model_validate(honest)).num_train > 0


def test_a_site_with_a_data_folder_reads_only_inside_it(tmp_path: Path) -> None:
    """A trainer pod's --data-dir: relative paths are read inside the site's data volume; a
    path that leads out of it (an absolute path, .., a link) is refused naming the field."""
    data = tmp_path / "ward"
    paths = write_site_files(data)
    inside = {site: Path(path.name) for site, path in paths.items()}
    job = job_of(file_job(inside, rounds=1))
    table = read_site_table(job.spec, "clinic-a", None, data_dir=data)
    assert table.source == str(paths["clinic-a"].resolve())
    outside = tmp_path / "other-ward"
    write_site_files(outside)
    (data / "escape.csv").symlink_to(outside / paths["clinic-a"].name)
    for path in [
        outside / paths["clinic-a"].name,
        Path("..") / "other-ward" / paths["clinic-a"].name,
    ]:
        leaking = dict(inside, **{"clinic-a": path})
        spec = job_of(file_job(leaking, rounds=1)).spec
        with pytest.raises(DataError, match=r"spec\.sites\[0\]\.data\.file\.path .* leads outside"):
            read_site_table(spec, "clinic-a", None, data_dir=data)
    linked = job_of(file_job(dict(inside, **{"clinic-a": Path("escape.csv")}), rounds=1)).spec
    with pytest.raises(DataError, match="leads outside this site's data volume"):
        read_site_table(linked, "clinic-a", None, data_dir=data)
