"""The sandbox core's data: referrals, their indexes, and the core's own clock-driven moves.

Indexes keep every request cheap at 100,000 referrals: lists sorted by
``(updatedDateTime µs, id)`` and ``(createdDateTime µs, id)`` (bisect) serve ordered
listing and position-key paging; maps by ``externalReferenceId`` and ``engagementId``
serve the lookups. Expiry (14 days unanswered) and Microsoft's automatic answers sit in
heaps ordered by due time and are applied lazily before every request and on
``tick()``; they set ``updatedDateTime`` to the moment they are applied so that
incremental readers see them.

Microsoft's referral in an engagement (one at most) appears when the partner creates
one for Microsoft (``target`` ``msft`` with the engagement's id: CR20's second step), or
when the partner's referral consents to Microsoft's sellers (the single-referral form)
unless :attr:`CoreBehaviour.consent_invites_microsoft` is off.
"""

from __future__ import annotations

import heapq
import random
import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sandbox.partner_center import fields as f
from sandbox.partner_center import inbound
from sandbox.partner_center import lifecycle as rules
from sandbox.partner_center.fields import ReferralError
from sandbox.partner_center.odata import Query

MICROSOFT_ACTIONS = ("accept", "decline", "win")
POLICIES = ("none", *MICROSOFT_ACTIONS)
REGISTRATION_ACTIONS = {
    "approve": "Approved",
    "fail": "Failed",
    "action-required": "ActionRequired",
}
_ID_MAX = "\U0010ffff"

Key = tuple[int, str]


@dataclass
class CoreBehaviour:
    """What Microsoft leaves open, as settings of the sandbox core (``/_sandbox/core/settings``).

    Defaults are the documented or observed behaviour, and as permissive as the real
    API where its strictness is unknown.
    """

    #: refuse PATCH paths outside the certified connector's list and undocumented target
    #: types (for client tests: a client that passes here sends only documented shapes)
    strict: bool = False
    #: ``keep``: a create keeps the status, substatus and sales stage it sends (CR19's
    #: answer does); ``accept``: every new deal starts Active/Accepted (CR20's answer)
    create_status: Literal["keep", "accept"] = "keep"
    #: the create's status code: SW documents 200, the docs name none
    create_code: Literal[200, 201] = 200
    #: how ``salesStage`` is answered: ``percent`` (real answers), ``name`` (SW's enum)
    #: or ``null`` (production answers)
    sales_stage: Literal["percent", "name", "null"] = "percent"
    #: referrals per page (GL19: a next link above 100 items)
    page_size: int = 100
    #: consent to Microsoft's sellers invites Microsoft (else only a referral for Microsoft)
    consent_invites_microsoft: bool = True
    #: answer a list with ``$select`` by 400 (a core that does not honour it)
    refuse_select: bool = False

    def update(self, changes: Any) -> None:
        if not isinstance(changes, dict):
            raise ReferralError("the body must be an object of settings")
        allowed = {
            "strict": (bool,),
            "create_status": ("keep", "accept"),
            "create_code": (200, 201),
            "sales_stage": ("percent", "name", "null"),
            "page_size": (int,),
            "consent_invites_microsoft": (bool,),
            "refuse_select": (bool,),
        }
        for name, value in changes.items():
            kinds = allowed.get(name)
            if kinds is None:
                raise ReferralError(f"unknown setting {name!r}", target=name)
            ok = isinstance(value, kinds[0]) if isinstance(kinds[0], type) else value in kinds
            if not ok or (name == "page_size" and not 1 <= value <= 1000):
                raise ReferralError(f"invalid value {value!r} for {name}", target=name)
        for name, value in changes.items():
            setattr(self, name, value)


class ReferralStore:
    """Every referral the sandbox core holds, for the partner it plays and for Microsoft."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self.lock = threading.RLock()
        self.behaviour = CoreBehaviour()
        #: told of every referral stored ("created") or changed ("updated"): the webhooks
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None
        self.reset()

    # --- state ---------------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.records: dict[str, dict[str, Any]] = {}
            self._key: dict[str, Key] = {}
            self._order: list[Key] = []
            self._created: dict[str, Key] = {}
            self._created_order: list[Key] = []
            self._by_ext: dict[str, set[str]] = {}
            self._by_engagement: dict[str, list[str]] = {}
            self._expiries: list[tuple[int, str]] = []
            #: (due µs, sequence, Microsoft referral id, action)
            self._answers: list[tuple[int, int, str, str]] = []
            self._sequence = 0
            self.policy: dict[str, Any] = {"policy": "none", "after_s": 0.0}
            self.eligible: dict[str, list[str]] = {"ids": [], "prefixes": ["SOL-IP-"]}
            self.behaviour = CoreBehaviour()

    def dump(self) -> dict[str, Any]:
        with self.lock:
            return {
                "referrals": [self.records[i] for _, i in self._order],
                "answers": [list(a) for a in self._answers],
                "policy": dict(self.policy),
                "eligible": {k: list(v) for k, v in self.eligible.items()},
                "behaviour": dict(vars(self.behaviour)),
            }

    def load(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.reset()
            for referral in data.get("referrals", []):
                self._insert(referral)
            self._answers = [
                (int(d), int(s), str(i), str(a)) for d, s, i, a in data.get("answers", [])
            ]
            heapq.heapify(self._answers)
            self._sequence = max((a[1] for a in self._answers), default=0)
            self.policy.update(data.get("policy", {}))
            self.eligible.update(data.get("eligible", {}))
            self.behaviour.update(data.get("behaviour", {}))

    def now(self) -> datetime:
        return f.truncate_ms(self._clock())

    def is_eligible_solution(self, solution_id: str) -> bool:
        return solution_id in self.eligible["ids"] or any(
            solution_id.startswith(p) for p in self.eligible["prefixes"]
        )

    # --- indexes -------------------------------------------------------------------------

    def _insert(self, referral: dict[str, Any]) -> None:
        ident = referral["id"]
        self.records[ident] = referral
        key = (f.micros(f.parse_time(referral["updatedDateTime"])), ident)
        self._key[ident] = key
        insort(self._order, key)
        created = (f.micros(f.parse_time(referral["createdDateTime"])), ident)
        self._created[ident] = created
        insort(self._created_order, created)
        self._index_ext(ident, None, referral.get("externalReferenceId"))
        self._by_engagement.setdefault(referral["engagementId"], []).append(ident)
        if referral["status"] == "New" and referral.get("expirationDateTime"):
            due = f.micros(f.parse_time(referral["expirationDateTime"]))
            heapq.heappush(self._expiries, (due, ident))
        if self.on_change is not None:
            self.on_change("created", referral)

    def _index_ext(self, ident: str, old: Any, new: Any) -> None:
        if old == new:
            return
        if isinstance(old, str):
            ids = self._by_ext.get(old)
            if ids is not None:
                ids.discard(ident)
                if not ids:
                    del self._by_ext[old]
        if isinstance(new, str):
            self._by_ext.setdefault(new, set()).add(ident)

    def _commit(self, new: dict[str, Any], now: datetime) -> dict[str, Any]:
        """Store ``new`` as the next version of its referral: fresh eTag and timestamp."""
        ident = new["id"]
        old = self.records[ident]
        self._index_ext(ident, old.get("externalReferenceId"), new.get("externalReferenceId"))
        old_key = self._key[ident]
        position = bisect_left(self._order, old_key)
        del self._order[position]
        new["updatedDateTime"] = f.format_time(now)
        new["eTag"] = f.new_etag()
        key = (f.micros(now), ident)
        self._key[ident] = key
        insort(self._order, key)
        self.records[ident] = new
        if self.on_change is not None:
            self.on_change("updated", new)
        return new

    def _microsoft_side(self, engagement_id: str) -> dict[str, Any] | None:
        for ident in self._by_engagement.get(engagement_id, ()):
            referral = self.records[ident]
            if f.is_microsofts(referral):
                return referral
        return None

    def _microsoft_state(self, engagement_id: str) -> tuple[str, str] | None:
        side = self._microsoft_side(engagement_id)
        return None if side is None else (side["status"], side["substatus"])

    def eligibility(self, referral: dict[str, Any]) -> tuple[bool, str]:
        state = self._microsoft_state(referral["engagementId"])
        return rules.registration_eligible(referral, state, self.is_eligible_solution)

    def _sync_engagement(self, engagement_id: str, now: datetime) -> None:
        """Microsoft's MSX id reaches the partner's deals once Microsoft engages."""
        side = self._microsoft_side(engagement_id)
        msx = None if side is None else (side.get("trackingInfo") or {}).get("microsoftMsxId")
        if not msx:
            return
        for ident in list(self._by_engagement.get(engagement_id, ())):
            deal = self.records[ident]
            tracking = deal.get("trackingInfo") or {}
            if f.is_partners(deal) and not tracking.get("microsoftMsxId"):
                self._commit({**deal, "trackingInfo": {**tracking, "microsoftMsxId": msx}}, now)

    # --- the core's own moves ------------------------------------------------------------

    def housekeep(self) -> None:
        """Apply every expiry and automatic Microsoft answer that is due on the sandbox clock."""
        with self.lock:
            now = self.now()
            now_us = f.micros(now)
            while True:
                next_answer = self._answers[0][0] if self._answers else None
                next_expiry = self._expiries[0][0] if self._expiries else None
                if (
                    next_expiry is not None
                    and next_expiry <= now_us
                    and (next_answer is None or next_expiry <= next_answer)
                ):
                    _, ident = heapq.heappop(self._expiries)
                    self._expire(ident, now)
                elif next_answer is not None and next_answer <= now_us:
                    _, _, ident, action = heapq.heappop(self._answers)
                    side = self.records.get(ident)
                    if side is not None and self._microsoft_may(side, action):
                        self._microsoft_act(side, action, now, None)
                else:
                    return

    def _expire(self, ident: str, now: datetime) -> None:
        referral = self.records.get(ident)
        if referral is None or referral["status"] != "New":
            return
        expires = referral.get("expirationDateTime")
        if expires is None or f.parse_time(expires) > now:
            return  # the entry is stale: a later expiration was set
        new = {
            **referral,
            "status": "Closed",
            "substatus": "Expired",
            "closedDateTime": expires,
            "statusReason": "Not answered within 14 days",
        }
        self._commit(new, now)
        self._sync_engagement(referral["engagementId"], now)

    @staticmethod
    def _microsoft_may(side: dict[str, Any], action: str) -> bool:
        if action == "win":
            return side["status"] in ("New", "Active")
        return bool(side["status"] == "New")

    def _microsoft_act(
        self, side: dict[str, Any], action: str, now: datetime, reason: str | None
    ) -> dict[str, Any]:
        new = {
            **side,
            "team": list(side.get("team") or []),
            "trackingInfo": dict(side.get("trackingInfo") or {}),
        }
        inbound.microsoft_answer(new, action, now, reason)
        self._commit(new, now)
        self._sync_engagement(side["engagementId"], now)
        return new

    def _invited(self, side: dict[str, Any], now: datetime) -> dict[str, Any]:
        """Microsoft's new referral (an invitation): stored, and answered by the policy."""
        self._insert(side)
        policy, after = self.policy["policy"], float(self.policy.get("after_s", 0))
        if policy == "none":
            return side
        if after <= 0:
            return self._microsoft_act(side, policy, now, None)
        self._sequence += 1
        due = f.micros(now + timedelta(seconds=after))
        heapq.heappush(self._answers, (due, self._sequence, side["id"], policy))
        return side

    # --- what the HTTP layer calls -------------------------------------------------------

    def get(self, ident: str) -> dict[str, Any]:
        with self.lock:
            self.housekeep()
            referral = self.records.get(ident)
            if referral is None:
                raise ReferralError(
                    f"referral {ident} does not exist",
                    status=404,
                    code="itemNotFound",
                    target="id",
                )
            return referral

    def create(self, body: Any) -> dict[str, Any]:
        """A new referral from a create body; the existing one when it adds nothing.

        A body with an existing ``engagementId`` joins that engagement; with the target
        ``msft`` it is the referral for Microsoft (held by Microsoft, New/Pending). An
        engagement holds one Microsoft referral: a second one is answered with the first.
        """
        behaviour = self.behaviour
        with self.lock:
            self.housekeep()
            now = self.now()
            deal = rules.build_referral(
                body,
                now,
                strict=behaviour.strict,
                keep_status=behaviour.create_status == "keep",
            )
            engagement = body.get("engagementId")
            if engagement is not None:
                if not isinstance(engagement, str) or engagement not in self._by_engagement:
                    raise ReferralError(
                        f"engagementId {engagement!r} names no engagement of yours: create "
                        "your referral first and copy its engagementId",
                        target="engagementId",
                    )
                deal["engagementId"] = engagement
                if any(_is_microsoft_target(t) for t in deal["target"]):
                    existing = self._microsoft_side(engagement)
                    if existing is not None:
                        return existing
                    side = self._invited(inbound.as_microsofts(deal, now), now)
                    self._sync_engagement(engagement, now)
                    return self.records[side["id"]]
            self._insert(deal)
            if deal["consent"].get(f.MS_CONSENT) and behaviour.consent_invites_microsoft:
                self._invite_microsoft(deal, now)
            self._sync_engagement(deal["engagementId"], now)
            return self.records[deal["id"]]

    def _invite_microsoft(self, deal: dict[str, Any], now: datetime) -> None:
        if self._microsoft_side(deal["engagementId"]) is None:
            self._invited(inbound.build_microsoft_side(deal, now, invited=True), now)

    def patch(self, ident: str, ops: Any, if_match: str | None) -> dict[str, Any]:
        with self.lock:
            current = self.get(ident)
            if not f.is_partners(current):
                raise ReferralError(
                    f"referral {ident} belongs to {current.get('organizationName')}: only "
                    "the organisation holding a referral can change it",
                    status=403,
                    code="accessDenied",
                    target="id",
                )
            match = (if_match or "*").strip()
            if match != "*" and match.removeprefix("W/") != current["eTag"]:
                raise ReferralError(
                    f"referral {ident} changed since it was read (If-Match {if_match} is "
                    f"stale): read it again, re-apply the change, send the new eTag",
                    status=412,
                    code="preconditionFailed",
                    target="If-Match",
                )
            now = self.now()
            state = self._microsoft_state(current["engagementId"])
            outcome = rules.apply_patch(
                current, ops, now, state, self.is_eligible_solution, strict=self.behaviour.strict
            )
            new = outcome.referral
            if new == current:
                return current
            self._commit(new, now)
            if outcome.shared_with_microsoft and self.behaviour.consent_invites_microsoft:
                self._invite_microsoft(new, now)
            self._sync_engagement(new["engagementId"], now)
            return self.records[ident]

    def page(
        self,
        query: Query,
        order: str,
        descending: bool,
        size: int,
        after: Key | None,
        skip: int = 0,
    ) -> tuple[list[dict[str, Any]], Key | None]:
        """One page of matches in ``(order µs, id)`` order, and the key to continue from."""
        with self.lock:
            self.housekeep()
            keys = self._key if order == "updatedDateTime" else self._created
            sequence = self._candidates(query, keys, order)
            low, high = query.time_bounds(order)
            lo = 0 if low is None else bisect_left(sequence, (low, ""))
            hi = len(sequence) if high is None else bisect_right(sequence, (high, _ID_MAX))
            if descending:
                end = hi if after is None else min(hi, bisect_left(sequence, after))
                positions = range(end - 1, lo - 1, -1)
            else:
                start = lo if after is None else max(lo, bisect_right(sequence, after))
                positions = range(start, hi)
            matches = query.predicate
            found: list[Key] = []
            for position in positions:
                key = sequence[position]
                if matches(self.records[key[1]]):
                    if skip:
                        skip -= 1
                        continue
                    found.append(key)
                    if len(found) > size:
                        break
            more = len(found) > size
            found = found[:size]
            items = [self.records[key[1]] for key in found]
            return items, (found[-1] if more else None)

    def _candidates(self, query: Query, keys: dict[str, Key], order: str) -> list[Key]:
        """The sorted keys worth scanning: a small set when an id filter allows it."""
        for name, index in (
            ("engagementId", self._by_engagement),
            ("externalReferenceId", self._by_ext),
        ):
            values = query.equals(name)
            if values and isinstance(values[0], str):
                return sorted(keys[i] for i in index.get(values[0], ()))
        return self._order if order == "updatedDateTime" else self._created_order

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            self.housekeep()
            return [self.records[i] for _, i in self._order]

    # --- admin: the other side of the deal -----------------------------------------------

    def send_incoming(
        self, overrides: dict[str, Any], sender: str, rng: random.Random | None = None
    ) -> dict[str, Any]:
        """A referral sent to the partner by Microsoft (co-sell) or by another partner."""
        if sender not in ("Microsoft", "Partner"):
            raise ReferralError("from must be Microsoft or Partner", target="from")
        with self.lock:
            self.housekeep()
            now = self.now()
            deal = inbound.build_incoming(rng or random.Random(), now, overrides, sender)
            _check_incoming(deal)
            if deal["id"] in self.records:
                raise ReferralError(f"referral {deal['id']} exists already", target="id")
            self._insert(deal)
            if sender == "Microsoft":
                self._insert(inbound.build_microsoft_side(deal, now, invited=False, rng=rng))
            self._sync_engagement(deal["engagementId"], now)
            return self.records[deal["id"]]

    def microsoft(self, ident: str, action: str, reason: str | None) -> dict[str, Any]:
        """Microsoft answers on the engagement of referral ``ident`` (the deal or its own)."""
        if action not in MICROSOFT_ACTIONS:
            raise ReferralError(f"action must be one of {', '.join(MICROSOFT_ACTIONS)}")
        with self.lock:
            deal = self.get(ident)
            side = self._microsoft_side(deal["engagementId"])
            if side is None:
                raise ReferralError(
                    f"Microsoft was never invited to the engagement of referral {ident}",
                    status=404,
                    code="itemNotFound",
                    target="id",
                )
            if not self._microsoft_may(side, action):
                raise ReferralError(
                    f"Microsoft cannot {action} its referral {side['id']}: it is "
                    f"{side['status']}/{side['substatus']}"
                )
            return self._microsoft_act(side, action, self.now(), reason)

    def microsoft_notes(self, ident: str, notes: Any) -> dict[str, Any]:
        """Microsoft's seller writes notes on its referral in the engagement of ``ident``."""
        if not isinstance(notes, str):
            raise ReferralError("notes must be text", target="notes")
        with self.lock:
            deal = self.get(ident)
            side = self._microsoft_side(deal["engagementId"])
            if side is None:
                raise ReferralError(
                    f"Microsoft was never invited to the engagement of referral {ident}",
                    status=404,
                    code="itemNotFound",
                    target="id",
                )
            details = {**(side.get("details") or {}), "notes": f.optional_text(notes, "notes")}
            return self._commit({**side, "details": details}, self.now())

    def set_policy(self, body: Any) -> dict[str, Any]:
        policy = body.get("policy") if isinstance(body, dict) else None
        if policy not in POLICIES:
            raise ReferralError(f"policy must be one of {', '.join(POLICIES)}", target="policy")
        try:
            after = float(body.get("after_s", 0))
        except (TypeError, ValueError):
            raise ReferralError("after_s must be a number of seconds", target="after_s") from None
        with self.lock:
            self.policy = {"policy": policy, "after_s": max(0.0, after)}
            return dict(self.policy)

    def set_registration(self, ident: str, action: str) -> dict[str, Any]:
        status = REGISTRATION_ACTIONS.get(action)
        if status is None:
            raise ReferralError(f"action must be one of {', '.join(REGISTRATION_ACTIONS)}")
        with self.lock:
            deal = self.get(ident)
            if deal["registrationStatus"] not in ("ReviewPending", "ActionRequired"):
                raise ReferralError(
                    f"referral {ident} has no registration under review "
                    f"(registrationStatus {deal['registrationStatus']})"
                )
            registrations = [dict(r) for r in deal["registrations"]]
            if registrations:
                registrations[-1]["status"] = status
            new = {**deal, "registrationStatus": status, "registrations": registrations}
            return self._commit(new, self.now())

    def set_eligible(self, body: Any) -> dict[str, list[str]]:
        if not isinstance(body, dict):
            raise ReferralError('the body must be {"ids": [...], "prefixes": [...]}')
        with self.lock:
            for name in ("ids", "prefixes"):
                if name in body:
                    values = body[name]
                    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                        raise ReferralError(f"{name} must be a list of strings", target=name)
                    self.eligible[name] = list(values)
            return {k: list(v) for k, v in self.eligible.items()}


def _is_microsoft_target(target: Any) -> bool:
    return (
        isinstance(target, dict)
        and str(target.get("type", "")).lower() == f.MICROSOFT_TARGET["type"].lower()
        and str(target.get("id", "")).lower() == f.MICROSOFT_TARGET["id"]
    )


def _check_incoming(deal: dict[str, Any]) -> None:
    """Admin overrides still have to describe a referral the core could hold."""
    if deal["substatus"] not in f.STATUS_SUBSTATUS.get(deal["status"], ()):
        raise ReferralError(
            f"status {deal['status']} with substatus {deal['substatus']} is not a valid pair",
            target="status",
        )
    details, profile = deal["details"], deal["customerProfile"]
    f.deal_value(details.get("dealValue"))
    f.currency(details.get("currency"))
    f.timestamp(details.get("closingDateTime"), "details.closingDateTime")
    f.country(profile.get("address", {}).get("country"))
    for stamp in ("createdDateTime", "updatedDateTime", "expirationDateTime"):
        if deal.get(stamp) is not None:
            try:
                f.parse_time(deal[stamp])
            except (TypeError, ValueError):
                raise ReferralError(f"{stamp} must be an ISO 8601 time", target=stamp) from None
