"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for mail tests.

    with SmtpServer() as smtp:                    # listening on 127.0.0.1:<free port>
        settings = make_settings(tmp_path, smtp_url=smtp.url)
        ...
        message = await smtp.wait_for(lambda m: m["To"] == email)
        smtp.refuse = True                        # every mail now gets a 451

`stop()` takes the server down (connections refused), `start()` brings it back on the
same port.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from tests.server import free_port


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        if self.server.refuse:
            return "451 4.3.0 try again later"
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.server.received.append(message)
        return "250 OK"


class SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[EmailMessage] = []
        self.refuse = False
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        # aiosmtpd logs every received line at debug; the tests that read the service's
        # logs for secrets must not find the test server's own copy of the mail.
        logging.getLogger("mail.log").setLevel(logging.INFO)
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def wait_for(
        self, match: Callable[[EmailMessage], bool] = lambda m: True, timeout: float = 10.0
    ) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.received if match(m)]
            if found:
                return found[-1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no such mail arrived; got {[m['Subject'] for m in self.received]}")


def token_in(message: EmailMessage) -> str:
    """The reset token of a reset mail (the indented line of its body)."""
    found = re.search(r"^    (\S+)\r?$", message.get_content(), re.MULTILINE)
    assert found, message.get_content()
    return found.group(1)
