"""An example for each command's --help, in one place: `fedkube run --help` ends with one
that works as written (the paths are the examples `fedkube examples` writes out)."""

from __future__ import annotations

import argparse

EXAMPLES: dict[str, str] = {
    "run": "fedkube run ex/breast-cancer.yaml\n"
    "  fedkube run ex/breast-cancer.yaml --output runs/bc --json > result.json\n"
    "  fedkube run ex/breast-cancer.yaml --tensorboard runs/tb && tensorboard --logdir runs/tb",
    "stats": "fedkube stats ex/breast-cancer.yaml --output runs/bc-stats",
    "predict": "fedkube predict --model runs/breast-cancer --data new-patients.csv",
    "evaluate": "fedkube evaluate --model runs/breast-cancer --data labelled.csv --json",
    "validate": "fedkube validate ex/breast-cancer.yaml\n"
    "  fedkube validate job.yaml --json | jq .problems",
    "examples": "fedkube examples ex && fedkube run ex/breast-cancer.yaml",
    "fetch": "fedkube fetch breast-cancer -n hospitals --to trained/",
    "tensorboard": "fedkube tensorboard trained/ --logdir runs/tb && tensorboard --logdir runs/tb",
    "serve-output": "(started by `fedkube fetch` in its helper pod, not by hand)",
    "aggregator": "(the aggregator pod's entry point; the operator writes its arguments)\n"
    "  fedkube aggregator --manifest job.yaml --port 7070 --http-port 9090 "
    "--allow-plaintext",
    "trainer": "(a trainer pod's entry point; the operator writes its arguments)\n"
    "  fedkube trainer --manifest job.yaml --site hospital-a --aggregator 127.0.0.1:7070 "
    "--allow-plaintext",
    "trainer-worker": "(a site's worker pod's entry point; the operator writes its arguments)\n"
    "  fedkube trainer-worker --manifest job.yaml --site hospital-a --rank 1 "
    "--rendezvous tcp://127.0.0.1:29400",
    "certs": "fedkube certs ca --out ca --consortium hospitals",
    "certs ca": "fedkube certs ca --out ca --consortium hospitals --days 730",
    "certs request": "fedkube certs request --name hospital-a --out hospital-a",
    "certs sign": "fedkube certs sign hospital-a/request.csr --ca-dir ca --name hospital-a "
    "--out hospital-a",
    "revoke": "fedkube revoke --ca-dir ca --cert hospital-b/tls.crt",
    "approve": "fedkube approve -n hospitals breast-cancer --site hospital-a --expires-in 30d",
    "audit": "fedkube audit verify /var/lib/fedkube-site/audit.jsonl",
    "audit verify": "fedkube audit verify audit.jsonl --head 3f9a...",
    "budget": "fedkube budget /var/lib/fedkube-site/datasets --cap 8",
    "completion": "source <(fedkube completion bash)    # in ~/.bashrc",
}


def subcommands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser by its words after `fedkube` ("certs sign")."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(subcommands(sub, f"{prefix}{name} "))
    return found


def add_examples(parser: argparse.ArgumentParser) -> None:
    for words, sub in subcommands(parser).items():
        example = EXAMPLES.get(words)
        if example is not None:
            sub.epilog = f"example:\n  {example}"
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
