"""Which paths stay open when API keys are required, and the CORS configuration BentoML's own middleware applies
(inside the request guard, so that preflights and 401s reach browsers of the allowed origins)."""

from __future__ import annotations

from typing import Any

# Open whatever the keys: the probes, the page, BentoML's Swagger page and its assets (they hold no data; the
# document they show is /docs.json).
ALWAYS_OPEN = frozenset({"/livez", "/readyz", "/healthz", "/ui", "/ui/", "/", "/static_content/"})


def open_paths(metrics_auth: bool, docs_auth: bool) -> frozenset[str]:
    return ALWAYS_OPEN | ({"/metrics"} if not metrics_auth else set()) | ({"/docs.json"} if not docs_auth else set())


def cors(origins: tuple[str, ...]) -> dict[str, Any]:
    """The service configuration that gives BentoML's `http.cors` settings for these origins (none: nothing)."""
    if not origins:
        return {}
    return {
        "http": {
            "cors": {
                "enabled": True,
                "access_control_allow_origins": list(origins),
                "access_control_allow_methods": ["GET", "POST", "OPTIONS"],
                "access_control_allow_headers": ["Authorization", "Content-Type", "X-Request-ID"],
                "access_control_expose_headers": ["X-Request-ID", "Retry-After", "WWW-Authenticate"],
                "access_control_max_age": 600,
            }
        }
    }
