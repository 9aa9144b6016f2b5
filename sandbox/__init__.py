"""A local HTTPS server that imitates the referrals API, Salesforce and Dataverse.

It is written from the reference documents, not from the connector's models,
so that a modelling mistake on one side fails on the other; it imports nothing
from the connector (sandbox/tests/unit/test_independent.py checks), and is never
part of the connector's wheel or image: a clone installs it with the ``sandbox``
extra (``pip install -e '.[sandbox]'``).

- ``app`` (the ASGI app, latency and fault middleware, the admin API), ``server``
  (HTTPS with its own CA, ``serve``), ``harness`` (the start-up of tests and
  benchmarks), ``context``, ``entra``, ``http``, ``corrupt``, ``heap``;
- one sub-package per imitated system: ``partner_center``, ``salesforce``,
  ``dataverse``, and ``events`` (what they tell their subscribers).
"""
