"""Session-wide Kubernetes fixtures: control planes are shared by every test that needs one,
started on first use and stopped at the end; their logs are kept when a test failed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedkube.cli.launch import free_port

from tests.kube_harness.controlplane import ControlPlane, binaries
from tests.kube_harness.node_agent import NodeAgent
from tests.kube_harness.operator_env import OperatorProcess

ARTIFACTS = Path(os.environ.get("FEDKUBE_TEST_ARTIFACTS", "/tmp/fedkube-test-artifacts"))


@pytest.fixture(scope="session")
def kube_bin() -> Path:
    return binaries()


def _plane(
    name: str, kube_bin: Path, factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ControlPlane]:
    cp = ControlPlane(name, factory.mktemp(f"cp-{name}"), kube_bin).start()
    yield cp
    failed = request.session.testsfailed > 0
    cp.stop(keep_logs_in=ARTIFACTS if failed else None)


@pytest.fixture(scope="session")
def control_plane(
    kube_bin: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ControlPlane]:
    yield from _plane("coordinator", kube_bin, tmp_path_factory, request)


@pytest.fixture(scope="session")
def second_control_plane(
    kube_bin: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ControlPlane]:
    """An independent cluster, standing for a second site's."""
    yield from _plane("second-site", kube_bin, tmp_path_factory, request)


@pytest.fixture(scope="session")
def node_agent(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeAgent]:
    agent = NodeAgent(control_plane.kubeconfig, tmp_path_factory.mktemp("node-coordinator")).start()
    yield agent
    agent.stop()


@pytest.fixture()
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(control_plane, tmp_path_factory.mktemp("operator-coordinator")).start()
    yield op
    op.stop()
    if request.session.testsfailed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "operator-coordinator.log").write_text(op.log(10**7))


@pytest.fixture(scope="session")
def second_node_agent(
    second_control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeAgent]:
    agent = NodeAgent(
        second_control_plane.kubeconfig, tmp_path_factory.mktemp("node-second"), "second-site-node"
    ).start()
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def second_operator(
    second_control_plane: ControlPlane,
    second_node_agent: NodeAgent,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    # Hospital B's cluster trains for hospital B alone (Helm value site.name); its trainer
    # relays the job's progress on a port of its own (pods share the machine's loopback).
    op = OperatorProcess(
        second_control_plane,
        tmp_path_factory.mktemp("operator-second"),
        ("--site", "hospital-b", "--progress-relay-port", str(free_port())),
    ).start()
    yield op
    op.stop()
