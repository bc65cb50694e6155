"""What every resource of a setup is: read it, say how it differs from the plan (drift), write it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backfill.setup.aws import Clients
from backfill.setup.model import SetupConfig, Side


@dataclass
class Context:
    cfg: SetupConfig
    clients: Clients
    mfa: str | None = None  # "SERIAL CODE" for MFA Delete
    role_created: bool = False  # a new role takes a few seconds to be usable as a principal


class Resource:
    key = ""
    needs: tuple[str, ...] = ()

    def __init__(self, side: Side, label: str) -> None:
        self.side = side
        self.label = label  # what check calls it

    async def read(self, ctx: Context) -> Any:
        raise NotImplementedError

    def drift(self, ctx: Context, current: Any) -> list[str]:
        raise NotImplementedError

    async def write(self, ctx: Context, current: Any) -> str:
        """Make it as planned: "created" or "updated" ("unchanged" if someone else just did)."""
        raise NotImplementedError

    async def call(self, ctx: Context, service: str, op: str, *, action: str, what: str = "", **kw: Any) -> Any:
        return await ctx.clients.call(self.side, service, op, action=action, what=what or self.label, **kw)
