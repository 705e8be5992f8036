"""The secrets webhook deliveries are signed with.

Configured ones (BATCHQ_WEBHOOK_SECRET, BATCHQ_WEBHOOK_SECRETS) when there are any: every
delivery carries one signature per secret, so a receiver can move from one to the next
without a gap. With none configured there is no default to guess: the store keeps a secret
generated once for the installation (the first replica to ask makes it, the others read
it), shown to admin keys by GET /v1/webhook-secret.
"""
from __future__ import annotations

import base64
import os
import time

from app.config import Settings
from app.store.capabilities import Installation

GENERATED = "webhook_secret"  # its name in the store
REREAD_S = 60.0  # how long a process trusts the generated secret it read (a store restored from a backup may hold another)


def generate_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class SigningSecrets:
    def __init__(self, settings: Settings, installation: Installation):
        self.configured = settings.signing_secrets
        self.installation = installation
        self._generated: str | None = None
        self._read_at = 0.0

    @property
    def generated(self) -> bool:
        """True when deliveries are signed with the installation's generated secret."""
        return not self.configured

    async def current(self) -> list[str]:
        if self.configured:
            return self.configured
        if self._generated is None or time.monotonic() - self._read_at > REREAD_S:
            self._generated = await self.installation.installation_value(GENERATED, generate_secret)
            self._read_at = time.monotonic()
        return [self._generated]
