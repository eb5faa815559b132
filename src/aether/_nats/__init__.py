"""The adapter: the one place where Aether speaks nats-py (see docs/architecture.md).

* :mod:`.errors` — the one table from nats-py exceptions and JetStream error codes to the
  Aether error tree (:func:`translate_nats_error`, :func:`api_error`), and the only reading of
  permission-refusal text;
* :mod:`.inbox` — one multiplexed request/reply inbox per connection (single and multi-message
  replies, pipelined bursts, deadlines, probes);
* :mod:`.jsapi` — JetStream API calls over that inbox (:class:`JsApi`);
* :mod:`.headers` — a faster drop-in for nats-py's header-block parser, given to every client
  that gets an inbox;
* :mod:`.denials` — the error-callback chain composed at connect time and the permission watch
  that turns the server's refusals into immediate :class:`~aether.errors.PermissionDeniedError`.

Components import these names from ``aether._nats``; none of them imports nats-py at run time.
"""

from __future__ import annotations

from aether.errors import JetStreamApiError

from . import denials, errors, headers, inbox, jsapi
from .denials import *  # noqa: F403  (each submodule's __all__ is re-exported as is)
from .errors import *  # noqa: F403
from .headers import *  # noqa: F403
from .inbox import *  # noqa: F403
from .jsapi import *  # noqa: F403

__all__ = ["JetStreamApiError"]
__all__ += denials.__all__
__all__ += errors.__all__
__all__ += headers.__all__
__all__ += inbox.__all__
__all__ += jsapi.__all__
