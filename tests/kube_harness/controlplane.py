"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and
kube-controller-manager on free loopback ports, with freshly made certificates.

The binaries come from tests/tools/build-binaries.sh (built from the Go module proxy and
cached outside the repository). Several control planes can run side by side: each has its
own folder, ports, CA and etcd.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from fedkube.cli.launch import free_port
from fedkube.security.certs import CA_KEY_USAGE, certificate_builder

from tests.support.tools import build_output
from tests.support.waiting import terminate

ROOT = Path(__file__).resolve().parents[2]


def binaries() -> Path:
    """The folder with etcd, kube-apiserver, kube-controller-manager, kubectl and helm,
    built on first use (a cold build takes several minutes; later calls return at once)."""
    return Path(build_output("build-binaries.sh", "the control-plane binaries")[-1])


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    b = certificate_builder(subject, issuer, key, days=2).add_extension(
        x509.BasicConstraints(ca=ca, path_length=None), critical=True
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if ca:
        b = b.add_extension(CA_KEY_USAGE, critical=True)
    return b.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def make_pki(folder: Path) -> None:
    """CA, API server serving certificate, an admin client in system:masters, SA keys."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fedkube-test-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert(
        _name("kube-apiserver"),
        server_key,
        ca_name,
        ca_key,
        sans=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ],
        usage=[x509.oid.ExtendedKeyUsageOID.SERVER_AUTH],
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _cert(
        _name("fedkube-test-admin", "system:masters"),
        admin_key,
        ca_name,
        ca_key,
        usage=[x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    files = {
        "ca.crt": ca.public_bytes(pem),
        "ca.key": _pem_key(ca_key),
        "apiserver.crt": server.public_bytes(pem),
        "apiserver.key": _pem_key(server_key),
        "admin.crt": admin.public_bytes(pem),
        "admin.key": _pem_key(admin_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            pem, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
        os.chmod(folder / name, 0o600)


@dataclass
class ControlPlane:
    name: str
    folder: Path
    bin: Path
    api_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    args: dict[str, list[str]] = field(default_factory=dict)
    # More kube-apiserver flags (the load bench's audit log).
    apiserver_args: list[str] = field(default_factory=list)

    @property
    def pki(self) -> Path:
        return self.folder / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.folder / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def _start(self, component: str, args: list[str]) -> None:
        self.args[component] = args
        # Appended to: a restarted component's log follows its earlier life's.
        log = open(self.folder / f"{component}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[component] = subprocess.Popen(
            [str(self.bin / component), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start(self, timeout: float = 120) -> ControlPlane:
        started = time.monotonic()
        make_pki(self.pki)
        etcd_port, peer_port = free_port(), free_port()
        self.api_port = free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._start(
            "etcd",
            [
                "--name",
                "default",
                "--data-dir",
                str(self.folder / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        p = self.pki
        self._start(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                f"--secure-port={self.api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=Node,RBAC",
                # No kubelet mints tokens here, so pods get no service-account token volume.
                "--disable-admission-plugins=ServiceAccount",
                "--enable-priority-and-fairness=false",
                "--allow-privileged=true",
                f"--cert-dir={self.folder / 'apiserver-certs'}",
                *self.apiserver_args,
            ],
        )
        self.write_kubeconfig(self.kubeconfig)
        self._wait_ready(started + timeout)
        self._start(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                f"--cluster-signing-cert-file={p / 'ca.crt'}",
                f"--cluster-signing-key-file={p / 'ca.key'}",
                "--use-service-account-credentials=false",
                "--controllers=*,-nodeipam,-nodelifecycle,-service-lb-controller,-cloud-node-lifecycle",
            ],
        )
        self.startup_seconds = time.monotonic() - started
        return self

    def restart(self, component: str, timeout: float = 60) -> float:
        """SIGKILL one component (etcd, kube-apiserver, kube-controller-manager) and start it
        again with the same flags; the seconds until the API server answers again."""
        proc = self.procs[component]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        started = time.monotonic()
        self._start(component, self.args[component])
        self._wait_ready(started + timeout)
        return time.monotonic() - started

    def write_kubeconfig(self, path: Path, user: str = "admin") -> None:
        p = self.pki
        path.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
- name: {self.name}
  cluster:
    server: {self.server}
    certificate-authority: {p / "ca.crt"}
users:
- name: {user}
  user:
    client-certificate: {p / "admin.crt"}
    client-key: {p / "admin.key"}
contexts:
- name: {self.name}
  context: {{cluster: {self.name}, user: {user}, namespace: default}}
current-context: {self.name}
"""
        )

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _wait_ready(self, deadline: float) -> None:
        ctx = self._ssl()
        last = ""
        while time.monotonic() < deadline:
            for comp, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{comp} exited with {proc.returncode}:\n{self.log(comp)}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready: {last}\n{self.log('kube-apiserver')}")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"{self.server}{path}", context=self._ssl(), timeout=5) as r:
            data: bytes = r.read()
            return data

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.stderr}")
        return out

    def wait_crd_established(self, name: str, timeout: float = 60) -> None:
        """Until the API server serves the CRD. Polled, because `kubectl wait` fails at once
        when it reads the CRD before the server has written any status condition."""
        jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = self.kubectl("get", "crd", name, "-o", f"jsonpath={jsonpath}", check=False)
            if out.returncode == 0 and out.stdout.strip() == "True":
                return
            time.sleep(0.2)
        raise AssertionError(f"CRD {name} not Established after {timeout:g} s")

    def log(self, component: str, tail: int = 3000) -> str:
        path = self.folder / f"{component}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self, keep_logs_in: Path | None = None) -> None:
        for comp in ("kube-controller-manager", "kube-apiserver", "etcd"):
            terminate(self.procs.get(comp))
        if keep_logs_in is not None:
            keep_logs_in.mkdir(parents=True, exist_ok=True)
            for log in self.folder.glob("*.log"):
                shutil.copy(log, keep_logs_in / f"{self.name}-{log.name}")
