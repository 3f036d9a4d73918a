"""``securemodel-worker train``: DP-SGD at the operator's (σ, q, steps), written as an encrypted artifact.

With ``--public`` (which the operator passes only for a SecureModel with ``spec.privacy: {public: true}``
whose data no PrivacyBudget of its namespace protects) step 2 trains without differential privacy
(:mod:`.plain`) for ``--epochs`` at ``--batch-size``; everything else is the same, so the artifact
(format, encryption, binding) is one that compression, serving and fine-tuning read unchanged, and its
metadata and the result record ``public: true`` and no σ, q or ε. The pod cannot make itself public:
the ledger charges nothing only because the operator made no claim for such a model.

Order of work, so that the result tells the operator what was spent:

1. refuse an existing ``--output`` (artifacts are write-once), read the data key, import the
   model's builder, read and authenticate the starting weights (``--init-artifact`` or
   ``--init-file``, :mod:`.finetune`): failures here happen before any data is read
   (``dataTouched: false``, the claim may be released);
2. read the data (``dataTouched: true`` from here on), all of it (nothing is held out), build
   the model, load the starting weights (the architecture must match exactly), freeze
   ``--freeze``'s parameters and add ``--lora-*``'s adapters, train with
   :func:`securemodel.workers.dpsgd.train_dp_sgd` (see there for the privacy guarantee; only
   parameters that are not frozen are clipped, noised and updated), merge the adapters;
   ``--seed`` governs the weight (and adapter) initialisation only: DP-SGD's sampling and
   noise come from a secret per-run source (:mod:`.secret_random`), so two runs with
   identical arguments start from the same weights and end with different ones;
3. write the fp32 payload (:mod:`securemodel.models.serialization`) encrypted with the data key,
   bound to ``--model-uid`` and ``--training-version``.

Privacy: the private data reaches nothing but DP-SGD. This worker measures no accuracy and
reports only the operator's parameters, counts of examples (the training set's size is public:
it sets q), counts of trained and frozen parameters, the starting weights' digest, the clipping
mode, the device and the artifact's digest, size and path; the trained weights leave the pod
only encrypted. The accuracy the operator publishes is measured by the
compress worker on a source the user declared public (``spec.data.evaluation``), or not at all.

The result (see :mod:`securemodel.workers.report`) is emitted on success AND on failure, with
``steps`` = the noisy steps actually taken, so the operator commits ε for exactly those. SIGTERM
(the Job being deleted) is turned into a failure so that the result is still written.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from securemodel.crypto.artifacts import ArtifactExistsError, read_data_key, write_artifact
from securemodel.data.loading import load_dataset
from securemodel.data.masking import Masking
from securemodel.data.tables import TableSchema
from securemodel.models import (
    ARTIFACT_KIND,
    ModelRecord,
    ModelSpec,
    build_model,
    dump_fp32,
    resolve_builder,
)
from securemodel.workers.arguments import model_binding
from securemodel.workers.bookkeeping import unsupported_layers
from securemodel.workers.dpsgd import ClippingMode, DPSGDConfig, DPSGDProgress, resolve_device, train_dp_sgd
from securemodel.workers.finetune import (
    InitModelError,
    InitWeights,
    LoraError,
    LoraSettings,
    add_lora,
    freeze,
    load_init,
    merge_lora,
    parameter_counts,
    read_artifact_init,
    read_file_init,
)
from securemodel.workers.plain import PlainConfig, PlainProgress, train_plain
from securemodel.workers.report import describe_error, emit


class TerminatedError(Exception):
    """The worker received SIGTERM."""


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise TerminatedError(f"received signal {signal.Signals(signum).name}")


def run_train(args: argparse.Namespace) -> int:
    """Run the ``train`` subcommand; returns the exit status (0 on success, 1 on failure)."""
    result: dict[str, Any] = {"kind": "TrainResult", "dataTouched": False}
    if args.public:
        result |= {"public": True, "epochsRequested": args.epochs, "batchSize": args.batch_size}
    else:
        result |= {"noiseMultiplier": args.noise_multiplier, "sampleRate": args.sample_rate,
                   "stepsRequested": args.steps, "maxGradNorm": args.max_grad_norm}  # fmt: skip
    progress: DPSGDProgress | PlainProgress = PlainProgress() if args.public else DPSGDProgress()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result.update(_train(args, progress, result))
        result["status"] = "Succeeded"
        return 0
    except Exception as err:  # every failure must still report the steps run
        result.update(status="Failed", error=describe_error(err))
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        result["steps"] = progress.steps
        emit(result, args.termination_log)


def _train(args: argparse.Namespace, progress: DPSGDProgress | PlainProgress, result: dict[str, Any]) -> dict[str, Any]:
    """Steps 1-3 of the module doc; sets ``result["dataTouched"]`` before reading data."""
    config: DPSGDConfig | PlainConfig
    if isinstance(progress, PlainProgress):
        config = PlainConfig(args.epochs, args.batch_size, args.learning_rate, args.optimizer)
    else:
        config = DPSGDConfig(
            noise_multiplier=args.noise_multiplier,
            sample_rate=args.sample_rate,
            steps=args.steps,
            max_grad_norm=args.max_grad_norm,
            learning_rate=args.learning_rate,
            optimizer=args.optimizer,
        )
    output = Path(args.output)
    if output.exists():
        raise ArtifactExistsError(f"artifact {output} already exists; artifacts are never overwritten")
    key = read_data_key(args.data_key_file)
    binding = model_binding(args.model_uid, args.training_version, "fp32")
    spec = ModelSpec(args.architecture, args.entrypoint, args.params)
    resolve_builder(spec)
    device = resolve_device(args.device)
    lora = _lora_settings(args)
    init = _init_weights(args)

    result["dataTouched"] = True
    data_spec = {
        "source": args.data_source,
        "seed": args.seed,
        "samples": args.data_samples,
        "schema": args.data_schema,
        "masking": args.data_masking,
    }
    data = load_dataset(
        args.data_source,
        data_root=args.data_root,
        samples=args.data_samples,
        schema=TableSchema.from_spec(args.data_schema) if args.data_schema else None,
        masking=Masking.from_spec(args.data_masking) if args.data_masking else None,
    )
    torch.manual_seed(args.seed)
    model = build_model(spec, data.input_shape, data.num_classes)
    if init is not None:
        load_init(model, init, spec, data.input_shape, data.num_classes, data.standardization)
    if args.freeze:
        freeze(model, args.freeze)
    mode: ClippingMode | None = None
    if lora is not None:
        add_lora(model, lora)
        problems = unsupported_layers(model)
        if problems and isinstance(config, DPSGDConfig):
            raise LoraError("LoRA needs book-keeping clipping, which does not support: " + "; ".join(problems))
        mode = "bookkeeping"  # never Opacus' hooks with PEFT (opacus#820)
    trainable, frozen = parameter_counts(model)
    inputs = data.model_inputs(data.x_train)
    training: dict[str, Any]
    if isinstance(config, PlainConfig):
        assert isinstance(progress, PlainProgress)
        plain = train_plain(model, inputs, data.y_train, config, device=device, progress=progress)
        training = {"public": True, "steps": plain.steps, "epochs": plain.epochs, "batchSize": config.batch_size,
                    "device": plain.device, "trainExamples": plain.train_examples}  # fmt: skip
    else:
        assert isinstance(progress, DPSGDProgress)
        report = train_dp_sgd(model, inputs, data.y_train, config, device=device, progress=progress, mode=mode)
        training = {"steps": report.steps, "noiseMultiplier": config.noise_multiplier,
                    "sampleRate": config.sample_rate, "maxGradNorm": config.max_grad_norm,
                    "clippingMode": report.clipping_mode, "device": report.device,
                    "trainExamples": report.train_examples, "sampledExamples": report.sampled_examples}  # fmt: skip
    if lora is not None:
        merge_lora(model)
    training |= {
        "learningRate": config.learning_rate,
        "optimizer": config.optimizer,
        "init": None if init is None else init.source,
        "trainableParameters": trainable,
        "frozenParameters": frozen,
        "frozen": list(args.freeze),
        "lora": None if lora is None else lora.describe(),
    }
    record = ModelRecord.from_module(
        spec, model, data.input_shape, data.num_classes, data.standardization, table=data.encoding
    )
    record = record.with_info(data=data_spec, training=training)
    digest = write_artifact(output, dump_fp32(record), key, kind=ARTIFACT_KIND, binding=binding)
    return {**training, "digest": digest, "sizeBytes": output.stat().st_size, "artifact": str(output)}


def _init_weights(args: argparse.Namespace) -> InitWeights | None:
    """The starting weights ``--init-artifact`` or ``--init-file`` name, read and authenticated; None without."""
    artifact_options = (args.init_key_file, args.init_binding, args.init_digest)
    if args.init_file is not None:
        if any(option is not None for option in artifact_options):
            raise InitModelError(
                "--init-key-file, --init-binding and --init-digest go with --init-artifact, not --init-file"
            )
        return read_file_init(args.init_file)
    if args.init_artifact is None:
        if any(option is not None for option in artifact_options):
            raise InitModelError("--init-key-file, --init-binding and --init-digest need --init-artifact")
        return None
    if args.init_key_file is None or args.init_binding is None:
        raise InitModelError("--init-artifact needs --init-key-file and --init-binding")
    return read_artifact_init(args.init_artifact, args.init_key_file, args.init_binding, args.init_digest)


def _lora_settings(args: argparse.Namespace) -> LoraSettings | None:
    """``--lora-rank/-alpha/-targets``, all three or none."""
    given = (args.lora_rank, args.lora_alpha, args.lora_targets)
    if all(option is None for option in given):
        return None
    if any(option is None for option in given):
        raise LoraError("--lora-rank, --lora-alpha and --lora-targets go together")
    return LoraSettings(args.lora_rank, args.lora_alpha, tuple(args.lora_targets))
