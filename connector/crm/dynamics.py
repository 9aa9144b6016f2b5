"""The Dynamics 365 / Dataverse adapter: :class:`DataverseOpportunities`.

Reading uses change tracking when the table has it (the default): the first pull
reads everything with ``Prefer: odata.track-changes`` and keeps the last page's
``@odata.deltaLink`` as the cursor (``delta:<link>``); later pulls call that link and
get only changes, deletions included. Dataverse refuses ``$filter``/``$orderby``/
``$expand`` in that mode, so the ``select`` filter is applied here, after
normalisation, and related rows (account, owner, currency, contact) are read with
one query per lookup and page, cached for the run. An expired delta token starts a
clean full resync.

Without change tracking (``change_tracking=False``), pulls filter on
``modifiedon ge <cursor - overlap>`` ordered by ``(modifiedon, opportunityid)``,
de-duplicate, and keep ``modifiedon:<iso>`` capped at the server's time minus a
margin as the cursor. Deletions are invisible that way.

Writing: see :mod:`connector.crm.dynamics_writes`. Every call goes through
:class:`~connector.crm.dynamics_transport.DataverseTransport` (token, budget,
retries, concurrency cap).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from connector.crm.base import (
    ApiUsage,
    CrmPage,
    LostClosing,
    NewOpportunity,
    StageInfo,
    WriteResult,
)
from connector.crm.dynamics_auth import DEFAULT_AUTHORITY, DataverseTokens
from connector.crm.dynamics_closing import DataverseClosing
from connector.crm.dynamics_related import DataverseRelated
from connector.crm.dynamics_rows import (
    DEFAULT_LOOKUPS,
    FORMATTED,
    LOST_LABEL,
    MONEY_COLUMNS,
    WON_LABEL,
    ColumnPlan,
    LookupTarget,
    normalise_row,
    plan_columns,
    related_key,
)
from connector.crm.dynamics_transport import DataverseTransport, RequestBudget, body_of, error_of
from connector.crm.dynamics_writes import DataverseWriter
from connector.crm.odata_filter import (
    column_of,
    compile_filter,
    filter_fields,
    is_guid,
    literal,
    matches,
)
from connector.dedupe import RecentCache, RecentKeys
from connector.errors import CrmError
from connector.mapping.filters import Filter
from connector.model import CrmOpportunity, CrmStatusUpdate

log = logging.getLogger(__name__)
#: referral ids per lookup ($filter of "or"ed equalities, well within URL limits)
REFERRAL_LOOKUP_CHUNK = 50

DELTA_PREFIX = "delta:"
MODIFIED_PREFIX = "modifiedon:"
#: Dataverse's code for a delta token that is too old: a full resync is needed
DELTA_EXPIRED_CODE = "0x80044352"
RELATED_CHUNK = 50
#: related rows (accounts, contacts, ...) kept at least, across pages, per pull
RELATED_CACHE = 10_000
MAX_PAGES = 1_000_000  # a guard against a server that never stops paging


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
        change_tracking: bool = True,
        max_requests: int | None = None,
        window_share: float | None = None,
        max_attempts: int = 5,
        max_throttle_wait_s: float = 300.0,
        batch_size: int = 20,
        batch_threshold: int = 2,
        batch_changesets: bool = True,
        guard_closed: bool = True,
        overlap: timedelta = timedelta(minutes=5),
        cursor_margin: timedelta = timedelta(seconds=60),
        lookups: Mapping[str, LookupTarget] = DEFAULT_LOOKUPS,
        money_columns: frozenset[str] = MONEY_COLUMNS,
        api_version: str = "v9.2",
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        owns_http: bool = False,
    ) -> None:
        if not 1 <= page_size <= 5000:
            raise ValueError("page_size must be 1..5000 (Dataverse's odata.maxpagesize limit)")
        self.environment_url = environment_url.rstrip("/")
        self.usage = ApiUsage()
        self.page_size = page_size
        self.stage_column = stage_source
        self.change_tracking = change_tracking
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
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="dataverse")
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
        #: accounts, contacts and sales teams (connector.crm.dynamics_related)
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
        **options: Any,
    ) -> DataverseOpportunities:
        """An adapter with its own HTTP client (``ca_file`` for the sandbox's certificate)."""
        http = httpx.Client(
            verify=ssl.create_default_context(cafile=str(ca_file)) if ca_file else True,
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
            **options,
        )

    # -- reading ----------------------------------------------------------------

    def pull_changes(
        self, cursor: str | None, *, fields: Sequence[str], select: Filter | None
    ) -> Iterator[CrmPage]:
        """Pages of opportunities changed since ``cursor`` (everything when None)."""
        wanted = [*fields, *(filter_fields(select) if select is not None else ())]
        plan = plan_columns(wanted, lookups=self.lookups, stage_column=self.stage_column)
        # the run's cache of related rows, bounded: room for what one page can need
        related: RecentCache[tuple[str, str], dict[str, Any]] = RecentCache(
            max(RELATED_CACHE, len(plan.related) * self.page_size)
        )
        if self.change_tracking:
            return self._pull_tracked(cursor, plan, select, related)
        return self._pull_by_modifiedon(cursor, plan, select, related)

    def _pull_tracked(
        self,
        cursor: str | None,
        plan: ColumnPlan,
        select: Filter | None,
        related: RecentCache[tuple[str, str], dict[str, Any]],
    ) -> Iterator[CrmPage]:
        prefer = {"Prefer": self._prefer(track=True)}
        body: dict[str, Any] | None = None
        if cursor is not None and cursor.startswith(DELTA_PREFIX):
            lacking = _columns_missing_from_link(cursor.removeprefix(DELTA_PREFIX), plan.select)
            if lacking:
                # The delta link repeats the $select of the full read it came from.
                log.warning(
                    "dataverse delta link lacks columns %s (the mapping changed); full resync",
                    ",".join(sorted(lacking)),
                )
                cursor = None
        if cursor is not None and cursor.startswith(DELTA_PREFIX):
            try:
                body = self._get(
                    cursor.removeprefix(DELTA_PREFIX),
                    kind="delta",
                    what="GET opportunities (changes)",
                    headers=prefer,
                )
            except CrmError as exc:
                if not _is_expired_delta(exc):
                    raise
                log.warning("dataverse delta token expired (%s); starting a full resync", exc.code)
                cursor = None
        elif cursor is not None:
            log.info("dataverse cursor %r is not a delta link; reading everything", cursor[:20])
            cursor = None
        if body is None:
            body = self._get(
                "opportunities",
                kind="read",
                what="GET opportunities (all)",
                headers=prefer,
                params={"$select": ",".join(plan.select)},
            )
        seen_links: set[str] = set()
        for _ in range(MAX_PAGES):
            rows = body.get("value", [])
            deleted = [str(r["id"]).lower() for r in rows if _is_deleted(r)]
            live = [r for r in rows if not _is_deleted(r)]
            records = [
                r
                for r in self._normalise(live, plan, related)
                if select is None or matches(select, r.fields)
            ]
            next_link = body.get("@odata.nextLink")
            if not next_link:
                delta = body.get("@odata.deltaLink")
                yield CrmPage(records, f"{DELTA_PREFIX}{delta}" if delta else cursor, deleted)
                return
            # Intermediate pages keep the previous cursor: a crash replays from there.
            yield CrmPage(records, cursor, deleted)
            body = self._follow(str(next_link), seen_links, prefer, kind="read")

    def _pull_by_modifiedon(
        self,
        cursor: str | None,
        plan: ColumnPlan,
        select: Filter | None,
        related: RecentCache[tuple[str, str], dict[str, Any]],
    ) -> Iterator[CrmPage]:
        since = _parse_modified_cursor(cursor)
        conditions = []
        if since is not None:
            conditions.append(f"modifiedon ge {literal(since - self.overlap)}")
        if select is not None:
            conditions.append(compile_filter(select, lookups=self.lookups))
        params = {"$select": ",".join(plan.select), "$orderby": "modifiedon asc,opportunityid asc"}
        if conditions:
            params["$filter"] = " and ".join(conditions)
        prefer = {"Prefer": self._prefer(track=False)}
        response = self._get_response(
            "opportunities",
            kind="read",
            what="GET opportunities (modified since)",
            headers=prefer,
            params=params,
        )
        seen = RecentKeys(2 * self.page_size)  # repeats come only across a page boundary
        seen_links: set[str] = set()
        current = since
        for _ in range(MAX_PAGES):
            body = body_of(response)
            cap = _server_now(response) - self.cursor_margin
            records = []
            for record in self._normalise(body.get("value", []), plan, related):
                if seen.add((record.id, record.modstamp)):
                    records.append(record)
                stamp = min(record.modstamp, cap)
                current = stamp if current is None else max(current, stamp)
            next_cursor = None if current is None else f"{MODIFIED_PREFIX}{current.isoformat()}"
            yield CrmPage(records, next_cursor)
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return
            response = self._follow_response(str(next_link), seen_links, prefer)

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
            headers={"Prefer": self._prefer(track=False)},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise error_of(response, what)
        return self._normalise([body_of(response)], plan, RecentCache(RELATED_CACHE))[0]

    def stage_metadata(self) -> list[StageInfo]:
        """The stage column's options (open stages), then synthetic Won and Lost (statecode)."""
        if self.stage_column == "stepname":
            stages = self._process_stages()
        else:
            stages = self._option_set_stages(self.stage_column)
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

    def _option_set_stages(self, column: str) -> list[StageInfo]:
        path = (
            "EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName="
            f"{literal(column)})/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
        )
        body = self._get(
            path,
            kind="metadata",
            what=f"GET option set of {column}",
            params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"},
        )
        options = (body.get("OptionSet") or {}).get("Options") or []
        return [
            StageInfo(
                _option_label(o),
                str(o.get("Value")),
                None,
                is_closed=False,
                is_won=False,
                sort_order=n,
            )
            for n, o in enumerate(options)
        ]

    def _process_stages(self) -> list[StageInfo]:
        what = "GET processstages of opportunity"
        response = self.transport.send(
            "GET",
            "processstages",
            kind="metadata",
            what=what,
            params={
                "$select": "stagename,processstageid",
                "$filter": "primaryentitytypecode eq 'opportunity'",
            },
        )
        if response.status_code in (400, 404):
            # Not every environment (nor the sandbox) exposes process stages to the app user.
            log.warning("dataverse process stages unavailable (%d)", response.status_code)
            return []
        if response.status_code != 200:
            raise error_of(response, what)
        names = dict.fromkeys(str(r["stagename"]) for r in body_of(response).get("value", []))
        return [
            StageInfo(n, n, None, is_closed=False, is_won=False, sort_order=i)
            for i, n in enumerate(names)
        ]

    # -- writing ----------------------------------------------------------------

    def write_status(self, updates: Sequence[CrmStatusUpdate]) -> list[WriteResult]:
        """PATCH status fields with ``If-Match: *``; see :mod:`connector.crm.dynamics_writes`."""
        return self.writer.write_status(updates)

    def create_opportunities(self, items: Sequence[NewOpportunity]) -> list[WriteResult]:
        """POST new opportunities; ``crm_id`` of each result is the new row's id."""
        return self.writer.create_many(items)

    def close_lost(self, items: Sequence[LostClosing]) -> list[WriteResult]:
        """Close rows as lost with ``LoseOpportunity``; see :mod:`connector.crm.dynamics_closing`."""
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
            body = self._get(
                "opportunities",
                kind="read",
                what=what,
                params=params,
                headers={"Prefer": self._prefer(track=False)},
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
                body = self._follow(
                    str(next_link), seen, {"Prefer": self._prefer(track=False)}, kind="read"
                )
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

    # -- internals --------------------------------------------------------------

    def _prefer(self, *, track: bool) -> str:
        parts = [f"odata.maxpagesize={self.page_size}", f'odata.include-annotations="{FORMATTED}"']
        return ",".join(["odata.track-changes", *parts] if track else parts)

    def _get_response(
        self,
        path: str,
        *,
        kind: str,
        what: str,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        response = self.transport.send(
            "GET", path, kind=kind, what=what, params=params, headers=headers
        )
        if response.status_code != 200:
            raise error_of(response, what)
        return response

    def _get(
        self,
        path: str,
        *,
        kind: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        body = body_of(
            self._get_response(path, kind=kind, what=what, headers=headers or {}, params=params)
        )
        if not isinstance(body, dict):
            raise CrmError(
                f"{what}: Dataverse answered something that is not an object",
                code="malformed_response",
            )
        return body

    def _follow_response(
        self, link: str, seen: set[str], headers: Mapping[str, str]
    ) -> httpx.Response:
        if link in seen:
            raise CrmError(
                "Dataverse returned the same paging link twice; stopping the pull",
                code="paging_loop",
            )
        seen.add(link)
        return self._get_response(
            link, kind="read", what="GET opportunities (next page)", headers=headers
        )

    def _follow(
        self, link: str, seen: set[str], headers: Mapping[str, str], *, kind: str
    ) -> dict[str, Any]:
        body = body_of(self._follow_response(link, seen, headers))
        return body if isinstance(body, dict) else {}

    def _normalise(
        self,
        rows: Sequence[Mapping[str, Any]],
        plan: ColumnPlan,
        related: RecentCache[tuple[str, str], dict[str, Any]],
    ) -> list[CrmOpportunity]:
        self._load_related(rows, plan, related)
        return [
            normalise_row(
                row,
                plan=plan,
                lookups=self.lookups,
                related=related,
                stage_column=self.stage_column,
                money_columns=self.money_columns,
            )
            for row in rows
        ]

    def _load_related(
        self,
        rows: Sequence[Mapping[str, Any]],
        plan: ColumnPlan,
        cache: RecentCache[tuple[str, str], dict[str, Any]],
    ) -> None:
        """Read the related rows this page needs and the cache lacks: one query per 50 ids."""
        jobs: list[tuple[LookupTarget, tuple[str, ...], list[str]]] = []
        for lookup, columns in plan.related.items():
            target = self.lookups[lookup]
            ids = {
                str(r[f"_{lookup}_value"]).lower()
                for r in rows
                if is_guid(r.get(f"_{lookup}_value"))
            }
            keys = [related_key(target.entity_set, i) for i in ids]
            cache.touch(keys)  # kept while this page's missing rows come in
            missing = sorted(i for i in ids if related_key(target.entity_set, i) not in cache)
            jobs += [
                (target, columns, missing[n : n + RELATED_CHUNK])
                for n in range(0, len(missing), RELATED_CHUNK)
            ]
        fetched = (
            list(self._pool.map(self._fetch_related, jobs))
            if len(jobs) > 1
            else [self._fetch_related(job) for job in jobs]
        )
        for (target, columns, chunk), found in zip(jobs, fetched, strict=True):
            for record_id in chunk:
                # Remember misses too (deleted account): no second query for them this run.
                key = related_key(target.entity_set, record_id)
                if key not in cache:
                    cache[key] = {}
            for row in found:
                # only the columns the mapping reads, not the row's annotations
                kept = {c: row[c] for c in columns if c in row}
                cache[related_key(target.entity_set, str(row[target.key]))] = kept

    def _fetch_related(
        self, job: tuple[LookupTarget, tuple[str, ...], list[str]]
    ) -> list[dict[str, Any]]:
        target, columns, ids = job
        condition = " or ".join(f"{target.key} eq {i}" for i in ids)
        body = self._get(
            target.entity_set,
            kind="related",
            what=f"GET {target.entity_set}",
            params={
                "$select": ",".join(dict.fromkeys((target.key, *columns))),
                "$filter": condition,
            },
        )
        return list(body.get("value", []))


def _is_deleted(row: Mapping[str, Any]) -> bool:
    return str(row.get("@odata.context", "")).endswith("$deletedEntity") or (
        "reason" in row and "id" in row and "opportunityid" not in row
    )


def _columns_missing_from_link(link: str, wanted: Sequence[str]) -> set[str]:
    selected = httpx.URL(link).params.get("$select")
    if selected is None:
        return set()  # no $select: every column comes back
    return set(wanted) - set(selected.split(","))


def _is_expired_delta(exc: CrmError) -> bool:
    if exc.code == DELTA_EXPIRED_CODE:
        return True
    text = exc.message.lower()
    return exc.status in (400, 410) and "expired" in text and ("token" in text or "version" in text)


def _option_label(option: Mapping[str, Any]) -> str:
    label = option.get("Label") or {}
    user = label.get("UserLocalizedLabel") or {}
    if user.get("Label"):
        return str(user["Label"])
    for localized in label.get("LocalizedLabels") or []:
        if localized.get("Label"):
            return str(localized["Label"])
    return str(option.get("Value"))


def _parse_modified_cursor(cursor: str | None) -> datetime | None:
    if cursor is None or not cursor.startswith(MODIFIED_PREFIX):
        return None
    try:
        value = datetime.fromisoformat(cursor.removeprefix(MODIFIED_PREFIX))
    except ValueError as exc:
        raise CrmError(
            f"the Dataverse cursor {cursor[:40]!r} is unreadable; reset it", code="bad_cursor"
        ) from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _server_now(response: httpx.Response) -> datetime:
    """The server's clock from the Date header (ours when it is missing)."""
    raw = response.headers.get("Date")
    if raw:
        try:
            return parsedate_to_datetime(raw).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)
