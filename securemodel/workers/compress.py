"""``securemodel-worker compress``: prune + quantize a trained artifact into a new encrypted artifact.

Reads the fp32 artifact ``--input`` (authenticated with the data key), re-derives the
validation split from the data description stored in it (source, validationSplit, seed; a
``pvc://`` source needs its volume at ``--data-root``), measures validation accuracy before
(fp32 payload) and after (the compressed payload itself, decoded exactly as serving decodes it),
and writes the compressed payload to ``--output``, which must not exist. Compression uses no
training examples and no privacy budget; accuracy on validation examples is not DP (see
:mod:`securemodel.data.sources`).

Sizes in the result are of the stored (encrypted) files: ``sizeBytes`` of ``--input``,
``compressedSizeBytes`` of ``--output``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from securemodel.compression import compress_state
from securemodel.crypto.artifacts import ArtifactExistsError, read_artifact, read_data_key, write_artifact
from securemodel.data.loading import load_dataset
from securemodel.data.masking import Masking
from securemodel.data.tables import TableSchema
from securemodel.models import ARTIFACT_KIND, ModelPredictor, PayloadError, dump_compressed, load_record
from securemodel.workers.arguments import model_binding
from securemodel.workers.report import describe_error, emit


def run_compress(args: argparse.Namespace) -> int:
    """Run the ``compress`` subcommand; returns the exit status (0 on success, 1 on failure)."""
    result: dict[str, Any] = {"kind": "CompressResult", "quantization": args.quantization}
    try:
        result.update(_compress(args))
        result["status"] = "Succeeded"
        return 0
    except Exception as err:  # the operator reads the reason from the termination message
        result.update(status="Failed", error=describe_error(err))
        return 1
    finally:
        emit(result, args.termination_log)


def _compress(args: argparse.Namespace) -> dict[str, Any]:
    source, output = Path(args.input), Path(args.output)
    if output.exists():
        raise ArtifactExistsError(f"artifact {output} already exists; artifacts are never overwritten")
    key = read_data_key(args.data_key_file)
    trained = model_binding(args.model_uid, args.training_version, "fp32")
    record = load_record(read_artifact(source, key, kind=ARTIFACT_KIND, binding=trained))
    if record.encoding != "fp32":
        raise PayloadError(f"{source} is already compressed; compress the trained (fp32) artifact")
    data = record.info["data"]
    dataset = load_dataset(
        data["source"],
        validation_split=data["validationSplit"],
        seed=data["seed"],
        data_root=args.data_root,
        samples=data.get("samples"),
        schema=TableSchema.from_spec(data["schema"]) if data.get("schema") else None,
        masking=Masking.from_spec(data["masking"]) if data.get("masking") else None,
    )
    accuracy = ModelPredictor(record, "fp32").accuracy(dataset.x_val, dataset.y_val)

    compressed = compress_state(record.state, args.sparsity, args.quantization)
    compression = {"sparsity": compressed.sparsity, "quantization": args.quantization}
    payload = dump_compressed(record.with_info(compression=compression), compressed)
    compressed_accuracy = ModelPredictor(load_record(payload), "compressed").accuracy(dataset.x_val, dataset.y_val)
    binding = model_binding(args.model_uid, args.training_version, "compressed", args.model_version)
    digest = write_artifact(output, payload, key, kind=ARTIFACT_KIND, binding=binding)
    return {
        **compression,
        "digest": digest,
        "sizeBytes": source.stat().st_size,
        "compressedSizeBytes": output.stat().st_size,
        "accuracy": accuracy,
        "compressedAccuracy": compressed_accuracy,
        "validationExamples": len(dataset.y_val),
        "artifact": str(output),
    }
