"""The PublishedModel resource: a model declared in Git (a URL with its digest, a ConfigMap, or an existing id)
and published to WML through the v3 repository API."""
