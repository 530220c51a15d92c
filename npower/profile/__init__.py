"""Building packs: sampling plans, single-node graphs, measurement backends, sample store."""
