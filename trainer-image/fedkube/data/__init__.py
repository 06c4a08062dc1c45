"""Site data: scikit-learn datasets split into simulated sites, or a site's own file."""

from fedkube.data.site_data import SiteData, load_site_data

__all__ = ["SiteData", "load_site_data"]
