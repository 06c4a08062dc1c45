"""Every error fedkube raises on purpose, in one tree.

    FedkubeError                      base; ``str()`` says what was wrong, where, and what to do
    ├── SpecError                     the job manifest is invalid (carries one line per problem)
    │   └── SiteSettingsError         a site's own settings file is (Helm values the operator reads)
    ├── DataError                     a site's data cannot be loaded (names site, file, column)
    ├── ModelError                    a model or training plug-in cannot be built or imported
    ├── CheckpointError               a checkpoint is unreadable or belongs to another job
    ├── UpdateRefused                 the aggregator refused a message; ``status`` names the reason
    │   ├── UnknownSite               the sender is not a site of this job
    │   ├── ProtocolMismatch          the trainer speaks another protocol version
    │   ├── RoundClosed               the round named is not the open one
    │   ├── DuplicateUpdate           the site already sent its update for this round
    │   └── InvalidUpdate             wrong tensors, shapes, dtypes or non-finite values
    ├── AggregatorUnavailable         the aggregator cannot be reached right now (reconnect)
    ├── TlsError                      a TLS folder is incomplete, or clear text was not asked for
    ├── SecureAggregationError        a secure-aggregation message breaks the protocol
    ├── PrivacyBudgetExhausted        another round would take a site past its epsilon cap
    ├── SiteRefused                   the site refuses the job on its own data's budget
    ├── OutputError                   a job's output folder lacks a file or one does not parse
    ├── MissingExtra                  a command needs an optional extra that is not installed
    └── JobFailed                     the job cannot complete (no quorum, aggregator gave up)

Retry policy: ``UpdateRefused`` is final for that message; ``JobFailed`` is final for the job;
the others are fixed by changing the input the message names.
"""

from __future__ import annotations

from collections.abc import Sequence


class FedkubeError(Exception):
    """Base of every error fedkube raises on purpose."""


class SpecError(FedkubeError):
    """The manifest is invalid. ``problems`` holds one ``field.path: message`` line each."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{source}: the job manifest is invalid ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n{lines}\n"
            "Fix the fields named above and run `fedkube validate` again."
        )


class SiteSettingsError(SpecError):
    """A file of the site admin's (its policy, its job pods' defaults) is invalid."""

    def __init__(self, source: str, problems: Sequence[str], *, values: str) -> None:
        super().__init__(source, problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        self.args = (
            f"{source}: the site's settings are invalid ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n{lines}\n"
            f"Fix them in the chart's {values} values (or the file) and start again.",
        )


class DataError(FedkubeError):
    """A site's data cannot be loaded or split."""

    def __init__(self, site: str, message: str, *, path: str | None = None) -> None:
        self.site = site
        self.path = path
        where = f"site {site!r}" + (f", file {path}" if path else "")
        super().__init__(f"{where}: {message}")


class ModelError(FedkubeError):
    """A model factory or training plug-in cannot be imported or built."""


class CheckpointError(FedkubeError):
    """A checkpoint cannot be read, or it was written for another job."""


class UpdateRefused(FedkubeError):
    """The aggregator refused a message. ``status`` is the gRPC status name it maps to."""

    status = "FAILED_PRECONDITION"

    def __init__(self, message: str, *, site: str = "", round: int = 0) -> None:
        self.site = site
        self.round = round
        super().__init__(message)


class UnknownSite(UpdateRefused):
    status = "PERMISSION_DENIED"


class ProtocolMismatch(UpdateRefused):
    status = "FAILED_PRECONDITION"


class RoundClosed(UpdateRefused):
    status = "FAILED_PRECONDITION"


class DuplicateUpdate(UpdateRefused):
    status = "ALREADY_EXISTS"


class InvalidUpdate(UpdateRefused):
    status = "INVALID_ARGUMENT"


class AggregatorUnavailable(FedkubeError):
    """The aggregator could not be reached, or went away mid-call: try again later."""


class TlsError(FedkubeError):
    """A TLS folder is missing a file, or clear text was asked for where it is not allowed."""


class SecureAggregationError(FedkubeError):
    """A secure-aggregation message breaks the protocol: a roster without this site's own
    keys, a share that does not decrypt or disagrees with the others, a request to reveal
    both secrets of one site. The round cannot go on safely; the message is not answered."""


class PrivacyBudgetExhausted(FedkubeError):
    """Another round would spend more than the site's epsilon cap: the site stops here."""


class OutputError(FedkubeError):
    """A job's output folder lacks a file, or holds one that does not parse."""


class MissingExtra(FedkubeError):
    """What was asked needs an optional extra of the package that is not installed."""

    def __init__(self, extra: str, what: str) -> None:
        self.extra = extra
        super().__init__(f"{what} need the {extra} extra: pip install 'fedkube[{extra}]'")


class FetchError(FedkubeError):
    """A finished job's output could not be fetched off the cluster (`fedkube fetch`)."""


class SiteRefused(FedkubeError):
    """The site refuses this job on what only the site can see: the job would take one of its
    datasets past the privacy budget the site set for it, or the site's ledger of that
    dataset cannot be read. Nothing was trained or sent; retrying will not help."""


class JobFailed(FedkubeError):
    """The job cannot complete."""
