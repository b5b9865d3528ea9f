"""The self-hosted WML v3 service that really runs stream deployments on Kafka."""
