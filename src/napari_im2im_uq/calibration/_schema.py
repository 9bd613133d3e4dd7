"""The schema of a calibration result read back from JSON: types, ranges, required keys per method.

:func:`check_result` is the one validator of :meth:`CalibrationResult.from_dict` (and so of every
record the package reads): it refuses a field of the wrong type, out of its range, missing or
unknown, with a message that names the field, what was expected and what was found, and returns
the decoded fields. What differs between methods is asked of the method's registry entry
(:mod:`napari_im2im_uq.calibration.methods`): its rules, losses, the range of its ``lam``
(``lam_range``, ``lam_infinite``), the largest ``alpha`` (``alpha_limit``), its parameters
(``params_schema``, a dict of :class:`Param`) and the checks between fields
(``check_consistency``). The fields the rules need are the same for every method: ``delta`` and
``bound`` for RCPS, ``beta`` for the conformal quantile (and Kutiel's paper rule).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = ["FORMAT_VERSION", "Param", "RecordError", "check_result", "number"]

#: ``format_version`` of :meth:`CalibrationResult.to_dict`.
FORMAT_VERSION = 1

#: How a non-finite float is written in JSON (``to_dict``) and read back.
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}

#: The level fields each rule needs (every method alike).
RULE_FIELDS = {"rcps": ("delta", "bound"), "conformal": ("beta",), "paper": ("beta",)}
#: The RCPS concentration bounds.
BOUNDS = ("hoeffding", "hoeffding_bentkus", "wsr")

_REQUIRED = ("method", "lam", "alpha", "n", "rule", "valid", "guarantee", "loss", "loss_bound",
             "tile_shape", "empirical_risk")
_OPTIONAL = ("delta", "beta", "bound", "curve", "params")


class RecordError(ValueError):
    """A calibration record (or result) that cannot be read: the message names the field."""


def _fail(where: str, expected: str, got) -> RecordError:
    shown = got if isinstance(got, str | int | float | bool | type(None)) else type(got).__name__
    return RecordError(f"{where} must be {expected}; got {shown!r}")


def _bound_words(lo, hi, lo_open, hi_open, infinite) -> str:
    parts = []
    if lo is not None and hi is not None:
        parts.append(f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")
    elif lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    elif hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    if infinite:
        parts.append("or " + " or ".join(repr("inf" if v > 0 else "-inf") for v in infinite))
    else:
        parts.append("(finite)")
    return "a number " + " ".join(parts)


def number(value, where: str, *, lo=None, hi=None, lo_open=False, hi_open=False, infinite=(),
           expected: str | None = None) -> float:
    """Return a JSON number (or "inf"/"-inf" where allowed) as a float in range, or raise.

    NaN is never accepted; booleans and other strings are refused.

    Examples
    --------
    >>> number("inf", "calibration.lam", lo=0.0, infinite=(math.inf,))
    inf
    >>> number(-1, "calibration.lam", lo=0.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_im2im_uq.calibration._schema.RecordError: calibration.lam must be a number >= 0 ...
    """
    words = expected or _bound_words(lo, hi, lo_open, hi_open, infinite)
    if isinstance(value, str) and value in _NON_FINITE:
        x = _NON_FINITE[value]
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(where, words, value)
    else:
        try:
            x = float(value)
        except (OverflowError, ValueError):
            raise _fail(where, words, value) from None
    if math.isnan(x):
        raise _fail(where, words, value)
    if math.isinf(x):
        if x not in infinite:
            raise _fail(where, words, value)
        return x
    if (lo is not None and (x < lo or (lo_open and x == lo))) or (
            hi is not None and (x > hi or (hi_open and x == hi))):
        raise _fail(where, words, value)
    return x


def integer(value, where: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """Return a JSON integer (an integral float such as 4.0 included) in range, or raise."""
    span = "an integer" + (f" >= {lo}" if lo is not None else "") + (
        f" and <= {hi}" if hi is not None else "")
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise _fail(where, span, value)
    out = int(value)
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        raise _fail(where, span, value)
    return out


def text(value, where: str) -> str:
    """Return ``value`` if it is a string, or raise."""
    if not isinstance(value, str):
        raise _fail(where, "a string", value)
    return value


def choice(value, where: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, or raise."""
    if not isinstance(value, str) or value not in choices:
        raise _fail(where, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


@dataclass(frozen=True)
class Param:
    """One entry of a method's ``params_schema``: what a value of ``result.params`` may be.

    Attributes
    ----------
    kind : {"number", "integer", "choice", "numbers", "range"}
        A number (``lo``/``hi``), an integer, one of ``choices``, a list of numbers (each in
        ``lo``/``hi``), or a ``[low, high]`` pair of finite numbers with low < high.
    required : bool
        Whether the key must be present (it may still be null when ``nullable``).
    nullable : bool
        Whether null (None) is allowed.
    """

    kind: str
    required: bool = True
    nullable: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()

    def check(self, value, where: str):
        """Return the decoded value, or raise naming ``where``."""
        if value is None:
            if self.nullable:
                return None
            raise _fail(where, f"{self._words()} (not null)", value)
        if self.kind == "number":
            return number(value, where, lo=self.lo, hi=self.hi, lo_open=self.lo_open,
                          hi_open=self.hi_open)
        if self.kind == "integer":
            return integer(value, where, lo=self.lo, hi=self.hi)
        if self.kind == "choice":
            return choice(value, where, self.choices)
        if not isinstance(value, list):
            raise _fail(where, self._words(), value)
        if self.kind == "range":
            if len(value) != 2:
                raise _fail(where, self._words(), f"a list of {len(value)} values")
            low, high = (number(v, f"{where}[{i}]") for i, v in enumerate(value))
            if not low < high:
                raise _fail(where, self._words(), f"[{low:g}, {high:g}]")
            return [low, high]
        return [number(v, f"{where}[{i}]", lo=self.lo, hi=self.hi, lo_open=self.lo_open,
                       hi_open=self.hi_open) for i, v in enumerate(value)]

    def _words(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "range":
            return "a [low, high] pair of finite numbers with low < high"
        if self.kind == "numbers":
            return "a list of numbers"
        return "an integer" if self.kind == "integer" else "a number"


def _entry(method, where: str):
    from . import methods  # the package (its entries import the result, which imports this)

    if not isinstance(method, str) or method not in methods.names():
        raise _fail(f"{where}.method", "one of " + ", ".join(repr(m) for m in methods.names()),
                    method)
    return methods.get(method)


def _curve(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, "a dict of lists of numbers ({'lam': [...], 'risk': [...], ...})",
                    value)
    out = {}
    for key, vals in value.items():
        if not isinstance(vals, list):
            raise _fail(f"{where}.{key}", "a list of numbers", vals)
        decoded = []
        for i, v in enumerate(vals):
            if isinstance(v, str) and v in _NON_FINITE:
                decoded.append(_NON_FINITE[v])
            elif isinstance(v, numbers.Real) and not isinstance(v, bool):
                decoded.append(v)
            else:
                raise _fail(f"{where}.{key}[{i}]", "a number (or 'inf', '-inf', 'nan')", v)
        out[str(key)] = decoded
    return out


def _tile_shape(value, where: str) -> tuple:
    expected = "a list of 1 to 3 positive integers (the tile's rows, columns)"
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= 3:
        raise _fail(where, expected, value)
    try:
        return tuple(integer(v, where, lo=1) for v in value)
    except RecordError:
        raise _fail(where, expected, str(list(value))) from None


def check_result(data, *, where: str = "data") -> dict[str, Any]:
    """Check the dict of :meth:`CalibrationResult.to_dict` and return the result's fields.

    Parameters
    ----------
    data : dict
        As read back from JSON (non-finite floats written as "inf", "-inf", "nan").
    where : str, default "data"
        The name of ``data`` in messages: "calibration" for the ``calibration`` field of a
        record, so a message reads ``calibration.lam must be ...``.

    Returns
    -------
    dict
        The keyword arguments of ``CalibrationResult`` (floats decoded, ``tile_shape`` a tuple).

    Raises
    ------
    RecordError
        A ``ValueError`` naming the field, what it must be and what it is.

    Examples
    --------
    >>> check_result({"format_version": 1, "method": "intervals", "lam": -1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_im2im_uq.calibration._schema.RecordError: data is missing the field(s) alpha, ...
    """
    if not isinstance(data, dict):
        raise _fail(where, "a dict from CalibrationResult.to_dict", data)
    data = dict(data)
    version = data.pop("format_version", None)
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise RecordError(
            f"{where}.format_version must be {FORMAT_VERSION} (this version of napari-im2im-uq "
            f"reads results of format_version {FORMAT_VERSION}); got {version!r}"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise RecordError(f"{where} is missing the field(s) {', '.join(missing)} (a result needs "
                          f"{', '.join(_REQUIRED)})")
    unknown = sorted(str(k) for k in set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise RecordError(f"{where} has unknown field(s) {', '.join(unknown)} (a result has "
                          f"{', '.join(_REQUIRED + _OPTIONAL)})")
    entry = _entry(data["method"], where)
    out: dict[str, Any] = {"method": entry.name}
    out["rule"] = choice(data["rule"], f"{where}.rule", entry.rules)
    out["loss"] = choice(data["loss"], f"{where}.loss", entry.losses)
    out["valid"] = data["valid"]
    if not isinstance(out["valid"], bool):
        raise _fail(f"{where}.valid", "true or false", data["valid"])
    out["guarantee"] = text(data["guarantee"], f"{where}.guarantee")
    out["n"] = integer(data["n"], f"{where}.n", lo=1)
    out["tile_shape"] = _tile_shape(data["tile_shape"], f"{where}.tile_shape")
    out["loss_bound"] = number(data["loss_bound"], f"{where}.loss_bound", lo=0.0, lo_open=True)
    out["empirical_risk"] = number(data["empirical_risk"], f"{where}.empirical_risk", lo=0.0)
    lo, hi = entry.lam_range
    out["lam"] = number(data["lam"], f"{where}.lam", lo=lo, hi=hi, infinite=entry.lam_infinite,
                        expected=f"{_bound_words(lo, hi, False, False, entry.lam_infinite)} "
                                 f"for the {entry.name!r} method")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise _fail(f"{where}.params", "a dict", params)
    decoded = {k: _NON_FINITE[v] if isinstance(v, str) and v in _NON_FINITE else v
               for k, v in params.items()}  # undeclared keys as to_dict wrote them
    for key, spec in entry.params_schema.items():
        if key not in params:
            if spec.required:
                raise RecordError(f"{where}.params is missing the key {key!r} that a "
                                  f"{entry.name!r} result needs; got the keys {sorted(params)}")
            continue
        decoded[key] = spec.check(params[key], f"{where}.params.{key}")
    out["params"] = decoded
    alpha_hi, alpha_words = entry.alpha_limit(out)
    out["alpha"] = number(data["alpha"], f"{where}.alpha", lo=0.0, hi=alpha_hi, lo_open=True,
                          hi_open=True, expected=f"a number in (0, {alpha_hi:g}) ({alpha_words})")
    needed = RULE_FIELDS.get(out["rule"], ())
    for key in ("delta", "beta"):
        value = data.get(key)
        if value is None:
            if key in needed:
                raise _fail(f"{where}.{key}", f"a number in (0, 1) for rule {out['rule']!r}",
                            value)
            out[key] = None
        else:
            out[key] = number(value, f"{where}.{key}", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    bound = data.get("bound")
    if bound is None and "bound" in needed:
        raise _fail(f"{where}.bound", "one of " + ", ".join(map(repr, BOUNDS))
                    + f" for rule {out['rule']!r}", bound)
    out["bound"] = None if bound is None else choice(bound, f"{where}.bound", BOUNDS)
    out["curve"] = _curve(data.get("curve", {}), f"{where}.curve")
    for field, expected, got in entry.check_consistency(out):
        raise _fail(f"{where}.{field}", expected, got)
    return out
