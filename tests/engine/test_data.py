"""Site data: partitions are disjoint and deterministic; bad files give clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedkube.data import load_site_data
from fedkube.data.partition import partition
from fedkube.errors import DataError
from fedkube.spec import parse_job
from fedkube.testing import manifest

from tests.support.cli import fedkube_cli


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "quantity"])
def test_partitions_cover_the_rows_once_and_repeat_with_the_seed(scheme: str) -> None:
    labels = np.random.default_rng(0).integers(0, 10, 1797)
    parts = partition(labels, scheme, 10, 0.1, seed=4)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    again = partition(labels, scheme, 10, 0.1, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_small_alpha_skews_labels() -> None:
    labels = np.repeat(np.arange(10), 180)
    parts = partition(labels, "dirichlet", 10, 0.1, seed=0)
    # With alpha 0.1 most sites are dominated by one or two classes.
    top_share = [np.bincount(labels[p], minlength=10).max() / len(p) for p in parts]
    assert np.median(top_share) > 0.4


def test_simulated_sites_get_disjoint_rows() -> None:
    job = parse_job(manifest(sites=3, dataset="digits"))
    sizes = [len(load_site_data(job.spec, f"site-{i}").y_train) for i in range(3)]
    assert abs(sum(sizes) - round(1797 * 0.8)) <= 3


def file_job(tmp_path: Path, **file: object) -> object:
    doc = manifest(sites=1)
    doc["spec"]["task"].update(numFeatures=2, numClasses=2)
    doc["spec"]["sites"][0]["data"] = {"file": {"path": "site.csv", "labelColumn": "y", **file}}
    return parse_job(doc)


def load(tmp_path: Path, csv: str | None, **file: object):
    if csv is not None:
        (tmp_path / "site.csv").write_text(csv)
    job = file_job(tmp_path, **file)
    return load_site_data(job.spec, "site-0", tmp_path / "job.yaml")  # type: ignore[attr-defined]


def test_csv_source_loads(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 2},{i % 2}" for i in range(20))
    data = load(tmp_path, "a,b,y\n" + rows + "\n")
    assert data.x_train.shape == (16, 2) and data.x_test.shape == (4, 2)


def test_parquet_source_loads(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"a": range(10), "b": range(10), "y": [0, 1] * 5}).to_parquet(
        tmp_path / "s.parquet"
    )
    job = file_job(tmp_path)
    doc = job.model_dump(by_alias=True)  # type: ignore[attr-defined]
    doc["spec"]["sites"][0]["data"]["file"]["path"] = "s.parquet"
    data = load_site_data(parse_job(doc).spec, "site-0", tmp_path / "job.yaml")
    assert data.x_train.shape[1] == 2


@pytest.mark.parametrize(
    ("csv", "file", "needle"),
    [
        (None, {}, "the data file does not exist"),
        ("a,b,label\n1,2,0\n", {}, "column 'y' is not in the file; it has: a, b, label"),
        ("a,b,y\n1,2,0\n1,x,1\n", {}, "column 'b' has a non-numeric value 'x' at data row 2"),
        ("a,b,y\n1,2,0\n1,,1\n", {}, "column 'b' has an empty value at data row 2"),
        (
            "a,b,y\n1,2,0\n1,3,7\n",
            {},
            "column 'y' has label '7' at data row 2, which is not one of the job's labels",
        ),
        ("a,b,y\n1,2,0\n", {}, "1 rows cannot give both a training and a held-out split"),
        ("a,b,c,y\n1,2,3,0\n", {}, "the data has 3 feature columns but the model expects 2"),
        ("a,b,y\n", {}, "the file has no rows"),
    ],
)
def test_bad_files_name_site_file_and_column(
    tmp_path: Path, csv: str | None, file: dict, needle: str
) -> None:
    with pytest.raises(DataError) as e:
        load(tmp_path, csv, **file)
    msg = str(e.value)
    assert needle in msg
    assert msg.startswith("site 'site-0'")
    if "feature columns" not in needle and "training and a held-out" not in needle:
        assert str(tmp_path / "site.csv") in msg


def test_trainer_with_missing_data_exits_2_without_traceback(tmp_path: Path) -> None:

    from fedkube.testing import write_manifest

    doc = manifest(sites=1)
    doc["spec"]["task"].update(numFeatures=2, numClasses=2)
    doc["spec"]["sites"][0]["data"] = {"file": {"path": "gone.csv", "labelColumn": "y"}}
    path = write_manifest(tmp_path / "job.yaml", doc)
    run = fedkube_cli(
        ["trainer", "--manifest", str(path), "--site", "site-0", "--aggregator", "127.0.0.1:1"],
        timeout=120,
    )
    assert run.returncode == 2
    assert "site 'site-0', file" in run.stderr and "gone.csv" in run.stderr
    assert "Traceback" not in run.stderr


def test_sklearn_datasets_are_cached_and_read_back_without_importing_sklearn(
    tmp_path: Path,
) -> None:
    """The first load writes the cache; a fresh process reads it without scikit-learn, and
    a damaged cache file is rebuilt, not trusted."""
    import os
    import subprocess
    import sys

    import sklearn.datasets

    env = dict(os.environ, FEDKUBE_CACHE_DIR=str(tmp_path))
    probe = (
        "import sys, numpy as np\n"
        "from fedkube.data.sklearn_datasets import load_dataset\n"
        "d = load_dataset('wine')\n"
        "np.save(sys.argv[1], d.x)\n"
        "print('sklearn' in sys.modules, len(d.feature_names), d.y.sum())\n"
    )

    def load() -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path / "x.npy")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split()

    bunch = sklearn.datasets.load_wine()
    want = ["13", str(int(bunch.target.sum()))]
    assert load() == ["True", *want]  # the first load goes through scikit-learn
    cached = list(tmp_path.glob("wine-scikit-learn-*.npz"))
    assert len(cached) == 1
    assert load() == ["False", *want]  # then the cache serves it
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), bunch.data)
    cached[0].write_bytes(b"not an npz file")
    assert load() == ["True", *want]
    assert load() == ["False", *want]
