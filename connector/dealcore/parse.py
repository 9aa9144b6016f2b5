"""Reading a Referral from the core (pure): tolerant of every shape Microsoft publishes.

Unknown fields are ignored and kept in ``raw``; optional ones may be missing, ``null``
or ``""``; ``salesStage`` may be a percentage (string or number), one of the certified
connector's names (``Qualify``, ``Develop``, ``Propose``, ``Close``) or ``null``;
timestamps may carry seven fractional digits; ``status`` may be ``None`` (an enum
value of the reference) and ``direction`` may be missing (a create response).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.errors import CoreError
from connector.model import DealType, ReferralState, Status, Substatus

#: the certified connector's sales-stage names, as the seed's percentages
STAGE_NAMES = {"qualify": 20, "develop": 40, "propose": 60, "close": 80}


def decimal_of(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None


def stage_percent(value: Any) -> int | None:
    """A ``salesStage`` as a percentage: ``"40"``, ``40``, ``"Develop"`` → 40; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        return STAGE_NAMES.get(text.lower())
    return None


def datetime_of(value: Any) -> datetime | None:
    """An ISO 8601 timestamp (``Z``, an offset, or none: UTC) as an aware datetime."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _enum_member(enum: type[Status] | type[Substatus], value: Any) -> Any:
    if not isinstance(value, str):
        return None
    for member in enum:
        if member.value.lower() == value.strip().lower():
            return member
    return None


def _status(referral_id: str, value: Any) -> Status:
    if value is None or value == "":
        return Status.NONE  # the reference's None; an unset status is not a broken referral
    status = _enum_member(Status, value)
    if status is None:
        raise CoreError(
            f"the deal core sent a malformed referral {referral_id}: status "
            f"{value!r} is not None, New, Active or Closed",
            code="malformed_referral",
            transient=False,
        )
    return status  # type: ignore[no-any-return]


def _deal_type(data: Mapping[str, Any]) -> DealType | None:
    kind = data.get("type")
    if not isinstance(kind, str):
        return None
    consent = data.get("consent")
    with_microsoft = isinstance(consent, Mapping) and any(
        isinstance(k, str)
        and k.lower() == "consenttosharereferralwithmicrosoftsellers"
        and v is True
        for k, v in consent.items()
    )
    if kind.lower() == "independent":
        # a private deal upgraded to co-sell keeps its type: the API cannot patch it
        return DealType.CO_SELL if with_microsoft else DealType.PRIVATE
    if kind.lower() != "shared":
        return None
    invite = data.get("inviteContext")
    asked = isinstance(invite, Mapping) and invite.get("assistanceRequestCode") not in (
        None,
        "",
        "Unknown",
    )
    return DealType.CO_SELL if with_microsoft or asked else DealType.PARTNER_TO_PARTNER


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_referral(data: Any, *, partial: bool = False) -> ReferralState:
    """A Referral from the API as a :class:`ReferralState`.

    A referral without an ``id``, or with a ``status`` outside the reference's enum,
    raises a permanent ``CoreError`` (``malformed_referral``). ``partial`` marks a
    referral listed with ``$select`` (see ``ReferralState.partial``).
    """
    if not isinstance(data, Mapping):
        raise CoreError(
            "the deal core sent a referral that is not a JSON object",
            code="malformed_referral",
            transient=False,
        )
    referral_id = data.get("id")
    if not isinstance(referral_id, str) or not referral_id:
        raise CoreError(
            "the deal core sent a malformed referral: it has no id",
            code="malformed_referral",
            transient=False,
        )
    return ReferralState(
        id=referral_id,
        engagement_id=_optional_str(data.get("engagementId")),
        etag=_optional_str(data.get("eTag")),
        status=_status(referral_id, data.get("status")),
        substatus=_enum_member(Substatus, data.get("substatus")),
        direction=_optional_str(data.get("direction")) or "Unknown",
        updated=datetime_of(data.get("updatedDateTime")),
        external_reference_id=_optional_str(data.get("externalReferenceId")),
        name=_optional_str(data.get("name")),
        sales_stage=stage_percent(data.get("salesStage")),
        deal_type=_deal_type(data),
        expiration=datetime_of(data.get("expirationDateTime")),
        registration_status=_optional_str(data.get("registrationStatus")),
        status_reason=_optional_str(data.get("statusReason")),
        raw=dict(data),
        partial=partial,
    )
