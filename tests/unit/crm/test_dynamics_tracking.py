"""Change tracking is read from the table's definition, never assumed."""

from __future__ import annotations

import pytest
import respx
from dynamics_fakes import API, OPP1, TABLE_DEFINITIONS, adapter, mocked_dataverse, row

from connector.crm.dynamics.adapter import change_tracking_policy
from connector.errors import ConfigError, CrmError
from connector.settings import DataverseSettings

DELTA = f"{API}/opportunities?$deltatoken=919042%2108%2f22%2f2026"


def related(mock: respx.MockRouter) -> None:
    for entity in ("accounts", "systemusers", "transactioncurrencies", "contacts"):
        mock.get(f"{API}/{entity}").respond(json={"value": []})


def test_a_first_pull_asks_the_definition_then_tracks_changes() -> None:
    with mocked_dataverse(tracking=True) as mock:
        related(mock)
        read = mock.get(f"{API}/opportunities").respond(
            json={"value": [row(OPP1)], "@odata.deltaLink": DELTA}
        )
        crm = adapter()
        pages = list(crm.pull_changes(None, fields=["name"], select=None))
        crm.close()
        definition = mock.routes["definition"].calls.last.request
    # Microsoft's query (use-change-tracking-synchronize-data-external-systems.md)
    assert definition.url.path.endswith("/EntityDefinitions")
    assert definition.url.params["$filter"] == "ChangeTrackingEnabled eq true"
    assert definition.url.params["$select"] == "LogicalName,SchemaName"
    assert "odata.track-changes" in read.calls[0].request.headers["Prefer"]
    assert pages[-1].cursor == f"delta:{DELTA}"
    assert crm.usage.by_kind == {"metadata": 1, "read": 1}


def test_a_delta_link_is_proof_enough_and_costs_no_question() -> None:
    with mocked_dataverse(tracking=False) as mock:
        mock.get(DELTA).respond(json={"value": [], "@odata.deltaLink": DELTA})
        crm = adapter(change_tracking="required")
        list(crm.pull_changes(f"delta:{DELTA}", fields=["name"], select=None))
        crm.close()
    assert crm.usage.by_kind == {"delta": 1}


def test_auto_falls_back_to_modifiedon_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with mocked_dataverse(tracking=False) as mock:
        related(mock)
        read = mock.get(f"{API}/opportunities").respond(json={"value": [row(OPP1)]})
        crm = adapter(change_tracking="auto")
        with caplog.at_level("WARNING"):
            pages = list(crm.pull_changes(None, fields=["name"], select=None))
        crm.close()
    request = read.calls[0].request
    assert "odata.track-changes" not in request.headers["Prefer"]
    assert request.url.params["$orderby"] == "modifiedon asc,opportunityid asc"
    assert pages[-1].cursor == "modifiedon:2026-05-01T10:00:00+00:00"
    assert "change tracking is not enabled for the opportunity table" in caplog.text
    assert "crm.change_tracking" in caplog.text


@pytest.mark.parametrize("policy", ["required", True])
def test_required_refuses_to_run_and_names_the_setting(policy: str | bool) -> None:
    with mocked_dataverse(tracking=False) as mock:
        read = mock.get(f"{API}/opportunities").respond(json={"value": []})
        crm = adapter(change_tracking=policy)
        with pytest.raises(ConfigError) as info:
            list(crm.pull_changes(None, fields=["name"], select=None))
        crm.close()
    assert read.call_count == 0
    message = info.value.message
    assert "crm.change_tracking" in message and "Track changes" in message
    assert "ChangeTrackingEnabled is false" in message


def test_off_never_asks_and_never_tracks() -> None:
    with mocked_dataverse(tracking=True) as mock:
        related(mock)
        read = mock.get(f"{API}/opportunities").respond(json={"value": [row(OPP1)]})
        crm = adapter(change_tracking=False)
        list(crm.pull_changes(None, fields=["name"], select=None))
        crm.close()
        assert not mock.routes["definition"].called
    assert "odata.track-changes" not in read.calls[0].request.headers["Prefer"]


def test_a_modifiedon_cursor_moves_to_tracking_once_the_table_has_it() -> None:
    with mocked_dataverse(tracking=True) as mock:
        related(mock)
        read = mock.get(f"{API}/opportunities").respond(
            json={"value": [row(OPP1)], "@odata.deltaLink": DELTA}
        )
        crm = adapter()
        pages = list(
            crm.pull_changes("modifiedon:2026-05-01T09:00:00+00:00", fields=["name"], select=None)
        )
        crm.close()
    assert "odata.track-changes" in read.calls[0].request.headers["Prefer"]
    assert "$filter" not in read.calls[0].request.url.params  # a full tracked read
    assert pages[-1].cursor == f"delta:{DELTA}"


def test_an_answer_of_another_shape_is_a_classified_error() -> None:
    with mocked_dataverse() as mock:
        mock.get(TABLE_DEFINITIONS).respond(json={"value": "Opportunity"})
        crm = adapter()
        with pytest.raises(CrmError) as info:
            list(crm.pull_changes(None, fields=["name"], select=None))
        crm.close()
    assert info.value.code == "malformed_response"


def test_the_setting_takes_the_policy_and_the_older_booleans() -> None:
    base = {
        "environment_url": "https://org.crm.dynamics.com",
        "tenant": "t",
        "client_id": "c",
        "client_secret": {"env": "DATAVERSE_SECRET"},
    }
    assert DataverseSettings.model_validate(base).change_tracking == "auto"
    assert [
        DataverseSettings.model_validate({**base, "change_tracking": value}).change_tracking
        for value in (True, False, "required", "off")
    ] == ["required", "off", "required", "off"]
    with pytest.raises(ValueError, match="change_tracking"):
        DataverseSettings.model_validate({**base, "change_tracking": "sometimes"})
    assert change_tracking_policy(True) == "required"
