"""Handler registries: a decorator that files a function under one or more keys of a table."""
from __future__ import annotations

from typing import Callable, TypeVar

Handler = TypeVar("Handler", bound=Callable)


def registrar(table: dict[str, Handler]) -> Callable[..., Callable[[Handler], Handler]]:
    """`register = registrar(TABLE)`, then `@register("A", "B")` makes the function TABLE's handler of A and B."""
    def register(*keys: str) -> Callable[[Handler], Handler]:
        def add(fn: Handler) -> Handler:
            for key in keys:
                table[key] = fn
            return fn
        return add
    return register
