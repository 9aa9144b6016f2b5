"""The dry-run plan: what each record would become, for a person and as JSON.

:func:`describe` turns a planned action into a plain dict (the ``plan`` of the run
report and of ``connector sync --once --dry-run --json``): the record's id and name,
the action, and for a write each changed field with its value before (what the
referral holds, as last sent) and after. :func:`print_plan` shows the changes first
(creates, closes, updates, rejections, by name), each with ``before → after``, then
one line per skip reason with its count; ``--json`` gives the whole plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connector.mapping.schema import FieldSource, MappingFile
from connector.model import CrmOpportunity, DealDraft
from connector.redaction import scrub
from connector.sync.plan import Action, Create, Reject, Skip, Update

#: how the plan is ordered for a person: what writes first, what is left alone last
ACTION_ORDER = {"create": 0, "close": 1, "update": 2, "reject": 3, "skip": 4}
#: the longest value shown in a cell of the plan table (``--json`` has them whole)
SHOWN_VALUE = 60


def record_name(record: CrmOpportunity, mapping: MappingFile) -> str | None:
    """The opportunity's name as the mapping reads it (a rejected record has no draft)."""
    source = mapping.fields.name
    if not isinstance(source, FieldSource):
        return None
    value = record.fields.get(source.field) if source.field else source.const
    return None if value is None else str(value)


def describe(
    action: Action, sent_body: Mapping[str, Any] | None = None, *, name: str | None = None
) -> dict[str, Any]:
    """One planned action as a plain dict; ``sent_body`` is the referral as last sent."""
    if isinstance(action, Create):
        return {
            "crm_id": action.draft.crm_id,
            "name": action.draft.name,
            "action": "create",
            "changes": [
                {"field": field, "before": None, "after": value}
                for field, value in _created(action.draft).items()
            ],
            "status": f"{action.body.get('status')}/{action.body.get('substatus')}",
            "invite_microsoft": action.invite_microsoft,
            "notice": action.notice,
        }
    if isinstance(action, Update):
        return {
            "crm_id": action.draft.crm_id,
            "name": action.draft.name,
            "action": "close" if action.closes else "update",
            "changes": [
                {
                    "field": op["path"].strip("/").replace("/", "."),
                    "before": _at(sent_body, op["path"]),
                    "after": op.get("value"),
                }
                for op in action.ops
            ],
        }
    if isinstance(action, Skip):
        return {
            "crm_id": action.crm_id,
            "name": name,
            "action": "skip",
            "reason": action.reason.value,
        }
    assert isinstance(action, Reject)
    return {
        "crm_id": action.crm_id,
        "name": name,
        "action": "reject",
        "reason": action.code,
        "reasons": list(action.reasons),
    }


def ordered(plan: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Changes first (creates, closes, updates, rejections), then skips; by name within."""
    return sorted(
        plan,
        key=lambda item: (
            ACTION_ORDER.get(str(item["action"]), 9),
            str(item.get("name") or "").lower(),
            str(item["crm_id"]),
        ),
    )


def print_plan(plan: Sequence[Mapping[str, Any]], console: Console, *, limit: int = 50) -> None:
    """The plan as a table of changes (at most ``limit`` rows) and the skips counted."""
    items = ordered(plan)
    changes = [i for i in items if i["action"] != "skip"]
    shown = changes[:limit] if limit > 0 else changes
    table = Table(title=f"Plan: {len(changes)} change(s) of {len(plan)} record(s)")
    table.add_column("action")
    table.add_column("opportunity")
    table.add_column("CRM id", no_wrap=True)
    table.add_column("what changes (before → after)")
    for item in shown:
        table.add_row(
            str(item["action"]),
            _text(item.get("name")),
            _text(item["crm_id"]),
            _detail(item),
        )
    console.print(table)
    if len(shown) < len(changes):
        console.print(
            f"the first {len(shown)} changes shown (--json for the whole plan)", highlight=False
        )
    skipped = Counter(str(i.get("reason")) for i in items if i["action"] == "skip")
    for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]):
        console.print(f"skip {escape(reason)}: {n} record(s)", highlight=False)


def _detail(item: Mapping[str, Any]) -> str:
    if item["action"] == "reject":
        return "\n".join(_text(reason) for reason in item.get("reasons") or [])
    lines = []
    for change in item.get("changes") or []:
        before, after = change.get("before"), change.get("after")
        if item["action"] == "create":
            lines.append(f"{_text(change['field'])}: {_value(after)}")
        else:
            lines.append(f"{_text(change['field'])}: {_value(before)} → {_value(after)}")
    if item["action"] == "create" and item.get("status"):
        lines.append(f"created as {_text(item['status'])}")
    if item.get("invite_microsoft"):
        lines.append("then Microsoft invited (its referral in the engagement)")
    if item.get("notice"):
        lines.append(_text(item["notice"]))
    return "\n".join(lines)


def _value(value: Any) -> str:
    if value is None:
        return "(empty)"
    if isinstance(value, list):
        text = ", ".join(str(v) for v in value) or "(none)"
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={v}" for k, v in value.items())
    else:
        text = str(value)
    if len(text) > SHOWN_VALUE:
        text = text[: SHOWN_VALUE - 1] + "…"
    return _text(text)


def _text(value: Any) -> str:
    # the CRM's and the core's words: scrubbed, and not markup
    return escape(scrub("" if value is None else str(value)))


def _created(draft: DealDraft) -> dict[str, Any]:
    return {
        "stage": draft.stage.value,
        "dealType": draft.deal_type.value,
        "dealValue": f"{draft.value} {draft.currency}",
        "closingDate": draft.close_date.isoformat(),
        "customer": f"{draft.customer.name} ({draft.customer.country})",
    }


def _at(body: Mapping[str, Any] | None, path: str) -> Any:
    """The value at a JSON Pointer ``path`` of ``body``; None when absent."""
    current: Any = body
    for part in path.strip("/").split("/"):
        if part == "-":
            return None  # an item added to a list had no value before
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current
