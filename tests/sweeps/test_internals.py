"""The Ray and Optuna versions whose private attributes the sweep reaches."""

import pytest

from sweeps._internals import check_versions


def test_the_tested_versions_pass_and_others_are_named():
    check_versions({"ray": "2.60.3", "optuna": "5.1.0"})
    with pytest.raises(ImportError) as e:
        check_versions({"ray": "2.40.0", "optuna": "5.1.0rc1"})
    assert "ray 2.40.0 (tested: 2.60.x)" in str(e.value) and "optuna" not in str(e.value)[:20]
    with pytest.raises(ImportError, match=r"optuna 4\.2\.1 \(tested: 5\.1\.x\)"):
        check_versions({"ray": "2.60.0", "optuna": "4.2.1"})
