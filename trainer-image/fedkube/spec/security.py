"""What protects the sites: robust aggregation, secure aggregation, mutual TLS, and
differential privacy at the update and the record level."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fedkube.spec.base import DNS_SUBDOMAIN, _Model, cel


class RobustAggregationSpec(_Model):
    """Aggregation that a few bad or poisoned sites cannot steer."""

    model_config = cel(
        (
            "self.method != 'multi_krum' || !has(self.selected) || self.selected >= 1",
            "selected must be at least 1",
            ".selected",
        )
    )

    method: Literal["median", "trimmed_mean", "multi_krum"] = Field(
        description="median: coordinate-wise median; trimmed_mean: drop the trimFraction "
        "highest and lowest values of each coordinate; multi_krum: average the updates "
        "closest to their neighbours (Blanchard et al. 2017)."
    )
    trim_fraction: float = Field(default=0.2, ge=0, lt=0.5, description="trimmed_mean.")
    byzantine_sites: int = Field(
        default=1, ge=0, le=500, description="multi_krum: how many bad sites to withstand."
    )
    selected: int | None = Field(
        default=None, ge=1, le=1000, description="multi_krum: updates averaged (default n - f)."
    )


class SecureAggregationSpec(_Model):
    """Secure aggregation (Bonawitz et al. 2017): sites mask their updates so that the
    aggregator can unmask only their sum."""

    threshold: int | None = Field(
        default=None,
        ge=2,
        le=1000,
        description="Sites whose shares are needed to unmask a round's sum; a round with fewer "
        "survivors fails. Default: a majority of the sites (at least 2).",
    )
    clip_range: float = Field(
        default=8.0,
        gt=0,
        le=1e6,
        description="Update values are clipped to [-clipRange, clipRange] before fixed-point "
        "encoding; the resolution is clipRange / 2^30.",
    )

    def threshold_for(self, sites: int) -> int:
        return self.threshold if self.threshold is not None else max(2, sites // 2 + 1)


class MutualTlsSpec(_Model):
    """On Kubernetes: mutual TLS between the trainers and the aggregator, each pod mounting a
    Secret with ca.crt, tls.crt and tls.key (as `fedkube certs` writes them). Without it the
    operator runs the in-cluster traffic in clear text."""

    aggregator_secret_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="The aggregator's Secret; default <job>-aggregator-tls.",
    )
    site_secret_names: dict[str, Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]] = (
        Field(
            default_factory=dict,
            description="Site name to its Secret; a site not listed uses <job>-<site>-tls.",
        )
    )

    consortium: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The consortium every certificate must name (its organisation, as "
        "`fedkube certs --consortium` writes it): a certificate of another consortium is "
        "refused, even from the same CA. Default: any the CA issued.",
    )

    def aggregator_secret(self, job: str) -> str:
        return self.aggregator_secret_name or f"{job}-aggregator-tls"

    def site_secret(self, job: str, site: str) -> str:
        return self.site_secret_names.get(site, f"{job}-{site}-tls")


class SecuritySpec(_Model):
    model_config = cel(
        (
            "!has(self.secureAggregation) || !has(self.robustAggregation)",
            "robustAggregation needs every update in the clear, which secureAggregation hides "
            "from the aggregator; choose one",
            ".robustAggregation",
        ),
        (
            "!has(self.secureAggregation) || !has(self.updateNormBound)",
            "updateNormBound checks each update's norm, which the aggregator cannot see under "
            "secureAggregation; clip at the sites with privacy.updateLevel.clipNorm instead",
            ".updateNormBound",
        ),
    )

    update_norm_bound: float | None = Field(
        default=None,
        gt=0,
        le=1e12,
        description="Refuse an update whose L2 norm is above this (a broken or hostile site).",
    )
    weighting: Literal["samples", "equal"] = Field(
        default="samples",
        description="How the sites' updates are averaged: by the samples each claims "
        "(bounded by sites[].maxSamples and round 0), or equally, whatever a site claims (with "
        "updateNormBound, one site's pull on the model is then bounded by the norm alone).",
    )
    robust_aggregation: RobustAggregationSpec | None = None
    secure_aggregation: SecureAggregationSpec | None = None
    mutual_tls: MutualTlsSpec | None = None

    @model_validator(mode="after")
    def _secure_aggregation_alone(self) -> SecuritySpec:
        if self.secure_aggregation and self.robust_aggregation:
            raise ValueError(
                f"robustAggregation ({self.robust_aggregation.method}) needs every update in "
                "the clear, which secureAggregation hides from the aggregator; choose one"
            )
        if self.secure_aggregation and self.update_norm_bound is not None:
            raise ValueError(
                "updateNormBound checks each update's norm, which the aggregator cannot see "
                "under secureAggregation; clip at the sites with privacy.updateLevel.clipNorm "
                "instead"
            )
        return self


class AdaptiveClippingSpec(_Model):
    """The clip norm follows a quantile of the updates' norms (Andrew et al. 2021)."""

    target_quantile: float = Field(
        default=0.5, gt=0, lt=1, description="Share of updates the clip should leave whole."
    )
    learning_rate: float = Field(
        default=0.2, gt=0, le=10, description="Geometric step of the clip norm per round."
    )
    count_stddev: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="Noise on the count of unclipped updates; default spends a tenth of "
        "the privacy on it.",
    )


class UpdateLevelPrivacySpec(_Model):
    """DP-FedAvg: each update clipped to clipNorm, Gaussian noise (noiseMultiplier x clipNorm)
    added to their sum. Protects each site's whole contribution (site-level DP)."""

    clip_norm: float = Field(
        gt=0, le=1e6, description="The clip norm, or its first value with adaptiveClipping."
    )
    noise_multiplier: float = Field(
        ge=0, le=1000, description="The noise's standard deviation over the clip norm."
    )
    delta: float = Field(default=1e-5, gt=0, lt=1, description="The delta epsilon is reported at.")
    adaptive_clipping: AdaptiveClippingSpec | None = None

    @model_validator(mode="after")
    def _count_noise_fits(self) -> UpdateLevelPrivacySpec:
        given = self.adaptive_clipping.count_stddev if self.adaptive_clipping else None
        if (
            given is not None
            and self.noise_multiplier > 0
            and 2 * given * self.noise_multiplier <= 1
        ):
            raise ValueError(
                f"adaptiveClipping.countStddev {given:g} leaves no privacy for the updates at "
                f"noiseMultiplier {self.noise_multiplier:g}; raise it above "
                f"{1 / (2 * self.noise_multiplier):g} or leave it out"
            )
        return self


class RecordLevelPrivacySpec(_Model):
    """DP-SGD at each site (Opacus): protects each record (patient) in a site's data."""

    noise_multiplier: float = Field(
        gt=0, le=1000, description="The noise's standard deviation over maxGradNorm."
    )
    max_grad_norm: float = Field(gt=0, le=1e6, description="Per-example gradient clip.")
    delta: float = Field(default=1e-5, gt=0, lt=1, description="The delta epsilon is reported at.")
    epsilon_cap: float | None = Field(
        default=None,
        gt=0,
        description="A site stops before a round would take it past this; a site's own "
        "`fedkube trainer --epsilon-cap`, if lower, wins.",
    )


class PrivacySpec(_Model):
    update_level: UpdateLevelPrivacySpec | None = None
    record_level: RecordLevelPrivacySpec | None = None
