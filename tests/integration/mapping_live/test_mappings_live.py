"""`connector mappings check --against-crm` and `connector mappings explain` over real HTTPS.

The sandbox plays the Salesforce org and the Dataverse environment; the commands run
through the CLI with the connection's own adapters, exactly as an admin would run them.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from connector import cli, mapping_cli
from sandbox.harness import SandboxServer

ROOT = Path(__file__).parents[3]
SALESFORCE = ROOT / "mappings" / "salesforce.yaml"
DYNAMICS = ROOT / "mappings" / "dynamics.yaml"


@dataclass
class Live:
    sb: SandboxServer
    admin: httpx.Client
    tmp: Path

    def config(self, salesforce_mapping: Path = SALESFORCE) -> Path:
        """A config for the sandbox whose Salesforce connection uses ``salesforce_mapping``."""
        text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
        text = self.sb.localize(text)
        text = text.replace("sqlite:///.connector/state.db", f"sqlite:///{self.tmp / 's.db'}")
        text = text.replace("mappings/salesforce.yaml", str(salesforce_mapping))
        text = text.replace("mappings/dynamics.yaml", str(DYNAMICS))
        path = self.tmp / "config.yaml"
        path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with SandboxServer(opportunities=30, seed=11) as sb, sb.client() as admin:
        yield Live(sb, admin, tmp_path_factory.mktemp("mapping_live"))


def run(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """Run the CLI; returns the exit code and everything printed (wide, no colour)."""
    out = io.StringIO()
    wide = Console(file=out, width=250, no_color=True)
    for module in (cli, mapping_cli):
        monkeypatch.setattr(module, "console", wide)
        monkeypatch.setattr(module, "err_console", wide)
    result = CliRunner().invoke(cli.app, list(args))
    return result.exit_code, out.getvalue() + result.output


def all_stages_mapped_reject_policy(tmp: Path) -> Path:
    """The default Salesforce mapping, every sandbox stage named, unmapped stages rejected."""
    text = SALESFORCE.read_text(encoding="utf-8")
    text = text.replace("  unmapped: by_probability", "  unmapped: reject")
    text = text.replace(
        "    Closed Won: Won\n",
        "    Technical Win: Proposed\n    Verbal Commit: Negotiated\n    Closed Won: Won\n",
    )
    path = tmp / "salesforce-reject.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_against_crm_flags_a_stage_added_after_the_mapping_was_written(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    mapping = all_stages_mapped_reject_policy(live.tmp)
    config = live.config(mapping)
    args = ("mappings", "check", str(mapping), "--against-crm", "--config", str(config))

    code, out = run(monkeypatch, *args)
    assert code == 0, out
    assert "Technical Win" in out and "Proposed (mapped)" in out
    assert "UNMAPPED" not in out

    live.admin.post(
        "/_sandbox/salesforce/stages",
        json={"MasterLabel": "Security Review", "DefaultProbability": 70},
    ).raise_for_status()
    code, out = run(monkeypatch, *args)
    assert code == cli.ExitCode.BAD_CONFIG, out
    row = next(line for line in out.splitlines() if "Security Review" in line and "│" in line)
    assert "UNMAPPED" in row
    assert (
        f"{mapping}:23:3: stages.map: stage 'Security Review' is not in stages.map and "
        "unmapped stages are rejected, so records in it will be rejected; add 'Security "
        "Review: <standard stage>' (or 'Security Review: ignore') under stages.map"
        in " ".join(out.split())
    )


def test_check_against_crm_places_new_stages_by_probability_when_the_policy_says_so(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    live.admin.post(
        "/_sandbox/salesforce/stages",
        json={"MasterLabel": "Legal Review", "DefaultProbability": 82},
    ).raise_for_status()
    config = live.config()
    code, out = run(
        monkeypatch,
        "mappings",
        "check",
        "--against-crm",
        "--connection",
        "sandbox-salesforce",
        "--config",
        str(config),
    )
    assert code == 0, out
    row = next(line for line in out.splitlines() if "Legal Review" in line)
    assert "by probability -> Negotiated" in row


def test_check_against_crm_flags_a_won_stage_mapped_to_an_open_stage(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = SALESFORCE.read_text(encoding="utf-8").replace(
        "Closed Won: Won", "Closed Won: Negotiated"
    )
    mapping = live.tmp / "won-contradiction.yaml"
    mapping.write_text(text, encoding="utf-8")
    code, out = run(
        monkeypatch,
        "mappings",
        "check",
        str(mapping),
        "--against-crm",
        "--config",
        str(live.config(mapping)),
    )
    assert code == cli.ExitCode.BAD_CONFIG
    assert (
        "stage 'Closed Won' is a won stage in the CRM but the mapping sends it to Negotiated; "
        "a won stage may only map to Won" in out
    )


def test_check_against_crm_reads_dataverse_stage_metadata(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not DYNAMICS.exists():
        pytest.skip("mappings/dynamics.yaml is not written yet")
    code, out = run(
        monkeypatch,
        "mappings",
        "check",
        str(DYNAMICS),
        "--against-crm",
        "--config",
        str(live.config()),
    )
    assert code == 0, out
    for label, becomes in (("Qualify", "Qualified (mapped)"), ("Won", "Won (mapped)")):
        row = next(line for line in out.splitlines() if line.startswith(f"│ {label} "))
        assert becomes in row


def test_explain_a_salesforce_record_field_by_field(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    (raw,) = live.admin.get(
        "/_sandbox/salesforce/opportunities",
        params={"StageName": "Prospecting", "Sync_with_Partner_Center__c": "true", "limit": 1},
    ).json()["records"]
    account = live.admin.get(f"/_sandbox/salesforce/accounts/{raw['AccountId']}").json()
    code, out = run(
        monkeypatch,
        "mappings",
        "explain",
        raw["Id"],
        "--connection",
        "sandbox-salesforce",
        "--config",
        str(live.config()),
    )
    assert code == 0, out
    lines = out.splitlines()
    name_row = next(line for line in lines if line.startswith("│ name "))
    assert raw["Name"] in name_row
    country_row = next(line for line in lines if line.startswith("│ customer_country "))
    assert "Account.BillingCountryCode" in country_row  # a relationship path, read live
    assert account["BillingCountryCode"] in country_row
    stage_row = next(line for line in lines if line.startswith("│ stage "))
    assert "Prospecting" in stage_row and "Created" in stage_row
    assert "the next sync would: " in out


def test_explain_lists_every_reason_a_record_is_rejected(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    (raw,) = live.admin.get(
        "/_sandbox/salesforce/opportunities", params={"StageName": "Qualification", "limit": 1}
    ).json()["records"]
    live.admin.post(
        f"/_sandbox/salesforce/opportunities/{raw['Id']}",
        json={"Amount": None, "CoSell_Solutions__c": None},
    ).raise_for_status()
    code, out = run(
        monkeypatch,
        "mappings",
        "explain",
        raw["Id"],
        "--connection",
        "sandbox-salesforce",
        "--config",
        str(live.config()),
    )
    assert code == 0, out
    assert "rejected for 2 reason(s):" in out
    assert "the deal value is empty (CRM field Amount); enter an amount" in out
    assert "no solution is named (CRM fields CoSell_Solutions__c, " in out
    assert "the next sync would: reject" in out


def test_explain_a_dataverse_record_field_by_field(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not DYNAMICS.exists():
        pytest.skip("mappings/dynamics.yaml is not written yet")
    rows = live.admin.get("/_sandbox/dataverse/opportunities").json()["value"]
    row = next(r for r in rows if r.get("statecode") == 0 and r.get("name"))
    code, out = run(
        monkeypatch,
        "mappings",
        "explain",
        row["opportunityid"],
        "--connection",
        "sandbox-dynamics",
        "--config",
        str(live.config()),
    )
    assert code == 0, out
    lines = out.splitlines()
    name_row = next(line for line in lines if line.startswith("│ name "))
    assert row["name"][:40] in name_row
    customer_row = next(line for line in lines if line.startswith("│ customer_name "))
    assert "parentaccountid.name" in customer_row  # a lookup path, read live
    assert "(empty)" not in customer_row


def test_explain_an_unknown_record_fails_with_a_clear_message(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run(
        monkeypatch,
        "mappings",
        "explain",
        "006000000000000AAA",
        "--connection",
        "sandbox-salesforce",
        "--config",
        str(live.config()),
    )
    assert code == cli.ExitCode.FAILED
    assert "no opportunity with id 006000000000000AAA" in out


def test_check_against_crm_reports_misspelt_fields_and_other_problems_in_one_pass(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        SALESFORCE.read_text(encoding="utf-8")
        .replace("notes: {field: Description}", "notes: {field: Descriptoin}")
        .replace("referral_link: Referral_Link__c", "referral_link: Referal_Link__c")
        .replace(
            "    Prospecting: Created\n",
            "    Prospecting: Created\n    Security Review: Accepted\n",
        )
        .replace(
            "customer_city: {field: Account.BillingCity}",
            "customer_city: {field: Acount.BillingCity}",
        )
    )
    mapping = live.tmp / "misspelt.yaml"
    mapping.write_text(text, encoding="utf-8")
    lines = text.splitlines()

    def line_of(needle: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if needle in line)

    code, out = run(
        monkeypatch,
        *(
            "mappings",
            "check",
            str(mapping),
            "--against-crm",
            "--config",
            str(live.config(mapping)),
        ),
    )
    assert code == cli.ExitCode.BAD_CONFIG, out
    flat = " ".join(out.split())
    for needle, message in (
        (
            "Descriptoin",
            "'Descriptoin' is not a field of Opportunity in the CRM (did you mean 'Description'?)",
        ),
        (
            "Referal_Link__c",
            "'Referal_Link__c' is not a field of Opportunity in the CRM (did you mean 'Referral_Link__c'?)",
        ),
        ("Security Review: Accepted", "Accepted is set only by Partner Center"),
        (
            "Acount.BillingCity",
            "'Acount' in 'Acount.BillingCity' is not a relationship of Opportunity in the CRM (did you mean 'Account'?)",
        ),
    ):
        assert f"{mapping}:{line_of(needle)}:" in flat and message in flat, (needle, flat[-1500:])
    assert "None" not in out


def test_check_against_crm_knows_dataverse_attributes_lookups_and_derived_names(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = live.config()
    code, out = run(
        monkeypatch,
        *("mappings", "check", str(DYNAMICS), "--against-crm", "--config", str(config)),
    )
    assert code == 0, out  # stage, is_won, cosell_helpneeded@label, parentaccountid.name ...
    text = (
        DYNAMICS.read_text(encoding="utf-8")
        .replace("{field: estimatedclosedate}", "{field: estimatedclosingdate}")
        .replace("parentaccountid.name", "parentaccountid.nmae")
    )
    broken = live.tmp / "dynamics-misspelt.yaml"
    broken.write_text(text, encoding="utf-8")
    config_text = config.read_text(encoding="utf-8").replace(str(DYNAMICS), str(broken))
    config.write_text(config_text, encoding="utf-8")
    code, out = run(
        monkeypatch, "mappings", "check", str(broken), "--against-crm", "--config", str(config)
    )
    assert code == cli.ExitCode.BAD_CONFIG, out
    flat = " ".join(out.split())
    assert (
        "'estimatedclosingdate' is not a field of opportunity in the CRM (did you mean 'estimatedclosedate'?)"
        in flat
    )
    assert (
        "'nmae' (in 'parentaccountid.nmae') is not a field of account in the CRM (did you mean 'name'?)"
        in flat
    )


def test_piped_every_problem_is_one_line(live: Live) -> None:
    text = SALESFORCE.read_text(encoding="utf-8").replace(
        "notes: {field: Description}", "notes: {field: Descriptoin}"
    )
    mapping = live.tmp / "piped.yaml"
    mapping.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "mappings",
            "check",
            str(mapping),
            "--against-crm",
            "--config",
            str(live.config(mapping)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    )
    assert done.returncode == cli.ExitCode.BAD_CONFIG, done.stdout + done.stderr
    (problem,) = [line for line in done.stderr.splitlines() if line.startswith(str(mapping))]
    assert len(problem) > 80 and problem.endswith("or create the field in the CRM")


def test_a_dry_run_that_fails_on_a_misspelt_field_names_its_line(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = SALESFORCE.read_text(encoding="utf-8").replace(
        "notes: {field: Description}", "notes: {field: Descriptoin}"
    )
    mapping = live.tmp / "dry-run-typo.yaml"
    mapping.write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "Descriptoin" in t)
    monkeypatch.setenv("CONNECTOR_STATE_URL", f"sqlite:///{live.tmp / 'dry.db'}")
    code, out = run(
        monkeypatch,
        *("sync", "--once", "--dry-run", "--connection", "sandbox-salesforce"),
        *("--config", str(live.config(mapping))),
    )
    assert code == cli.ExitCode.BAD_CONFIG, out
    flat = " ".join(out.split())
    assert f"{mapping}:{line}:18: fields.notes.field: 'Descriptoin' is not a field" in flat
