"""API front ends: one module per API, each mapping its requests onto the pipeline's stages and the
stages' output onto its own shapes, and contributing its HTTP routes (see :mod:`smg.api.base`)."""
from __future__ import annotations

from typing import NamedTuple

from smg.api import admin, anthropic, openai_chat, openai_completions, responses, service
from smg.api.base import OPENAI_ERRORS, ErrorShape, Handler

FRONTENDS = (openai_chat, openai_completions, responses, anthropic, service, admin)


class Route(NamedTuple):
    handler: Handler
    errors: ErrorShape
    admin: bool = False  # the admin key opens it (smg.api.admin), not an API key


class Router:
    """``(method, path) -> Route`` over every front end's ``ROUTES``: exact paths by one dict
    lookup (the generation routes), paths with ``{name}`` segments by segment match."""

    def __init__(self, frontends=FRONTENDS) -> None:
        self.exact: dict[tuple[str, str], Route] = {}
        self.patterns: list[tuple[str, tuple[str, ...], Route]] = []
        for module in frontends:
            errors = getattr(module, "ERRORS", OPENAI_ERRORS)
            admin_only = getattr(module, "ADMIN", False)
            for (method, path), handler in module.ROUTES.items():
                route = Route(handler, errors, admin_only)
                if "{" in path:
                    self.patterns.append((method, tuple(path.strip("/").split("/")), route))
                else:
                    self.exact[(method, path)] = route
        self.paths = {path for _, path in self.exact}

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """The route, its path parameters, and whether the path exists for another method (405)."""
        route = self.exact.get((method, path))
        if route is not None:
            return route, {}, False
        segments = path.strip("/").split("/")
        known = path in self.paths
        for want_method, pattern, route in self.patterns:
            if len(pattern) != len(segments):
                continue
            params = {}
            for want, got in zip(pattern, segments):
                if want[0] == "{":
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                if want_method == method:
                    return route, params, False
                known = True
        return None, {}, known

