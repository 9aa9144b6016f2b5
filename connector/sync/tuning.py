"""The sync's tuning knobs in one place, passed in through the constructors.

Defaults are the values measured for the shipped product; tests pass small ones (a
slice of 40 referrals, batches of 5 writes) to reach the paths that only large runs
take, instead of changing module constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Tuning:
    #: status writes per CRM call (a Salesforce collection holds 200 records)
    write_batch: int = 200
    #: listed referrals mirrored together (one store lookup per batch)
    mirror_batch: int = 200
    #: status batches sent and not yet recorded while the pull-back lists (memory bound)
    writes_in_flight: int = 4
    #: threads that send those batches
    write_threads: int = 2
    #: links saved per store transaction while a page is pushed
    link_batch: int = 100
    #: referrals written per parallel slice of the pull-back listing (10 core pages)
    pull_slice: int = 1000
    #: (id, stamp) keys of pulled records remembered to drop a repeat (two large pages)
    page_memory: int = 10_000
    #: the first page of a run is handed to the push pool in parts of this many records
    #: and then the rest: the pool starts after mapping a few records, not a whole page
    #: (0: no parts)
    first_part: int = 100
    #: referrals whose eTag a run remembers for its pull-back (connector.sync.seen;
    #: about 200 bytes each)
    seen_etags: int = 50_000
    #: how far before the stored core cursor the next pull-back starts (ties, late commits)
    core_overlap: timedelta = timedelta(seconds=60)


DEFAULT_TUNING = Tuning()
