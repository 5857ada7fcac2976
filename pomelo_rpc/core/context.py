"""The context variables of the call path: pure-Python twin of ``pomelo_rpc/_cy/context.pyx``.

The deadline of the call being served (``pomelo_rpc.deadline.current_deadline``) read,
set and reset, the trace context of the request being served (``pomelo_rpc.tracing``)
set and reset, and a copy of the current context: here the ContextVar's own bound
methods (no extra Python frame); the compiled twin calls the C API instead of looking
the methods up on every call.
"""

from __future__ import annotations

from contextvars import copy_context

from ..deadline import current_deadline
from ..tracing import current_trace

#: the deadline of the call being served, or None
deadline = current_deadline.get
#: make ``value`` the deadline of the call being served; a token for ``reset_deadline``
set_deadline = current_deadline.set
#: undo a ``set_deadline``
reset_deadline = current_deadline.reset
#: make ``value`` (a traceparent) the trace context of the request being served
set_trace = current_trace.set
#: undo a ``set_trace``
reset_trace = current_trace.reset
#: a copy of the current context
copy_current = copy_context
