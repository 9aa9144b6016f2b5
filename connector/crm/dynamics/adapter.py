"""The Dynamics 365 / Dataverse adapter: :class:`DataverseOpportunities`.

Reading uses change tracking when the table has it: the first pull
reads everything with ``Prefer: odata.track-changes`` and keeps the last page's
``@odata.deltaLink`` as the cursor (``delta:<link>``); later pulls call that link and
get only changes, deletions included. Dataverse refuses ``$filter``/``$orderby``/
``$expand`` in that mode, so the ``select`` filter is applied here, after
normalisation, and related rows (account, owner, currency, contact) are read with
one query per lookup and page, cached for the run. An expired delta token starts a
clean full resync.

Whether the table has it is read from its definition (``ChangeTrackingEnabled``)
before a pull that holds no delta link yet; a delta link proves it, since change
tracking once turned on cannot be turned off. ``change_tracking`` says what to do
when it is off: ``auto`` reads by ``modifiedon`` and logs a warning, ``required``
refuses to run, naming the setting; ``off`` never uses it.

Without change tracking, pulls filter on
``modifiedon ge <cursor - overlap>`` ordered by ``(modifiedon, opportunityid)``,
de-duplicate, and keep ``modifiedon:<iso>`` capped at the server's time minus a
margin as the cursor. Deletions are invisible that way (the engine's periodic
reconciliation finds them).

Writing: see :mod:`connector.crm.dynamics.writes`. Every call goes through
:class:`~connector.crm.dynamics.transport.DataverseTransport` (token, budget,
retries, concurrency cap).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from connector.crm.base import ApiUsage, CrmPage, LostClosing, NewOpportunity, WriteResult
from connector.crm.dynamics.auth import DEFAULT_AUTHORITY, DataverseTokens
from connector.crm.dynamics.closing import DataverseClosing
from connector.crm.dynamics.metadata import DataverseMetadata, dataverse_fields
from connector.crm.dynamics.odata import column_of, filter_fields, is_guid, literal
from connector.crm.dynamics.pacing import (
    WINDOW_REQUESTS,
    RequestBudget,
    RequestPacer,
    shared_pacer,
)
from connector.crm.dynamics.reads import DELTA_PREFIX, RELATED_CACHE, DataverseReader
from connector.crm.dynamics.related import DataverseRelated
from connector.crm.dynamics.rows import (
    DEFAULT_LOOKUPS,
    LOST_LABEL,
    MONEY_COLUMNS,
    WON_LABEL,
    LookupTarget,
    plan_columns,
)
from connector.crm.dynamics.transport import DataverseTransport, body_of, error_of
from connector.crm.dynamics.writes import DataverseWriter
from connector.errors import ConfigError, CrmError
from connector.http_deadline import DEFAULT_REQUEST_DEADLINE_S, deadline_client
from connector.model import CrmField, CrmOpportunity, CrmStatusUpdate, Filter, StageInfo

log = logging.getLogger(__name__)
#: referral ids per lookup ($filter of "or"ed equalities, well within URL limits)
REFERRAL_LOOKUP_CHUNK = 50
#: linked rows asked about per existence query (GUID equalities: about 6 KB of URL)
EXISTENCE_CHUNK = 100


ChangeTracking = Literal["auto", "required", "off"]
#: the connection setting that holds the change-tracking policy
CHANGE_TRACKING_SETTING = "crm.change_tracking"


class DataverseOpportunities:
    """:class:`~connector.crm.base.CrmAdapter` for Dataverse's ``opportunity`` table.

    ``stage_source`` is ``salesstage`` (the default option set), ``stepname`` (the
    business-process phase, free text) or the logical name of a custom option-set
    column. ``max_requests`` and ``window_share`` (of the 6000 requests per 5 minutes)
    bound the run; past them the adapter raises (reads) or reports (writes)
    ``quota_exhausted``.
    """

    system = "dataverse"

    def __init__(
        self,
        *,
        environment_url: str,
        http: httpx.Client,
        tokens: DataverseTokens,
        timeout_s: float = 60.0,
        page_size: int = 1000,
        max_concurrency: int = 8,
        stage_source: str = "salesstage",
        change_tracking: ChangeTracking | bool = "auto",
        reconcile_every: timedelta | None = None,
        max_requests: int | None = None,
        window_share: float | None = None,
        max_attempts: int = 5,
        max_throttle_wait_s: float = 300.0,
        batch_size: int = 20,
        batch_threshold: int = 2,
        batch_changesets: bool = False,
        guard_closed: bool = True,
        overlap: timedelta = timedelta(minutes=5),
        cursor_margin: timedelta = timedelta(seconds=60),
        lookups: Mapping[str, LookupTarget] = DEFAULT_LOOKUPS,
        money_columns: frozenset[str] = MONEY_COLUMNS,
        api_version: str = "v9.2",
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        owns_http: bool = False,
        pacer: RequestPacer | None = None,
        related_cache: int = RELATED_CACHE,
    ) -> None:
        if not 1 <= page_size <= 5000:
            raise ValueError("page_size must be 1..5000 (Dataverse's odata.maxpagesize limit)")
        self.environment_url = environment_url.rstrip("/")
        self.usage = ApiUsage()
        self.page_size = page_size
        self.stage_column = stage_source
        self.change_tracking = change_tracking_policy(change_tracking)
        self.reconcile_every = reconcile_every
        self.overlap = overlap
        self.cursor_margin = cursor_margin
        self.lookups = dict(lookups)
        self.money_columns = money_columns
        self._http = http
        self._owns_http = owns_http
        self.transport = DataverseTransport(
            api_url=f"{self.environment_url}/api/data/{api_version}",
            http=http,
            tokens=tokens,
            usage=self.usage,
            budget=RequestBudget(
                max_requests=max_requests, window_share=window_share, monotonic=monotonic
            ),
            timeout_s=timeout_s,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            max_throttle_wait_s=max_throttle_wait_s,
            sleep=sleep,
            monotonic=monotonic,
            pacer=pacer,
        )
        self.metadata = DataverseMetadata(self.transport)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="dataverse")
        self.reader = DataverseReader(
            self.transport,
            self.metadata,
            executor=self._pool,
            lookups=self.lookups,
            page_size=page_size,
            stage_column=stage_source,
            money_columns=money_columns,
            overlap=overlap,
            cursor_margin=cursor_margin,
            related_cache=related_cache,
        )
        self.writer = DataverseWriter(
            self.transport,
            lookups=self.lookups,
            executor=self._pool,
            batch_size=batch_size,
            batch_threshold=batch_threshold,
            batch_changesets=batch_changesets,
            guard_closed=guard_closed,
        )
        self.closing = DataverseClosing(self)
        #: accounts, contacts and sales teams (connector.crm.dynamics.related)
        self.related = DataverseRelated(self)

    @classmethod
    def connect(
        cls,
        *,
        environment_url: str,
        tenant: str,
        client_id: str,
        client_secret: SecretStr | str,
        authority: str = DEFAULT_AUTHORITY,
        ca_file: Path | None = None,
        timeout_s: float = 60.0,
        request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S,
        requests_per_5min: int | None = WINDOW_REQUESTS,
        **options: Any,
    ) -> DataverseOpportunities:
        """An adapter with its own HTTP client (``ca_file`` for the sandbox's certificate;
        ``timeout_s`` per socket step, ``request_deadline_s`` per request in all).

        ``requests_per_5min`` paces the requests of this application user (shared with
        every adapter of the same user in the process, as Dataverse's limit is per user);
        None sends without pacing."""
        http = deadline_client(
            deadline_s=request_deadline_s,
            ca_file=ca_file,
            timeout=timeout_s,
            follow_redirects=False,
        )
        tokens = DataverseTokens(
            environment_url=environment_url,
            tenant=tenant,
            client_id=client_id,
            client_secret=client_secret,
            http=http,
            authority=authority,
            timeout_s=timeout_s,
        )
        return cls(
            environment_url=environment_url,
            http=http,
            tokens=tokens,
            timeout_s=timeout_s,
            owns_http=True,
            pacer=(
                shared_pacer(environment_url, client_id, requests_per_5min)
                if requests_per_5min
                else None
            ),
            **options,
        )

    # -- reading ----------------------------------------------------------------

    def pull_changes(
        self, cursor: str | None, *, fields: Sequence[str], select: Filter | None
    ) -> Iterator[CrmPage]:
        """Pages of opportunities changed since ``cursor`` (everything when None)."""
        wanted = [*fields, *(filter_fields(select) if select is not None else ())]
        plan = plan_columns(wanted, lookups=self.lookups, stage_column=self.stage_column)
        related = self.reader.related_cache(plan)
        if self._tracks_changes(cursor):
            return self.reader.pull_tracked(cursor, plan, select, related)
        return self.reader.pull_by_modifiedon(cursor, plan, select, related)

    def _tracks_changes(self, cursor: str | None) -> bool:
        """Whether this pull uses change tracking (the table's definition asked when needed)."""
        if self.change_tracking == "off":
            return False
        if cursor is not None and cursor.startswith(DELTA_PREFIX):
            return True  # a delta link was issued: tracking is on, and stays on
        if self.metadata.change_tracking_enabled("opportunity"):
            return True
        if self.change_tracking == "required":
            raise ConfigError(
                "Dataverse: change tracking is not enabled for the opportunity table "
                f"(ChangeTrackingEnabled is false) and {CHANGE_TRACKING_SETTING} requires it. "
                "Turn on 'Track changes' for Opportunity (Power Apps > Tables > Opportunity "
                f"> Properties > Advanced options), or set {CHANGE_TRACKING_SETTING}: auto "
                "to read changes by modifiedon (deletions are then found by the reconciliation)"
            )
        log.warning(
            "dataverse: change tracking is not enabled for the opportunity table; reading "
            "changes by modifiedon (turn on 'Track changes' for Opportunity to see deletions "
            "at once, or set %s: off to silence this)",
            CHANGE_TRACKING_SETTING,
        )
        return False

    def fetch(self, record_id: str, *, fields: Sequence[str]) -> CrmOpportunity | None:
        """One record by id, or None when it does not exist."""
        if not is_guid(record_id):
            raise CrmError(
                f"{record_id!r} is not a Dataverse record id (a GUID); check the link",
                code="invalid_id",
            )
        plan = plan_columns(fields, lookups=self.lookups, stage_column=self.stage_column)
        record = record_id.lower()
        what = f"GET opportunity {record}"
        response = self.transport.send(
            "GET",
            f"opportunities({record})",
            kind="read",
            what=what,
            params={"$select": ",".join(plan.select)},
            headers={"Prefer": self.reader.prefer(track=False)},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise error_of(response, what)
        body = body_of(response, what)
        if not isinstance(body, dict):
            raise CrmError(
                f"{what}: Dataverse answered something that is not a row", code="malformed_response"
            )
        return self.reader.normalise([body], plan, self.reader.related_cache(plan))[0]

    def describe_fields(self, entity: str | None = None) -> list[CrmField]:
        """An entity's attributes (see :func:`~connector.crm.dynamics.metadata.dataverse_fields`)."""
        name = entity or "opportunity"
        path = f"EntityDefinitions(LogicalName={literal(name)})/Attributes"
        params = {"$select": "LogicalName,AttributeType"}
        body = self.metadata.read(path, what=f"GET attributes of {name}", params=params)
        return dataverse_fields(body, name, self.lookups)

    def stage_metadata(self) -> list[StageInfo]:
        """The stage column's options (open stages), then synthetic Won and Lost (statecode)."""
        if self.stage_column == "stepname":
            stages = self.metadata.process_stages()
        else:
            stages = self.metadata.option_set_stages(self.stage_column)
        order = len(stages)
        return [
            *stages,
            StageInfo(
                WON_LABEL, "statecode:1", None, is_closed=True, is_won=True, sort_order=order
            ),
            StageInfo(
                LOST_LABEL, "statecode:2", None, is_closed=True, is_won=False, sort_order=order + 1
            ),
        ]

    # -- writing ----------------------------------------------------------------

    def write_status(self, updates: Sequence[CrmStatusUpdate]) -> list[WriteResult]:
        """PATCH status fields with ``If-Match: *``; see :mod:`connector.crm.dynamics.writes`."""
        return self.writer.write_status(updates)

    def create_opportunities(self, items: Sequence[NewOpportunity]) -> list[WriteResult]:
        """POST new opportunities; ``crm_id`` of each result is the new row's id."""
        return self.writer.create_many(items)

    def missing_records(self, crm_ids: Sequence[str]) -> set[str]:
        """Rows among ``crm_ids`` that no longer exist (deleted): 100 ids a query."""
        ids = {str(i).lower(): i for i in crm_ids if is_guid(i)}
        found: set[str] = set()
        keys = list(ids)
        prefer = {"Prefer": self.reader.prefer(track=False)}
        for start in range(0, len(keys), EXISTENCE_CHUNK):
            chunk = keys[start : start + EXISTENCE_CHUNK]
            what = f"GET opportunities (do {len(chunk)} linked rows exist)"
            params = {
                "$select": "opportunityid",
                "$filter": " or ".join(f"opportunityid eq {i}" for i in chunk),
            }
            body = self.reader.get(
                "opportunities", kind="read", what=what, params=params, headers=prefer
            )
            seen: set[str] = set()
            while True:
                found.update(str(r.get("opportunityid", "")).lower() for r in body["value"])
                next_link = body.get("@odata.nextLink")
                if not next_link:
                    break
                body = self.reader.follow(str(next_link), seen, prefer, kind="read")
        return {original for key, original in ids.items() if key not in found}

    def close_lost(self, items: Sequence[LostClosing]) -> list[WriteResult]:
        """Close rows as lost with ``LoseOpportunity``; see :mod:`connector.crm.dynamics.closing`."""
        return self.closing.close_lost(items)

    def find_by_referral_ids(self, field: str, referral_ids: Sequence[str]) -> dict[str, str]:
        """Rows whose ``field`` holds one of ``referral_ids``: referral id → opportunity id."""
        column = column_of(field)
        found: dict[str, str] = {}
        ids = list(dict.fromkeys(referral_ids))
        for start in range(0, len(ids), REFERRAL_LOOKUP_CHUNK):
            chunk = ids[start : start + REFERRAL_LOOKUP_CHUNK]
            what = f"GET opportunities by {len(chunk)} referral ids ({column})"
            params = {
                "$select": f"opportunityid,{column}",
                "$filter": " or ".join(f"{column} eq {literal(i)}" for i in chunk),
            }
            prefer = {"Prefer": self.reader.prefer(track=False)}
            body = self.reader.get(
                "opportunities", kind="read", what=what, params=params, headers=prefer
            )
            seen: set[str] = set()
            while True:
                for row in body.get("value") or []:
                    value, row_id = row.get(column), row.get("opportunityid")
                    if isinstance(value, str) and isinstance(row_id, str):
                        found.setdefault(value, row_id)
                next_link = body.get("@odata.nextLink")
                if not next_link:
                    break
                body = self.reader.follow(str(next_link), seen, prefer, kind="read")
        return found

    @property
    def quota_exhausted(self) -> bool:
        """True once a write was refused because the run's request budget is spent."""
        return self.writer.quota_exhausted

    def new_run(self) -> None:
        """Reset the per-run budget and figures (the adapter can serve several runs)."""
        self.transport.new_run()
        self.writer.quota_exhausted = False

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._owns_http:
            self._http.close()


def change_tracking_policy(value: ChangeTracking | bool) -> ChangeTracking:
    """``true`` (the older setting) requires change tracking, ``false`` turns it off."""
    if value is True:
        return "required"
    if value is False:
        return "off"
    if value not in ("auto", "required", "off"):
        raise ValueError(f"change_tracking must be auto, required or off, not {value!r}")
    return value
