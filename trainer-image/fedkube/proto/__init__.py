"""The wire protocol: messages and service generated from ``fedkube.proto``."""

# Raised whenever a message or a stage changes meaning, so a trainer and an aggregator of
# different releases refuse each other at Subscribe instead of misreading a round.
# 2: the next round's key exchange rides on the masked update and the reveal.
# 3: RoundRef in every message about a round, a Codec enum, one Receipt, stages in order.
# 4: round 0, the federated statistics: SCHEMA and STATISTICS stages, the agreed preprocessing.
# 5: signed secure-aggregation keys, and the CONSISTENCY stage (SignSurvivors) before UNMASK.
# 6: evaluations as counts in a private job: masked with the update, or noised; the final
#    evaluation under secure aggregation is a secure round of counts (scores_only); the
#    aggregator proves its certificate unrevoked to every site (ProveIdentity).
# 7: the consistency signature covers the model's digest; a share that does not open is
#    named with the masked update (unopened_shares) and one side of the dispute taken out,
#    not the round; reveals carry the pair seeds of dropped sites (pair_seeds).
PROTOCOL_VERSION = 7
