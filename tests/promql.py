"""Reading PromQL out of Grafana dashboards and Prometheus rules, and checking it.

Pure logic (no I/O but the `Prometheus` the checks are given), unit-tested
in tests/test_dashboards_promql.py and run there against a real Prometheus
that scrapes a real worker, alerting service and gateway:

* `dashboard_targets` / `dashboard_variables` / `rule_expressions` pull every
  expression out of a dashboard's panels (rows included), its template
  variables and a rules file.
* `substitute` replaces Grafana's variables (`$site`, `${metric}`, `[[x]]`,
  `$__rate_interval`...) the way Grafana's Prometheus data source does for
  the values it is given; an unknown variable is an error, not left in.
* `selectors` finds the vector selectors of an expression with a small
  tokenizer (strings, label matchers, ranges, grouping clauses and function
  calls are skipped), so each selector can be asked on its own: an
  expression like `x == 0` or `a or vector(0)` returns nothing, or
  something, whatever its selectors match, and only the selectors say
  whether the metrics it names are exported at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# -- the tokenizer --------------------------------------------------------------------------

# Words that are never a metric name where they stand (PromQL's keywords).
_BINARY_WORDS = frozenset({"and", "or", "unless", "bool", "atan2"})
_GROUPING_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_NUMBER_WORDS = frozenset({"inf", "nan"})
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+|(?:\d+(?:ms|s|m|h|d|w|y))+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
)


class PromQLSyntaxError(ValueError):
    """The tokenizer met something PromQL does not allow (an unterminated string)."""


@dataclass(frozen=True)
class _Token:
    kind: str  # ident, matchers, range, string, number, op, open, close, comma
    text: str


def _closing(expr: str, start: int, opener: str, closer: str) -> int:
    """Index just past the `closer` matching expr[start] == opener (strings skipped)."""
    depth, i = 0, start
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            i = _string_end(expr, i)
            continue
        if char == opener:
            depth += 1
        elif char == closer:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise PromQLSyntaxError(f"unbalanced {opener!r} at {start}: {expr!r}")


def _string_end(expr: str, start: int) -> int:
    quote, i = expr[start], start + 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise PromQLSyntaxError(f"unterminated string at {start}: {expr!r}")


def _tokens(expr: str) -> Iterator[_Token]:
    i = 0
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
        elif char == "#":  # a comment, to the end of the line
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end
        elif char in "\"'`":
            end = _string_end(expr, i)
            yield _Token("string", expr[i:end])
            i = end
        elif char == "{":
            end = _closing(expr, i, "{", "}")
            yield _Token("matchers", expr[i:end])
            i = end
        elif char == "[":
            end = _closing(expr, i, "[", "]")
            yield _Token("range", expr[i:end])
            i = end
        elif char in "()":
            yield _Token("open" if char == "(" else "close", char)
            i += 1
        elif char == ",":
            yield _Token("comma", char)
            i += 1
        elif (number := _NUMBER.match(expr, i)) and (char.isdigit() or char == "."):
            yield _Token("number", number.group())
            i = number.end()
        elif identifier := _IDENTIFIER.match(expr, i):
            yield _Token("ident", identifier.group())
            i = identifier.end()
        else:  # operators: + - * / % ^ == != <= >= < > =~ !~ @
            yield _Token("op", char)
            i += 1


def selectors(expr: str) -> list[str]:
    """The vector selectors of a PromQL expression, as written, each once, in order.

    `sum by (site) (rate(x_total{a="b"}[5m])) > 0 or up{job="j"} == 0`
    gives `x_total{a="b"}` and `up{job="j"}`: ranges, offsets, grouping
    labels, function and aggregation names, strings and numbers are not
    selectors. A `{...}` alone (`{__name__=~"x.*"}`) is one.
    """
    tokens = list(_tokens(expr))
    found: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if token.kind == "ident":
            word = token.text.lower()
            if word in _GROUPING_WORDS:
                # `by (a, b)`: a label list, never selectors (group_left may have none).
                if following is not None and following.kind == "open":
                    i = _past_group(tokens, i + 1)
                    continue
            elif word == "offset":
                i += 2 if following is not None and following.kind == "number" else 1
                continue
            elif (
                word in _BINARY_WORDS
                or word in _NUMBER_WORDS
                or (following is not None and following.kind == "open")
                or (following is not None and following.text.lower() in {"by", "without"})
            ):
                pass  # a keyword, a function call or an aggregation (`sum by (x) (...)`)
            elif following is not None and following.kind == "matchers":
                found.append(token.text + following.text)
                i += 2
                continue
            else:
                found.append(token.text)
        elif token.kind == "matchers":
            found.append(token.text)  # `{__name__="x"}`: matchers alone
        i += 1
    return list(dict.fromkeys(found))


def _past_group(tokens: Sequence[_Token], start: int) -> int:
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i].kind == "open":
            depth += 1
        elif tokens[i].kind == "close":
            depth -= 1
            if depth == 0:
                return i + 1
    raise PromQLSyntaxError("unbalanced grouping clause")


# -- Grafana's variables --------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")


class UnknownVariable(KeyError):
    """An expression names a variable that has no value in this view."""


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with every Grafana variable replaced by its value in `values`.

    Values are used as given: the caller formats them the way Grafana's
    Prometheus data source would (see `variable_value`). A format
    (`${site:csv}`) is refused: the dashboards use none.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(5)
        fmt = match.group(2) or match.group(4)
        if fmt is not None:
            raise UnknownVariable(f"${{{name}:{fmt}}}: variable formats are not supported")
        if name not in values:
            raise UnknownVariable(name)
        return values[name]

    return _VARIABLE.sub(replace, expr)


def variables_in(expr: str) -> list[str]:
    return [m.group(1) or m.group(3) or m.group(5) for m in _VARIABLE.finditer(expr)]


def regex_escape(value: str) -> str:
    """A label value as a literal inside an RE2 regex (Grafana escapes these too)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", value)


@dataclass(frozen=True)
class Variable:
    name: str
    match: str | None  # the series selector of label_values(match, label), if any
    label: str
    multi: bool  # multi-value or with an All option: used with =~ / !~ only
    all_value: str | None  # a custom "All" value, else the alternation of every value
    default: tuple[str, ...] | None  # None: All; () : the first value


def variable_value(variable: Variable, chosen: Sequence[str]) -> str:
    """What Grafana writes for `$name` when `chosen` are selected (all of them for All)."""
    if variable.multi:
        return "(" + "|".join(regex_escape(v) for v in chosen) + ")"
    (single,) = chosen
    return single


_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<match>.+?)\s*,\s*)?(?P<label>[A-Za-z_]\w*)\s*\)\s*$", re.DOTALL
)


def label_values_query(query: str) -> tuple[str | None, str]:
    """(series selector or None, label) of a `label_values(...)` variable query."""
    found = _LABEL_VALUES.match(query)
    if found is None:
        raise ValueError(f"not a label_values(...) query: {query!r}")
    return found.group("match"), found.group("label")


# -- dashboards and rules -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    where: str  # dashboard uid, panel title and refId: what a failure names
    expr: str


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows (collapsed or not) included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_targets(dashboard: Mapping[str, Any]) -> list[Target]:
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            where = f"{dashboard['uid']} / {panel.get('title', '?')!r} / {target.get('refId')}"
            found.append(Target(where, target["expr"]))
    return found


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query")
    if isinstance(query, Mapping):
        query = query.get("query")
    if not isinstance(query, str):
        raise ValueError(f"variable {variable.get('name')}: no query")
    return query


def dashboard_variables(dashboard: Mapping[str, Any]) -> list[Variable]:
    found = []
    for raw in dashboard.get("templating", {}).get("list", []):
        if raw.get("type") != "query":
            raise ValueError(f"variable {raw.get('name')}: only query variables are checked")
        match, label = label_values_query(variable_query(raw))
        current = raw.get("current", {}).get("value")
        current_values = [current] if isinstance(current, str) else list(current or [])
        default = None if current_values == ["$__all"] else tuple(current_values)
        found.append(
            Variable(
                name=raw["name"],
                match=match,
                label=label,
                multi=bool(raw.get("multi") or raw.get("includeAll")),
                all_value=raw.get("allValue") or None,
                default=default,
            )
        )
    return found


@dataclass(frozen=True)
class RuleExpression:
    where: str
    expr: str
    alert: bool  # an alerting rule: its condition may well be false in a healthy run


def rule_expressions(rules: Mapping[str, Any]) -> list[RuleExpression]:
    found = []
    for group in rules["groups"]:
        for index, rule in enumerate(group["rules"]):
            name = rule.get("alert") or rule.get("record")
            where = f"rules {group['name']} #{index} {name}"
            found.append(RuleExpression(where, rule["expr"], alert="alert" in rule))
    return found


_RANGE = re.compile(r"^now-(\d+[smhdwy])$")

# Grafana's step for a 6-hour range at about 1,000 points (6 h / 1,000 = 21.6 s,
# rounded to a round interval): what `$__interval` is on the dashboards' default view.
GRAFANA_INTERVAL_S = 20


def grafana_builtins(dashboard: Mapping[str, Any], scrape_interval_s: int) -> dict[str, str]:
    """`$__interval`, `$__rate_interval` and `$__range` on the dashboard's default view.

    `$__rate_interval` is Grafana's max($__interval + scrape interval,
    4 x scrape interval): every rate() window holds at least four scrapes.
    """
    interval = max(GRAFANA_INTERVAL_S, scrape_interval_s)
    rate_interval = max(interval + scrape_interval_s, 4 * scrape_interval_s)
    return {
        "__interval": f"{interval}s",
        "__rate_interval": f"{rate_interval}s",
        "__range": default_range(dashboard),
    }


def default_range(dashboard: Mapping[str, Any]) -> str:
    """The dashboard's default time range as a PromQL duration (`now-6h` -> `6h`)."""
    time = dashboard.get("time", {})
    found = _RANGE.match(time.get("from", ""))
    if found is None or time.get("to") != "now":
        raise ValueError(f"{dashboard.get('uid')}: default time range must be now-<d> to now")
    return found.group(1)


# -- checking against a Prometheus ----------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    ok: bool
    error: str
    series: int  # instant vector: series; scalar or string: 1


class Prometheus(Protocol):
    def instant(self, promql: str) -> Answer: ...

    def label_values(self, label: str, match: str | None) -> list[str]: ...


def check_expression(
    prometheus: Prometheus, where: str, expr: str, *, needs_data: bool
) -> list[str]:
    """What is wrong with `expr` (Grafana variables already substituted): [] if nothing.

    It must parse and evaluate; with `needs_data`, return at least one
    series; and each of its selectors must match a series, or it names a
    metric (or a label value) that nothing exports.
    """
    answer = prometheus.instant(expr)
    if not answer.ok:
        return [f"{where}: does not parse or evaluate: {answer.error}\n    {expr}"]
    problems = []
    if needs_data and answer.series == 0:
        problems.append(f"{where}: returns no data\n    {expr}")
    for selector in selectors(expr):
        alone = prometheus.instant(selector)
        if not alone.ok:  # the tokenizer cut something that is not a selector
            problems.append(f"{where}: {selector} is not a selector: {alone.error}")
        elif alone.series == 0:
            problems.append(
                f"{where}: selector {selector} matches no series: a metric the code does not "
                "export, or labels none of its series has"
            )
    return problems
