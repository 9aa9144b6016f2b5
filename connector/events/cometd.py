"""A Bayeux (CometD) long-polling session with Salesforce's Streaming API, over httpx.

Salesforce serves Change Data Capture to CometD clients at ``/cometd/{version}``
(Streaming API guide, "Bayeux Protocol, CometD, and Long Polling"): a handshake gives
a ``clientId``; a subscribe names the channel (``/data/OpportunityChangeEvent``) and,
with the replay extension the handshake advertises (``ext.replay: true``), where to
start: ``ext: {replay: {channel: replayId}}`` with a stored replay id, ``-1`` for new
events only, ``-2`` for every retained event (the durable streaming demo's
``cometdReplayExtension``); each connect is held open until events arrive or the
server's timeout passes. A server that forgot the client answers ``403::Unknown
client`` with the advice to handshake again. The session keeps the cookies the
server sets (its load balancer's affinity).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import SecretStr

from connector.errors import CrmError

#: the Bayeux version and transport the Streaming API speaks
BAYEUX_VERSION = "1.0"
TRANSPORT = "long-polling"
#: replay from: only events published after the subscription
NEW_EVENTS = -1


class SessionLost(CrmError):
    """The server forgot the session (or the token): handshake again at once."""

    transient = True


class ReplayRefused(CrmError):
    """The stored replay id is no longer retained (older than the retention window)."""

    transient = False


class CometdSession:
    """One client session: :meth:`handshake`, :meth:`subscribe`, then :meth:`connect` in a loop."""

    def __init__(
        self,
        http: httpx.Client,
        origin: str,
        token: SecretStr,
        *,
        api_version: str,
        poll_timeout_s: float,
    ) -> None:
        self.http = http
        self.url = f"{origin.rstrip('/')}/cometd/{api_version}"
        self._token = token
        self.poll_timeout_s = poll_timeout_s
        self.client_id: str | None = None
        self.replay_supported = False
        self._ids = itertools.count(1)

    def _send(self, messages: Sequence[dict[str, Any]], *, read_s: float) -> list[dict[str, Any]]:
        headers = {
            "Authorization": f"Bearer {self._token.get_secret_value()}",
            "Content-Type": "application/json",
        }
        timeout = httpx.Timeout(10.0, read=read_s)
        try:
            response = self.http.post(
                self.url, json=list(messages), headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise CrmError(
                f"the Salesforce streaming endpoint did not answer ({type(exc).__name__})",
                code="transport",
                transient=True,
            ) from None
        if response.status_code == 401:
            raise SessionLost("the streaming session's token was refused", code="unauthenticated")
        if response.status_code != 200:
            raise CrmError(
                f"the Salesforce streaming endpoint answered {response.status_code}",
                code="crm_error",
                transient=response.status_code >= 500 or response.status_code == 429,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, list) or not all(isinstance(m, dict) for m in body):
            raise CrmError(
                "the Salesforce streaming endpoint answered something that is not a list of "
                "Bayeux messages",
                code="malformed_response",
                transient=True,
            )
        return body

    def _reply(self, replies: list[dict[str, Any]], channel: str) -> dict[str, Any]:
        for reply in replies:
            if reply.get("channel") == channel:
                if reply.get("successful") is not True:
                    _raise(reply, channel)
                return reply
        raise CrmError(
            f"the Salesforce streaming endpoint did not answer the {channel} message",
            code="malformed_response",
            transient=True,
        )

    def handshake(self) -> None:
        message = {
            "channel": "/meta/handshake",
            "version": BAYEUX_VERSION,
            "supportedConnectionTypes": [TRANSPORT],
            "id": str(next(self._ids)),
        }
        reply = self._reply(self._send([message], read_s=30.0), "/meta/handshake")
        client_id = reply.get("clientId")
        if not isinstance(client_id, str) or not client_id:
            raise CrmError(
                "the handshake gave no clientId", code="malformed_response", transient=True
            )
        self.client_id = client_id
        ext = reply.get("ext")
        self.replay_supported = isinstance(ext, dict) and ext.get("replay") is True

    def subscribe(self, channel: str, replay_from: int | None) -> None:
        message: dict[str, Any] = {
            "channel": "/meta/subscribe",
            "clientId": self.client_id,
            "subscription": channel,
            "id": str(next(self._ids)),
        }
        if replay_from is not None and self.replay_supported:
            message["ext"] = {"replay": {channel: replay_from}}
        self._reply(self._send([message], read_s=30.0), "/meta/subscribe")

    def connect(self) -> list[dict[str, Any]]:
        """One long poll: the event messages it brought (possibly none)."""
        message = {
            "channel": "/meta/connect",
            "clientId": self.client_id,
            "connectionType": TRANSPORT,
            "id": str(next(self._ids)),
        }
        replies = self._send([message], read_s=self.poll_timeout_s)
        self._reply(replies, "/meta/connect")
        return [r for r in replies if not str(r.get("channel", "")).startswith("/meta/")]

    def disconnect(self) -> None:
        if self.client_id is None:
            return
        message = {"channel": "/meta/disconnect", "clientId": self.client_id}
        with contextlib.suppress(CrmError):  # the session ends either way
            self._send([message], read_s=5.0)
        self.client_id = None


def _raise(reply: dict[str, Any], channel: str) -> None:
    error = str(reply.get("error") or "no reason given")[:200]
    advice = reply.get("advice")
    reconnect = advice.get("reconnect") if isinstance(advice, dict) else None
    if "replay" in error.lower() and channel == "/meta/subscribe":
        raise ReplayRefused(
            f"Salesforce refused the stored replay id: {error}", code="replay_refused"
        )
    if reconnect == "handshake" or error.startswith(("401", "403::Unknown client")):
        raise SessionLost(f"Salesforce ended the streaming session: {error}", code="session_lost")
    raise CrmError(
        f"Salesforce refused {channel}: {error}", code="crm_error", transient=reconnect != "none"
    )
