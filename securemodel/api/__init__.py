"""The ``securemodel.io/v1alpha1`` API: the one source of truth for the three CRD schemas."""

from securemodel.api import federated_round, privacy_budget, secure_model
from securemodel.api.kinds import API_VERSION, CATEGORY, GROUP, VERSION, Kind

KINDS: tuple[Kind, ...] = (privacy_budget.KIND, secure_model.KIND, federated_round.KIND)

__all__ = ["API_VERSION", "CATEGORY", "GROUP", "KINDS", "VERSION", "Kind"]
