"""The chart's PodMonitor as the Prometheus Operator would hand it to Prometheus: pods found on
the real API server, kept to the monitor's namespaces, label selector and port names by
Prometheus's own relabelling. What the monitoring tests scrape in-cluster targets with, so
the chart's selector and namespace choices are tested as Prometheus applies them.

Debian's Prometheus is built without Kubernetes discovery, so a small HTTP service discovery
stands in for it: it lists the API server's pods (kubectl) and gives each container port the
``__meta_kubernetes_*`` labels Kubernetes discovery gives it; the relabelling is Prometheus's.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _label(name: str) -> str:
    """A Kubernetes label name as Prometheus's discovery spells its meta label."""
    return "".join(c if c.isalnum() else "_" for c in name)


def _selector_rules(selector: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        rules.append(
            {
                "action": "keep",
                "source_labels": [f"__meta_kubernetes_pod_label_{_label(key)}"],
                "regex": value,
            }
        )
    for expression in selector.get("matchExpressions") or []:
        if expression["operator"] != "In":
            raise ValueError(f"this stand-in translates In only, not {expression['operator']}")
        rules.append(
            {
                "action": "keep",
                "source_labels": [f"__meta_kubernetes_pod_label_{_label(expression['key'])}"],
                "regex": "(" + "|".join(expression["values"]) + ")",
            }
        )
    return rules


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kubernetes discovery's targets (role: pod): one per container port of a pod with an IP."""
    out = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
        if not status.get("podIP"):
            continue
        labels = {
            "__meta_kubernetes_namespace": meta["namespace"],
            "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            **{
                f"__meta_kubernetes_pod_label_{_label(k)}": v
                for k, v in (meta.get("labels") or {}).items()
            },
        }
        for container in spec["containers"]:
            for port in container.get("ports") or []:
                out.append(
                    {
                        "targets": [f"{status['podIP']}:{port['containerPort']}"],
                        "labels": {
                            **labels,
                            "__meta_kubernetes_pod_container_name": container["name"],
                            "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                        },
                    }
                )
    return out


class PodDiscovery:
    """An HTTP service discovery endpoint listing the API server's pods as targets."""

    def __init__(self, kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
        def targets() -> bytes:
            pods = json.loads(kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
            return json.dumps(pod_targets(pods)).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = targets()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def stop(self) -> None:
        self.server.shutdown()


def scrape_configs(monitor: dict[str, Any], discovery_url: str, interval: str = "1s") -> list[Any]:
    """One scrape config per endpoint of a rendered PodMonitor."""
    spec = monitor["spec"]
    discovery = {"url": discovery_url, "refresh_interval": "1s"}
    namespaces = spec.get("namespaceSelector") or {}
    # Kubernetes discovery watches only these namespaces; keeping theirs is the same choice.
    in_namespaces = (
        []
        if namespaces.get("any")
        else [
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_namespace"],
                "regex": "(" + "|".join(namespaces["matchNames"]) + ")",
            }
        ]
    )
    out = []
    for i, endpoint in enumerate(spec["podMetricsEndpoints"]):
        relabel = [
            # Finished pods are not targets (the Prometheus Operator drops them too).
            {
                "action": "drop",
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "(Failed|Succeeded)",
            },
            *in_namespaces,
            *_selector_rules(spec["selector"]),
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": endpoint["port"],
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]
        out.append(
            {
                "job_name": f"podMonitor/{monitor['metadata']['name']}/{i}",
                "scrape_interval": interval,
                "metrics_path": endpoint.get("path", "/metrics"),
                "http_sd_configs": [discovery],
                "relabel_configs": relabel,
            }
        )
    return out
