"""``connector mappings``: check, init, explain and schema of mapping files (for CRM admins).

``check`` reports every problem of a file at once, each as ``file:line:column``
(``--against-crm``: the CRM's fields and stages too); ``init`` writes the shipped
defaults and their JSON Schema into a folder; ``explain`` shows what one live record
becomes; ``schema`` prints the JSON Schema editors use.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from connector.commands import common
from connector.commands.common import ConfigOpt, ExitCode, fail, settings_for
from connector.errors import ConfigError, ConnectorError, MappingError
from connector.settings import load_config, state_url

mappings_app = typer.Typer(help="Check and inspect mapping files.", no_args_is_help=True)


@mappings_app.command("check")
def mappings_check(
    file: Annotated[
        list[Path] | None, typer.Argument(help="Mapping files (default: those of the config).")
    ] = None,
    config: ConfigOpt = None,
    against_crm: Annotated[
        bool,
        typer.Option(
            "--against-crm",
            help="Also check every field the file names and every stage against the CRM's own "
            "description (read-only).",
        ),
    ] = False,
    connection: Annotated[
        str | None,
        typer.Option("--connection", help="The connection whose CRM to read (--against-crm)."),
    ] = None,
) -> None:
    """Validate mapping files and report every problem at once, each as file:line:column."""
    from connector.commands.live import check_against_crm, connection_for, print_file_check
    from connector.mapping.check import check_file

    settings = settings_for(config)
    files = list(file or [])
    try:
        cfg = (
            load_config(settings.config, max_bytes=settings.max_yaml_bytes)
            if against_crm or not files
            else None
        )
        if not files and cfg is not None:
            files = [c.mapping for c in cfg.connection(connection)]
    except ConfigError as exc:
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
    bad = 0
    for path in files:
        conn = None
        try:
            if against_crm and cfg is not None:
                conn = connection_for(cfg, path, connection)
                check = check_against_crm(conn, settings, path, max_bytes=settings.max_yaml_bytes)
            else:
                check = check_file(path, max_bytes=settings.max_yaml_bytes)
        except ConfigError as exc:
            raise fail(exc.message, ExitCode.BAD_CONFIG) from None
        except ConnectorError as exc:
            raise fail(exc.message, ExitCode.FAILED) from None
        print_file_check(
            common.err_console if check.problems else common.console,
            check,
            conn.name if conn else None,
        )
        bad += bool(check.problems)
    raise typer.Exit(ExitCode.BAD_CONFIG if bad else ExitCode.OK)


@mappings_app.command("init")
def mappings_init(
    folder: Annotated[
        Path, typer.Argument(help="Where to write the mapping and its schema.")
    ] = Path("mappings"),
    crm: Annotated[
        str,
        typer.Option("--crm", help="Which default to start from: salesforce, dynamics, or both."),
    ] = "both",
    relative_schema: Annotated[
        bool,
        typer.Option(
            "--relative-schema",
            help="Point the editor at ./mapping.schema.json (a folder that moves) instead of "
            "the schema file's absolute path.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite mapping files that exist.")
    ] = False,
) -> None:
    """Write the default mapping(s) and the JSON Schema next to them, ready to edit."""
    from connector.mapping.defaults import write_defaults

    kinds = ("salesforce", "dynamics") if crm == "both" else (crm,)
    try:
        written = write_defaults(folder, kinds, relative_schema=relative_schema, force=force)
    except ConfigError as exc:
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
    for path in written:
        common.console.print(f"wrote {escape(str(path))}", highlight=False)
    common.console.print(
        "edit the stages and fields, then run `connector mappings check --against-crm`",
        highlight=False,
    )


@mappings_app.command("explain")
def mappings_explain(
    record_id: Annotated[str, typer.Argument(help="The CRM opportunity's id.")],
    connection: Annotated[
        str | None, typer.Option("--connection", help="The connection to read it from.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Fetch one CRM record and show, field by field, the deal it would become (read-only)."""
    from connector.commands.live import connection_for, explain_live, print_explanation
    from connector.mapping.load import load_mapping

    settings = settings_for(config)
    try:
        cfg = load_config(settings.config, max_bytes=settings.max_yaml_bytes)
        conn = connection_for(cfg, None, connection)
        mapping = load_mapping(conn.mapping, max_bytes=settings.max_yaml_bytes)
        explanation = explain_live(conn, settings, mapping, record_id, state_url(settings, cfg))
    except (ConfigError, MappingError) as exc:
        raise fail(exc.message, ExitCode.BAD_CONFIG) from None
    except ConnectorError as exc:
        raise fail(exc.message, ExitCode.FAILED) from None
    print_explanation(common.console, conn.name, explanation)


@mappings_app.command("schema")
def mappings_schema() -> None:
    """Print the JSON Schema of mapping files (for editors)."""
    from connector.mapping.defaults import schema_text

    sys.stdout.write(schema_text())
