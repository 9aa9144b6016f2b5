"""The sandbox Salesforce org's data: records, write rules, validation rules and queries.

Records are plain dicts holding only non-null values, in the form the REST API
prints them. A write never mutates a stored dict: it stores a new one, so a
query cursor that holds the old dicts keeps the snapshot it was taken on.
Opportunities are also indexed by ``(SystemModstamp, Id)`` so the connector's
cursor query (``WHERE SystemModstamp >= X ORDER BY SystemModstamp, Id``) needs
neither a full scan nor a sort.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.salesforce import soql, soql_eval
from sandbox.salesforce.schema import (
    NUMBER_TYPES,
    PREFIXES,
    SCHEMA,
    SYSTEM_FIELDS,
    TEXT_TYPES,
    FieldSpec,
    ObjectSpec,
    format_datetime,
    is_date,
    make_id,
    normalize_id,
    parse_datetime,
)

Record = dict[str, Any]
_TOP = "\uffff"  # sorts after every id


@dataclass
class RecordError:
    """One per-record error as the composite API reports it."""

    status_code: str
    message: str
    fields: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"statusCode": self.status_code, "message": self.message, "fields": self.fields}


class RequestError(Exception):
    """The whole request is refused (Salesforce answers 400 with this errorCode)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class ValidationRule:
    """An org validation rule: refuse a write whose result has ``field == equals``,
    or any update of the listed record ids."""

    message: str
    object: str = "Opportunity"
    field: str | None = None
    equals: Any = None
    ids: frozenset[str] = frozenset()
    error_field: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValidationRule:
        ids = frozenset(normalize_id(str(i)) or str(i) for i in data.get("ids", []))
        if "field" not in data and not ids:
            raise ValueError("a validation rule needs 'field' (with 'equals') or 'ids'")
        return cls(
            message=str(data.get("message", "The record failed a validation rule.")),
            object=str(data.get("object", "Opportunity")),
            field=data.get("field"),
            equals=data.get("equals"),
            ids=ids,
            error_field=data.get("error_field", data.get("field")),
        )

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"message": self.message, "object": self.object}
        if self.field is not None:
            data.update(field=self.field, equals=self.equals)
        if self.ids:
            data["ids"] = sorted(self.ids)
        return data

    def rejects(self, obj: str, record: Record, is_update: bool) -> bool:
        if obj.lower() != self.object.lower():
            return False
        if self.ids and not (is_update and record["Id"] in self.ids):
            return False
        return self.field is None or record.get(self.field) == self.equals


@dataclass
class QueryResult:
    plan: soql_eval.Plan
    rows: list[Record]


class SalesforceOrg:
    """Every record of the org, the stages, the id counters and the validation rules."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self.lock = threading.RLock()
        self.records: dict[str, dict[str, Record]] = {o.name: {} for o in SCHEMA.values()}
        self.counters: dict[str, int] = {}
        self.rules: list[ValidationRule] = []
        self._stamp_index: list[tuple[str, str]] = []
        #: told of every Opportunity committed (old, new): Change Data Capture
        self.on_change: Callable[[Record | None, Record], None] | None = None

    # --- reading -----------------------------------------------------------

    def fetch(self, obj: str, record_id: str) -> Record | None:
        return self.records[obj].get(record_id)

    def stage(self, name: str | None) -> Record | None:
        for stage in self.records["OpportunityStage"].values():
            if stage.get("ApiName") == name or stage.get("MasterLabel") == name:
                return stage
        return None

    def query(self, text: str, include_deleted: bool) -> QueryResult:
        """Run SOQL; raises :class:`soql.SoqlError` for what Salesforce would refuse."""
        plan = soql_eval.plan(text)
        query, obj = plan.query, plan.obj
        with self.lock:
            predicate = plan.predicate(self.fetch)
            if not query.is_count:  # checks the selected fields before any work
                soql_eval.projector(obj, query.fields, "0.0", self.fetch)
            rows, ordered, residual = self._candidates(plan)
            if residual is not query.where:  # the index already applied the stamp bounds
                predicate = soql_eval.compile_where(obj, residual, self.fetch) if residual else None
            if not include_deleted:
                rows = [r for r in rows if not r.get("IsDeleted")]
            if predicate is not None:
                rows = [r for r in rows if predicate(r)]
            if query.order_by and not ordered:
                rows = soql_eval.sort_records(obj, query.order_by, rows, self.fetch)
        end = None if query.limit is None else query.offset + query.limit
        if query.offset or end is not None:
            rows = rows[query.offset : end]
        return QueryResult(plan, rows)

    def _candidates(self, plan: soql_eval.Plan) -> tuple[list[Record], bool, soql.Node | None]:
        """Rows that may match, whether they already are in the ORDER BY order, and
        what remains of the WHERE clause for them."""
        store = self.records[plan.obj.name]
        where = plan.query.where
        if plan.obj.name != "Opportunity":
            return list(store.values()), False, where
        order = [(o.path.lower(), o.descending) for o in plan.query.order_by]
        ordered = order in (
            [("systemmodstamp", False)],
            [("systemmodstamp", False), ("id", False)],
        )
        bounds, residual = _stamp_bounds(where)
        if not bounds and not ordered:
            return list(store.values()), False, where
        lo, hi = 0, len(self._stamp_index)
        for op, value in bounds:
            if op in (">=", "="):
                lo = max(lo, bisect.bisect_left(self._stamp_index, (value,)))
            if op == ">":
                lo = max(lo, bisect.bisect_left(self._stamp_index, (value, _TOP)))
            if op in ("<=", "="):
                hi = min(hi, bisect.bisect_left(self._stamp_index, (value, _TOP)))
            if op == "<":
                hi = min(hi, bisect.bisect_left(self._stamp_index, (value,)))
        return [store[i] for _, i in self._stamp_index[lo:hi]], ordered, residual

    # --- writing -----------------------------------------------------------

    def next_id(self, obj: ObjectSpec) -> str:
        n = self.counters.get(obj.name, 0) + 1
        self.counters[obj.name] = n
        return make_id(obj.key_prefix, n)

    def now_stamp(self) -> str:
        return format_datetime(self._now().replace(microsecond=0))

    def prepare(
        self,
        obj: ObjectSpec,
        record_id: str | None,
        values: dict[str, Any],
        *,
        admin: bool = False,
    ) -> Record | list[RecordError]:
        """The record a write would store (not stored yet), or its per-record errors.

        ``record_id`` None creates. ``admin`` edits as the sandbox's admin API does:
        any field, no validation rules, system fields may be set explicitly.
        Raises :class:`RequestError` for a value of the wrong JSON type.
        """
        values = {k: v for k, v in values.items() if k != "attributes"}
        old: Record | None = None
        if record_id is not None:
            old = self.records[obj.name].get(record_id)
            if old is None:
                return [
                    RecordError(
                        "INVALID_CROSS_REFERENCE_KEY",
                        f"invalid cross reference id: {record_id}",
                        ["Id"],
                    )
                ]
            if old.get("IsDeleted") and not admin:
                return [RecordError("ENTITY_IS_DELETED", f"entity is deleted: {record_id}", [])]
        errors: list[RecordError] = []
        new: Record = dict(old) if old is not None else {}
        for name, raw in values.items():
            spec = obj.field(name)
            if spec is None:
                errors.append(
                    RecordError(
                        "INVALID_FIELD",
                        f"No such column '{name}' on sobject of type {obj.name}",
                        [name],
                    )
                )
                continue
            if not spec.updateable and not admin:
                errors.append(
                    RecordError(
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        f"Unable to create/update fields: {spec.name}. Please check the security "
                        "settings of this field and verify that it is read/write for your profile.",
                        [spec.name],
                    )
                )
                continue
            value = coerce(obj, spec, raw)
            problem = self._check_value(spec, value)
            if problem is not None:
                errors.append(problem)
                continue
            if value is None:
                new.pop(spec.name, None)
            else:
                new[spec.name] = value
        if errors:
            return errors
        self._derive(obj, old, new, values)
        # An update only answers for the required fields it touches: records loaded with a
        # gap (the seeded defects) can still receive status fields, as in a real org
        # where a field became required after the record was saved.
        touched = {spec.name for name in values if (spec := obj.field(name)) is not None}
        missing = [f for f in obj.required if new.get(f) is None and (old is None or f in touched)]
        if missing:
            return [
                RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
            ]
        if not admin:
            for rule in self.rules:
                if rule.rejects(obj.name, new, old is not None):
                    fields = [rule.error_field] if rule.error_field else []
                    return [RecordError("FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.message, fields)]
        stamp = self.now_stamp()
        stamps_given = {
            f for f in SYSTEM_FIELDS if admin and any(k.lower() == f.lower() for k in values)
        }
        if old is None:
            new["Id"] = self.next_id(obj)
            new.setdefault("IsDeleted", False)
            new.setdefault("CreatedDate", stamp)
        for f in ("LastModifiedDate", "SystemModstamp"):
            if f not in stamps_given:
                new[f] = stamp
        return new

    def _check_value(self, spec: FieldSpec, value: Any) -> RecordError | None:
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return RecordError(
                "NUMBER_OUTSIDE_VALID_RANGE",
                f"{spec.name}: value outside of valid range on numeric field",
                [spec.name],
            )
        if spec.type in TEXT_TYPES and len(value) > spec.length:
            return RecordError(
                "STRING_TOO_LONG",
                f"{spec.name}: data value too large: {value[:40]}... (max length={spec.length})",
                [spec.name],
            )
        if spec.picklist is not None and value not in spec.picklist:
            return RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{spec.name}: bad value for restricted picklist field: {value}",
                [spec.name],
            )
        if spec.name == "StageName" and self.stage(value) is None:
            return RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"Stage: bad value for restricted picklist field: {value}",
                [spec.name],
            )
        if spec.type == "reference":
            target = PREFIXES.get(value[:3])
            if (
                target is None
                or target.name != spec.reference_to
                or self.fetch(target.name, value) is None
            ):
                return RecordError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"field integrity exception: {spec.name} ({spec.reference_to} ID): "
                    f"no {spec.reference_to} with id {value}",
                    [spec.name],
                )
        return None

    def _derive(
        self, obj: ObjectSpec, old: Record | None, new: Record, values: dict[str, Any]
    ) -> None:
        """Fields the platform computes: stage flags, default probability, names, defaults."""
        given = {k.lower() for k in values}
        if obj.name == "Opportunity":
            if old is None:
                new.setdefault("CurrencyIsoCode", "USD")
                owner = next(iter(self.records["User"]), None)
                if owner is not None:
                    new.setdefault("OwnerId", owner)
            stage = self.stage(new.get("StageName"))
            if stage is not None:
                new["IsClosed"] = bool(stage.get("IsClosed"))
                new["IsWon"] = bool(stage.get("IsWon"))
                stage_changed = old is None or old.get("StageName") != new.get("StageName")
                if stage_changed and "probability" not in given:
                    new["Probability"] = stage.get("DefaultProbability")
        if obj.name in ("Contact", "User"):
            name = " ".join(p for p in (new.get("FirstName"), new.get("LastName")) if p)
            new["Name"] = name
        if old is None:
            for spec in obj.fields.values():
                if spec.type == "boolean" and spec.name not in new:
                    new[spec.name] = False

    def commit(self, obj: ObjectSpec, record: Record) -> None:
        """Store a record prepared by :meth:`prepare` (or a seeded one)."""
        store = self.records[obj.name]
        old = store.get(record["Id"])
        store[record["Id"]] = record
        if obj.name == "Opportunity":
            index = self._stamp_index
            if old is not None:
                key = (old["SystemModstamp"], old["Id"])
                pos = bisect.bisect_left(index, key)
                if pos < len(index) and index[pos] == key:
                    del index[pos]
            bisect.insort(index, (record["SystemModstamp"], record["Id"]))
            if self.on_change is not None:
                self.on_change(old, record)

    def soft_delete(self, obj: ObjectSpec, record_id: str) -> RecordError | None:
        old = self.records[obj.name].get(record_id)
        if old is None:
            return RecordError(
                "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {record_id}"
            )
        if old.get("IsDeleted"):
            return RecordError("ENTITY_IS_DELETED", f"entity is deleted: {record_id}")
        stamp = self.now_stamp()
        self.commit(
            obj, {**old, "IsDeleted": True, "LastModifiedDate": stamp, "SystemModstamp": stamp}
        )
        return None

    def purge(self, obj: ObjectSpec, record_id: str) -> None:
        """Remove a record for good (as the recycle bin's purge does)."""
        old = self.records[obj.name].pop(record_id, None)
        if old is not None and obj.name == "Opportunity":
            key = (old["SystemModstamp"], old["Id"])
            pos = bisect.bisect_left(self._stamp_index, key)
            if pos < len(self._stamp_index) and self._stamp_index[pos] == key:
                del self._stamp_index[pos]

    def replace_all(
        self, records: Mapping[str, Iterable[Record]], counters: dict[str, int]
    ) -> None:
        """Swap in a whole org (seeding, loading a state file)."""
        with self.lock:
            self.records = {o.name: {} for o in SCHEMA.values()}
            for name, rows in records.items():
                self.records[name] = {r["Id"]: r for r in rows}
            self.counters = dict(counters)
            self._stamp_index = sorted(
                (r["SystemModstamp"], r["Id"]) for r in self.records["Opportunity"].values()
            )


def _stamp_bounds(where: soql.Node | None) -> tuple[list[tuple[str, str]], soql.Node | None]:
    """Range conditions on SystemModstamp that every matching row must meet, and the
    rest of the WHERE clause (``where`` itself when there are no such conditions)."""
    if where is None:
        return [], None
    items = where.items if isinstance(where, soql.BoolOp) and where.op == "AND" else (where,)
    bounds: list[tuple[str, str]] = []
    rest: list[soql.Node] = []
    for item in items:
        if (
            isinstance(item, soql.Compare)
            and item.path.lower() == "systemmodstamp"
            and item.op in ("=", "<", "<=", ">", ">=")
            and isinstance(item.value, soql.Token)
            and item.value.kind == "datetime"
        ):
            parsed = parse_datetime(item.value.text)
            if parsed is not None:
                bounds.append((item.op, format_datetime(parsed)))
                continue
        rest.append(item)
    if not bounds:
        return [], where
    if not rest:
        return bounds, None
    return bounds, rest[0] if len(rest) == 1 else soql.BoolOp("AND", tuple(rest))


def coerce(obj: ObjectSpec, spec: FieldSpec, raw: Any) -> Any:
    """A JSON value in the stored form of ``spec``; raises :class:`RequestError` like
    Salesforce's JSON parser does for a value of the wrong type."""
    if raw is None:
        return None
    kind = spec.type

    def refuse() -> RequestError:
        shown = str(raw)[:40]
        return RequestError(
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {kind} from value {shown!r} "
            f"(field {obj.name}.{spec.name})",
        )

    if kind in TEXT_TYPES:
        if isinstance(raw, bool | dict | list):
            raise refuse()
        if kind in ("id", "reference"):
            normalized = normalize_id(str(raw))
            if normalized is None:
                raise refuse()
            return normalized
        return str(raw)
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise refuse()
    if kind in NUMBER_TYPES:
        if isinstance(raw, bool):
            raise refuse()
        try:
            number = float(raw)
        except OverflowError:  # an integer of hundreds of digits
            number = math.inf
        except (TypeError, ValueError):
            raise refuse() from None
        if math.isnan(number) or (isinstance(raw, str) and math.isinf(number)):
            raise refuse()  # "NaN", "Infinity": no number at all
        # a number too large for any field stays infinite: _check_value refuses it by name
        return int(number) if kind == "int" and math.isfinite(number) else number
    if kind == "date":
        if not isinstance(raw, str):
            raise refuse()
        if is_date(raw):
            return raw
        parsed = parse_datetime(raw)  # Salesforce accepts a datetime for a date field
        if parsed is None:
            raise refuse()
        return parsed.date().isoformat()
    if not isinstance(raw, str):
        raise refuse()
    parsed = parse_datetime(raw) or (parse_datetime(raw + "T00:00:00Z") if is_date(raw) else None)
    if parsed is None:
        raise refuse()
    try:
        return format_datetime(parsed)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
        raise refuse() from None
