"""The shared session helper's jar lookup (no Spark started)."""
from __future__ import annotations

import pytest

from jobs.spark import connector_jars


def test_connector_jars_are_absolute_and_a_missing_connector_says_make_jars(tmp_path):
    with pytest.raises(FileNotFoundError, match="make jars"):
        connector_jars(tmp_path)
    (tmp_path / "spark").mkdir()
    for name in ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "kafka-clients-3.9.2.jar", "notes.txt"):
        (tmp_path / "spark" / name).write_text("")
    assert connector_jars(tmp_path) == [str(tmp_path / "spark" / "kafka-clients-3.9.2.jar"),
                                        str(tmp_path / "spark" / "spark-sql-kafka-0-10_2.13-4.2.0.jar")]
