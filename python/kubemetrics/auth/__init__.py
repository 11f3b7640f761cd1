"""Delegated authentication and authorization, and the serving TLS they depend on (SPEC §5).

`start_security()` builds the whole slot from the validated `Config` and the API clients:
the authentication sources (flags + the watched `extension-apiserver-authentication`
ConfigMap), the authenticator chain and the delegating authorizer for `api.routes`; then
`serving_tls()` gives the listener a TLS context that follows the serving files and the CAs.

TokenReviews and SubjectAccessReviews each get a connection pool of their own (neither shares
one with the other, nor with the reflectors' list+watch) sized to their budget's concurrency
(`auth.throttle`): a flood of one kind cannot stall the other, nor discovery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubemetrics.auth.authn import (
    AuthenticatorChain,
    CABundle,
    ClientCertAuthenticator,
    RequestHeaderAuthenticator,
    RequestHeaderConfig,
    TokenReviewAuthenticator,
)
from kubemetrics.auth.authz import DelegatingAuthorizer
from kubemetrics.auth.delegation import AuthConfigError, DelegatedAuthentication
from kubemetrics.auth.throttle import ReviewBudget, collect_reviews
from kubemetrics.auth.tls import DynamicServingTLS, TLSConfigError, build_context
from kubemetrics.config import Config, ConfigError
from kubemetrics.kube.client import ApiClient, load_credentials
from kubemetrics.selfmetrics import MetricWriter

__all__ = [
    "AuthConfigError",
    "AuthenticatorChain",
    "CABundle",
    "DelegatedAuthentication",
    "DelegatingAuthorizer",
    "DynamicServingTLS",
    "RequestHeaderConfig",
    "Security",
    "TLSConfigError",
    "TokenReviewAuthenticator",
    "build_context",
    "start_security",
]


@dataclass
class Security:
    sources: DelegatedAuthentication
    authenticator: AuthenticatorChain
    authorizer: DelegatingAuthorizer
    tokens: TokenReviewAuthenticator
    tls: DynamicServingTLS | None = None
    clients: list[ApiClient] = field(default_factory=list)  # opened here, closed by close()

    def collect(self, w: MetricWriter) -> None:
        """The review budgets, for /metrics."""
        collect_reviews(w, [self.tokens.budget, self.authorizer.budget])

    @property
    def requests_client_certs(self) -> bool:
        """Whether client certificates can ever be trusted (a CA flag, or the ConfigMap)."""
        cfg = self.sources
        return cfg.uses_configmap or bool(cfg.client_ca() or cfg.request_header())

    def serving_tls(self, config: Config, cert_file: str, key_file: str) -> DynamicServingTLS:
        """The listener's TLS, trusting the current CAs and rebuilt when they change."""
        tls = DynamicServingTLS(
            config.serving,
            cert_file,
            key_file,
            client_cas=self.sources.trusted_pem,
            request_client_certs=self.requests_client_certs,
        )
        self.sources.listeners.append(tls.client_cas_changed)
        self.tls = tls
        return tls

    async def close(self) -> None:
        if self.tls is not None:
            await self.tls.close()
        await self.sources.close()
        for client in self.clients:
            await client.close()


async def start_security(config: Config, client: ApiClient) -> Security:
    """The security slot for `config`; `client` is the server's own (`--kubeconfig`) client,
    reused when `--authentication-kubeconfig`/`--authorization-kubeconfig` name the same file.

    Raises AuthConfigError when a kubeconfig or the authentication configuration cannot be
    loaded (and the failure is not tolerated).
    """
    opened: list[ApiClient] = []
    by_path: dict[str | None, ApiClient] = {config.kubeconfig: client}

    async def client_for(path: str | None, what: str) -> ApiClient:
        if path not in by_path:
            try:
                creds = await load_credentials(path)
            except ConfigError as e:
                raise AuthConfigError(f"cannot load the {what} kubeconfig: {e}") from e
            by_path[path] = ApiClient(creds, user_agent="kubemetrics/auth")
            opened.append(by_path[path])
        return by_path[path]

    try:
        authn_client = await client_for(config.authn_kubeconfig, "authentication")
        authz_client = await client_for(config.authz_kubeconfig, "authorization")
        sources = DelegatedAuthentication(config.authn, authn_client)
        await sources.start()
    except BaseException:
        for c in opened:
            await c.close()
        raise
    token_budget = ReviewBudget("tokenreviews")
    access_budget = ReviewBudget("subjectaccessreviews")
    # Pools of their own (same credentials): reviews never wait behind the reflectors' lists
    # or behind each other.
    token_client = ApiClient(
        authn_client.creds,
        user_agent="kubemetrics/tokenreviews",
        connections=token_budget.concurrency,
    )
    access_client = ApiClient(
        authz_client.creds,
        user_agent="kubemetrics/subjectaccessreviews",
        connections=access_budget.concurrency,
    )
    opened += [token_client, access_client]
    tokens = TokenReviewAuthenticator(
        token_client, config.authn.token_webhook_cache_ttl, budget=token_budget
    )
    chain = AuthenticatorChain(
        [
            RequestHeaderAuthenticator(sources.request_header),
            ClientCertAuthenticator(sources.client_ca),
            tokens,
        ]
    )
    authorizer = DelegatingAuthorizer(
        access_client,
        always_allow_groups=config.authz.always_allow_groups,
        always_allow_paths=config.authz.always_allow_paths,
        allowed_ttl=config.authz.cache_authorized_ttl,
        denied_ttl=config.authz.cache_unauthorized_ttl,
        budget=access_budget,
    )
    return Security(sources, chain, authorizer, tokens, clients=opened)
