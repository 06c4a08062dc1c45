"""The aggregator: the round engine, its gRPC service, checkpoints, metrics and outputs."""
