"""The fedkube operator: a thin kopf shell over pure functions that turn a FederatedJob into
the pods that run it and the status that reports it. It never imports torch."""
