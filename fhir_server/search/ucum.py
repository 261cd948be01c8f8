"""UCUM units reduced to base units, so quantity search compares 5400 ug with 5.4 mg (R4B §3.1.1.4.6).

A small converter for the UCUM grammar (products ``.``, quotients ``/``, integer exponents, parentheses,
``{annotations}``, ``10*n``, metric prefixes) over the atoms clinical results use; see docs/SEARCH.md for why it is
not a library. Base units follow UCUM: m, g, s, rad, K, C, cd; ``mol`` is a number (6.0221367e23), so mmol/L and
mg/dL have different dimensions and never compare. Arbitrary units (``[IU]``, ``[arb'U]``) are their own
dimension. Celsius and Fahrenheit convert with their offset, and only on their own (not inside a product).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache

__all__ = ["UCUM_SYSTEM", "Canonical", "canonical"]

UCUM_SYSTEM = "http://unitsofmeasure.org"
_BASE = ("m", "g", "s", "rad", "K", "C", "cd")
_AVOGADRO = 6.0221367e23

Dims = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Canonical:
    """``value × factor + offset`` in the base units named by ``code`` (``g.m-3``, ``K``, ``1``)."""

    code: str
    factor: float
    offset: float = 0.0

    def convert(self, value: float) -> float:
        return value * self.factor + self.offset


@dataclass(frozen=True)
class _Unit:
    factor: float
    dims: dict[str, int]

    def __mul__(self, other: _Unit) -> _Unit:
        dims = dict(self.dims)
        for name, power in other.dims.items():
            dims[name] = dims.get(name, 0) + power
        return _Unit(self.factor * other.factor, {k: v for k, v in dims.items() if v})

    def power(self, exponent: int) -> _Unit:
        return _Unit(self.factor**exponent, {k: v * exponent for k, v in self.dims.items()})


def _u(factor: float, **dims: int) -> _Unit:
    return _Unit(factor, dims)


_ONE = _u(1.0)
_NEWTON = _u(1000.0, g=1, m=1, s=-2)
_PASCAL = _u(1000.0, g=1, m=-1, s=-2)
_JOULE = _u(1000.0, g=1, m=2, s=-2)
_MOL = _u(_AVOGADRO)

# atom → (unit, metric: takes prefixes). UCUM tables 1–6 (base, prefixes, dimensionless, SI, clinical).
_ATOMS: dict[str, tuple[_Unit, bool]] = {
    "m": (_u(1.0, m=1), True),
    "s": (_u(1.0, s=1), True),
    "g": (_u(1.0, g=1), True),
    "rad": (_u(1.0, rad=1), True),
    "K": (_u(1.0, K=1), True),
    "C": (_u(1.0, C=1), True),
    "cd": (_u(1.0, cd=1), True),
    "1": (_ONE, False),
    "%": (_u(0.01), False),
    "[ppth]": (_u(1e-3), False),
    "[ppm]": (_u(1e-6), False),
    "[ppb]": (_u(1e-9), False),
    "mol": (_MOL, True),
    "eq": (_MOL, True),
    "osm": (_MOL, True),
    "kat": (_u(_AVOGADRO, s=-1), True),
    "U": (_u(_AVOGADRO * 1e-6 / 60, s=-1), True),
    "L": (_u(1e-3, m=3), True),
    "l": (_u(1e-3, m=3), True),
    "min": (_u(60.0, s=1), False),
    "h": (_u(3600.0, s=1), False),
    "d": (_u(86400.0, s=1), False),
    "wk": (_u(604800.0, s=1), False),
    "a": (_u(31557600.0, s=1), False),
    "mo": (_u(2629800.0, s=1), False),
    "t": (_u(1e6, g=1), True),
    "[lb_av]": (_u(453.59237, g=1), False),
    "[oz_av]": (_u(28.349523125, g=1), False),
    "[in_i]": (_u(0.0254, m=1), False),
    "[ft_i]": (_u(0.3048, m=1), False),
    "[mi_i]": (_u(1609.344, m=1), False),
    "Hz": (_u(1.0, s=-1), True),
    "N": (_NEWTON, True),
    "Pa": (_PASCAL, True),
    "bar": (_u(1e8, g=1, m=-1, s=-2), True),
    "m[Hg]": (_u(133.322e6, g=1, m=-1, s=-2), True),
    "m[H2O]": (_u(9.80665e6, g=1, m=-1, s=-2), True),
    "J": (_JOULE, True),
    "cal": (_u(4184.0, g=1, m=2, s=-2), True),
    "[Cal]": (_u(4184e3, g=1, m=2, s=-2), False),
    "W": (_u(1000.0, g=1, m=2, s=-3), True),
    "deg": (_u(math.pi / 180, rad=1), False),
    "[drp]": (_u(5e-8, m=3), False),
    "[iU]": (_u(1.0, **{"[IU]": 1}), True),
    "[IU]": (_u(1.0, **{"[IU]": 1}), True),
    "[arb'U]": (_u(1.0, **{"[arb'U]": 1}), False),
    "[CFU]": (_u(1.0, **{"[CFU]": 1}), False),
}
_OFFSETS = {"Cel": Canonical("K", 1.0, 273.15), "[degF]": Canonical("K", 5 / 9, 459.67 * 5 / 9)}
_PREFIXES = {
    "Y": 1e24, "Z": 1e21, "E": 1e18, "P": 1e15, "T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3, "h": 1e2, "da": 1e1,
    "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15, "a": 1e-18, "z": 1e-21,
    "y": 1e-24,
}  # fmt: skip
_COMPONENT = re.compile(r"^(?P<unit>10[*^]|.*?[^\d+\-])(?P<exp>[+-]?\d+)?$")


class _Invalid(ValueError):
    pass


@cache
def canonical(code: str) -> Canonical | None:
    """The base-unit form of a UCUM code, or None when the code is not one this converter knows."""
    code = code.strip()
    if code in _OFFSETS:
        return _OFFSETS[code]
    try:
        unit = _Parser(code).term()
    except _Invalid:
        return None
    if not math.isfinite(unit.factor) or unit.factor <= 0:
        return None
    ordered = sorted(unit.dims.items(), key=lambda kv: (_BASE.index(kv[0]) if kv[0] in _BASE else 99, kv[0]))
    name = ".".join(f"{k}{v}" if v != 1 else k for k, v in ordered) or "1"
    return Canonical(name, unit.factor)


class _Parser:
    """Recursive descent over UCUM §7 (term, component, annotatable) for one code."""

    def __init__(self, code: str) -> None:
        if not code or len(code) > 100 or " " in code:
            raise _Invalid(code)
        self.code = code
        self.at = 0

    def term(self) -> _Unit:
        if self.code.startswith("/"):
            self.at = 1
            unit = self.component().power(-1)
        else:
            unit = self.component()
        while self.at < len(self.code) and self.code[self.at] in "./":
            operator = self.code[self.at]
            self.at += 1
            following = self.component()
            unit = unit * (following if operator == "." else following.power(-1))
        if self.at != len(self.code):
            raise _Invalid(self.code)
        return unit

    def component(self) -> _Unit:
        if self.at < len(self.code) and self.code[self.at] == "(":
            depth, start = 0, self.at
            for position in range(self.at, len(self.code)):
                depth += {"(": 1, ")": -1}.get(self.code[position], 0)
                if depth == 0:
                    self.at = position + 1
                    return _Parser(self.code[start + 1 : position]).term()
            raise _Invalid(self.code)
        start, depth = self.at, 0
        while self.at < len(self.code):
            char = self.code[self.at]
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            elif char in "./" and depth == 0:
                break
            self.at += 1
        return _component(self.code[start : self.at])


def _component(text: str) -> _Unit:
    bare = re.sub(r"\{[^{}]*\}", "", text)
    if not bare:
        if text:
            return _ONE  # an annotation alone is unity
        raise _Invalid(text)
    if bare.isdigit():
        return _u(float(bare))
    match = _COMPONENT.match(bare)
    if not match:
        raise _Invalid(text)
    unit = _simple(match["unit"])
    return unit.power(int(match["exp"])) if match["exp"] else unit


def _simple(symbol: str) -> _Unit:
    if symbol in ("10*", "10^"):
        return _u(10.0)
    if symbol in _ATOMS:
        return _ATOMS[symbol][0]
    for prefix in sorted(_PREFIXES, key=len, reverse=True):
        if symbol.startswith(prefix) and symbol[len(prefix) :] in _ATOMS:
            unit, metric = _ATOMS[symbol[len(prefix) :]]
            if metric:
                return _Unit(unit.factor * _PREFIXES[prefix], unit.dims)
    raise _Invalid(symbol)
