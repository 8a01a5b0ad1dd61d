"""Programs that run on a gateway beside its tunnels (started by a target as node
processes): today the failover agent (:mod:`polynimbus.agent.failover`)."""
