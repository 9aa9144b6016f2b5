"""The sandbox core's vocabulary: enums, identities, timestamps and value checks.

Written from ``deal-core-api.md`` and the public sources it cites (RR, SW, the create
and list samples, real responses); no connector model is imported. Values are checked
only where Microsoft documents their form (enums, ISO 4217 currencies, alpha-2
countries, decimals, ISO 8601 times); anything else a request carries is stored as
sent. Every refusal raises :class:`ReferralError`, rendered as the documented error
shape with a documented top-level code and no inner code.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

#: status → the substatuses allowed with it (RR's transition table)
STATUS_SUBSTATUS: dict[str, frozenset[str]] = {
    "New": frozenset({"Pending", "Received"}),
    "Active": frozenset({"Accepted"}),
    "Closed": frozenset({"Won", "Lost", "Declined", "Expired"}),
}
#: status → the statuses it may move to (RR's transition table)
NEXT_STATUS = {"New": ("New", "Active", "Closed"), "Active": ("Active", "Closed"), "Closed": ()}
STATUSES = ("None", *STATUS_SUBSTATUS)
SUBSTATUSES = ("None", *sorted(frozenset().union(*STATUS_SUBSTATUS.values())))
TYPES = ("Independent", "Shared")
QUALIFICATIONS = ("None", "Direct", "MarketingQualified", "SalesQualified")
#: RR's target types ("Partner" is documented nowhere)
TARGET_TYPES = ("None", "BusinessProfileLocation", "SolutionProfile")
ASSISTANCE_CODES = (
    "Unknown",
    "GeneralOrOther",
    "CustomerTechnicalArchitecture",
    "ProofOfConceptOrDemo",
    "QuotesOrLicensing",
    "PostSalesCustomerSuccess",
    "WorkloadSpecificValueProposition",
)
#: SW's salesStage enum and the percentages seen in real answers and the seed
STAGE_NAMES = {"qualify": "20", "develop": "40", "propose": "60", "close": "80"}
NAME_OF_PERCENT = {"20": "Qualify", "40": "Develop", "60": "Propose", "80": "Close", "100": "Close"}
#: the three documented consent keys (note the real "ToTo")
CONSENT_KEYS = (
    "consentToToShareInfoWithOthers",
    "consentToContact",
    "consentToShareReferralWithMicrosoftSellers",
)
MS_CONSENT = "consentToShareReferralWithMicrosoftSellers"
INVITATION_WINDOW = timedelta(days=14)

#: the partner organisation the sandbox plays (the caller), its business location, Microsoft
PARTNER_ORG = {
    "organizationId": "5a4d9c1e-0c0e-4c11-9a5e-5a4db0c05e11",
    "organizationName": "Sandbox Partner Ltd",
}
PARTNER_LOCATION = "01e2abcd-52b0-4af3-a3ae-1fd1530b3563"
MICROSOFT_ORG = {
    "organizationId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "organizationName": "Microsoft",
}
#: Microsoft as the docs name it in ``invitedBy`` and in the target of its referral
MICROSOFT_INVITER = {"organizationId": "msft", "organizationName": "Microsoft"}
MICROSOFT_TARGET = {"type": "BusinessProfileLocation", "id": "msft"}


def is_partners(referral: dict[str, Any]) -> bool:
    """Whether the sandbox's partner holds ``referral`` (else Microsoft or another partner)."""
    return referral.get("organizationId") == PARTNER_ORG["organizationId"]


def is_microsofts(referral: dict[str, Any]) -> bool:
    return referral.get("organizationId") == MICROSOFT_ORG["organizationId"]


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ISO 3166-1 alpha-2 and active ISO 4217 codes (RR, the samples and PR #11: alpha-2).
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
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ReferralError(Exception):
    """A request the core refuses; rendered as the core's error body (no inner code:
    Microsoft publishes none for the lifecycle, so none is stable)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str = "invalidRequest",
        target: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.target = target


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


def is_guid(text: str) -> bool:
    return bool(_GUID.match(text))


def new_etag() -> str:
    """A quoted opaque eTag, like the core's ``"00006d10-0000-0000-0000-5c70aa630000"``."""
    return f'"{secrets.token_hex(4)}-0000-0000-0000-{secrets.token_hex(6)}"'


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def truncate_ms(dt: datetime) -> datetime:
    """Times are kept to the millisecond: fine enough to order, coarse enough to tie."""
    return dt.astimezone(UTC).replace(microsecond=dt.microsecond // 1000 * 1000)


def format_time(dt: datetime) -> str:
    """The core's form: UTC with seven fractional digits (``2019-02-23T02:05:23.2931817Z``)."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


def micros(dt: datetime) -> int:
    """Microseconds since the epoch: the sort key of the time indexes."""
    return (dt - _EPOCH) // _US


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (any number of fractional digits; no offset means UTC) in UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# --- value checks (only where the form is documented) ---------------------------------------


def enum(value: Any, allowed: tuple[str, ...], target: str) -> str:
    """One of ``allowed``, compared case-insensitively, answered in its documented case."""
    if isinstance(value, str):
        for member in allowed:
            if member.lower() == value.strip().lower():
                return member
    raise ReferralError(
        f"{target} must be one of {', '.join(allowed)} (got {value!r})", target=target
    )


def optional_text(value: Any, target: str, *, max_len: int = 4000) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReferralError(f"{target} must be a string", target=target)
    if len(value) > max_len:
        raise ReferralError(f"{target} is longer than {max_len} characters", target=target)
    return value


def require_object(value: Any, target: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReferralError(f"{target} is required and must be an object", target=target)
    return value


def deal_value(value: Any, target: str = "details.dealValue") -> int | float | None:
    """RR's decimal; a numeric string (PA20's ``"10000"``) is accepted and kept as a number."""
    if value is None:
        return None
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int | float) or number != number:
        raise ReferralError(f"{target} must be a decimal number (got {value!r})", target=target)
    if number in (float("inf"), float("-inf")):
        raise ReferralError(f"{target} must be a finite number", target=target)
    return int(number) if float(number).is_integer() else float(number)


def currency(value: Any, target: str = "details.currency") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in CURRENCIES:
        raise ReferralError(
            f"{target} must be an ISO 4217 code in capitals, e.g. USD (got {value!r})",
            target=target,
        )
    return value


def country(value: Any, target: str = "customerProfile.address.country") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in COUNTRIES:
        raise ReferralError(
            f"{target} must be an ISO 3166 alpha-2 code, e.g. US or GB (got {value!r})",
            target=target,
        )
    return value


def timestamp(value: Any, target: str) -> str | None:
    """An ISO 8601 date or date-time, kept as sent (normalised to ``…Z`` when it had none)."""
    if value is None:
        return None
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
        return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
        raise ReferralError(f"{target} is out of range (got {value!r})", target=target) from None
    return value


def sales_stage(value: Any, target: str = "salesStage") -> str | None:
    """A percentage (string or number, as answered in real responses) or SW's names.

    Stored as the percentage; answered in the format the sandbox is set to.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        value = None
    if isinstance(value, int | float) and 0 <= value <= 100:
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and 0 <= int(text) <= 100:
            return str(int(text))
        if text.lower() in STAGE_NAMES:
            return STAGE_NAMES[text.lower()]
    raise ReferralError(
        f"{target} must be Qualify, Develop, Propose, Close or a percentage (got {value!r})",
        target=target,
    )


def consent(value: Any) -> dict[str, Any]:
    """The documented keys matched case-insensitively (LIVE-CR sends PascalCase), others kept."""
    given = {} if value is None else require_object(value, "consent")
    out: dict[str, Any] = {key: False for key in CONSENT_KEYS}
    for key, flag in given.items():
        documented = next((k for k in CONSENT_KEYS if k.lower() == str(key).lower()), None)
        if documented is not None:
            if not isinstance(flag, bool):
                raise ReferralError(f"consent.{key} must be true or false", target=f"consent.{key}")
            out[documented] = flag
        else:
            out[str(key)] = flag
    return out


def targets(value: Any, *, strict: bool) -> list[Any]:
    """The ``target`` list; in strict mode every entry must use a documented type."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ReferralError("target must be a list", target="target")
    for i, entry in enumerate(value):
        entry = require_object(entry, f"target[{i}]")
        if strict:
            enum(entry.get("type"), TARGET_TYPES, f"target[{i}].type")
    return [clone(entry) for entry in value]


def invite_context(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    ctx: dict[str, Any] = clone(require_object(value, "inviteContext"))
    if ctx.get("assistanceRequestCode") is not None:
        ctx["assistanceRequestCode"] = enum(
            ctx["assistanceRequestCode"], ASSISTANCE_CODES, "inviteContext.assistanceRequestCode"
        )
    optional_text(ctx.get("notes"), "inviteContext.notes")
    return ctx


def asked_microsoft(referral: dict[str, Any]) -> bool:
    """Consent to Microsoft's sellers and a help asked: the co-sell deal of the seed and SW."""
    ctx = referral.get("inviteContext") or {}
    code = ctx.get("assistanceRequestCode") if isinstance(ctx, dict) else None
    return bool((referral.get("consent") or {}).get(MS_CONSENT)) and code not in (None, "Unknown")
