"""Salesforce opportunities behind the :class:`~connector.crm.base.CrmAdapter` seam.

Built on simple-salesforce 1.12 over one ``requests.Session`` (see
:mod:`connector.crm.salesforce_auth`). Every HTTP call goes through
:meth:`SalesforceOpportunities._call`, which in order: checks the quota guard, counts
the call by kind, sends it with the configured timeout, signs in again once on 401,
classifies failures into :class:`~connector.errors.CrmError`
(:func:`~connector.crm.salesforce_errors.crm_error_from`),
and records ``Sforce-Limit-Info``. Transient failures are retried through
:mod:`connector.dealcore.retry`, except creates, which are not idempotent.

Reading changes follows the safe pattern of the reference: closed lower bound
``SystemModstamp >= cursor - overlap``, ``ORDER BY SystemModstamp, Id``, de-duplication
by ``(Id, SystemModstamp)``, ``queryAll`` so soft-deleted rows are seen, page by page
through ``nextRecordsUrl``, and a cursor never past the server's time minus a margin.
Each page's cursor is the newest stamp read so far, so a pull stopped half-way resumes
after the last page handled. Once every page is read, a last page without records moves
the cursor up to the server's time when the query ran (the ``Date`` of its first
answer) minus the margin, when that is newer: a row stamped before then and committed
within the overlap was visible to the query. In an idle org a pull then reads nothing
(one query call) once the pull before it ran more than the overlap and the margin after
the last change, where the newest stamp alone would have it read again every record
changed in the overlap before that stamp, cycle after cycle. Without a readable
``Date`` the cursor stays the newest stamp.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession
from simple_salesforce.format import format_soql

from connector.crm.base import (
    ApiUsage,
    CrmField,
    CrmPage,
    LostClosing,
    NewOpportunity,
    StageInfo,
    WriteResult,
)
from connector.crm.field_metadata import salesforce_fields
from connector.crm.salesforce_errors import crm_error_from
from connector.crm.salesforce_records import (
    RECORD_ID_RE,
    format_cursor,
    needs_type,
    normalise_record,
    parse_cursor,
    query_records,
    select_fields,
)
from connector.crm.salesforce_related import SalesforceRelated
from connector.crm.salesforce_throttle import SalesforceThrottle
from connector.crm.salesforce_types import FieldTypes
from connector.crm.salesforce_writes import SalesforceWriter
from connector.crm.soql_filter import compile_soql, soql_field, soql_literal
from connector.dealcore.retry import (
    DEFAULT_MAX_THROTTLE_WAIT_S,
    RetryPolicy,
    Sleep,
    call_with_retry,
)
from connector.dedupe import RecentKeys
from connector.errors import ConfigError, CrmError, QuotaExhausted
from connector.mapping.filters import Filter
from connector.model import CrmOpportunity, CrmStatusUpdate

log = logging.getLogger(__name__)

T = TypeVar("T")

#: referral ids per lookup query (keeps the SOQL far below its 100,000-character limit)
REFERRAL_LOOKUP_CHUNK = 200
_OBJECT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_STAGE_SOQL = (
    "SELECT MasterLabel, ApiName, IsActive, SortOrder, IsClosed, IsWon, DefaultProbability, "
    "ForecastCategoryName FROM OpportunityStage WHERE IsActive = true ORDER BY SortOrder"
)


class SalesforceLogin(Protocol):
    """What the adapter needs of :class:`~connector.crm.salesforce_auth.SalesforceAuth`."""

    session: requests.Session

    @property
    def fetches_tokens(self) -> bool: ...

    def login(self) -> Salesforce: ...

    def close(self) -> None: ...


class SalesforceOpportunities:
    """Opportunities of one Salesforce org (see the module docstring for the guarantees).

    ``timeout`` applies to every call (seconds); ``batch_size`` is the query page size
    asked for (200-2000); ``overlap_s`` how far before the cursor each pull starts;
    ``server_margin_s`` how far behind the server's clock a cursor must stay;
    ``max_quota_share`` stops calls once ``used / limit`` of the org's daily API
    allowance reaches it (None: no guard). Salesforce documents no 429, but a proxy in
    front of it may send one: it is retried after its ``Retry-After``, and a wait past
    ``max_throttle_wait_s`` stops the run (:class:`~connector.errors.Throttled`).
    """

    system = "salesforce"

    def __init__(
        self,
        auth: SalesforceLogin,
        *,
        timeout: float = 30.0,
        batch_size: int = 2000,
        overlap_s: float = 300.0,
        server_margin_s: float = 5.0,
        object_name: str = "Opportunity",
        max_quota_share: float | None = None,
        reconcile_every: timedelta | None = None,
        retry: RetryPolicy | None = None,
        max_throttle_wait_s: float = DEFAULT_MAX_THROTTLE_WAIT_S,
        sleep: Sleep = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not 200 <= batch_size <= 2000:
            raise ConfigError(f"Salesforce batch_size {batch_size} must be between 200 and 2000")
        if not _OBJECT_RE.fullmatch(object_name):
            raise ConfigError(f"{object_name!r} is not a Salesforce object API name")
        if max_quota_share is not None and not 0 < max_quota_share <= 1:
            raise ConfigError(f"Salesforce max_quota_share {max_quota_share} must be in (0, 1]")
        self.auth = auth
        self.timeout = timeout
        self.batch_size = batch_size
        self.overlap = timedelta(seconds=overlap_s)
        self.server_margin = timedelta(seconds=server_margin_s)
        self.object_name = object_name
        self.max_quota_share = max_quota_share
        self.reconcile_every = reconcile_every
        #: Salesforce writes StageName itself: no derived stage column
        self.stage_column: str | None = None
        self.retry = retry or RetryPolicy()
        self.usage = ApiUsage()
        #: rows dropped because their (Id, SystemModstamp) was already pulled
        self.duplicates_dropped = 0
        #: the record count of the last query (its first answer's ``totalSize``)
        self.query_total: int | None = None
        self._sleep = sleep
        self._clock = clock
        self._sf: Salesforce | None = None
        self.writer = SalesforceWriter(self._call, object_name=object_name, timeout=timeout)
        #: field types of the object and the objects its paths reach (described when needed)
        self.types = FieldTypes(object_name, self._describe)
        self._server_time: datetime | None = None
        #: after a throttled answer every thread holds back (writes run on two threads)
        self.throttle = SalesforceThrottle(
            auth.session, max_wait_s=max_throttle_wait_s, sleep=sleep
        )
        auth.session.hooks["response"].append(self._remember_server_time)
        #: accounts, contacts and opportunity teams (connector.crm.salesforce_related)
        self.related = SalesforceRelated(self)

    # ------------------------------------------------------------------ reading

    def changes_soql(
        self, fields: Sequence[str], since: datetime | None, select: Filter | None
    ) -> str:
        """The change query: names whitelisted, values escaped by :func:`soql_literal`."""
        columns = ", ".join(self._columns(fields))
        conditions = []
        if since is not None:
            conditions.append(f"SystemModstamp >= {soql_literal(since)}")
        if select is not None:
            conditions.append(compile_soql(select))
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        return str(
            format_soql(
                "SELECT {:literal} FROM {:literal}{:literal} ORDER BY SystemModstamp, Id",
                columns,
                self.object_name,
                where,
            )
        )

    def pull_changes(
        self, cursor: str | None, *, fields: Sequence[str], select: Filter | None
    ) -> Iterator[CrmPage]:
        """Pages of records changed since ``cursor`` (an ISO 8601 SystemModstamp), streamed.

        A complete pull may end with a page without records that only moves the cursor
        up to the query's server time (see the module docstring).
        """
        previous = parse_cursor(cursor)
        since = previous - self.overlap if previous is not None else None
        columns = self._columns(fields)
        soql = self.changes_soql(fields, since, select)
        seen = RecentKeys(2 * self.batch_size)  # repeats come only across a page boundary
        started = time.monotonic()
        pages = records = 0
        query_time: datetime | None = None
        for rows in self._pages(soql, what=f"the {self.object_name} change query", batched=True):
            if pages == 0:
                # the Date of the query's first answer: _pages has sent nothing since
                query_time = self._server_time
            page = []
            for opp in self._records(rows, columns):
                if not seen.add((opp.id, opp.modstamp)):
                    self.duplicates_dropped += 1
                    continue
                page.append(opp)
            previous = self._page_cursor(page, previous)
            pages += 1
            records += len(page)
            yield CrmPage(records=page, cursor=format_cursor(previous), total=self.query_total)
        # Only reached when every page was read: a pull stopped early (an error, or the
        # caller closing the generator) never yields the query-time cursor.
        final = self._complete_cursor(previous, query_time)
        if final != previous:
            yield CrmPage(records=[], cursor=format_cursor(final))
        log.info(
            "salesforce pull: records=%d pages=%d duplicates=%d seconds=%.2f",
            records,
            pages,
            self.duplicates_dropped,
            time.monotonic() - started,
        )

    def fetch(self, record_id: str, *, fields: Sequence[str]) -> CrmOpportunity | None:
        """One record by id (soft-deleted ones too, marked ``deleted``), None when absent."""
        if not isinstance(record_id, str) or not RECORD_ID_RE.fullmatch(record_id):
            raise CrmError(
                f"{str(record_id)[:40]!r} is not a Salesforce record id (15 or 18 letters "
                "and digits); check the link or the mapping that produced it",
                code="invalid_id",
                transient=False,
            )
        columns = self._columns(fields)
        soql = format_soql(
            "SELECT {:literal} FROM {:literal} WHERE Id = {}",
            ", ".join(columns),
            self.object_name,
            record_id,
        )
        for rows in self._pages(soql, what=f"reading {self.object_name} {record_id}"):
            for record in self._records(rows[:1], columns):
                return record
        return None

    def describe_fields(self, entity: str | None = None) -> list[CrmField]:
        """An sObject's fields (see :func:`~connector.crm.field_metadata.salesforce_fields`)."""
        name = entity or self.object_name
        if not _OBJECT_RE.fullmatch(name):
            raise CrmError(f"{name!r} is not an sObject name", code="invalid_id", transient=False)
        describe = self._call(
            "describe", lambda sf: getattr(sf, name).describe(), what=f"describing {name}"
        )
        return salesforce_fields(describe)

    def stage_metadata(self) -> list[StageInfo]:
        """The org's active opportunity stages in their sort order."""
        stages = []
        for rows in self._pages(_STAGE_SOQL, what="reading OpportunityStage", deleted=False):
            for row in rows:
                probability = row.get("DefaultProbability")
                try:
                    stage = StageInfo(
                        label=str(row.get("MasterLabel") or row.get("ApiName")),
                        api_name=str(row.get("ApiName") or row.get("MasterLabel")),
                        probability=None if probability is None else Decimal(str(probability)),
                        is_closed=row.get("IsClosed") is True,
                        is_won=row.get("IsWon") is True,
                        active=row.get("IsActive") is not False,
                        sort_order=int(row.get("SortOrder") or 0),
                    )
                except (ValueError, ArithmeticError):
                    raise CrmError(
                        f"Salesforce answered reading OpportunityStage with a stage whose "
                        f"probability or sort order is not a number ({probability!r}); the "
                        "run stops, check the org or a proxy in front of it",
                        code="bad_response",
                        transient=False,
                    ) from None
                stages.append(stage)
        return stages

    def _columns(self, fields: Sequence[str]) -> list[str]:
        try:
            return select_fields(fields)
        except ValueError as exc:
            raise ConfigError(f"{exc}; fix the field list of the Salesforce mapping") from None

    def _records(
        self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
    ) -> list[CrmOpportunity]:
        """Rows read by their fields' types; an object is described when a value needs it.

        A page is read with the types known so far; when an untyped field holds text
        shaped like a date, the objects on its path are described (once per adapter),
        every field those describes answer is typed, and the page is read again.
        """
        known = self.types.known()
        records = [self._normalise(row, columns, known) for row in rows]
        untyped = [c for c in columns if c not in known]
        pending = {c for r in records for c in untyped if needs_type(r.fields.get(c))}
        if not pending:
            return records
        self.types.resolve(sorted(pending))
        self.types.resolve(columns, described_only=True)
        known = self.types.known()
        return [self._normalise(row, columns, known) for row in rows]

    def _normalise(
        self, row: Mapping[str, Any], columns: Sequence[str], types: Mapping[str, str | None]
    ) -> CrmOpportunity:
        try:
            return normalise_record(row, columns, types)
        except ValueError as exc:
            raise CrmError(str(exc), code="bad_response", transient=False) from None

    def _describe(self, name: str) -> Mapping[str, Any]:
        """``sobjects/<name>/describe`` (``{}`` for a name that is not an object's)."""
        if not _OBJECT_RE.fullmatch(name):
            return {}

        def describe(sf: Salesforce) -> Any:
            return sf.restful(f"sobjects/{name}/describe", method="GET", timeout=self.timeout)

        answer = self._call("describe", describe, what=f"describing {name}")
        return answer if isinstance(answer, Mapping) else {}

    def _pages(
        self, soql: str, *, what: str, batched: bool = False, deleted: bool = True
    ) -> Iterator[list[Mapping[str, Any]]]:
        """Raw record lists, one per page, following ``nextRecordsUrl`` lazily."""
        options: dict[str, Any] = {"timeout": self.timeout}
        if batched:
            options["headers"] = {"Sforce-Query-Options": f"batchSize={self.batch_size}"}
        answer = self._call(
            "query", lambda sf: sf.query(soql, include_deleted=deleted, **options), what=what
        )
        total = answer.get("totalSize") if isinstance(answer, Mapping) else None
        self.query_total = total if isinstance(total, int) and total >= 0 else None
        while True:
            yield query_records(answer, what)
            next_url = answer.get("nextRecordsUrl")
            if answer["done"] or next_url is None:
                return
            if not isinstance(next_url, str) or not next_url.startswith("/services/"):
                # simple-salesforce glues it to the instance host: only a path is safe
                raise CrmError(
                    f"Salesforce answered {what} with a next-page link that is not a "
                    "/services/ path; the pull stops here and is retried next cycle",
                    code="bad_response",
                    transient=False,
                )

            def more(sf: Salesforce, url: str = next_url) -> Any:
                return sf.query_more(url, identifier_is_url=True, **options)

            answer = self._call("query_more", more, what=f"{what} (next page)")

    def _page_cursor(
        self, page: Sequence[CrmOpportunity], previous: datetime | None
    ) -> datetime | None:
        """The page's newest stamp, capped at server time minus the margin, never going back."""
        newest = max((r.modstamp for r in page), default=None)
        if newest is None:
            return previous
        server_now = self._server_time or self._clock()
        candidate = min(newest, server_now - self.server_margin)
        return candidate if previous is None else max(candidate, previous)

    def _complete_cursor(
        self, previous: datetime | None, query_time: datetime | None
    ) -> datetime | None:
        """The cursor once every page of a pull was read: at least the query's server time.

        ``query_time`` is the ``Date`` of the change query's first answer (None when the
        server sent none or an unreadable one: then the newest stamp stays the cursor).
        The query saw every row committed before it ran, so it read every row stamped
        more than the overlap before that time and committed within the overlap; the
        next pull starts the overlap before this cursor and reads every later stamp.
        The margin keeps the cursor behind the server's clock, as for the stamps, and
        covers the time between the query starting and its answer being dated. Never
        earlier than ``previous``.
        """
        if query_time is None:
            return previous
        candidate = query_time - self.server_margin
        return candidate if previous is None else max(candidate, previous)

    # ------------------------------------------------------------------ writing

    def write_status(self, updates: Sequence[CrmStatusUpdate]) -> list[WriteResult]:
        """PATCH status fields in collections of 200; one result per update, in order."""
        return self.writer.write_status(updates)

    def create_opportunities(self, items: Sequence[NewOpportunity]) -> list[WriteResult]:
        """POST new records in collections of 200; ``crm_id`` of each result is the new id."""
        return self.writer.create(items)

    def missing_records(self, crm_ids: Sequence[str]) -> set[str]:
        """Records among ``crm_ids`` in the recycle bin (``queryAll``: ``IsDeleted``) or
        purged (not answered), 200 a query; ids compare by their 15-character form."""
        ids = [
            i for i in dict.fromkeys(crm_ids) if isinstance(i, str) and RECORD_ID_RE.fullmatch(i)
        ]
        live: set[str] = set()
        for start in range(0, len(ids), REFERRAL_LOOKUP_CHUNK):
            chunk = ids[start : start + REFERRAL_LOOKUP_CHUNK]
            # the object name is checked at construction, every id by RECORD_ID_RE and quoted
            soql = format_soql(
                "SELECT Id, IsDeleted FROM {:literal} WHERE Id IN ({:literal})",
                self.object_name,
                ", ".join(soql_literal(i) for i in chunk),
            )
            what = f"checking that {len(chunk)} {self.object_name} records exist"
            for rows in self._pages(soql, what=what, deleted=True):
                live.update(
                    str(row["Id"])[:15]
                    for row in rows
                    if isinstance(row.get("Id"), str) and row.get("IsDeleted") is not True
                )
        return {i for i in ids if i[:15] not in live}

    def close_lost(self, items: Sequence[LostClosing]) -> list[WriteResult]:
        """Move records to the lost stage (with the values given) in collections of 200."""
        return self.write_status(
            [CrmStatusUpdate(i.crm_id, {**i.values, i.stage_field: i.lost_as}) for i in items]
        )

    def find_by_referral_ids(self, field: str, referral_ids: Sequence[str]) -> dict[str, str]:
        """Live records whose ``field`` holds one of ``referral_ids``: referral id → record id."""
        column = soql_field(field)
        found: dict[str, str] = {}
        ids = list(dict.fromkeys(referral_ids))
        for start in range(0, len(ids), REFERRAL_LOOKUP_CHUNK):
            chunk = ids[start : start + REFERRAL_LOOKUP_CHUNK]
            # the field is checked by soql_field, the object name at construction, and
            # every id is quoted by soql_literal
            soql = format_soql(
                "SELECT Id, {:literal} FROM {:literal} WHERE {:literal} IN ({:literal})",
                column,
                self.object_name,
                column,
                ", ".join(soql_literal(i) for i in chunk),
            )
            what = f"looking up {len(chunk)} referral ids in {self.object_name}.{column}"
            for rows in self._pages(soql, what=what, deleted=False):
                for row in rows:
                    value, record_id = row.get(column), row.get("Id")
                    if isinstance(value, str) and isinstance(record_id, str):
                        found.setdefault(value, record_id)
        return found

    # ------------------------------------------------------------------ calls

    def quota_share(self) -> float | None:
        """``used / limit`` of the org's daily API allowance as last reported, else None."""
        if self.usage.used is None or not self.usage.limit:
            return None
        return self.usage.used / self.usage.limit

    def close(self) -> None:
        self.auth.close()

    def _call(
        self, kind: str, request: Callable[[Salesforce], T], *, what: str, retry: bool = True
    ) -> T:
        def once() -> T:
            return self._call_once(kind, request, what)

        if not retry:
            # Creates are not idempotent: a retried POST after a lost answer would
            # duplicate records, so a failure goes back to the engine instead.
            return once()
        return call_with_retry(once, self.retry, sleep=self._sleep)

    def _call_once(self, kind: str, request: Callable[[Salesforce], T], what: str) -> T:
        for renewed in (False, True):
            self._guard_quota(what)
            sf = self._client(what)
            self.throttle.before_call()
            self.usage.count(kind)
            self._server_time = None
            try:
                return request(sf)
            except SalesforceExpiredSession as exc:
                if renewed or not self.auth.fetches_tokens:
                    raise crm_error_from(exc, what) from None
                log.info("salesforce session expired during %s; signing in again", what)
                self._sf = None
            except (SalesforceError, requests.RequestException) as exc:
                raise self.throttle.classified(crm_error_from(exc, what), what) from None
            finally:
                self._record_usage(sf)
        raise AssertionError("unreachable: the loop returns or raises")

    def _client(self, what: str) -> Salesforce:
        if self._sf is None:
            if self.auth.fetches_tokens:
                self._guard_quota(what)
                self.usage.count("token")
            self._sf = self.auth.login()
        return self._sf

    def _guard_quota(self, what: str) -> None:
        share = self.quota_share()
        if share is None or self.max_quota_share is None or share < self.max_quota_share:
            return
        raise QuotaExhausted(
            f"Salesforce API usage is {self.usage.used}/{self.usage.limit} ({share:.1%}), at "
            f"or above the configured share of {self.max_quota_share:.0%}; {what} was not "
            "sent. The run stops and resumes next cycle (or raise the quota share setting)",
            transient=False,
        )

    def _record_usage(self, sf: Salesforce) -> None:
        usage = getattr(sf, "api_usage", {}).get("api-usage")
        if usage is not None:
            self.usage.used = int(usage.used)
            self.usage.limit = int(usage.total)
            if self.max_quota_share is not None:
                self.usage.guard_at = math.ceil(self.max_quota_share * self.usage.limit)

    def _remember_server_time(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        header = response.headers.get("Date")
        if not header:
            return
        try:
            stamp = parsedate_to_datetime(header)
            stamp = stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        except (TypeError, ValueError, OverflowError):
            return
        self._server_time = stamp
