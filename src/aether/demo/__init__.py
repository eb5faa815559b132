"""The demo: bank accounts on a cluster, a node killed and restarted, every history verified.

* :mod:`aether.demo.bank` — the domain (also used by ``aether node`` and the examples).
* :mod:`aether.demo.verify` — :func:`~aether.demo.verify.verify_histories`, the verdict.
* :mod:`aether.demo.runner` — ``aether demo`` itself (needs the ``cli`` extra).
"""

from aether.demo.bank import BankAccount, BankCommand, BankReply, BankService
from aether.demo.verify import CommandRecord, VerificationReport, verify_histories

__all__ = [
    "BankAccount",
    "BankCommand",
    "BankReply",
    "BankService",
    "CommandRecord",
    "VerificationReport",
    "verify_histories",
]
