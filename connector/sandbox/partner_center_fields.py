"""The sandbox core's vocabulary: enums, identities, timestamps and field validation.

Written from ``deal-core-api.md`` and the seed document only. Every rule failure
raises :class:`ReferralError`, which the HTTP layer renders in the core's error
shape (``{"error": {"code", "message", "target", "innerError"}}``).
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

STATUS_SUBSTATUS: dict[str, frozenset[str]] = {
    "New": frozenset({"Pending", "Received"}),
    "Active": frozenset({"Accepted"}),
    "Closed": frozenset({"Won", "Lost", "Declined", "Expired"}),
}
ALL_SUBSTATUSES = frozenset().union(*STATUS_SUBSTATUS.values())
TYPES = frozenset({"Independent", "Shared"})
DIRECTIONS = frozenset({"Incoming", "Outgoing"})
QUALIFICATIONS = frozenset({"None", "Direct", "MarketingQualified", "SalesQualified"})
SALES_STAGES = ("10", "20", "40", "60", "80", "100")
ASSISTANCE_CODES = frozenset(
    {
        "GeneralOrOther",
        "CustomerTechnicalArchitecture",
        "ProofOfConceptOrDemo",
        "QuotesOrLicensing",
        "PostSalesCustomerSuccess",
        "WorkloadSpecificValueProposition",
    }
)
REGISTRATION_STATUSES = frozenset(
    {"None", "ReviewPending", "ActionRequired", "Passed", "Failed", "Approved"}
)
#: the real, misspelled consent key (two "To") and its two siblings
CONSENT_KEYS = (
    "consentToToShareInfoWithOthers",
    "consentToContact",
    "consentToShareReferralWithMicrosoftSellers",
)
MS_CONSENT = "consentToShareReferralWithMicrosoftSellers"
MAX_TEAM = 50
MAX_SOLUTIONS = 50
INVITATION_WINDOW = timedelta(days=14)

#: the partner organisation the sandbox plays (the caller) and Microsoft
PARTNER_ORG = {
    "organizationId": "5a4d9c1e-0c0e-4c11-9a5e-5a4db0c05e11",
    "organizationName": "Sandbox Partner Ltd",
}
MICROSOFT_ORG = {
    "organizationId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "organizationName": "Microsoft",
}


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ISO 3166-1 alpha-2 and active ISO 4217 codes: "UK" or "usd" are real mapping mistakes.
COUNTRIES = _codes(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO
    BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK
    DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR
    GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM
    KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP
    MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL
    PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST
    SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG
    VI VN VU WF WS YE YT ZA ZM ZW"""
)
CURRENCIES = _codes(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR
    MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL"""
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class ReferralError(Exception):
    """A request the core refuses; rendered as the core's error body."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str = "invalidRequest",
        target: str | None = None,
        inner_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.target = target
        self.inner_code = inner_code


def clone(value: Any) -> Any:
    """A deep copy of a JSON tree (dicts, lists, scalars); several times cheaper than deepcopy."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


# --- identities and timestamps ------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def new_etag() -> str:
    """A quoted opaque eTag, like the core's ``"00006d10-…"``."""
    return f'"{secrets.token_hex(4)}-0000-0000-0000-{secrets.token_hex(6)}"'


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def truncate_ms(dt: datetime) -> datetime:
    """Timestamps carry milliseconds: fine enough to order, coarse enough to tie."""
    return dt.astimezone(UTC).replace(microsecond=dt.microsecond // 1000 * 1000)


def format_time(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def micros(dt: datetime) -> int:
    """Microseconds since the epoch: the sort key of ``updatedDateTime``."""
    return (dt - _EPOCH) // _US


def parse_time(text: str) -> datetime:
    """An ISO 8601 timestamp with an offset (``Z`` or ``+hh:mm``) as an aware UTC datetime."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return value.astimezone(UTC)


# --- value validation ---------------------------------------------------------------------


def require_text(value: Any, target: str, *, max_len: int = 500, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ReferralError(f"{target} is required and must be a non-empty string", target=target)
    if len(value) > max_len:
        raise ReferralError(f"{target} is longer than {max_len} characters", target=target)
    return value


def require_bool(value: Any, target: str) -> bool:
    if not isinstance(value, bool):
        raise ReferralError(f"{target} must be true or false", target=target)
    return value


def require_object(value: Any, target: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReferralError(f"{target} is required and must be an object", target=target)
    return value


def deal_value(value: Any, target: str = "details.dealValue") -> int | float:
    """A decimal >= 0; a numeric string is accepted, as the reference allows."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = None
    if not isinstance(value, int | float) or value != value or value in (float("inf"),):
        raise ReferralError(f"{target} must be a number (got {value!r})", target=target)
    if value < 0:
        raise ReferralError(f"{target} must be >= 0 (got {value})", target=target)
    return int(value) if float(value).is_integer() else float(value)


def currency(value: Any, target: str = "details.currency") -> str:
    if not isinstance(value, str) or value not in CURRENCIES:
        raise ReferralError(
            f"{target} must be an ISO 4217 code in capitals, e.g. USD (got {value!r})",
            target=target,
        )
    return value


def country(value: Any, target: str = "customerProfile.address.country") -> str:
    if not isinstance(value, str) or value not in COUNTRIES:
        raise ReferralError(
            f"{target} must be an ISO 3166 alpha-2 code, e.g. US or GB (got {value!r})",
            target=target,
        )
    return value


def timestamp(value: Any, target: str) -> str:
    """An ISO 8601 date or date-time; answered in the core's ``…Z`` form."""
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ReferralError(
            f"{target} must be an ISO 8601 date-time such as 2026-11-14T00:00:00Z (got {value!r})",
            target=target,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
        raise ReferralError(f"{target} is out of range (got {value!r})", target=target) from None


def sales_stage(value: Any, target: str = "salesStage") -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if text not in SALES_STAGES:
        raise ReferralError(
            f"{target} must be one of {', '.join(SALES_STAGES)} (got {value!r})", target=target
        )
    return str(text)


_PERSON_FIELDS = ("firstName", "lastName", "phoneNumber", "email")


def person(value: Any, target: str, *, complete: bool) -> dict[str, Any]:
    """A team member (all four fields required) or a customer contact (all optional)."""
    member = require_object(value, target)
    out: dict[str, Any] = {}
    for key in _PERSON_FIELDS:
        field = member.get(key)
        if field is None and not complete:
            continue
        out[key] = require_text(field, f"{target}.{key}", max_len=250)
    email = out.get("email")
    if email is not None and not _EMAIL.match(email):
        raise ReferralError(f"{target}.email is not an email address", target=f"{target}.email")
    return out


def team(value: Any, target: str = "team") -> list[dict[str, Any]]:
    """Your people: 1 to 50, each with first and last name, phone number and email."""
    if not isinstance(value, list) or not value:
        raise ReferralError(
            f"{target} needs at least one member with firstName, lastName, phoneNumber, email",
            target=target,
        )
    if len(value) > MAX_TEAM:
        raise ReferralError(f"{target} has more than {MAX_TEAM} members", target=target)
    return [person(m, f"{target}[{i}]", complete=True) for i, m in enumerate(value)]


def contacts(value: Any, target: str = "customerProfile.team") -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TEAM:
        raise ReferralError(f"{target} must be a list of at most {MAX_TEAM}", target=target)
    return [person(c, f"{target}[{i}]", complete=False) for i, c in enumerate(value)]


def solution(value: Any, target: str) -> dict[str, Any]:
    item = require_object(value, target)
    return {
        "id": require_text(item.get("id"), f"{target}.id", max_len=100),
        "type": require_text(item.get("type", "Name"), f"{target}.type", max_len=50),
    }


def solutions(value: Any, target: str = "details.requirements.solutions") -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ReferralError(f"{target} needs at least one solution", target=target)
    if len(value) > MAX_SOLUTIONS:
        raise ReferralError(f"{target} has more than {MAX_SOLUTIONS} solutions", target=target)
    return [solution(s, f"{target}[{i}]") for i, s in enumerate(value)]


def invite_context(value: Any, target: str = "inviteContext") -> dict[str, Any] | None:
    if value is None:
        return None
    ctx = require_object(value, target)
    code = ctx.get("assistanceRequestCode")
    if code not in ASSISTANCE_CODES:
        raise ReferralError(
            f"{target}.assistanceRequestCode must be one of {', '.join(sorted(ASSISTANCE_CODES))}"
            f" (got {code!r})",
            target=f"{target}.assistanceRequestCode",
        )
    out: dict[str, Any] = {
        "notes": require_text(ctx.get("notes"), f"{target}.notes", max_len=2000, optional=True),
        "assistanceRequestCode": code,
    }
    if isinstance(ctx.get("invitedBy"), dict):
        out["invitedBy"] = ctx["invitedBy"]
    return out


def target_entry(value: Any, target: str) -> dict[str, Any]:
    entry = require_object(value, target)
    kind = entry.get("type")
    if kind not in ("Partner", "SolutionProfile"):
        raise ReferralError(
            f"{target}.type must be Partner or SolutionProfile (got {kind!r})",
            target=f"{target}.type",
        )
    return {"type": kind, "id": require_text(entry.get("id"), f"{target}.id", max_len=100)}


def targets(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ReferralError("target must be a list", target="target")
    return [target_entry(t, f"target[{i}]") for i, t in enumerate(value)]


def consent(value: Any) -> dict[str, bool]:
    given = {} if value is None else require_object(value, "consent")
    return {key: require_bool(given.get(key, False), f"consent.{key}") for key in CONSENT_KEYS}


def qualification(value: Any) -> str:
    if value is None:
        return "None"
    if value not in QUALIFICATIONS:
        raise ReferralError(
            f"qualification must be one of {', '.join(sorted(QUALIFICATIONS))} (got {value!r})",
            target="qualification",
        )
    return str(value)
