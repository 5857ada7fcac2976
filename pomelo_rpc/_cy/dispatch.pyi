"""Type stub of the compiled dispatcher (twin: pomelo_rpc/core/dispatch.py)."""
from typing import Any, Callable, Iterable

DONE: int
FAILED: int
PENDING: int

class Method:
    mid: int
    namespace: str
    service: str
    name: str
    func: Callable[..., Any]
    min_args: int
    max_args: int
    is_async: bool
    @property
    def route(self) -> str: ...

class Dispatcher:
    def __init__(self, methods: Iterable[tuple[str, str, str, Callable[..., Any], int, int,
                                               bool]]) -> None: ...
    @property
    def table(self) -> list[list[str]]: ...
    @property
    def methods(self) -> list[Method]: ...
    def __len__(self) -> int: ...
    def by_id(self, mid: Any) -> Method: ...
    def by_name(self, namespace: Any, service: Any, name: Any) -> Method: ...
    def call(self, method: Method, args: list[Any]) -> Any: ...
    def dispatch(self, msg: Any) -> tuple[Any, int, Any]: ...
