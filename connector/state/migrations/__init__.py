"""Versioned schema migrations (Alembic), run in code by :mod:`connector.state.store`.

No ``alembic.ini`` is needed: :func:`alembic_config` builds the configuration.
To write a new revision from a source checkout::

    from alembic import command
    from connector.state.migrations import alembic_config
    command.revision(alembic_config("sqlite:///dev.db"), message="...", autogenerate=True,
                     rev_id="0002")

then edit the generated file so that it does not import ``connector.state.schema``.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration pointing at this folder (``url`` only for offline use)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # "%" would be taken for ConfigParser interpolation
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config
