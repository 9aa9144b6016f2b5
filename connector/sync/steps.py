"""The lifecycle steps around the outbound push (the decisions; the core is called
through the :class:`~connector.sync.pusher.Pusher`):

- creating CRM opportunities for new incoming referrals (idempotent: the CRM is
  searched by referral id before any create, so a crash between the create and the
  link never duplicates a record);
- answering incoming deals (accept/decline) as their records say;
- submitting deal registrations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from connector.crm.base import CrmAdapter, NewOpportunity, StageInfo
from connector.dealcore.options import DEFAULT_OPTIONS, MicrosoftReferralRule
from connector.errors import ConnectorError, CoreError
from connector.logs import record_fields
from connector.mapping.apply import resolve_stage
from connector.mapping.schema import MappingFile
from connector.model import (
    CrmOpportunity,
    CrmStatusUpdate,
    DealDraft,
    ReferralState,
    Rejection,
    Status,
    Substatus,
)
from connector.state.store import Link, LinkState, Store
from connector.sync.customers import CustomerLinks
from connector.sync.inbound import is_new_incoming, opportunity_values, writable
from connector.sync.lifecycle import (
    ACCEPT,
    answer_of,
    incentive_solutions,
    registration_blockers,
    registration_of,
    wants_registration,
)
from connector.sync.links import Linker
from connector.sync.mirror import CoreFacts, facts_of, status_values, values_fingerprint
from connector.sync.outcome import RecordOutcome
from connector.sync.pusher import Pusher, refused
from connector.sync.report import RunReport
from connector.sync.status_writer import stamped
from connector.sync.team import partner_members

#: the logger these lines had before the steps left connector.sync.inbound
log = logging.getLogger("connector.sync.inbound")


class LifecycleSteps:
    """The lifecycle steps around the outbound push: inbound creates, accept/decline,
    registration. The core is called through the :class:`~connector.sync.pusher.Pusher`."""

    def __init__(
        self,
        connection: str,
        *,
        mapping: MappingFile,
        crm: CrmAdapter,
        store: Store,
        pusher: Pusher,
        linker: Linker,
        customers: CustomerLinks,
        clock: Callable[[], datetime],
        core_now: Callable[[], datetime],
    ) -> None:
        self.connection = connection
        self.mapping = mapping
        self.crm = crm
        self.store = store
        self.pusher = pusher
        self.linker = linker
        self.customers = customers
        self.clock = clock
        self.core_now = core_now

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
        fields = self.mapping.status_fields
        todo = [r for r in referrals if r.id not in links and is_new_incoming(r, rule)]
        if not todo:
            return None
        existing = self.crm.find_by_referral_ids(fields.referral_id, [r.id for r in todo])
        now = self.clock()
        saved: list[Link] = []
        creates: list[tuple[ReferralState, CoreFacts, dict[str, Any], str]] = []
        for referral in todo:
            facts = facts_of(
                referral,
                self.linker.link_for(referral.id),
                microsoft.get(referral.engagement_id or ""),
            )
            crm_id = existing.get(referral.id)
            if crm_id is not None:
                log.info(
                    "%s: referral %s already has CRM record %s; linked, not created again",
                    self.connection,
                    referral.id,
                    crm_id,
                    extra=record_fields(self.connection, crm_id, referral_id=referral.id),
                )
                saved.append(self._incoming_link(crm_id, referral, facts, None))
                continue
            status = status_values(facts, fields, self.core_now())
            fingerprint = values_fingerprint(status)
            status = stamped(fields, status, now)
            creates.append(
                (referral, facts, opportunity_values(referral, self.mapping, status), fingerprint)
            )
        floor: datetime | None = None
        stage_value = self._on_hold_stage_value() if creates else {}
        # the customer's account and contact (inbound.customer): found or created first
        tied, untied = self.customers.for_referrals([r for r, _, _, _ in creates])
        for referral_id, why in untied.items():
            report.failed["inbound_create:customer"] += 1
            log.warning("%s: referral %s: %s", self.connection, referral_id, why)
        waiting = [r for r, _, _, _ in creates if r.id in untied and r.updated is not None]
        floor = min((r.updated for r in waiting if r.updated is not None), default=None)
        creates = [
            (r, f, {**stage_value, **v, **tied.get(r.id, {})}, fp)
            for r, f, v, fp in creates
            if r.id not in untied
        ]
        if creates:
            results = self.crm.create_opportunities(
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
                    self.connection,
                    referral.id,
                    result.error_code,
                    result.message,
                    extra={"connection": self.connection, "referral_id": referral.id},
                )
                if referral.updated is not None and (floor is None or referral.updated < floor):
                    floor = referral.updated
        if saved:
            self.store.save_links(self.connection, saved)
            for link in saved:
                assert link.referral_id is not None
                links[link.referral_id] = link
        return floor

    def _on_hold_stage_value(self) -> dict[str, Any]:
        """The stage column's value for the "on hold" stage when the mapping reads a stage
        the adapter derives (Dataverse's ``stage``, from a choice column such as salesstage)."""
        inbound, crm = self.mapping.inbound, self.crm
        column = crm.stage_column
        if not inbound.stage or writable(self.mapping.stages.field) or not column:
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
            connection=self.connection,
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
                        self.store.save_link(self.connection, link)
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
                    self.connection,
                    record.id,
                    exc.message,
                    extra=record_fields(self.connection, record.id, reason=exc.code),
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
                link = self.linker(link, referral, link.fingerprint, dict(referral.raw))
                self.store.save_link(self.connection, link)
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
                link = self.linker(link, referral, None, dict(referral.raw))
                self.store.save_link(self.connection, link)
                links[record.id] = link
                report.updated += 1
                log.info(
                    "%s: %s: accepted referral %s",
                    self.connection,
                    record.id,
                    referral.id,
                    extra=record_fields(self.connection, record.id, referral_id=referral.id),
                )
                continue
            link = self.linker(link, referral, fingerprint, dict(referral.raw))
            self.store.save_link(self.connection, link)
            links[record.id] = link
            log.info(
                "%s: %s: declined referral %s",
                self.connection,
                record.id,
                referral.id,
                extra=record_fields(self.connection, record.id, referral_id=referral.id),
            )
            outcomes.append(RecordOutcome(record.id, "closed", link=link, fingerprint=fingerprint))
        return outcomes

    def _patch_new(self, link: Link, ops: list[dict[str, Any]]) -> ReferralState:
        """Patch an incoming deal that is New; the fresh referral when it is not New anymore."""
        return self.pusher.answer(link, ops)

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
                    referral = self.pusher.register(link, list(decision.ops))
                except CoreError as exc:
                    if not refused(exc):
                        raise
                    notice = f"Registration not sent: Partner Center refused it ({exc.message})."
                else:
                    link = self.linker(link, referral, link.fingerprint, link.sent_body)
                    facts = CoreFacts.from_json(link.core_facts or {})
                    cleared.append(CrmStatusUpdate(record.id, {field: False}))
                    log.info(
                        "%s: %s: deal registration submitted (%s)",
                        self.connection,
                        record.id,
                        referral.registration_status,
                        extra=record_fields(self.connection, record.id),
                    )
            link = replace(link, core_facts=replace(facts, notice=notice).as_json())
            self.store.save_link(self.connection, link)
            outcome.link = link
            outcome.notice = notice
        if cleared:
            for update, result in zip(cleared, self.crm.write_status(cleared), strict=True):
                if not result.ok:
                    log.warning(
                        "%s: %s: clearing %s failed: %s",
                        self.connection,
                        update.crm_id,
                        field,
                        result.message,
                        extra=record_fields(self.connection, update.crm_id),
                    )
