"""The WML v3 contract shared by the operator and the service: wire models, errors, HTTP client."""
