"""The operator image is slim: importing the operator must not import what only the workers need."""

import json
import subprocess
import sys

# Training, federated learning, redaction and the data sets: the worker image's, never the operator's.
WORKER_ONLY = ("torch", "opacus", "flwr", "presidio_analyzer", "presidio_anonymizer", "spacy", "sklearn")


def test_the_operator_import_path_pulls_in_no_worker_library() -> None:
    code = (
        "import json, sys, securemodel.operator.main\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported = set(json.loads(result.stdout))
    assert "kopf" in imported  # the probe saw the operator's imports
    assert imported.isdisjoint(WORKER_ONLY), sorted(imported & set(WORKER_ONLY))
