"""The schema check before round one: every site's columns against the manifest's
task.features, or against each other, and the label vocabulary from what the sites report.
Only column names, types and label values are compared, never a value of a row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedkube.spec.job import JobSpec


@dataclass(frozen=True)
class ReportedSchema:
    columns: dict[str, str]  # name -> type, in the file's order
    labels: list[str]  # empty under secure aggregation


def label_order(values: set[str]) -> list[str]:
    """Label values in their natural order: numerically when every one is a number."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def feature_columns(spec: JobSpec, site: str, schema: ReportedSchema) -> list[str]:
    """The columns a site reads as features, in order."""
    if spec.task.features:
        return [f.name for f in spec.task.features]
    data = spec.site(site).data
    if data is not None and data.file is not None:
        if data.file.feature_columns:
            return list(data.file.feature_columns)
        return [c for c in schema.columns if c != data.file.label_column]
    return list(schema.columns)[:-1]  # sklearn sources: the target comes last


def schema_problems(spec: JobSpec, schemas: Mapping[str, ReportedSchema]) -> list[str]:
    """Each problem names the site and the column; empty when the sites agree."""
    problems: list[str] = []
    wanted = {s: feature_columns(spec, s, schema) for s, schema in schemas.items()}
    types = {f.name: f.type for f in spec.task.features or []}
    width, _ = spec.input_shape()
    for site in sorted(schemas):
        columns, features = schemas[site].columns, wanted[site]
        data = spec.site(site).data
        label = data.file.label_column if data is not None and data.file is not None else None
        if label is not None and label not in columns:
            problems.append(f"site {site}: the label column {label!r} is not in its file")
        expected = features if types else _expected_here(site, wanted)
        for name in expected:
            kind = columns.get(name)
            if kind is None:
                others = sorted(o for o in schemas if o != site and name in schemas[o].columns)
                where = "task.features lists it" if types else f"sites {', '.join(others)} have it"
                problems.append(f"site {site}: column {name!r} is missing from its file ({where})")
            elif kind in ("string", "boolean"):
                problems.append(
                    f"site {site}: column {name!r} holds {'text' if kind == 'string' else kind}"
                    " where numbers belong"
                )
            elif types.get(name) == "integer" and kind != "integer":
                problems.append(
                    f"site {site}: column {name!r} holds {kind}s where task.features says integer"
                )
    if not types:
        problems += _order_problems(wanted)
        if not problems:
            problems += [
                f"site {site}: its file has {len(f)} feature columns, task.numFeatures is {width}"
                for site, f in sorted(wanted.items())
                if len(f) != width
            ]
    return problems


def _expected_here(site: str, wanted: Mapping[str, Sequence[str]]) -> list[str]:
    """Without task.features: this site's columns, and those every other site has."""
    others = [set(f) for s, f in wanted.items() if s != site]
    shared = set.intersection(*others) if others else set()
    return [*wanted[site], *sorted(shared - set(wanted[site]))]


def _order_problems(wanted: Mapping[str, Sequence[str]]) -> list[str]:
    """Without task.features the columns are read in each file's order: it must agree."""
    sites = sorted(wanted)
    if not sites:
        return []
    first = sites[0]
    out = []
    for site in sites[1:]:
        shared = [c for c in wanted[site] if c in wanted[first]]
        mine = [c for c in wanted[first] if c in wanted[site]]
        if shared != mine:
            at = next(i for i, (a, b) in enumerate(zip(shared, mine, strict=True)) if a != b)
            out.append(
                f"site {site}: column {shared[at]!r} comes where site {first} has {mine[at]!r}; "
                "give the columns' order in task.features"
            )
        extra = [c for c in wanted[site] if all(c not in wanted[o] for o in sites if o != site)]
        if extra and len(sites) > 1:
            out.append(f"site {site}: column {extra[0]!r} is in no other site's file")
    return out


def label_vocabulary(
    spec: JobSpec, schemas: Mapping[str, ReportedSchema]
) -> tuple[list[str], list[str]]:
    """(the labels, class 0 first; problems naming the site and the label)."""
    _, classes = spec.input_shape()
    numbers = [str(i) for i in range(classes)]
    if spec.task.labels:
        agreed = list(spec.task.labels)
        problems = [
            f"site {site}: label {label!r} is not in task.labels"
            for site in sorted(schemas)
            for label in schemas[site].labels
            if label not in agreed
        ]
        return agreed, problems
    seen = {label for s in schemas.values() for label in s.labels}
    if seen <= set(numbers):
        return numbers, []
    if len(seen) == classes:
        return label_order(seen), []
    return numbers, [
        f"the sites' labels are {len(seen)} values ({', '.join(label_order(seen)[:10])}) but "
        f"task.numClasses is {classes}; list the labels in task.labels"
    ]
