"""``securemodel-worker compress``: prune + quantize a trained artifact into a new encrypted artifact.

Reads the fp32 artifact ``--input``, authenticated as the trained model of ``--model-uid`` and
``--training-version``, compresses it and writes the compressed payload to ``--output`` (which
must not exist), bound to the same model and ``--model-version``. Compression reads no data and
spends no privacy budget.

Privacy rule for accuracy: an accuracy is measured only on ``--evaluation-source``, a source
the user declared public (``spec.data.evaluation``), and then on all of it, before (fp32
payload) and after compression (the compressed payload itself, decoded exactly as serving
decodes it). It is published exactly and unaccounted, which is sound only because the data is
public and kept apart from the training data (:func:`securemodel.data.sources.check_evaluation`):
the accuracy is then a function of the DP-trained model and public records. Without an
evaluation source the result holds no accuracy at all, and no private record is read.

With ``--from-round`` the input is a FederatedRound's global model (``spec.model.fromRound``): it
is read under the round's own data key (``--input-key-file``) as the round's aggregator wrote it
after its final round (bound to the round's uid ``--input-round-uid`` and its ``spec.rounds``,
``--input-round``; :func:`securemodel.workers.arguments.round_binding`), and only if its SHA-256
is ``--input-digest``, the one the aggregator reported: no other file, not another round's model
nor an earlier round's of the same run under the same key, is compressed. The evaluation source
is then kept apart from every silo's data (``--training-source``), and the output is bound to this
SecureModel like any compressed artifact.

Sizes in the result are of the stored (encrypted) files: ``sizeBytes`` of ``--input``,
``compressedSizeBytes`` of ``--output``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from securemodel.compression import compress_state
from securemodel.crypto.artifacts import ArtifactExistsError, read_artifact, read_data_key, write_artifact
from securemodel.data.loading import load_evaluation
from securemodel.data.masking import Masking
from securemodel.data.sources import check_evaluation
from securemodel.data.tables import TableSchema
from securemodel.models import ARTIFACT_KIND, ModelPredictor, ModelRecord, PayloadError, dump_compressed, load_record
from securemodel.workers.arguments import model_binding, round_binding
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
    binding = model_binding(args.model_uid, args.training_version, "compressed", args.model_version)
    if args.from_round:
        given = (args.input_key_file, args.input_round_uid, args.input_round, args.input_digest)
        if any(option is None for option in given) or not args.training_source:
            raise ValueError(
                "--from-round needs --input-key-file, --input-round-uid, --input-round, --input-digest "
                "and the silos' --training-source"
            )
        final = round_binding(args.input_round_uid, args.input_round)
        round_key = read_data_key(args.input_key_file)
        payload = read_artifact(source, round_key, kind=ARTIFACT_KIND, binding=final, digest=args.input_digest)
    else:
        trained = model_binding(args.model_uid, args.training_version, "fp32")
        payload = read_artifact(source, key, kind=ARTIFACT_KIND, binding=trained)
    record = load_record(payload)
    if record.encoding != "fp32":
        raise PayloadError(f"{source} is already compressed; compress the trained (fp32) artifact")

    compressed = compress_state(record.state, args.sparsity, args.quantization)
    compression = {"sparsity": compressed.sparsity, "quantization": args.quantization}
    payload = dump_compressed(record.with_info(compression=compression), compressed)
    evaluation = _evaluate(args, record, load_record(payload)) if args.evaluation_source else {}
    digest = write_artifact(output, payload, key, kind=ARTIFACT_KIND, binding=binding)
    return {
        **compression,
        **evaluation,
        "digest": digest,
        "sizeBytes": source.stat().st_size,
        "compressedSizeBytes": output.stat().st_size,
        "artifact": str(output),
    }


def _evaluate(args: argparse.Namespace, trained: ModelRecord, compressed: ModelRecord) -> dict[str, Any]:
    """Accuracy of both models on all of the public ``--evaluation-source``, encoded as the training data was."""
    data = trained.info.get("data") or {}
    sources = list(args.training_source) if args.from_round else [data["source"]]
    for other in sources[1:]:  # load_evaluation checks the first
        check_evaluation(other, args.evaluation_source)
    x, y = load_evaluation(
        args.evaluation_source,
        training=sources[0],
        data_root=args.data_root,
        samples=args.evaluation_samples,
        schema=TableSchema.from_spec(data["schema"]) if data.get("schema") else None,
        masking=Masking.from_spec(data["masking"]) if data.get("masking") else None,
    )
    return {
        "evaluationSource": args.evaluation_source,
        "evaluationExamples": len(y),
        "accuracy": ModelPredictor(trained, "fp32").accuracy(x, y),
        "compressedAccuracy": ModelPredictor(compressed, "compressed").accuracy(x, y),
    }
