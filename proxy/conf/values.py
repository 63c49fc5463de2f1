"""Scalar value parsers with nginx's exact acceptance rules.

Each returns None where nginx's C function returns NGX_ERROR, so callers can word the
error as the matching nginx slot does ("invalid value", "invalid number", ...).
"""

from __future__ import annotations

MAX_INT = 2**63 - 1  # NGX_MAX_INT_T_VALUE / NGX_MAX_SIZE_T_VALUE on 64-bit Linux
PAGE_SIZE = 4096


def atoi(text: str) -> int | None:
    """ngx_atoi: a non-empty run of ASCII digits, no sign, no overflow."""
    if not text or not all("0" <= c <= "9" for c in text):
        return None
    value = int(text)
    return value if value <= MAX_INT else None


def parse_size(text: str) -> int | None:
    """ngx_parse_size: digits with an optional k/K or m/M suffix, in bytes."""
    if not text:
        return None
    unit = text[-1]
    if unit in "kK":
        scale, digits = 1024, text[:-1]
    elif unit in "mM":
        scale, digits = 1024 * 1024, text[:-1]
    else:
        scale, digits = 1, text
    size = atoi(digits)
    if size is None or size > MAX_INT // scale:
        return None
    return size * scale


def parse_offset(text: str) -> int | None:
    """ngx_parse_offset: like parse_size but also g/G."""
    if text and text[-1] in "gG":
        size = atoi(text[:-1])
        if size is None or size > MAX_INT // 1024**3:
            return None
        return size * 1024**3
    return parse_size(text)


# Order of the units; a unit may only follow a larger one ("1h30m", not "30m1h").
_ST_START, _ST_YEAR, _ST_MONTH, _ST_WEEK, _ST_DAY, _ST_HOUR, _ST_MIN, _ST_SEC, _ST_MSEC, \
    _ST_LAST = range(10)

_UNITS = {
    "y": (_ST_YEAR, 60 * 60 * 24 * 365),
    "M": (_ST_MONTH, 60 * 60 * 24 * 30),
    "w": (_ST_WEEK, 60 * 60 * 24 * 7),
    "d": (_ST_DAY, 60 * 60 * 24),
    "h": (_ST_HOUR, 60 * 60),
    "m": (_ST_MIN, 60),
    "s": (_ST_SEC, 1),
}


def parse_time(text: str, is_sec: bool) -> int | None:
    """ngx_parse_time: "1h 30m", "500ms", bare number = seconds.

    Returns whole seconds when is_sec, else milliseconds. As in nginx, millisecond slots
    do not accept years or months ("1y", "1M" are errors there).
    """
    value = total = 0
    valid = False
    step = _ST_START if is_sec else _ST_MONTH
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if "0" <= c <= "9":
            value = value * 10 + (ord(c) - 48)
            if value > MAX_INT:
                return None
            valid = True
            i += 1
            continue
        i += 1
        if c == "y":
            if step > _ST_START:
                return None
            step, scale = _ST_YEAR, _UNITS["y"][1]
        elif c == "m" and i < n and text[i] == "s":
            if is_sec or step >= _ST_MSEC:
                return None
            i += 1
            step, scale = _ST_MSEC, 1
        elif c in _UNITS:
            unit_step, scale = _UNITS[c]
            if step >= unit_step:
                return None
            step = unit_step
        elif c == " ":
            if step >= _ST_SEC:
                return None
            step, scale = _ST_LAST, 1
        else:
            return None
        max_value = MAX_INT // scale
        if step != _ST_MSEC and not is_sec:
            scale *= 1000
            max_value //= 1000
        if value > max_value:
            return None
        value *= scale
        if total > MAX_INT - value:
            return None
        total += value
        value = 0
        while i < n and text[i] == " ":
            i += 1
    if not valid:
        return None
    if not is_sec:
        if value > MAX_INT // 1000:
            return None
        value *= 1000
    if total > MAX_INT - value:
        return None
    return total + value


def parse_flag(text: str) -> bool | None:
    """ngx_conf_set_flag_slot: on/off, case-insensitive."""
    low = text.lower()
    if low == "on":
        return True
    if low == "off":
        return False
    return None
