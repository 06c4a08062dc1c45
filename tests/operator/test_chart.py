"""The chart as the real helm binary sees it: strict lint, templating without a cluster's
version, values refused by the schema, and RBAC that follows watchNamespaces."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from fedkube.spec.site_policy import SitePolicy, parse_site_policy
from fedkube_operator.permissions import (
    CLUSTER_REQUIRED,
    GANG_REQUIRED,
    REQUIRED,
    SITE_REQUIRED,
    Permission,
)

from tests.kube_harness.controlplane import ROOT, binaries

pytestmark = pytest.mark.needs_tools  # helm lints and renders the chart

CHART = str(ROOT / "helm" / "fedkube")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries() / "helm"), *args], capture_output=True, text=True)


def rendered(*sets: str) -> list[dict]:
    args = [a for s in sets for a in ("--set", s)]
    out = helm("template", "fedkube", CHART, "--namespace", "fedkube-system", *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("sets", [[], ["site.name=hospital-a"]], ids=["no site", "a site"])
def test_the_chart_lints_strictly_and_renders_without_a_kube_version(sets: list[str]) -> None:
    args = [a for s in sets for a in ("--set", s)]
    lint = helm("lint", "--strict", CHART, *args)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert {d["kind"] for d in rendered(*sets)} >= {"Deployment", "ClusterRole"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("operator.metricsPort=abc", "at '/operator/metricsPort': got string, want integer"),
        ("operator.metricsPort=70000", "at '/operator/metricsPort'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("site.name=Hospital_A", "at '/site/name'"),
        ("operator.bogus=1", "additional properties 'bogus' not allowed"),
        ("bogus=1", "additional properties 'bogus' not allowed"),
    ],
)
def test_a_wrong_type_or_an_unknown_key_is_refused(value: str, message: str) -> None:
    out = helm("template", "fedkube", CHART, "--set", value)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["site.epsilonCap=4"],
            "site.epsilonCap needs site.state.claimName: without it each trainer pod keeps a "
            "ledger of its own, which starts again at epsilon 0",
        ),
        (["site.data.claimName=ward", "site.data.hostPath=/srv"], "give claimName or hostPath"),
        (
            ["operator.replicas=2", "operator.leaderElection.enabled=false"],
            "operator.replicas above 1 needs operator.leaderElection",
        ),
        (
            ["operator.podDisruptionBudget.enabled=true"],
            "operator.podDisruptionBudget with one replica would block every node drain",
        ),
    ],
    ids=["budget without state", "two data volumes", "replicas without election", "lone pdb"],
)
def test_values_that_contradict_each_other_are_refused_naming_both(
    sets: list[str], message: str
) -> None:
    args = [a for s in sets for a in ("--set", s)]
    out = helm("template", "fedkube", CHART, *args)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_a_budget_with_the_state_claim_reaches_the_operator() -> None:
    deployment = next(
        d
        for d in rendered("site.epsilonCap=4.5", "site.state.claimName=ward-state")
        if d["kind"] == "Deployment"
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--epsilon-cap=4.5" in args and "--state-claim=ward-state" in args


def test_watch_namespaces_gets_namespaced_roles_and_no_cluster_wide_pod_verbs() -> None:
    docs = rendered("operator.watchNamespaces={ward-a,ward-b}")
    # Cluster-wide: only the site's consents (read by the operator, written by the site
    # admin), the site's status (written by the operator, read by anyone at the site) and the
    # jobs' reading for the site admin; nothing about pods or anything in a namespace.
    cluster = [d for d in docs if d["kind"] == "ClusterRole"]
    assert {d["metadata"]["name"] for d in cluster} == {
        "fedkube-operator-approvals",
        "fedkube-site-admin",
        "fedkube-site-reader",
    }
    for role in cluster:
        resources = {r for rule in role["rules"] for r in rule["resources"]}
        assert resources <= {
            "siteapprovals",
            "federatedsites",
            "federatedsites/status",
            "federatedjobs",
            "federatedjobs/status",
        }, role
    reader = next(d for d in cluster if d["metadata"]["name"].endswith("site-reader"))
    assert reader["rules"] == [
        {
            "apiGroups": ["fedkube.io"],
            "resources": ["federatedsites"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    bindings = {d["roleRef"]["name"]: d for d in docs if d["kind"] == "ClusterRoleBinding"}
    assert set(bindings) == {"fedkube-operator-approvals", "fedkube-site-reader"}
    assert bindings["fedkube-site-reader"]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}
    ]
    site_role = "fedkube-site-trainers"
    roles = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] != site_role
    }
    bindings = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "RoleBinding" and d["metadata"]["name"] != site_role
    }
    assert set(roles) == set(bindings) == {"ward-a", "ward-b"}
    for role in roles.values():
        pods = next(r for r in role["rules"] if "pods" in r["resources"])
        assert set(pods["verbs"]) == {"get", "list", "watch", "create", "delete"}
    for binding in bindings.values():
        assert binding["subjects"][0]["namespace"] == "fedkube-system"
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ward-a" in args and "--namespace=ward-b" in args
    # Watching every namespace is what a ClusterRole is for.
    assert "ClusterRole" in [d["kind"] for d in rendered()]


def test_the_operator_pod_takes_the_sites_scheduling_and_image_settings() -> None:
    digest = "sha256:" + "ab" * 32
    docs = rendered(
        f"image.digest={digest}",
        "image.pullPolicy=Always",
        "operator.image.tag=2.0.0",
        "image.pullSecrets={regcred}",
        "operator.nodeSelector.zone=secure",
        "operator.priorityClassName=clinical",
        "podSecurity.runAsUser=null",
    )
    spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    # The operator runs its own image (no torch); job pods get the engine's, pulled as asked.
    assert container["image"] == "ghcr.io/fedkube/operator:2.0.0"
    assert {"name": "FEDKUBE_IMAGE", "value": f"ghcr.io/fedkube/engine@{digest}"} in container[
        "env"
    ]
    assert "--image-pull-policy=Always" in container["args"]
    assert "--image-pull-secret=regcred" in container["args"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"zone": "secure"}
    assert spec["priorityClassName"] == "clinical"
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsGroup": 65532,
        "fsGroup": 65532,
    }
    assert "--pod-user=none" in container["args"] and "--pod-group=65532" in container["args"]
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics"}]


def test_the_charts_rbac_grants_exactly_what_the_operator_checks_for() -> None:
    """`fedkube-operator --check` (helm test) asks for permissions.REQUIRED; the chart's
    rules grant that and nothing more, cluster-wide or per watched namespace."""
    for sets in ([], ["operator.watchNamespaces={ward-a}"]):
        docs = rendered(*sets)
        roles = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("ClusterRole", "Role")}

        def granted(name: str, roles: dict[str, dict] = roles) -> set[Permission]:
            return {
                Permission(group, resource, verb)
                for rule in roles[name]["rules"]
                for group in rule["apiGroups"]
                for resource in rule["resources"]
                for verb in rule["verbs"]
            }

        assert granted("fedkube-operator") == set(REQUIRED)
        # In the site's own namespace: the trainers that read its data, and their manifest.
        assert roles["fedkube-site-trainers"]["metadata"]["namespace"] == "fedkube-system"
        assert granted("fedkube-site-trainers") == set(SITE_REQUIRED)
        # The site's consents are cluster-scoped: read cluster-wide in every mode.
        assert roles["fedkube-operator-approvals"]["kind"] == "ClusterRole"
        assert granted("fedkube-operator-approvals") == set(CLUSTER_REQUIRED)


def test_with_a_gang_scheduler_the_chart_grants_the_pod_groups_in_both_namespaces() -> None:
    gang_set = "site.gangScheduler=scheduler-plugins"
    for sets in ([gang_set], [gang_set, "operator.watchNamespaces={ward-a}"]):
        docs = rendered(*sets)
        for role in (d for d in docs if d["kind"] in ("ClusterRole", "Role")):
            rules = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
                     for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
            gang = {(p.group, p.resource, p.verb) for p in GANG_REQUIRED}
            name = role["metadata"]["name"]
            wanted = name in ("fedkube-operator", "fedkube-site-trainers")
            assert (gang <= rules) == wanted, name
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--gang-scheduler=scheduler-plugins" in args


def test_the_crd_is_a_template_kept_on_uninstall_and_can_be_left_out() -> None:
    crds = {d["metadata"]["name"]: d for d in rendered() if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {
        "federatedjobs.fedkube.io",
        "siteapprovals.fedkube.io",
        "federatedsites.fedkube.io",
    }
    for name, crd in crds.items():
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        generated = yaml.safe_load((ROOT / "crds" / f"{name.split('.')[0]}.yaml").read_text())
        assert crd["spec"] == generated["spec"]
    assert crds["siteapprovals.fedkube.io"]["spec"]["scope"] == "Cluster"
    unkept = [d for d in rendered("crds.keep=false") if d["kind"] == "CustomResourceDefinition"]
    assert len(unkept) == 3 and all("annotations" not in d["metadata"] for d in unkept)
    assert "CustomResourceDefinition" not in {d["kind"] for d in rendered("crds.enabled=false")}


def _images(*values: str) -> tuple[str, str]:
    """The operator's image and the engine image its job pods get, as the chart renders them."""
    deployment = next(d for d in rendered(*values) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    engine = next(e["value"] for e in container["env"] if e["name"] == "FEDKUBE_IMAGE")
    return container["image"], engine


def test_the_images_default_to_the_published_names_and_take_a_mirror() -> None:
    assert _images() == ("ghcr.io/fedkube/operator:0.1.0", "ghcr.io/fedkube/engine:0.1.0-cu132")
    # An air-gapped site's own registry replaces every image's.
    assert _images("global.imageRegistry=registry.ward.local:5000") == (
        "registry.ward.local:5000/fedkube/operator:0.1.0",
        "registry.ward.local:5000/fedkube/engine:0.1.0-cu132",
    )
    assert _images("image.registry=mirror.example.org/hub", "image.variant=cu128") == (
        "ghcr.io/fedkube/operator:0.1.0",
        "mirror.example.org/hub/fedkube/engine:0.1.0-cu128",
    )
    # No registry and no variant: the repository and the version alone.
    assert _images("image.registry=", "image.variant=", "operator.image.registry=") == (
        "fedkube/operator:0.1.0",
        "fedkube/engine:0.1.0",
    )
    bad = helm("template", "fedkube", CHART, "--set", "global.imageRegistry=Not A Host")
    assert bad.returncode != 0 and "/global/imageRegistry" in bad.stderr


def test_helm_test_runs_the_operators_check_as_its_service_account() -> None:
    out = helm("template", "fedkube", CHART, "--namespace", "fedkube-system", "--set",
               "operator.watchNamespaces={ward-a}", "--show-only",
               "templates/tests/operator-access.yaml")  # fmt: skip
    assert out.returncode == 0, out.stderr
    pod = yaml.safe_load(out.stdout)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["serviceAccountName"] == "fedkube-operator"
    container = pod["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/fedkube/operator:0.1.0"
    assert container["args"] == ["--check", "--site-namespace=fedkube-system", "--namespace=ward-a"]
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_network_policies_and_the_sites_gpu_secret_and_claim_offers_reach_the_operator() -> None:
    docs = rendered(
        "networkPolicy.enabled=true",
        "networkPolicy.aggregatorIngressCidrs={203.0.113.0/24}",
        "networkPolicy.scrapeNamespaces={monitoring}",
        "site.name=hospital-a",
        "site.gpus.max=2",
        "site.tlsSecrets={hospital-a-tls}",
        "jobStorage.allowedClaims={ward-models}",
    )
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    for arg in (
        "--network-policy",
        "--aggregator-ingress-cidr=203.0.113.0/24",
        "--scrape-namespace=monitoring",
        "--remote-aggregator-cidr=0.0.0.0/0",
        "--site=hospital-a",
        "--max-gpus=2",
        "--gpu-resource=nvidia.com/gpu",
        "--allow-secret=hospital-a-tls",
        "--allow-claim=ward-models",
    ):
        assert arg in args, args
    namespace = next(e for e in container["env"] if e["name"] == "POD_NAMESPACE")
    assert namespace["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert (
        "--network-policy"
        not in next(d for d in rendered() if d["kind"] == "Deployment")["spec"]["template"]["spec"][
            "containers"
        ][0]["args"]
    )
    out = helm("template", "fedkube", CHART, "--set", "networkPolicy.aggregatorIngressCidrs={x}")
    assert out.returncode != 0 and "at '/networkPolicy/aggregatorIngressCidrs/0'" in out.stderr


def test_the_site_policy_reaches_the_operator_as_the_file_fedkube_run_takes(
    tmp_path: Path,
) -> None:
    """site.policy becomes a ConfigMap the operator reads (--site-policy), parsed by the
    same model as `fedkube run --site-policy`; a change rolls the operator's pod."""
    values = tmp_path / "site.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "site": {
                    "data": {"claimName": "ward-data", "namespaces": ["research-*"]},
                    "policy": {
                        "privacy": {"maxEpsilonPerJob": 2.5, "maxDelta": 1e-6},
                        "aggregators": {"endpoints": ["agg.consortium.org:443"]},
                    },
                }
            }
        )
    )

    def render(*extra: str) -> list[dict]:
        out = helm("template", "fedkube", CHART, "-n", "fedkube-system", "-f", str(values), *extra)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    docs = render()
    config = next(d for d in docs if d["metadata"]["name"] == "fedkube-site-policy")
    policy = parse_site_policy(yaml.safe_load(config["data"]["policy.yaml"]), "ConfigMap")
    assert policy.privacy.max_epsilon_per_job == 2.5 and policy.privacy.max_delta == 1e-6
    assert policy.aggregators.endpoints == ["agg.consortium.org:443"]
    # Everything not set keeps the safe default.
    assert policy.secure_aggregation.required and policy.mutual_tls.required
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert "--site-policy=/etc/fedkube-site/policy.yaml" in container["args"]
    assert "--data-namespace=research-*" in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "site-policy")
    assert mount == {"name": "site-policy", "mountPath": "/etc/fedkube-site", "readOnly": True}
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "site-policy")
    assert volume["configMap"]["name"] == "fedkube-site-policy"
    before = pod["metadata"]["annotations"]["checksum/site-policy"]
    relaxed = render("--set", "site.policy.mutualTls.required=false")
    after = next(d for d in relaxed if d["kind"] == "Deployment")["spec"]["template"]
    assert after["metadata"]["annotations"]["checksum/site-policy"] != before
    # The default install: the default policy, no namespace may read data.
    default = next(d for d in rendered() if d["metadata"]["name"] == "fedkube-site-policy")
    assert parse_site_policy(yaml.safe_load(default["data"]["policy.yaml"]), "CM") == SitePolicy()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("site.policy.privacy.required=maybe", "at '/site/policy/privacy/required'"),
        ("site.policy.privacy.maxEpsilon=3", "additional properties 'maxEpsilon' not allowed"),
        ("site.policy.secureAggregation.minThreshold=1", "at '/site/policy/secureAggregation"),
        ("site.data.namespaces[0]=", "at '/site/data/namespaces/0'"),
    ],
)
def test_the_schema_refuses_a_wrong_policy_setting(value: str, message: str) -> None:
    out = helm("template", "fedkube", CHART, "--set", value)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_the_charts_metadata_names_what_a_catalogue_shows() -> None:
    from fedkube.proto import PROTOCOL_VERSION

    chart = yaml.safe_load((Path(CHART) / "Chart.yaml").read_text())
    assert "kubeVersion" not in chart  # helm template without a cluster would refuse it
    assert chart["home"].startswith("https://") and chart["sources"]
    assert "federated-learning" in chart["keywords"]
    assert chart["annotations"]["fedkube.io/protocol"] == str(PROTOCOL_VERSION)


def test_a_platform_team_adds_labels_annotations_arguments_and_its_own_service_account() -> None:
    docs = rendered(
        "commonLabels.team=ml-platform",
        "operator.podLabels.tier=clinical",
        "operator.podAnnotations.cost-centre=ward-7",
        "operator.extraArgs={--verbose}",
        "operator.extraEnv[0].name=HTTPS_PROXY",
        "operator.extraEnv[0].value=http://proxy.ward:3128",
        "serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account=fedkube@p.iam",
    )
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        if doc["kind"] != "CustomResourceDefinition":
            assert labels.get("team") == "ml-platform", (doc["kind"], doc["metadata"]["name"])
            assert labels.get("helm.sh/chart", "").startswith("fedkube-"), doc["kind"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["tier"] == "clinical"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    assert pod["metadata"]["annotations"]["cost-centre"] == "ward-7"
    # The selector stays what it was: an upgrade that adds labels keeps the same pods' owner.
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "fedkube",
        "app.kubernetes.io/instance": "fedkube",
    }
    container = pod["spec"]["containers"][0]
    assert container["args"][-1] == "--verbose"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy.ward:3128"} in container["env"]
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert account["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": "fedkube@p.iam"}
    # The site's own ServiceAccount: none made, the roles still bound to it.
    own = rendered("serviceAccount.create=false", "serviceAccount.name=ward-operator")
    assert not [d for d in own if d["kind"] == "ServiceAccount"]
    bindings = [d for d in own if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert bindings and all(
        any(s.get("name") == "ward-operator" for s in b["subjects"])
        for b in bindings
        if any(s.get("kind") == "ServiceAccount" for s in b["subjects"])
    )
    bad = helm("template", "fedkube", CHART, "--set", "operator.extraArgs={verbose}")
    assert bad.returncode != 0 and "/operator/extraArgs/0" in bad.stderr
    # A parent chart's globals pass through the strict schema (the chart as a dependency).
    assert rendered("global.storageClass=fast", "global.security.allowInsecureImages=true")


def test_the_chart_installs_as_a_dependency_of_another(tmp_path: Path) -> None:
    """An umbrella chart (a platform team's) that takes fedkube as a dependency: helm hands it
    the parent's globals, which the strict schema lets through."""
    parent = tmp_path / "platform"
    parent.mkdir()
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: platform\nversion: 1.0.0\ndependencies:\n"
        f"  - name: fedkube\n    version: 0.1.0\n    repository: file://{CHART}\n"
    )
    (parent / "values.yaml").write_text(
        "global:\n  imageRegistry: mirror.ward.local\n  storageClass: fast\n"
        "fedkube:\n  commonLabels: {team: platform}\n"
    )
    built = helm("dependency", "build", str(parent))
    assert built.returncode == 0, built.stderr
    out = helm("template", "platform", str(parent), "--namespace", "fedkube-system")
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "mirror.ward.local/fedkube/operator:0.1.0"
    assert deployment["metadata"]["labels"]["team"] == "platform"
