"""Reading Dataverse opportunities: the two ways of pulling changes, and turning rows into
:class:`~connector.model.CrmOpportunity` (see :mod:`connector.crm.dynamics.adapter` for the policy).

:class:`DataverseReader` pulls with change tracking (a full read, then delta links) or
by ``modifiedon``; reads the related rows a page needs (one query per lookup and 50
ids, cached for the pull); asks a table's column types when one of its values needs
them; and normalises rows with :func:`~connector.crm.dynamics.rows.normalise_row`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from connector.crm.base import CrmPage
from connector.crm.dynamics.metadata import DataverseMetadata
from connector.crm.dynamics.odata import compile_filter, is_guid, literal, matches
from connector.crm.dynamics.rows import (
    FORMATTED,
    MODSTAMP_COLUMN,
    OPPORTUNITY,
    ColumnPlan,
    ColumnTypes,
    LookupTarget,
    needs_types,
    normalise_row,
    related_key,
)
from connector.crm.dynamics.transport import DataverseTransport, error_of, page_of
from connector.dedupe import RecentCache, RecentKeys
from connector.errors import CrmError
from connector.model import CrmOpportunity, Filter

log = logging.getLogger(__name__)

DELTA_PREFIX = "delta:"
MODIFIED_PREFIX = "modifiedon:"
#: Dataverse's code for a delta token that is too old: a full resync is needed
DELTA_EXPIRED_CODE = "0x80044352"
RELATED_CHUNK = 50
#: related rows (accounts, contacts, ...) kept at least, across pages, per pull
RELATED_CACHE = 10_000
MAX_PAGES = 1_000_000  # a guard against a server that never stops paging

Related = RecentCache[tuple[str, str], dict[str, Any]]


class DataverseReader:
    """Pulls and normalises opportunity rows of one environment."""

    def __init__(
        self,
        transport: DataverseTransport,
        metadata: DataverseMetadata,
        *,
        executor: Executor,
        lookups: Mapping[str, LookupTarget],
        page_size: int,
        stage_column: str,
        money_columns: frozenset[str],
        overlap: timedelta,
        cursor_margin: timedelta,
        related_cache: int = RELATED_CACHE,
    ) -> None:
        self.transport = transport
        #: related rows (accounts, currencies, ...) a pull keeps at least
        self.related_cache_size = related_cache
        self.metadata = metadata
        self.lookups = lookups
        self.page_size = page_size
        self.stage_column = stage_column
        self.money_columns = money_columns
        self.overlap = overlap
        self.cursor_margin = cursor_margin
        self._pool = executor
        #: column types of the tables read so far (asked once per reader, when needed)
        self.types = ColumnTypes()

    def related_cache(self, plan: ColumnPlan) -> Related:
        """A pull's cache of related rows, bounded: room for what one page can need."""
        return RecentCache(max(self.related_cache_size, len(plan.related) * self.page_size))

    def prefer(self, *, track: bool) -> str:
        parts = [f"odata.maxpagesize={self.page_size}", f'odata.include-annotations="{FORMATTED}"']
        return ",".join(["odata.track-changes", *parts] if track else parts)

    def pull_tracked(
        self,
        cursor: str | None,
        plan: ColumnPlan,
        select: Filter | None,
        related: Related,
    ) -> Iterator[CrmPage]:
        prefer = {"Prefer": self.prefer(track=True)}
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
            what = "GET opportunities (changes)"
            try:
                response = self.get_response(
                    cursor.removeprefix(DELTA_PREFIX), kind="delta", what=what, headers=prefer
                )
            except CrmError as exc:
                if not _is_expired_delta(exc):
                    raise
                log.warning("dataverse delta token expired (%s); starting a full resync", exc.code)
                cursor = None
            else:
                if not response.content.strip():
                    # Documented: a delta link answers an empty response when nothing has
                    # changed since it was issued. The same link is asked again next cycle.
                    yield CrmPage([], cursor, ())
                    return
                body = page_of(response, what)
        elif cursor is not None:
            log.info("dataverse cursor %r is not a delta link; reading everything", cursor[:20])
            cursor = None
        if body is None:
            body = self.get(
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
                for r in self.normalise(live, plan, related)
                if select is None or matches(select, r.fields)
            ]
            next_link = body.get("@odata.nextLink")
            if not next_link:
                delta = body.get("@odata.deltaLink")
                yield CrmPage(records, f"{DELTA_PREFIX}{delta}" if delta else cursor, deleted)
                return
            # Intermediate pages keep the previous cursor: a crash replays from there.
            yield CrmPage(records, cursor, deleted)
            body = self.follow(str(next_link), seen_links, prefer, kind="read")

    def pull_by_modifiedon(
        self,
        cursor: str | None,
        plan: ColumnPlan,
        select: Filter | None,
        related: Related,
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
        prefer = {"Prefer": self.prefer(track=False)}
        response = self.get_response(
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
            body = page_of(response, "GET opportunities (modified since)")
            cap = _server_now(response) - self.cursor_margin
            records = []
            for record in self.normalise(body.get("value", []), plan, related):
                if seen.add((record.id, record.modstamp)):
                    records.append(record)
                stamp = min(record.modstamp, cap)
                current = stamp if current is None else max(current, stamp)
            next_cursor = None if current is None else f"{MODIFIED_PREFIX}{current.isoformat()}"
            yield CrmPage(records, next_cursor)
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return
            response = self.follow_response(str(next_link), seen_links, prefer)

    def get_response(
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

    def get(
        self,
        path: str,
        *,
        kind: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        response = self.get_response(
            path, kind=kind, what=what, headers=headers or {}, params=params
        )
        return page_of(response, what)

    def follow_response(
        self, link: str, seen: set[str], headers: Mapping[str, str]
    ) -> httpx.Response:
        if link in seen:
            raise CrmError(
                "Dataverse returned the same paging link twice; stopping the pull",
                code="paging_loop",
            )
        seen.add(link)
        return self.get_response(
            link, kind="read", what="GET opportunities (next page)", headers=headers
        )

    def follow(
        self, link: str, seen: set[str], headers: Mapping[str, str], *, kind: str
    ) -> dict[str, Any]:
        return page_of(self.follow_response(link, seen, headers), "GET opportunities (next page)")

    def normalise(
        self,
        rows: Sequence[Mapping[str, Any]],
        plan: ColumnPlan,
        related: Related,
    ) -> list[CrmOpportunity]:
        self._load_related(rows, plan, related)
        self._learn_types(rows, plan, related)
        return [
            normalise_row(
                row,
                plan=plan,
                lookups=self.lookups,
                related=related,
                stage_column=self.stage_column,
                types=self.types,
                money_columns=self.money_columns,
            )
            for row in rows
        ]

    def _learn_types(
        self,
        rows: Sequence[Mapping[str, Any]],
        plan: ColumnPlan,
        related: Mapping[tuple[str, str], Mapping[str, Any]],
    ) -> None:
        """Read the column types of each table whose values this page must interpret.

        Only a value shaped like a date depends on its column's type (other text stays
        text, numbers and booleans come typed), so a table is asked about once, the
        first time one of its values is. The change stamp is a DateTime by definition.
        """
        wanted: set[str] = set()
        if OPPORTUNITY not in self.types and any(
            needs_types(value)
            for row in rows
            for key, value in row.items()
            if key != MODSTAMP_COLUMN and "@" not in key and not key.startswith("_")
        ):
            wanted.add(OPPORTUNITY)
        for lookup, columns in plan.related.items():
            target = self.lookups[lookup]
            if target.table in self.types or target.table in wanted:
                continue
            for row in rows:
                ref = row.get(f"_{lookup}_value")
                found = (
                    related.get(related_key(target.entity_set, ref))
                    if isinstance(ref, str)
                    else None
                )
                if found and any(needs_types(found.get(c)) for c in columns):
                    wanted.add(target.table)
                    break
        for table in sorted(wanted):
            self.types.learn(table, self.metadata.attribute_types(table))

    def _load_related(
        self,
        rows: Sequence[Mapping[str, Any]],
        plan: ColumnPlan,
        cache: Related,
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
        body = self.get(
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
