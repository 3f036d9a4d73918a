"""The aggregator starts only from the final global model of the round it was told to start from."""

from pathlib import Path

import pytest
from federated_support import run_settings
from flwr.app import Context, RecordDict

from securemodel.crypto.artifacts import ArtifactBindingError, new_data_key, write_artifact
from securemodel.models import ARTIFACT_KIND, ModelRecord, dump_fp32
from securemodel.workers.arguments import round_binding
from securemodel.workers.federated.contract import RESULT_FILE
from securemodel.workers.federated.server_app import run_federation

PREVIOUS, OTHER = "9a1d3c5e-0b2f-4a6c-8e1d-3f5a7c9e0b24", "c3e5a7b9-1d2f-4e6a-8c0b-5d7f9a1c3e46"


@pytest.mark.parametrize(("uid", "written"), [(PREVIOUS, 1), (PREVIOUS, 2), (OTHER, 3)])
def test_another_file_than_the_previous_rounds_final_model_fails_the_run_before_anything_is_used(
    tmp_path: Path, initial_record: ModelRecord, uid: str, written: int
) -> None:
    """The previous round ran 3 rounds: its round-001 and round-002 (same run, same key) and another round's
    final model (same key here, to show the binding alone refuses it) all authenticate as model artifacts."""
    previous_key, round_key = tmp_path / "previous.key", tmp_path / "round.key"
    previous_key.write_bytes(new_data_key())
    round_key.write_bytes(new_data_key())
    model = tmp_path / f"round-{written:03d}.model"
    write_artifact(model, dump_fp32(initial_record), previous_key.read_bytes(), kind=ARTIFACT_KIND,
                   binding=round_binding(uid, written))  # fmt: skip
    (tmp_path / "out").mkdir()
    settings = run_settings(initial_model=model, initial_model_key_file=previous_key, initial_round_uid=PREVIOUS,
                            initial_round=3, key_file=round_key, output_dir=tmp_path / "out")  # fmt: skip
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=settings.to_config())

    with pytest.raises(ArtifactBindingError, match=f"round: {written}, expected 3|uid: {OTHER}, expected {PREVIOUS}"):
        run_federation(None, context, settings)  # type: ignore[arg-type]  # no silo is ever asked
    assert not (tmp_path / "out" / RESULT_FILE).exists()
