"""What differs between a tool as an application sends it and as the model was trained on it.

Pure: two function objects (`{name, description, parameters, strict}`; a Responses API flat
tool is one too) in, a list of short findings out, each one kind of difference:

- `description edited`;
- `parameters added: a, b` / `parameters removed: c` (top-level properties);
- `required: +a -b`;
- `a: type string → integer`, `a: enum changed`, `a: description edited`;
- `strict: true → absent`, and the like.

`tuned-proxy rewrite` prints them for every tool an `identical` policy made identical again,
so an operator sees what drifted, not only that something did. It runs on demand, never on
the request path.
"""

from __future__ import annotations

from typing import Any


def describe_drift(sent: dict[str, Any], trained: dict[str, Any]) -> list[str]:
    """The differences of `sent` (the application's function) from `trained`, in the order
    above; empty when they mean the same."""
    findings = []
    if sent.get("description") != trained.get("description"):
        findings.append(
            _changed("description", sent.get("description"), trained.get("description"))
        )
    findings += _parameter_drift(
        _object(sent.get("parameters")), _object(trained.get("parameters"))
    )
    if sent.get("strict") != trained.get("strict"):
        findings.append(f"strict: {_value(trained.get('strict'))} → {_value(sent.get('strict'))}")
    return findings


def _parameter_drift(sent: dict[str, Any], trained: dict[str, Any]) -> list[str]:
    findings = []
    sent_properties = _object(sent.get("properties"))
    trained_properties = _object(trained.get("properties"))
    added = [name for name in sent_properties if name not in trained_properties]
    removed = [name for name in trained_properties if name not in sent_properties]
    if added:
        findings.append(f"parameters added: {', '.join(added)}")
    if removed:
        findings.append(f"parameters removed: {', '.join(removed)}")
    required = _required_drift(sent.get("required"), trained.get("required"))
    if required:
        findings.append(f"required: {required}")
    for name in trained_properties:
        if name in sent_properties:
            findings += _property_drift(name, sent_properties[name], trained_properties[name])
    if sent.get("type") != trained.get("type"):
        findings.append(
            f"parameters type {_value(trained.get('type'))} → {_value(sent.get('type'))}"
        )
    return findings


def _required_drift(sent: Any, trained: Any) -> str:
    now, before = _names(sent), _names(trained)
    changes = [f"+{name}" for name in now if name not in before]
    changes += [f"-{name}" for name in before if name not in now]
    return " ".join(changes)


def _property_drift(name: str, sent: Any, trained: Any) -> list[str]:
    sent, trained = _object(sent), _object(trained)
    findings = []
    if sent.get("type") != trained.get("type"):
        findings.append(f"{name}: type {_value(trained.get('type'))} → {_value(sent.get('type'))}")
    if sent.get("enum") != trained.get("enum"):
        findings.append(f"{name}: enum changed")
    if sent.get("description") != trained.get("description"):
        findings.append(
            f"{name}: "
            + _changed("description", sent.get("description"), trained.get("description"))
        )
    rest = {k for k in {*sent, *trained} if k not in ("type", "enum", "description")}
    if any(sent.get(key) != trained.get(key) for key in rest):
        findings.append(f"{name}: schema changed")
    return findings


def _changed(what: str, sent: Any, trained: Any) -> str:
    if trained is None:
        return f"{what} added"
    if sent is None:
        return f"{what} removed"
    return f"{what} edited"


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _names(value: Any) -> list[str]:
    return [name for name in value if isinstance(name, str)] if isinstance(value, list) else []


def _value(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
