"""Differential privacy: accountants (thin state over a maintained library's maths) and
update-level DP-FedAvg."""
