"""The operator image is slim: importing the operator must not import torch."""

import subprocess
import sys


def test_the_operator_import_path_pulls_in_no_torch() -> None:
    code = "import sys, securemodel.operator.main; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
