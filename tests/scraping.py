"""Reading a /metrics page in tests: every sample by name and labels, parsed by prometheus_client's own parser."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset], float]


def samples(text: str | bytes) -> Samples:
    """Every sample of an exposition, keyed by (sample name, its labels as a frozenset of items)."""
    if isinstance(text, bytes):
        text = text.decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, None when the page does not have it."""
    return found.get((name, frozenset(labels.items())))


def values(found: Samples, name: str, label: str) -> dict[str, float]:
    """The samples of `name`, by the value of their one label `label`."""
    return {dict(key)[label]: v for (n, key), v in found.items() if n == name and set(dict(key)) == {label}}
