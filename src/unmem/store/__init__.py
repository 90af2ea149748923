"""Deletion requests as a workflow: a versioned model store, a hash-chained ledger, receipts.

Run::

    unmem store init --model runs/models/target --out runs/store
    unmem forget runs/store --request request.yaml     # a version per honoured request
    unmem store log runs/store                          # the ledger, one line per entry
    unmem store verify runs/store --receipt runs/store/requests/0001-ID/receipt.json
    unmem store rollback runs/store 1
    unmem store export runs/store 2 --out runs/model-v2

Modules: ``ledger`` (the hash chain), ``versions`` (what a version is, its files' hashes),
``store`` (the directory, the commit and its recovery), ``request`` (the request file),
``forget`` (a request from start to commit), ``fusion`` (EUL's per-request layers, fused),
``receipt`` (receipt.json / receipt.md), ``manage`` (init, log, show, export, rollback, verify).
Formats: docs/requests.md.
"""

from unmem.store.forget import Outcome, forget
from unmem.store.manage import export, init_store, log_rows, rollback, show, verify
from unmem.store.request import Request, load_request, request_from_flags
from unmem.store.store import Store

__all__ = [
    "Outcome",
    "Request",
    "Store",
    "export",
    "forget",
    "init_store",
    "load_request",
    "log_rows",
    "request_from_flags",
    "rollback",
    "show",
    "verify",
]
