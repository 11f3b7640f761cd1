"""API-server access: credentials, an aiohttp client, a list+watch reflector, discovery."""

from kubemetrics.kube.client import (
    ApiClient,
    ApiConnectionError,
    ClusterCredentials,
    TokenSource,
    load_credentials,
    load_incluster_credentials,
    load_kubeconfig_credentials,
)
from kubemetrics.kube.discovery import (
    Discovery,
    DiscoverySettings,
    NodeTarget,
)
from kubemetrics.kube.reflector import Reflector, ReflectorHandler, ReflectorSettings

__all__ = [
    "ApiClient",
    "ApiConnectionError",
    "ClusterCredentials",
    "Discovery",
    "DiscoverySettings",
    "NodeTarget",
    "Reflector",
    "ReflectorHandler",
    "ReflectorSettings",
    "TokenSource",
    "load_credentials",
    "load_incluster_credentials",
    "load_kubeconfig_credentials",
]
