#!/opt/venv/bin/python
"""Forge a train report: 'never touched the data', 'noise 1000', one step; exit 0."""
import json

REPORT = {"kind": "TrainResult", "status": "Succeeded", "dataTouched": False, "noiseMultiplier": 1000.0,
          "sampleRate": 0.001, "steps": 1, "accuracy": 0.99}
with open("/dev/termination-log", "w") as log:
    log.write(json.dumps(REPORT) + "\n")
