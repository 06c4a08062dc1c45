"""The API server's own checks of a FederatedJob across its fields (CEL rules in the CRD):
a job that breaks one is refused by `kubectl apply`, with the message and the field named.
pydantic checks the same (and more) in JobSpec's validators, for `fedkube run`."""

from __future__ import annotations

from pydantic import ConfigDict

from fedkube.spec.base import cel

JOB_RULES: ConfigDict = cel(
    (
        "!has(self.minSitesPerRound) || self.minSitesPerRound <= size(self.sites)",
        "minSitesPerRound must not exceed the number of sites",
        ".minSitesPerRound",
    ),
    (
        "!has(self.sitesPerRound) || (self.sitesPerRound <= size(self.sites) && "
        "(!has(self.minSitesPerRound) || self.minSitesPerRound <= self.sitesPerRound))",
        "sitesPerRound must lie between minSitesPerRound and the number of sites",
        ".sitesPerRound",
    ),
    (
        "(has(self.security) && has(self.security.mutualTls)) || "
        "(!self.sites.exists(s, has(s.remote) && s.remote) && "
        "!(has(self.aggregator) && has(self.aggregator.endpoint)))",
        "security.mutualTls is required when a site is remote or aggregator.endpoint is "
        "set: updates cross networks between organisations",
        ".security",
    ),
    (
        "!has(self.security) || !has(self.security.secureAggregation) || "
        "!has(self.security.secureAggregation.threshold) || "
        "2 * self.security.secureAggregation.threshold > size(self.sites)",
        "security.secureAggregation.threshold must be above half the number of sites",
        ".security.secureAggregation.threshold",
    ),
    (
        "!has(self.communication) || !has(self.communication.uplink) || "
        "!has(self.communication.uplink.codec) || self.communication.uplink.codec == 'none' "
        "|| !has(self.security) || (!has(self.security.secureAggregation) && "
        "!has(self.security.robustAggregation) && !has(self.security.updateNormBound))",
        "communication.uplink.codec must be none with security.secureAggregation, "
        "robustAggregation or updateNormBound",
        ".communication.uplink.codec",
    ),
)
