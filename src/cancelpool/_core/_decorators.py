"""Decorators that run an async function inside a :class:`Cancelable`.

Two families:

* *one operation per call*: :func:`cancelable`, :func:`cancelable_with_token`,
  :func:`cancelable_with_signal`, :func:`cancelable_with_condition`,
  :func:`cancelable_combine` and :func:`cancelable_method`. Every call runs as
  ``async with <a new Cancelable>: return await fn(...)``, so a call is cancelled, and
  its cancellation surfaces, exactly as that block would: the operation's own sources
  raise the matching :class:`CancelationError` subclass (with the context, and so the
  ``partial_result``, attached); a cancellation from outside passes through untouched.
* *an operation lent to the function*: :func:`with_cancelable` runs the function with
  an existing operation as :func:`current_operation` (it never enters it), and
  :func:`with_current_operation` hands the function whatever operation is current.

Injection: a decorator passes the operation to the function as a keyword argument
(``cancelable`` by default, see ``inject_param``) only when the function declares a
parameter of that name or takes ``**kwargs``. This is decided once, when the function
is decorated, from its signature; ``inject_param=None`` turns injection off. The
injected parameter is hidden from the wrapper's ``inspect.signature``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, Protocol, TypeVar, overload

import anyio.lowlevel

from ._cancelable import Cancelable
from ._current import current_operation, current_var
from ._enums import OperationStatus
from ._exceptions import error_for_reason
from ._sources import (
    ConditionFn,
    ConditionSource,
    SignalSource,
    TimeoutSource,
    validate_interval,
    validate_signals,
)
from ._token import CancelationToken
from ._validate import is_async_callable, optional_seconds

P = ParamSpec("P")
T = TypeVar("T")

_DEFAULT_INJECT = "cancelable"
_KIND = inspect.Parameter


class AsyncDecorator(Protocol):
    """What a decorator factory returns: async function in, same signature out."""

    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...


class MethodDecorator(Protocol):
    """Like :class:`AsyncDecorator`, also accepting ``classmethod``/``staticmethod``."""

    @overload
    def __call__(
        self, fn: classmethod[Any, P, Coroutine[Any, Any, T]], /
    ) -> classmethod[Any, P, Coroutine[Any, Any, T]]: ...
    @overload
    def __call__(
        self, fn: staticmethod[P, Coroutine[Any, Any, T]], /
    ) -> staticmethod[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...


class SyncOrAsyncDecorator(Protocol):
    """A decorator that keeps the function's signature, sync or async."""

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]: ...


# -- checks made at decoration time --------------------------------------------------------
def _label(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return f"{name}()" if name else repr(fn)


def _require_async(fn: object, decorator: str) -> None:
    if not callable(fn):
        raise TypeError(f"@{decorator} decorates a function, not {fn!r}")
    if inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"@{decorator} cannot wrap the async generator {_label(fn)}: an operation "
            f"cannot stay open while the generator is suspended in its caller. Open the "
            f"operation around the loop instead and iterate with `op.stream(...)`."
        )
    if not is_async_callable(fn):
        raise TypeError(
            f"@{decorator} needs an async function (`async def`), and {_label(fn)} is "
            f"not one: the operation must stay open while the function awaits. Make it "
            f"async, or call blocking code with `await op.run_in_thread(fn, ...)` inside "
            f"an operation."
        )


def _check_name(name: object) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string or None, not {name!r}")


def _check_timeout(timeout: float | timedelta | None) -> float | None:
    return optional_seconds(timeout, "timeout")


def _default_name(fn: object) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def _seed_options(operation_id: str | None, register_globally: bool | None) -> dict[str, Any]:
    # The seed library's decorator options, passed on to each call's Cancelable.
    return {"operation_id": operation_id, "register_globally": register_globally}


# -- injection -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Injection:
    """Where the operation goes in a call: decided once per decorated function."""

    name: str
    #: Index of the parameter among positional arguments, when it can be given
    #: positionally; used to notice a caller who passed it themselves.
    position: int | None
    #: The parameter is declared by name (not only absorbed by ``**kwargs``).
    declared: bool

    def supplied(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        return self.name in kwargs or (self.position is not None and len(args) > self.position)


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables have none
        return None


def _plan_injection(
    fn: Callable[..., Any], inject_param: str | None, decorator: str
) -> _Injection | None:
    if inject_param is None:
        return None
    if not isinstance(inject_param, str) or not inject_param.isidentifier():
        raise TypeError(
            f"inject_param must be a parameter name (a string) or None, not {inject_param!r}"
        )
    sig = _signature(fn)
    if sig is None:
        return None
    params = list(sig.parameters.values())
    param = sig.parameters.get(inject_param)
    if param is None or param.kind is _KIND.VAR_KEYWORD:
        if any(p.kind is _KIND.VAR_KEYWORD for p in params):
            return _Injection(inject_param, None, declared=False)
        return None
    if param.kind is _KIND.POSITIONAL_ONLY or param.kind is _KIND.VAR_POSITIONAL:
        raise TypeError(
            f"@{decorator} passes the operation to {_label(fn)} as the keyword argument "
            f"{inject_param!r}, but that parameter cannot be given by keyword; declare it "
            f"as a normal or keyword-only parameter, or set inject_param=None."
        )
    position = params.index(param) if param.kind is _KIND.POSITIONAL_OR_KEYWORD else None
    return _Injection(inject_param, position, declared=True)


def _hide_injected(wrapper: Callable[..., Any], fn: Callable[..., Any], inj: _Injection) -> None:
    # Callers never pass the injected parameter: keep it out of the visible signature.
    if not inj.declared:
        return
    sig = _signature(fn)
    if sig is not None:
        params = [p for p in sig.parameters.values() if p.name != inj.name]
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]


def _refuse_supplied(inj: _Injection, fn: Callable[..., Any], decorator: str) -> TypeError:
    return TypeError(
        f"{_label(fn)} got a value for {inj.name!r}, which @{decorator} supplies itself: "
        f"do not pass it (each call gets its own operation)."
    )


# -- the wrapper shared by every one-operation-per-call decorator --------------------------
def _per_call(
    fn: Callable[P, Coroutine[Any, Any, T]],
    make: Callable[[tuple[Any, ...]], Cancelable],
    inject_param: str | None,
    decorator: str,
) -> Callable[P, Coroutine[Any, Any, T]]:
    _require_async(fn, decorator)
    inj = _plan_injection(fn, inject_param, decorator)

    if inj is None:

        @functools.wraps(fn)
        async def plain(*args: P.args, **kwargs: P.kwargs) -> T:
            # Cancelable.__aexit__ never swallows: it returns False or raises.
            async with make(args):
                result = await fn(*args, **kwargs)
            return result

        return plain

    @functools.wraps(fn)
    async def injected(*args: P.args, **kwargs: P.kwargs) -> T:
        if inj.supplied(args, kwargs):
            raise _refuse_supplied(inj, fn, decorator)
        op = make(args)
        kwargs[inj.name] = op
        async with op:
            result = await fn(*args, **kwargs)
        return result

    _hide_injected(injected, fn, inj)
    return injected


# -- one operation per call ----------------------------------------------------------------
@overload
def cancelable(
    timeout: Callable[P, Coroutine[Any, Any, T]], /
) -> Callable[P, Coroutine[Any, Any, T]]: ...
@overload
def cancelable(
    timeout: float | timedelta | None = None,
    name: str | None = None,
    inject_param: str | None = _DEFAULT_INJECT,
    register: bool = False,
    operation_id: str | None = None,
    register_globally: bool | None = None,
) -> AsyncDecorator: ...
def cancelable(
    timeout: Any = None,
    name: str | None = None,
    inject_param: str | None = _DEFAULT_INJECT,
    register: bool = False,
    operation_id: str | None = None,
    register_globally: bool | None = None,
) -> Any:
    """Run every call of the decorated async function in its own new operation.

    Example::

        @cancelable(timeout=5.0, name="fetch")
        async def fetch(url: str, cancelable: Cancelable) -> bytes:
            await cancelable.report_progress(f"fetching {url}")
            ...

    Each call gets a fresh deadline (calls do not share a budget; see
    :func:`with_cancelable` for that). ``@cancelable`` without parentheses works too.

    Args:
        timeout: seconds (or a timedelta) each call may take; None for no deadline.
        name: the operation's name; defaults to the function's ``__name__``.
        inject_param: the parameter that receives the operation, if the function has
            it (or ``**kwargs``); None never injects.
        register: list the operations in :class:`OperationRegistry`.
        operation_id: the id every call's operation gets (the seed library's option;
            ids then repeat across calls).
        register_globally: the seed library's name for ``register``.

    Raises:
        TypeError: at decoration time, if the function is not async.

    A call whose deadline passes raises :class:`TimeoutCancelation`; a cancellation
    from outside (an enclosing scope or operation) propagates untouched.
    """
    if callable(timeout):
        return cancelable()(timeout)
    seconds = _check_timeout(timeout)
    _check_name(name)

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        op_name = name if name is not None else _default_name(fn)

        def make(_: tuple[Any, ...]) -> Cancelable:
            op = Cancelable(
                op_name, register=register, **_seed_options(operation_id, register_globally)
            )
            if seconds is not None:
                op.add_source(TimeoutSource(seconds))
            return op

        return _per_call(fn, make, inject_param, "cancelable")

    return decorate


def cancelable_with_token(
    token: CancelationToken,
    *,
    name: str | None = None,
    inject_param: str | None = _DEFAULT_INJECT,
    register: bool = False,
    operation_id: str | None = None,
    register_globally: bool | None = None,
) -> AsyncDecorator:
    """Run every call in a new operation that ``token`` cancels (from any thread).

    A call made after the token was cancelled is cancelled at once. The call raises
    the error that matches the token's reason (:class:`ManualCancelation` for a plain
    ``token.cancel()``).
    """
    if not isinstance(token, CancelationToken):
        raise TypeError(
            f"@cancelable_with_token needs a CancelationToken, not {type(token).__name__}"
        )
    _check_name(name)

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        op_name = name if name is not None else _default_name(fn)

        def make(_: tuple[Any, ...]) -> Cancelable:
            return Cancelable(
                op_name, register=register, **_seed_options(operation_id, register_globally)
            ).add_token(token)

        return _per_call(fn, make, inject_param, "cancelable_with_token")

    return decorate


def cancelable_with_signal(
    *signals: int,
    name: str | None = None,
    inject_param: str | None = _DEFAULT_INJECT,
    register: bool = False,
    operation_id: str | None = None,
    register_globally: bool | None = None,
) -> AsyncDecorator:
    """Run every call in a new operation cancelled when one of ``signals`` arrives.

    Signals are received through the event loop, so the calls must run in the main
    thread. A call so cancelled raises :class:`SignalCancelation`.
    """
    valid = validate_signals(signals)
    _check_name(name)

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        op_name = name if name is not None else _default_name(fn)

        def make(_: tuple[Any, ...]) -> Cancelable:
            return Cancelable(
                op_name, register=register, **_seed_options(operation_id, register_globally)
            ).add_source(SignalSource(*valid))

        return _per_call(fn, make, inject_param, "cancelable_with_signal")

    return decorate


def cancelable_with_condition(
    condition: ConditionFn,
    check_interval: float = 1.0,
    condition_name: str | None = None,
    *,
    name: str | None = None,
    inject_param: str | None = _DEFAULT_INJECT,
    register: bool = False,
    operation_id: str | None = None,
    register_globally: bool | None = None,
) -> AsyncDecorator:
    """Run every call in a new operation cancelled once ``condition()`` is true.

    The condition (sync or async) is checked when the call starts and then every
    ``check_interval`` seconds; a sync condition runs on the event loop and must be
    quick. A call so cancelled raises :class:`ConditionCancelation`.
    """
    if not callable(condition):
        raise TypeError(f"condition must be callable, not {type(condition).__name__}")
    interval = validate_interval(check_interval)
    _check_name(name)

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        op_name = name if name is not None else _default_name(fn)

        def make(_: tuple[Any, ...]) -> Cancelable:
            source = ConditionSource(condition, interval, condition_name)
            return Cancelable(
                op_name, register=register, **_seed_options(operation_id, register_globally)
            ).add_source(source)

        return _per_call(fn, make, inject_param, "cancelable_with_condition")

    return decorate


def _check_templates(templates: tuple[Cancelable, ...]) -> None:
    if not templates:
        raise TypeError("@cancelable_combine needs at least one Cancelable to combine")
    for op in templates:
        if not isinstance(op, Cancelable):
            raise TypeError(f"@cancelable_combine takes Cancelable objects, not {op!r}")
        if op.context.status is not OperationStatus.PENDING:
            raise ValueError(
                f"@cancelable_combine takes unstarted Cancelable objects as templates, but "
                f"{op!r} has already been entered"
            )


def cancelable_combine(
    *cancelables: Cancelable,
    name: str | None = None,
    inject_param: str | None = _DEFAULT_INJECT,
    register: bool = False,
    operation_id: str | None = None,
    register_globally: bool | None = None,
) -> AsyncDecorator:
    """Run every call in a new operation cancelled by ANY source of ``cancelables``.

    Example::

        @cancelable_combine(
            Cancelable.with_timeout(300),
            Cancelable.with_token(stop_token),
            Cancelable.with_signal(signal.SIGTERM),
        )
        async def download(url: str) -> bytes: ...

    The given operations are templates, never entered: each call combines them
    afresh with :meth:`Cancelable.combine` (the one rule for combining: the earliest
    timeout, their tokens shared, fresh copies of their other sources, none of their
    callbacks, hooks or metadata), so one call's condition firing does not cancel the
    next call. The call raises the error matching whichever source fired first.
    ``name`` defaults to the function's name, as in the seed library.
    """
    _check_templates(cancelables)
    _check_name(name)
    first, *rest = cancelables
    registered = register_globally if register_globally is not None else register

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        op_name = name or _default_name(fn)

        def make(_: tuple[Any, ...]) -> Cancelable:
            return first.combine(
                *rest, name=op_name, operation_id=operation_id, register=registered
            )

        return _per_call(fn, make, inject_param, "cancelable_combine")

    return decorate


def _method_naming(fn: Callable[..., Any]) -> Callable[[tuple[Any, ...]], str]:
    """How a method's operation is named: ``ClassName.method``.

    Decided from the first parameter: ``self`` names the instance's class, ``cls``
    the class itself (so a subclass shows its own name); otherwise the qualified name
    the function was defined with.
    """
    method = _default_name(fn)
    qualname = str(getattr(fn, "__qualname__", method))
    static = qualname.rpartition("<locals>.")[2]
    sig = _signature(fn)
    first = next(iter(sig.parameters), None) if sig is not None else None
    if first == "self":
        return lambda args: f"{type(args[0]).__name__}.{method}" if args else static
    if first == "cls":
        return lambda args: (
            f"{args[0].__name__}.{method}" if args and isinstance(args[0], type) else static
        )
    return lambda args: static


@overload
def cancelable_method(
    timeout: Callable[P, Coroutine[Any, Any, T]], /
) -> Callable[P, Coroutine[Any, Any, T]]: ...
@overload
def cancelable_method(
    timeout: float | timedelta | None = None,
    name: str | None = None,
    inject_param: str | None = _DEFAULT_INJECT,
    register: bool = False,
    operation_id: str | None = None,
    register_globally: bool | None = None,
) -> MethodDecorator: ...
def cancelable_method(
    timeout: Any = None,
    name: str | None = None,
    inject_param: str | None = _DEFAULT_INJECT,
    register: bool = False,
    operation_id: str | None = None,
    register_globally: bool | None = None,
) -> Any:
    """:func:`cancelable` for methods: the operation is named ``ClassName.method``.

    Example::

        class Downloader:
            @cancelable_method(timeout=30)
            async def fetch(self, url: str, cancelable: Cancelable) -> bytes: ...

    ``ClassName`` is the class of ``self`` (or ``cls``) at call time, so a subclass
    calling an inherited method shows its own name; give ``name`` to fix it. Works
    with instance methods, and with ``@classmethod``/``@staticmethod`` on either side.
    """
    if callable(timeout) or isinstance(timeout, (classmethod, staticmethod)):
        return cancelable_method()(timeout)
    seconds = _check_timeout(timeout)
    _check_name(name)

    def decorate(fn: Any) -> Any:
        if isinstance(fn, classmethod):
            return classmethod(decorate(fn.__func__))
        if isinstance(fn, staticmethod):
            return staticmethod(decorate(fn.__func__))
        naming = _method_naming(fn) if name is None else (lambda _: name)

        def make(args: tuple[Any, ...]) -> Cancelable:
            op = Cancelable(
                naming(args), register=register, **_seed_options(operation_id, register_globally)
            )
            if seconds is not None:
                op.add_source(TimeoutSource(seconds))
            return op

        return _per_call(fn, make, inject_param, "cancelable_method")

    return decorate


# -- an operation lent to the function -----------------------------------------------------
_LIVE = (OperationStatus.RUNNING, OperationStatus.SHIELDED)


def with_cancelable(
    cancelable_instance: Cancelable,
    inject: bool = False,
    *,
    inject_param: str = _DEFAULT_INJECT,
) -> AsyncDecorator:
    """Run the decorated function with an existing operation as the current one.

    Example::

        batch = Cancelable.with_timeout(5.0, name="batch")

        @with_cancelable(batch)
        async def step(item: str) -> None:
            await current_operation().report_progress(item)

        async with batch:          # one 5 s budget for every call
            await step("a")
            await step("b")

    The decorator never enters the operation: calls must happen while it runs (inside
    its ``async with``), otherwise they raise :class:`RuntimeError`. Inside, the
    operation's own scope enforces its cancellation, and the call unwinds to that
    ``async with``, which raises the matching :class:`CancelationError`. A call made
    when the operation is already cancelled but not from within its scope (a task of
    an outer task group, say) raises that error at once rather than run unprotected.

    Args:
        cancelable_instance: the operation to lend.
        inject: also pass it as the keyword argument ``inject_param``; the function
            a function that declares neither it nor ``**kwargs`` is called without it.
        inject_param: the parameter name used when ``inject`` is true.
    """
    if not isinstance(cancelable_instance, Cancelable):
        raise TypeError(
            f"@with_cancelable needs a Cancelable, not {type(cancelable_instance).__name__}"
        )
    op = cancelable_instance

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        _require_async(fn, "with_cancelable")
        # A function without the parameter (nor **kwargs) is called without it, as in
        # the seed library: the operation is still its current operation.
        inj = _plan_injection(fn, inject_param, "with_cancelable") if inject else None

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            status = op.context.status
            if status not in _LIVE:
                raise RuntimeError(
                    f"{_label(fn)} runs in {op!r}, which is not running ({status.value}): "
                    f"call it inside `async with` that operation (@with_cancelable never "
                    f"enters it)."
                )
            if status is OperationStatus.RUNNING:
                await _deliver_if_cancelled(op)
            if inj is not None and not inj.supplied(args, kwargs):
                kwargs[inj.name] = op
            reset = current_var.set(op)
            try:
                return await fn(*args, **kwargs)
            finally:
                current_var.reset(reset)

        if inj is not None:
            _hide_injected(wrapper, fn, inj)
        return wrapper

    return decorate


async def _deliver_if_cancelled(op: Cancelable) -> None:
    # Inside the operation's scope a cancelled operation is delivered here as the
    # backend's cancelled exception; outside it, the operation's own error says why.
    await anyio.lowlevel.checkpoint_if_cancelled()
    if op.is_cancelled:
        reason, message = op._reason_of_own()
        raise error_for_reason(reason, message, op.context)


@overload
def with_current_operation(fn: Callable[P, T], /) -> Callable[P, T]: ...
@overload
def with_current_operation(inject_param: str = "operation") -> SyncOrAsyncDecorator: ...
def with_current_operation(inject_param: Any = "operation") -> Any:
    """Pass :func:`current_operation` (or None) to the function as ``inject_param``.

    Example::

        @with_current_operation()
        async def helper(data: bytes, operation: Cancelable | None = None) -> None:
            if operation is not None:
                await operation.report_progress("helping")

    Creates no operation and changes nothing about cancellation. Works for sync and
    async functions; a value the caller passes explicitly is kept. A function that
    declares neither the parameter nor ``**kwargs`` is returned unchanged.
    ``@with_current_operation`` without parentheses works too.
    """
    if callable(inject_param):
        return with_current_operation()(inject_param)

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        if not callable(fn):
            raise TypeError(f"@with_current_operation decorates a function, not {fn!r}")
        inj = _plan_injection(fn, inject_param, "with_current_operation")
        if inj is None:
            # No such parameter (nor **kwargs): nothing to inject; the function is
            # returned as it is, as the seed library calls it unchanged.
            return fn
        if is_async_callable(fn):
            async_fn: Callable[P, Awaitable[Any]] = fn  # type: ignore[assignment]

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                if not inj.supplied(args, kwargs):
                    kwargs[inj.name] = current_operation()
                return await async_fn(*args, **kwargs)

            wrapper: Callable[P, T] = async_wrapper  # type: ignore[assignment]
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                if not inj.supplied(args, kwargs):
                    kwargs[inj.name] = current_operation()
                return fn(*args, **kwargs)

            wrapper = sync_wrapper
        _hide_injected(wrapper, fn, inj)
        return wrapper

    return decorate
