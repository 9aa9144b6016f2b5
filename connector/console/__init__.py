"""The admin console in the browser: connections, runs, record history, dead letters, mappings.

Served by ``connector run`` (when ``console.enabled``) and ``connector console``;
server-rendered pages, readable without JavaScript. See ``connector.console.app`` for
the access rules.
"""

from connector.console.app import Console
from connector.console.server import ConsoleServer, open_console

__all__ = ["Console", "ConsoleServer", "open_console"]
