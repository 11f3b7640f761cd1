"""The metrics.k8s.io HTTP surface: routes, content negotiation, Status errors, discovery and
OpenAPI documents, and the authentication/authorization slot (`api.hooks`)."""
