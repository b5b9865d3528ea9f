"""The kopf operator that turns StreamingDeployment resources into WML stream deployments."""
