"""The v3 REST API: identity, instances and published models, deployments."""
