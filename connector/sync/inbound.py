"""Incoming deals and the lifecycle steps the engine runs around its outbound push.

- :func:`opportunity_values` (pure): an incoming referral as the values of a new CRM
  opportunity (the mapping's plain fields, the "on hold" stage, the status fields).
- :func:`with_referral_customer` (pure): a record of an incoming deal with the
  customer the core holds filled in where the CRM cannot hold it (relationship
  fields such as ``Account.Name``): the sender owns the customer profile.
- :class:`LifecycleSteps`: the steps with I/O. Creating opportunities for new
  incoming referrals (idempotent: the CRM is searched by referral id before any
  create, so a crash between the create and the link never duplicates a record),
  answering incoming deals (accept/decline), and submitting deal registrations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from connector.crm.base import NewOpportunity
from connector.dealcore.options import DEFAULT_OPTIONS, MicrosoftReferralRule
from connector.errors import ConnectorError, CoreError, PreconditionFailed
from connector.logs import record_fields
from connector.mapping.apply import resolve_stage
from connector.mapping.schema import ContactFields, FieldSource, MappingFile
from connector.model import (
    AllOf,
    Condition,
    CrmOpportunity,
    CrmStatusUpdate,
    DealDraft,
    Filter,
    ReferralState,
    Rejection,
    StageInfo,
    Status,
    Substatus,
)
from connector.state.store import Link, LinkState
from connector.sync.lifecycle import (
    ACCEPT,
    answer_of,
    incentive_solutions,
    registration_blockers,
    registration_of,
    wants_registration,
)
from connector.sync.mirror import CoreFacts, facts_of, status_values, values_fingerprint
from connector.sync.outcome import RecordOutcome
from connector.sync.report import RunReport
from connector.sync.team import partner_members

if TYPE_CHECKING:
    from connector.sync.engine import SyncEngine

log = logging.getLogger(__name__)

#: Salesforce's Opportunity.Name holds 120 characters; a referral name may be longer
_SALESFORCE_NAME = 120


#: 4xx answers to a write that say nothing about the referral's state
_NOT_A_REFUSAL = frozenset({401, 404, 408, 429})


def is_new_incoming(
    referral: ReferralState, rule: MicrosoftReferralRule = DEFAULT_OPTIONS.microsoft
) -> bool:
    """A deal sent to the partner that waits for an answer (not Microsoft's own referral)."""
    return (
        not rule.matches(referral.raw)
        and referral.direction == "Incoming"
        and referral.status == Status.NEW
    )


def refused(exc: CoreError) -> bool:
    """A write the core refused for a reason of the referral's own (judged by reading it)."""
    return exc.status is not None and 400 <= exc.status < 500 and exc.status not in _NOT_A_REFUSAL


#: names the Dataverse adapter derives from other columns (connector/crm/dynamics/rows.py)
_DERIVED = frozenset({"stage", "is_won", "is_closed"})


def _writable(field: str | None) -> bool:
    """A plain column of the opportunity itself (not a relationship path, a label view or
    a value the adapter derives)."""
    return bool(field) and "." not in str(field) and "@" not in str(field) and field not in _DERIVED


def _reverse(source: FieldSource, value: Any) -> Any:
    """The CRM value a mapped value came from, through the source's value table."""
    if source.table is None:
        return value
    for crm_value, mapped in source.table.items():
        if mapped == value:
            return crm_value
    return None


def _put(values: dict[str, Any], source: FieldSource | None, value: Any) -> None:
    if source is None or value is None or value == "" or not _writable(source.field):
        return
    assert source.field is not None
    crm_value = _reverse(source, value)
    if crm_value is not None:
        values.setdefault(source.field, crm_value)


def _select_values(select: Filter | None) -> dict[str, Any]:
    """Field values that make a new record part of the mapping's selection (``eq`` terms)."""
    if isinstance(select, Condition):
        if select.op == "eq" and _writable(select.field):
            return {select.field: select.value}
        return {}
    if isinstance(select, AllOf):
        out: dict[str, Any] = {}
        for part in select.all:
            out.update(_select_values(part))
        return out
    return {}


def _day(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _amount(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def solutions_by_field(
    mapping: MappingFile, solutions: Sequence[Any]
) -> list[tuple[FieldSource, list[str]]]:
    """A referral's solutions by the mapped field of their kind: those sent with the type
    the mapping gives Microsoft's solutions go to ``microsoft_solutions`` (when mapped),
    the others to ``solutions`` (own and third-party look alike in a referral)."""
    f = mapping.fields
    own: list[str] = []
    microsoft: list[str] = []
    for item in solutions:
        if not isinstance(item, Mapping) or not item.get("id"):
            continue
        is_microsofts = (
            f.microsoft_solutions is not None
            and mapping.solution_types.microsoft != mapping.solution_types.own
            and item.get("type") == mapping.solution_types.microsoft
        )
        (microsoft if is_microsofts else own).append(str(item["id"]))
    found = [(f.solutions, own)]
    if f.microsoft_solutions is not None:
        found.append((f.microsoft_solutions, microsoft))
    return found


def _contact_values(values: dict[str, Any], fields: ContactFields | None, person: Any) -> None:
    if fields is None or not isinstance(person, Mapping):
        return
    _put(values, fields.first_name, person.get("firstName"))
    _put(values, fields.last_name, person.get("lastName"))
    _put(values, fields.email, person.get("email"))
    _put(values, fields.phone, person.get("phoneNumber"))


def opportunity_values(
    referral: ReferralState, mapping: MappingFile, status: Mapping[str, Any]
) -> dict[str, Any]:
    """The values of the CRM opportunity that holds ``referral`` (an incoming deal).

    Only plain fields of the opportunity are written: customer values mapped to
    relationship fields (``Account.Name``) stay in the core and are read from there
    (:func:`with_referral_customer`). ``status`` are the status fields' values.
    """
    raw = referral.raw
    f = mapping.fields
    values: dict[str, Any] = dict(status)
    name = referral.name or "Incoming referral"
    if mapping.crm == "salesforce":
        name = name[:_SALESFORCE_NAME]
    _put(values, f.name, name)
    details = raw.get("details") if isinstance(raw.get("details"), Mapping) else {}
    assert isinstance(details, Mapping)
    _put(values, f.value, _amount(details.get("dealValue")))
    _put(values, f.currency, details.get("currency"))
    _put(values, f.close_date, _day(details.get("closingDateTime")))
    _put(values, f.notes, details.get("notes"))
    _put(values, f.campaign_id, raw.get("campaignId"))
    requirements = details.get("requirements")
    solutions = requirements.get("solutions") if isinstance(requirements, Mapping) else None
    if isinstance(solutions, list):
        for source, ids in solutions_by_field(mapping, solutions):
            _put(values, source, (source.split or ";").join(ids) or None)
    profile = raw.get("customerProfile")
    if isinstance(profile, Mapping):
        address = profile.get("address") if isinstance(profile.get("address"), Mapping) else {}
        assert isinstance(address, Mapping)
        _put(values, f.customer_name, profile.get("name"))
        _put(values, f.customer_country, address.get("country"))
        _put(values, f.customer_city, address.get("city"))
        _put(values, f.customer_state, address.get("state"))
        _put(values, f.customer_postal_code, address.get("postalCode"))
        _put(values, f.customer_address_line1, address.get("addressLine1"))
        team = profile.get("team")
        if isinstance(team, list) and team:
            _contact_values(values, f.customer_contact, team[0])
    invite = raw.get("inviteContext")
    code = invite.get("assistanceRequestCode") if isinstance(invite, Mapping) else None
    help_field = mapping.deal_type.help_field
    if code and _writable(help_field):
        assert help_field is not None
        labels = [k for k, v in mapping.deal_type.help_values.items() if v == code]
        if labels:
            values.setdefault(help_field, labels[0])
    inbound = mapping.inbound
    if inbound.stage and _writable(mapping.stages.field):
        values.setdefault(mapping.stages.field, inbound.stage)
    if inbound.owner_id:
        values.setdefault("OwnerId" if mapping.crm == "salesforce" else "ownerid", inbound.owner_id)
    if inbound.record_type_id and mapping.crm == "salesforce":
        values.setdefault("RecordTypeId", inbound.record_type_id)
    for field, value in _select_values(mapping.select).items():
        values.setdefault(field, value)
    return values


def _fill(fields: dict[str, Any], source: FieldSource | None, value: Any) -> None:
    if source is None or source.field is None or value in (None, ""):
        return
    current = fields.get(source.field)
    if current is None or (isinstance(current, str) and not current.strip()):
        fields[source.field] = _reverse(source, value)


def with_referral_customer(
    record: CrmOpportunity, mapping: MappingFile, link: Link | None
) -> CrmOpportunity:
    """``record`` with the customer of its incoming deal filled in where the CRM left it empty.

    The customer of a deal sent to the partner comes from the sender; the CRM may not
    be able to hold it (an opportunity created by the connector has no account). Only
    empty mapped customer fields are filled, from the referral as last sent or read.
    """
    if link is None or link.direction != "Incoming" or not link.sent_body:
        return record
    profile = link.sent_body.get("customerProfile")
    if not isinstance(profile, Mapping):
        return record
    f = mapping.fields
    fields = dict(record.fields)
    address = profile.get("address") if isinstance(profile.get("address"), Mapping) else {}
    assert isinstance(address, Mapping)
    _fill(fields, f.customer_name, profile.get("name"))
    _fill(fields, f.customer_country, address.get("country"))
    _fill(fields, f.customer_city, address.get("city"))
    _fill(fields, f.customer_state, address.get("state"))
    _fill(fields, f.customer_postal_code, address.get("postalCode"))
    _fill(fields, f.customer_address_line1, address.get("addressLine1"))
    team = profile.get("team")
    contact = f.customer_contact
    if contact is not None and isinstance(team, list) and team and isinstance(team[0], Mapping):
        person = team[0]
        parts = (contact.first_name, contact.last_name, contact.email, contact.phone)
        if all(p.field is None or fields.get(p.field) in (None, "") for p in parts):
            _fill(fields, contact.first_name, person.get("firstName"))
            _fill(fields, contact.last_name, person.get("lastName"))
            _fill(fields, contact.email, person.get("email"))
            _fill(fields, contact.phone, person.get("phoneNumber"))
    # values the CRM cannot hold on the opportunity itself (a related row, a label view)
    details = link.sent_body.get("details")
    if isinstance(details, Mapping) and not _writable(f.currency.field):
        _fill(fields, f.currency, details.get("currency"))
    invite = link.sent_body.get("inviteContext")
    code = invite.get("assistanceRequestCode") if isinstance(invite, Mapping) else None
    help_field = mapping.deal_type.help_field
    if code and help_field and not _writable(help_field) and fields.get(help_field) in (None, ""):
        labels = [k for k, v in mapping.deal_type.help_values.items() if v == code]
        if labels:
            fields[help_field] = labels[0]
    if fields == dict(record.fields):
        return record
    return replace(record, fields=fields)


class LifecycleSteps:
    """The engine's lifecycle steps: inbound creates, accept/decline, registration."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine

    @property
    def mapping(self) -> MappingFile:
        return self.engine.mapping

    # ------------------------------------------------------------------ inbound create

    def create_opportunities(
        self,
        referrals: Sequence[ReferralState],
        links: MutableMapping[str, Link],
        microsoft: Mapping[str, ReferralState],
        report: RunReport,
        rule: MicrosoftReferralRule = DEFAULT_OPTIONS.microsoft,
    ) -> datetime | None:
        """CRM opportunities for new incoming referrals that have none yet.

        The CRM is searched by the referral-id field first: a referral whose record
        exists (created before a crash, or by hand) is linked, not created again.
        Returns the oldest ``updatedDateTime`` among referrals whose create failed, so
        the caller keeps its cursor before them and they are tried again next cycle.
        """
        engine = self.engine
        fields = self.mapping.status_fields
        todo = [r for r in referrals if r.id not in links and is_new_incoming(r, rule)]
        if not todo:
            return None
        existing = engine.crm.find_by_referral_ids(fields.referral_id, [r.id for r in todo])
        now = engine.clock()
        saved: list[Link] = []
        creates: list[tuple[ReferralState, CoreFacts, dict[str, Any], str]] = []
        for referral in todo:
            facts = facts_of(
                referral, engine.link_for(referral.id), microsoft.get(referral.engagement_id or "")
            )
            crm_id = existing.get(referral.id)
            if crm_id is not None:
                log.info(
                    "%s: referral %s already has CRM record %s; linked, not created again",
                    engine.connection,
                    referral.id,
                    crm_id,
                    extra=record_fields(engine.connection, crm_id, referral_id=referral.id),
                )
                saved.append(self._incoming_link(crm_id, referral, facts, None))
                continue
            status = status_values(facts, fields, engine.core_clock.now())
            fingerprint = values_fingerprint(status)
            if fields.last_sync:
                status[fields.last_sync] = now
            creates.append(
                (referral, facts, opportunity_values(referral, self.mapping, status), fingerprint)
            )
        floor: datetime | None = None
        stage_value = self._on_hold_stage_value() if creates else {}
        # the customer's account and contact (inbound.customer): found or created first
        tied, untied = engine.customers.for_referrals([r for r, _, _, _ in creates])
        for referral_id, why in untied.items():
            report.failed["inbound_create:customer"] += 1
            log.warning("%s: referral %s: %s", engine.connection, referral_id, why)
        waiting = [r for r, _, _, _ in creates if r.id in untied and r.updated is not None]
        floor = min((r.updated for r in waiting if r.updated is not None), default=None)
        creates = [
            (r, f, {**stage_value, **v, **tied.get(r.id, {})}, fp)
            for r, f, v, fp in creates
            if r.id not in untied
        ]
        if creates:
            results = engine.crm.create_opportunities(
                [NewOpportunity(r.id, values) for r, _, values, _ in creates]
            )
            for (referral, facts, _, fingerprint), result in zip(creates, results, strict=True):
                if result.ok and result.crm_id:
                    report.created += 1
                    saved.append(self._incoming_link(result.crm_id, referral, facts, fingerprint))
                    continue
                report.failed[f"inbound_create:{result.error_code}"] += 1
                log.warning(
                    "%s: referral %s: creating its CRM opportunity failed: %s %s",
                    engine.connection,
                    referral.id,
                    result.error_code,
                    result.message,
                    extra={"connection": engine.connection, "referral_id": referral.id},
                )
                if referral.updated is not None and (floor is None or referral.updated < floor):
                    floor = referral.updated
        if saved:
            engine.store.save_links(engine.connection, saved)
            for link in saved:
                assert link.referral_id is not None
                links[link.referral_id] = link
        return floor

    def _on_hold_stage_value(self) -> dict[str, Any]:
        """The stage column's value for the "on hold" stage when the mapping reads a stage
        the adapter derives (Dataverse's ``stage``, from a choice column such as salesstage)."""
        inbound, crm = self.mapping.inbound, self.engine.crm
        column = getattr(crm, "stage_column", None)
        if not inbound.stage or _writable(self.mapping.stages.field) or not column:
            return {}
        for info in crm.stage_metadata():
            if info.label == inbound.stage:
                value = info.api_name
                return {str(column): int(value) if value.isdigit() else value}
        return {}

    def _incoming_link(
        self, crm_id: str, referral: ReferralState, facts: CoreFacts, mirrored: str | None
    ) -> Link:
        return Link(
            connection=self.engine.connection,
            crm_id=crm_id,
            state=LinkState.TERMINAL if referral.is_terminal else LinkState.LINKED,
            referral_id=referral.id,
            engagement_id=referral.engagement_id,
            etag=referral.etag,
            fingerprint=None,
            # the core's body is the base of later patches: only what the CRM changes is sent
            sent_body=dict(referral.raw),
            status=referral.status.value,
            substatus=referral.substatus.value if referral.substatus else None,
            direction="Incoming",
            mirrored_fingerprint=mirrored,
            # the team as it came is the sender's: kept beside the partner's own
            core_facts=replace(facts, partner_team=partner_members(referral.raw)).as_json(),
        )

    # ------------------------------------------------------------------ answers

    def answer(
        self,
        records: Sequence[CrmOpportunity],
        drafts: Mapping[str, DealDraft | Rejection],
        links: MutableMapping[str, Link],
        stages: Mapping[str, StageInfo],
        report: RunReport,
    ) -> list[RecordOutcome]:
        """Accept or decline incoming deals as their records say; hold the others.

        Returns outcomes for records settled here (held, declined, refused). An
        accepted record gets no outcome: its link moves to Active and the normal plan
        sends the record's content in the same cycle.
        """
        engine = self.engine
        outcomes: list[RecordOutcome] = []
        for record in records:
            link = links.get(record.id)
            if link is None or link.direction != "Incoming" or link.referral_id is None:
                continue
            draft = drafts.get(record.id)
            fingerprint = draft.fingerprint() if isinstance(draft, DealDraft) else None
            stage = (
                draft.stage
                if isinstance(draft, DealDraft)
                else resolve_stage(record, self.mapping, stages)[0]
            )
            answer = answer_of(record, self.mapping, link.status, link.substatus, stage)
            if answer.kind == "wait":
                if link.status == Status.NEW.value:
                    if fingerprint is not None and fingerprint != link.fingerprint:
                        link = replace(link, fingerprint=fingerprint)
                        engine.store.save_link(engine.connection, link)
                        links[record.id] = link
                    outcomes.append(
                        RecordOutcome(
                            record.id,
                            "skipped",
                            "incoming_not_answered",
                            link=link,
                            fingerprint=fingerprint,
                        )
                    )
                continue
            if answer.kind == "refuse":
                outcomes.append(
                    RecordOutcome(
                        record.id,
                        "skipped",
                        "answer_refused",
                        link=link,
                        notice=answer.notice,
                        fingerprint=fingerprint,
                    )
                )
                continue
            try:
                referral = self._patch_new(link, list(answer.ops))
            except ConnectorError as exc:
                log.warning(
                    "%s: %s: %s",
                    engine.connection,
                    record.id,
                    exc.message,
                    extra=record_fields(engine.connection, record.id, reason=exc.code),
                )
                outcomes.append(
                    RecordOutcome(
                        record.id, "failed", exc.code, exc.message, transient=exc.transient
                    )
                )
                continue
            expected = (
                (Status.ACTIVE, Substatus.ACCEPTED)
                if answer.kind == ACCEPT
                else (Status.CLOSED, Substatus.DECLINED)
            )
            if (referral.status, referral.substatus) != expected:
                # the deal closed meanwhile (expired): say so instead of answering
                link = engine._linked(link, referral, link.fingerprint, dict(referral.raw))
                engine.store.save_link(engine.connection, link)
                links[record.id] = link
                outcomes.append(
                    RecordOutcome(
                        record.id,
                        "skipped",
                        "terminal",
                        link=link,
                        notice=(
                            f"Not sent: the referral is {link.status}/{link.substatus} in "
                            "Partner Center; it can no longer be answered."
                        ),
                        fingerprint=fingerprint,
                    )
                )
                continue
            if answer.kind == ACCEPT:
                # fingerprint None: the plan compares the record with the core's body now
                link = engine._linked(link, referral, None, dict(referral.raw))
                engine.store.save_link(engine.connection, link)
                links[record.id] = link
                report.updated += 1
                log.info(
                    "%s: %s: accepted referral %s",
                    engine.connection,
                    record.id,
                    referral.id,
                    extra=record_fields(engine.connection, record.id, referral_id=referral.id),
                )
                continue
            link = engine._linked(link, referral, fingerprint, dict(referral.raw))
            engine.store.save_link(engine.connection, link)
            links[record.id] = link
            log.info(
                "%s: %s: declined referral %s",
                engine.connection,
                record.id,
                referral.id,
                extra=record_fields(engine.connection, record.id, referral_id=referral.id),
            )
            outcomes.append(RecordOutcome(record.id, "closed", link=link, fingerprint=fingerprint))
        return outcomes

    def _patch_new(self, link: Link, ops: list[dict[str, Any]]) -> ReferralState:
        """Patch an incoming deal that is New; the fresh referral when it is not New anymore."""
        core = self.engine.core
        assert link.referral_id is not None
        try:
            return core.patch(link.referral_id, ops, link.etag)
        except PreconditionFailed:
            fresh = core.get(link.referral_id)
            if fresh.status != Status.NEW:
                return fresh
            return core.patch(link.referral_id, ops, fresh.etag)
        except CoreError as exc:
            if not refused(exc):
                raise
            # No error code says "no longer New": the referral itself does.
            fresh = core.get(link.referral_id)
            if fresh.status != Status.NEW:
                return fresh
            raise

    # ------------------------------------------------------------------ registration

    def register(
        self,
        outcomes: Sequence[RecordOutcome],
        records: Mapping[str, CrmOpportunity],
        links: Mapping[str, Link],
    ) -> None:
        """Submit deal registrations that won, eligible deals ask for (the mapped checkbox).

        The outcome's link gets the result (registration status, or the reason it was
        not sent, which the mirror writes into the sync-error field). After a
        submission the checkbox is cleared, so a failed review is retried only when
        the seller asks again.
        """
        engine = self.engine
        field = self.mapping.deal_type.register_field
        if field is None:
            return
        cleared: list[CrmStatusUpdate] = []
        for outcome in outcomes:
            record = records.get(outcome.crm_id)
            if record is None or outcome.kind in {"rejected", "failed"}:
                continue
            if not wants_registration(record, self.mapping):
                continue
            link = outcome.link or links.get(outcome.crm_id)
            if link is None or link.core_facts is None or link.referral_id is None:
                continue
            facts = CoreFacts.from_json(link.core_facts)
            body = link.sent_body or {}
            decision = registration_of(
                record,
                self.mapping,
                status=link.status,
                substatus=link.substatus,
                registration_status=facts.registration_status,
                blockers=registration_blockers(body, facts.microsoft_status),
                solutions=incentive_solutions(body),
            )
            if decision.kind == "none":
                continue
            notice = decision.notice
            if decision.kind == "submit":
                try:
                    referral = engine.core.patch(link.referral_id, list(decision.ops), link.etag)
                except PreconditionFailed:
                    fresh = engine.core.get(link.referral_id)
                    referral = engine.core.patch(link.referral_id, list(decision.ops), fresh.etag)
                except CoreError as exc:
                    if not refused(exc):
                        raise
                    notice = f"Registration not sent: Partner Center refused it ({exc.message})."
                else:
                    link = engine._linked(link, referral, link.fingerprint, link.sent_body)
                    facts = CoreFacts.from_json(link.core_facts or {})
                    cleared.append(CrmStatusUpdate(record.id, {field: False}))
                    log.info(
                        "%s: %s: deal registration submitted (%s)",
                        engine.connection,
                        record.id,
                        referral.registration_status,
                        extra=record_fields(engine.connection, record.id),
                    )
            link = replace(link, core_facts=replace(facts, notice=notice).as_json())
            engine.store.save_link(engine.connection, link)
            outcome.link = link
            outcome.notice = notice
        if cleared:
            for update, result in zip(cleared, engine.crm.write_status(cleared), strict=True):
                if not result.ok:
                    log.warning(
                        "%s: %s: clearing %s failed: %s",
                        engine.connection,
                        update.crm_id,
                        field,
                        result.message,
                        extra=record_fields(engine.connection, update.crm_id),
                    )
