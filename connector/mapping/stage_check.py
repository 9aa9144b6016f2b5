"""A mapping's stages checked against the CRM's live stage list (pure, no I/O).

``connector mappings check --against-crm`` reads the stage metadata of the CRM
(Salesforce ``OpportunityStage``, the Dataverse option set plus Won/Lost) and asks,
for each stage, what a record in it would become. Problems are what would reject
or mis-close records: an unmapped stage under the ``reject`` policy, a won stage
sent to anything but Won, a lost stage to anything but Lost, an open stage sent to
Won or Lost, an inbound stage the CRM does not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from connector.mapping.apply import stage_by_probability
from connector.mapping.schema import InboundSettings, StageMap
from connector.model import StageInfo, StandardStage

#: where in the mapping file a problem is (keys from the top)
FilePath = tuple[str | int, ...]


class StageRules(Protocol):
    """What the check reads of a mapping (a whole :class:`MappingFile` will do)."""

    @property
    def stages(self) -> StageMap: ...

    @property
    def inbound(self) -> InboundSettings: ...


@dataclass(frozen=True)
class StageLine:
    """One CRM stage and what the mapping makes of it."""

    label: str
    crm_kind: str
    maps_to: str
    problem: str | None = None
    #: where the mapping says (or should say) what this stage becomes
    path: FilePath = ("stages", "map")


@dataclass
class StageCheck:
    lines: list[StageLine] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: where each of ``problems`` is in the file, in the same order
    problem_paths: list[FilePath] = field(default_factory=list)
    #: not wrong, but worth a look (a mapped label the CRM no longer has)
    warnings: list[str] = field(default_factory=list)

    def problem(self, path: FilePath, message: str) -> None:
        self.problems.append(message)
        self.problem_paths.append(path)


def check_stages(mapping: StageRules, stages: Sequence[StageInfo]) -> StageCheck:
    """Every stage of the CRM against the mapping; see the module docstring."""
    out = StageCheck()
    rule = mapping.stages
    for info in stages:
        line = _line(rule, info)
        out.lines.append(line)
        if line.problem:
            out.problem(line.path, line.problem)
    known = {s.label for s in stages} | {s.api_name for s in stages}
    for label in rule.map:
        if label not in known:
            out.warnings.append(
                f"stages.map names {label!r}, which the CRM does not have (renamed or "
                "deleted?); records cannot be in it: fix the spelling or delete the line"
            )
    inbound = mapping.inbound
    if inbound.create_opportunities and inbound.stage:
        found = next((s for s in stages if inbound.stage in (s.label, s.api_name)), None)
        if found is None:
            out.problem(
                ("inbound", "stage"),
                f"inbound.stage {inbound.stage!r} is not a stage of the CRM; incoming deals "
                "could not be created: name one of the stages listed above",
            )
        elif found.is_closed:
            out.problem(
                ("inbound", "stage"),
                f"inbound.stage {inbound.stage!r} is a closed stage; incoming deals must start "
                "open: name an early open stage",
            )
    return out


def _kind(info: StageInfo) -> str:
    if info.is_won:
        kind = "won"
    elif info.is_closed:
        kind = "lost"
    elif info.probability is not None:
        kind = f"open {info.probability.normalize():f}%"
    else:
        kind = "open"
    return kind if info.active else f"{kind}, inactive"


def _line(rule: StageMap, info: StageInfo) -> StageLine:
    label, kind = info.label, _kind(info)
    key = label if label in rule.map else info.api_name
    if key in rule.ignored:
        return StageLine(label, kind, "ignored (records skipped)", path=("stages", "map", key))
    mapped = rule.mapped.get(key)
    if mapped is not None:
        shown = f"{mapped.value} (mapped)"
        problem = None
        if info.is_won and mapped is not StandardStage.WON:
            problem = (
                f"stage {label!r} is a won stage in the CRM but the mapping sends it to "
                f"{mapped.value}; a won stage may only map to Won"
            )
        elif info.is_closed and not info.is_won and mapped is not StandardStage.LOST:
            problem = (
                f"stage {label!r} is a lost stage in the CRM but the mapping sends it to "
                f"{mapped.value}; a lost stage may only map to Lost"
            )
        elif not info.is_closed and mapped in (StandardStage.WON, StandardStage.LOST):
            problem = (
                f"stage {label!r} is an open stage in the CRM but the mapping sends it to "
                f"{mapped.value}, which would close the deal in Partner Center while it is "
                "still open: map it to an open stage"
            )
        return StageLine(label, kind, shown, problem, path=("stages", "map", key))
    if info.is_closed:
        return StageLine(label, kind, "closed -> " + ("Won" if info.is_won else "Lost"))
    if rule.unmapped == "by_probability":
        if info.probability is not None:
            stage = stage_by_probability(info.probability)
            return StageLine(label, kind, f"by probability -> {stage.value}")
        return StageLine(
            label,
            kind,
            "UNMAPPED",
            f"stage {label!r} is not in stages.map and the CRM gives it no probability, so "
            f"by_probability cannot place it; add '{label}: <standard stage>' (or "
            f"'{label}: ignore') under stages.map",
        )
    return StageLine(
        label,
        kind,
        "UNMAPPED",
        f"stage {label!r} is not in stages.map and unmapped stages are rejected, so records "
        f"in it will be rejected; add '{label}: <standard stage>' (or '{label}: ignore') "
        "under stages.map",
    )
