"""Near-real-time sync: change events make the daemon sync the records they name at once.

An event never bypasses the pipeline: it only names records (CRM ids, referral ids).
The daemon gathers the names per connection (debounced, coalesced, bounded), runs a
targeted cycle for them through the same engine as a scheduled cycle (mapping,
planning, idempotent pushes, fingerprints, dead letters), and keeps polling on its
schedule as the safety net for whatever an event missed.

- :mod:`~connector.events.config`: the settings (receiver, sources per connection);
- :mod:`~connector.events.notices`: what an event names, read from each source's body;
- :mod:`~connector.events.verify`: Partner Center signatures, Dataverse keys;
- :mod:`~connector.events.pending`: the bounded, coalescing queue per connection;
- :mod:`~connector.events.runner`: targeted cycles, one connection at a time;
- :mod:`~connector.events.receiver`: the HTTP(S) port of ``connector run``;
- :mod:`~connector.events.cometd` and :mod:`~connector.events.salesforce_stream`:
  Salesforce Change Data Capture, replayed from the stored replay id after a restart;
- :mod:`~connector.events.service`: all of it wired into the daemon.
"""

# The settings module completes the event settings models (they name its SecretRef):
# importing it here makes connector.events.config usable whichever is imported first.
import connector.settings  # noqa: F401
