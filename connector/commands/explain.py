"""What one CRM record becomes under a mapping, field by field (pure, no I/O).

``connector mappings explain RECORD_ID`` fetches the record and prints this:
each deal field, where the mapping takes it from, the raw CRM value and the
mapped value, then the deal it would become or every reason it would be
rejected, and what the planner would do given the store's link.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from connector.mapping.apply import apply_mapping, resolve_stage
from connector.mapping.schema import ContactFields, FieldSource, MappingFile
from connector.model import CrmOpportunity, DealDraft, Rejection, StageInfo
from connector.sync.plan import Create, LinkFacts, Reject, Skip, Update, plan_outbound

_CUSTOMER_ATTRS = {
    "customer_name": "name",
    "customer_country": "country",
    "customer_city": "city",
    "customer_state": "state",
    "customer_postal_code": "postal_code",
    "customer_address_line1": "address_line1",
}


@dataclass(frozen=True)
class FieldLine:
    """One deal field: where it comes from, the CRM's value and the mapped value."""

    deal_field: str
    source: str
    raw: str
    mapped: str


@dataclass(frozen=True)
class Explanation:
    record_id: str
    lines: list[FieldLine]
    result: DealDraft | Rejection
    #: what the planner would do with the result and the store's link
    action: str


def explain_record(
    record: CrmOpportunity,
    mapping: MappingFile,
    stages: Mapping[str, StageInfo],
    link: LinkFacts | None = None,
) -> Explanation:
    """Map ``record`` and describe every step (see the module docstring)."""
    result = apply_mapping(record, mapping, stages)
    draft = result if isinstance(result, DealDraft) else None
    lines = [
        FieldLine(name, _source(src), _raw(record, src), _mapped(draft, name))
        for name, src in _sources(mapping)
    ]
    stage, _ = resolve_stage(record, mapping, stages)
    lines.append(
        FieldLine(
            "stage",
            f"{mapping.stages.field} (stages, unmapped: {mapping.stages.unmapped})",
            _text(record.fields.get(mapping.stages.field)),
            stage.value if stage is not None else "-",
        )
    )
    rule = mapping.deal_type
    if rule.help_field:
        mapped = "-"
        if draft is not None:
            mapped = draft.deal_type.value + (
                f" ({draft.assistance_code})" if draft.assistance_code else ""
            )
        lines.append(
            FieldLine(
                "deal_type",
                f"{rule.help_field} (deal_type.help_values)",
                _text(record.fields.get(rule.help_field)),
                mapped,
            )
        )
    return Explanation(record.id, lines, result, describe_action(result, link))


def describe_action(result: DealDraft | Rejection, link: LinkFacts | None) -> str:
    """The planner's answer for this record, in a sentence."""
    action = plan_outbound(result, link)
    if isinstance(action, Create):
        status = f"{action.body.get('status')}/{action.body.get('substatus')}"
        return f"create a new referral in Partner Center ({status})"
    if isinstance(action, Update):
        closing = f" and close it ({action.closes.value})" if action.closes else ""
        return f"update referral {link.referral_id if link else '?'}{closing}"
    if isinstance(action, Skip):
        why = f": {action.notice}" if action.notice else ""
        return f"skip ({action.reason.value}){why}"
    assert isinstance(action, Reject)
    return f"reject: {len(action.reasons)} problem(s), written to the record's sync-error field"


def _sources(mapping: MappingFile) -> Iterator[tuple[str, FieldSource]]:
    for name, value in mapping.fields.__dict__.items():
        if isinstance(value, FieldSource):
            yield name, value
        elif isinstance(value, ContactFields):
            for part, source in value.__dict__.items():
                yield f"{name}.{part}", source


def _source(src: FieldSource) -> str:
    if src.field is None:
        return "constant"
    extras = [
        label
        for label, on in (
            ("value table", src.table is not None),
            (f"default {src.default!r}", src.default is not None),
            (f"split on {src.split!r}", src.split is not None),
        )
        if on
    ]
    return src.field + (f" ({', '.join(extras)})" if extras else "")


def _raw(record: CrmOpportunity, src: FieldSource) -> str:
    if src.field is None:
        return _text(src.const)
    return _text(record.fields.get(src.field))


def _mapped(draft: DealDraft | None, name: str) -> str:
    if draft is None:
        return "-"
    value: Any
    if name in _CUSTOMER_ATTRS:
        value = getattr(draft.customer, _CUSTOMER_ATTRS[name])
    elif name.startswith("customer_contact."):
        contacts = draft.customer.contacts
        value = getattr(contacts[0], name.split(".")[1]) if contacts else None
    elif name.startswith("team_member."):
        value = getattr(draft.team[0], name.split(".")[1]) if draft.team else None
    elif name == "solutions":
        value = ", ".join(draft.solutions)
    else:
        value = getattr(draft, name, None)
    return _text(value)


def _text(value: Any) -> str:
    if value is None:
        return "(empty)"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
