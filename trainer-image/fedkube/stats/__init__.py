"""Federated statistics: what each site counts and sums, how the totals decode, and the
preprocessing the sites agree from them."""
