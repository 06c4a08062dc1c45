"""A site's trainer: local training (torch) and the client that talks to the aggregator."""
