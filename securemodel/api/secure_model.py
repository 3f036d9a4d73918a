"""SecureModel: train with DP-SGD, compress, and serve one model behind mutual TLS."""

import itertools
from enum import StrEnum

from securemodel.api.kinds import AGE_COLUMN, READY_COLUMN, Kind, column
from securemodel.api.schema import (
    DNS_1035_LABEL,
    DNS_LABEL,
    Schema,
    array,
    boolean,
    conditions,
    data_source,
    delta,
    duration,
    epsilon,
    free_form,
    integer,
    name_ref,
    number,
    obj,
    observed_generation,
    phase,
    quantity,
    rule,
    string,
)
from securemodel.data.sources import BUILTIN_SIZES


class Phase(StrEnum):
    """``status.phase`` of a SecureModel, in lifecycle order (Failed can follow any)."""

    WAITING_FOR_BUDGET = "WaitingForBudget"
    WAITING_FOR_ROUND = "WaitingForRound"
    WAITING_FOR_SOURCE = "WaitingForSource"
    TRAINING = "Training"
    COMPRESSING = "Compressing"
    DEPLOYING = "Deploying"
    SERVING = "Serving"
    FAILED = "Failed"


class Accountant(StrEnum):
    """Privacy accountants the operator calibrates noise with."""

    PRV = "prv"
    RDP = "rdp"


# DP-SGD settings shared with FederatedRound's per-silo privacy block.
MAX_GRAD_NORM = number("Per-sample gradient clipping norm (> 0).", minimum=0, exclusive_minimum=True, default=1.0)
ACCOUNTANT = string(
    "Accountant used to calibrate the noise: prv or rdp.", enum=list(Accountant), default=Accountant.PRV
)


PVC_FILE = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[^\s?#]+$"

FROM = obj(
    "The weights training starts from (fine-tuning): exactly one of secureModelRef, federatedRoundRef and file. "
    "The training still reads only spec.data under its own claim; the starting weights are post-processing of "
    "whatever produced them (a source trained on private data was paid for by its own budget).",
    {
        "secureModelRef": name_ref(
            "A SecureModel in the same namespace: its trained (fp32) artifact of the version it serves, read "
            "under its data key and accepted only with the digest its train pod reported."
        ),
        "federatedRoundRef": name_ref(
            "A FederatedRound in the same namespace that succeeded: its last global model, read under the round's "
            "data key and accepted only with the digest its aggregator reported."
        ),
        "file": string(
            "pvc://<claim>/<path>: a plain torch state_dict on a PersistentVolumeClaim of the namespace, which the "
            "user declares PUBLIC (it is not encrypted and no budget pays for it).",
            pattern=PVC_FILE,
            max_length=512,
            rules=[rule("!self.matches('/[.][.]?(/|$)')", "the path inside the claim may not contain '.' or '..' segments")],
        ),
    },
    rules=[
        rule(
            "[has(self.secureModelRef), has(self.federatedRoundRef), has(self.file)].filter(x, x).size() == 1",
            "exactly one of spec.model.from.secureModelRef, federatedRoundRef and file must be set",
        ),
    ],
)

FINE_TUNE = obj(
    "Which parameters fine-tuning trains (only with spec.model.from). Only trained parameters enter DP-SGD; "
    "frozen ones stay bit-identical.",
    {
        "freeze": array(
            "Parameter-name prefixes held fixed, e.g. net.0 (a prefix matches a name equal to it or starting with "
            "it and a dot).",
            string("A parameter-name prefix.", pattern=r"^[A-Za-z0-9_.]+$", max_length=253),
            max_items=64,
            list_type="set",
        ),
        "lora": obj(
            "LoRA adapters (PEFT) on the named Linear modules; their base weights are frozen, and the adapters are "
            "merged into them after training.",
            {
                "rank": integer("Rank r of the adapters (≥ 1).", minimum=1, maximum=1024),
                "alpha": number("Scaling α (> 0): the update is (α / r)·B·A.", minimum=0, exclusive_minimum=True),
                "targetModules": array(
                    "Names of the Linear modules to adapt, e.g. net.0.",
                    string("A module name.", pattern=r"^[A-Za-z0-9_.]+$", max_length=253),
                    min_items=1,
                    max_items=64,
                    list_type="set",
                ),
            },
            required=["rank", "alpha", "targetModules"],
        ),
    },
)

MODEL = obj(
    "What to serve: a built-in architecture or a builder callable in a custom worker image trained here, or the "
    "global model of a FederatedRound (fromRound), which is compressed and served without training.",
    {
        "architecture": string(
            "A model the worker image ships, e.g. mlp or cnn.",
            pattern=r"^[a-z][a-z0-9_-]*$",
            max_length=63,
        ),
        "entrypoint": string(
            "A builder callable as module:function, e.g. pkg.mod:build.",
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
            max_length=253,
        ),
        "image": string(
            "Worker image for this model's pods (default: the operator's worker image); "
            "use it to bring the module of an entrypoint.",
            min_length=1,
            max_length=512,
        ),
        "params": free_form("Keyword arguments passed to the builder, e.g. {hidden: [64, 32]}."),
        "from": FROM,
        "fineTune": FINE_TUNE,
        "fromRound": name_ref(
            "A FederatedRound in the same namespace whose global model is compressed and served as it is: no "
            "training pod and no claim (the round's silos paid for its privacy). Its architecture is the round's. "
            "The model waits while the round is missing or running, and fails if the round failed. Not with "
            "architecture, entrypoint, image, params or spec.privacy."
        ),
    },
    rules=[
        rule(
            "[has(self.architecture), has(self.entrypoint), has(self.fromRound)].filter(x, x).size() == 1",
            "exactly one of spec.model.architecture, spec.model.entrypoint and spec.model.fromRound must be set",
        ),
        rule(
            "!has(self.fromRound) || (!has(self.image) && !has(self.params))",
            "spec.model.fromRound serves the round's model with the operator's worker image: image and params "
            "are not allowed with it",
            field_path=".fromRound",
            reason="FieldValueForbidden",
        ),
        rule(
            "!has(self.fromRound) || !has(self.from)",
            "spec.model.from starts a training; spec.model.fromRound serves a round's model without one",
            field_path=".from",
            reason="FieldValueForbidden",
        ),
        rule(
            "!has(self.fineTune) || has(self.from)",
            "spec.model.fineTune needs spec.model.from: the weights it fine-tunes",
            field_path=".fineTune",
            reason="FieldValueRequired",
        ),
    ],
)

def samples() -> Schema:
    """``data.samples``: the declared size of a ``pvc://`` file (see :data:`DATA_SIZE_RULES`)."""
    return integer(
        "Number of examples in the pvc:// file (before sharding). Required with a "
        "pvc:// source: the operator computes the sample rate q from it without reading the data, so it must be "
        "the file's true size. Not allowed with builtin://, whose sizes are known.",
        minimum=1,
        fmt="int64",
    )


# Rules of an object with a data ``source`` and ``samples``: built-in names the operator can size,
# and samples exactly when the source is a pvc:// file.
DATA_SIZE_RULES: tuple[Schema, ...] = (
    rule(
        "!self.source.startsWith('builtin://')"
        f" || self.source.matches('^builtin://({'|'.join(sorted(BUILTIN_SIZES))})([?]|$)')",
        f"unknown built-in dataset; choose one of {', '.join(sorted(BUILTIN_SIZES))}",
        field_path=".source",
    ),
    rule(
        "!self.source.startsWith('pvc://') || has(self.samples)",
        "samples is required with a pvc:// source: the number of examples in the file",
        field_path=".samples",
        reason="FieldValueRequired",
    ),
    rule(
        "!self.source.startsWith('builtin://') || !has(self.samples)",
        "samples is only allowed with a pvc:// source: the size of a built-in dataset is known",
        field_path=".samples",
        reason="FieldValueForbidden",
    ),
)

# A column of a table: what a CSV header or a Parquet field may be called.
COLUMN = string("A column name of the table.", min_length=1, max_length=128)
TABLE_SOURCE = "self.source.matches('^pvc://.*[.](csv|parquet)$')"


def columns(description: str, max_items: int = 64) -> Schema:
    """A set of column names."""
    return array(description, COLUMN, max_items=max_items, list_type="set")


FEATURE = obj(
    "An input column: numeric (scaled from its public bounds) or categorical (one-hot over its categories).",
    {
        "name": COLUMN,
        "type": string("numeric or categorical.", enum=["numeric", "categorical"]),
        "min": number("Public lower bound of a numeric column: smaller values are clipped to it."),
        "max": number("Public upper bound of a numeric column: larger values are clipped to it."),
        "categories": array(
            "The declared values of a categorical column, in one-hot order; any other value is an error.",
            string("A category.", max_length=256),
            min_items=1,
            max_items=256,
            list_type="set",
        ),
    },
    required=["name", "type"],
    rules=[
        rule(
            "self.type != 'numeric' || (has(self.min) && has(self.max) && self.min < self.max && !has(self.categories))",
            "a numeric feature needs public bounds min < max (and no categories)",
        ),
        rule(
            "self.type != 'categorical' || (has(self.categories) && !has(self.min) && !has(self.max))",
            "a categorical feature needs its categories (and no min or max)",
        ),
    ],
)

SCHEMA = obj(
    "What the data holds, declared so the operator knows the input shape and the classes without reading it, "
    "and so nothing about the encoding is learned from private rows. Required with a pvc:// source.",
    {
        "label": obj(
            "The label: its classes (class i is classes[i]) and, for a .csv or .parquet table, its column. In an "
            ".npz, y holds class indices.",
            {
                "column": COLUMN,
                "classes": array(
                    "The class names (a label cell matches by its text; integers as digits).",
                    string("A class name.", max_length=256),
                    min_items=2,
                    max_items=1000,
                    list_type="set",
                ),
            },
            required=["classes"],
        ),
        "features": array(
            "The input columns of a table, in input order (not for .npz, whose x is the input).",
            FEATURE,
            min_items=1,
            max_items=256,
            list_type="map",
            map_keys=["name"],
        ),
    },
    required=["label"],
)

GENERALIZE = obj(
    "Coarsen a column: a date to its year or month, a number to bands, a code such as a postcode to a prefix.",
    {
        "column": COLUMN,
        "date": string("year or month: an ISO 8601 date becomes its year (a number) or YYYY-MM.",
                       enum=["year", "month"]),
        "bandWidth": number("A number becomes the lower edge of its band of this width.", minimum=0,
                            exclusive_minimum=True),
        "prefix": integer("A code becomes its first this-many characters (spaces removed, upper case).",
                          minimum=1, maximum=16),
    },
    required=["column"],
    rules=[
        rule(
            "[has(self.date), has(self.bandWidth), has(self.prefix)].filter(x, x).size() == 1",
            "set exactly one of date, bandWidth and prefix",
        )
    ],
)  # fmt: skip

# The masking rules' column lists, as CEL expressions.
MASKED = {
    "drop": "self.drop",
    "pseudonymize": "self.pseudonymize",
    "redact": "self.redact",
    "generalize": "self.generalize.map(g, g.column)",
}

MASKING = obj(
    "Masking of a .csv or .parquet table: training, evaluation and serving see only the masked view. Every "
    "column of the table must be a feature, the label, or named here.",
    {
        "drop": columns("Columns removed before anything reads the table."),
        "pseudonymize": columns(
            "Identifier columns replaced by their keyed HMAC-SHA256 (equal values stay equal, so joins work)."
        ),
        "keySecretRef": obj(
            "The Secret (in the model's namespace) whose key holds the pseudonymization key, at least 32 bytes; "
            "mounted into the pods, never copied, logged or stored.",
            {
                "name": name_ref("The Secret's name."),
                "key": string("The key in the Secret.", pattern=r"^[-._a-zA-Z0-9]+$", max_length=253,
                              default="key"),
            },
            required=["name"],
        ),
        "generalize": array("Columns coarsened before use; a feature may be generalized.", GENERALIZE,
                            max_items=64, list_type="map", map_keys=["column"]),
        "redact": columns(
            "Free-text columns passed through Microsoft Presidio's pattern recognizers (e-mail, phone, card, IBAN, "
            "national IDs...) and cleared of words of the dropped and pseudonymized columns; not model inputs."
        ),
        "phoneRegions": array(
            "Regions (ISO 3166 alpha-2) whose phone-number formats redaction recognises (default US and GB).",
            string("A region code.", pattern="^[A-Z]{2}$"),
            min_items=1,
            max_items=16,
            list_type="set",
        ),
    },
    rules=[
        rule(
            "!has(self.pseudonymize) || size(self.pseudonymize) == 0 || has(self.keySecretRef)",
            "keySecretRef is required to pseudonymize: the Secret holding the HMAC key",
            field_path=".keySecretRef",
            reason="FieldValueRequired",
        ),
        rule(
            " && ".join(
                f"(!has(self.{a}) || !has(self.{b}) || !{MASKED[a]}.exists(c, c in {MASKED[b]}))"
                for a, b in itertools.combinations(MASKED, 2)
            ),
            "a column may be named by only one masking rule",
        ),
    ],
)

# Rules that tie source, schema and masking together.
DATA_TABLE_RULES: tuple[Schema, ...] = (
    rule(
        "!self.source.startsWith('pvc://') || self.source.matches('[.](csv|parquet|npz)$')",
        "a pvc:// file must be a .csv, .parquet or .npz",
        field_path=".source",
    ),
    rule(
        "!self.source.startsWith('pvc://') || has(self.schema)",
        "schema is required with a pvc:// source: it declares the classes (and a table's columns)",
        field_path=".schema",
        reason="FieldValueRequired",
    ),
    rule(
        "!self.source.startsWith('builtin://') || (!has(self.schema) && !has(self.masking))",
        "schema and masking are only for pvc:// sources: a built-in dataset's are published",
        field_path=".schema",
        reason="FieldValueForbidden",
    ),
    rule(
        f"!({TABLE_SOURCE}) || !has(self.schema) || (has(self.schema.label.column) && has(self.schema.features))",
        "a .csv or .parquet table needs schema.label.column and schema.features",
        field_path=".schema",
        reason="FieldValueRequired",
    ),
    rule(
        "!self.source.endsWith('.npz') || !has(self.schema) || (!has(self.schema.label.column)"
        " && !has(self.schema.features) && !has(self.masking))",
        "an .npz holds arrays x and y: its schema declares only the label's classes, and it has no masking",
        field_path=".schema",
        reason="FieldValueForbidden",
    ),
    rule(
        "!has(self.schema) || !has(self.schema.features) || !has(self.schema.label.column)"
        " || !self.schema.features.exists(f, f.name == self.schema.label.column)",
        "the label column cannot also be a feature",
        field_path=".schema.features",
    ),
    rule(
        "!has(self.masking) || !has(self.schema) || !has(self.schema.features)"
        " || self.schema.features.all(f, !(has(self.masking.drop) && f.name in self.masking.drop)"
        " && !(has(self.masking.pseudonymize) && f.name in self.masking.pseudonymize)"
        " && !(has(self.masking.redact) && f.name in self.masking.redact))",
        "a feature column can only be generalized, not dropped, pseudonymized or redacted",
        field_path=".masking",
    ),
    rule(
        "!has(self.masking) || !has(self.schema) || !has(self.schema.label.column)"
        " || !((has(self.masking.drop) && self.schema.label.column in self.masking.drop)"
        " || (has(self.masking.pseudonymize) && self.schema.label.column in self.masking.pseudonymize)"
        " || (has(self.masking.redact) && self.schema.label.column in self.masking.redact)"
        " || (has(self.masking.generalize)"
        " && self.masking.generalize.exists(g, g.column == self.schema.label.column)))",
        "the label column cannot be masked",
        field_path=".masking",
    ),
)

# builtin://<dataset>?part=evaluation or pvc://<claim>/<path>: what spec.data.evaluation.source may be.
EVALUATION_SOURCE = (
    r"^(builtin://[a-z][a-z0-9_]*\?part=evaluation"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[^\s?#]+)$"
)
PVC_FILE_TYPE = "[.](csv|parquet|npz)$"

EVALUATION = obj(
    "Data the user DECLARES PUBLIC, on which the trained and the compressed model are evaluated: their accuracy "
    "on all of it is published exactly, unaccounted, in status.model, Events and the Accuracy column. Declare "
    "here only data whose records anyone may see and that the model never trains on. Without evaluation, no "
    "accuracy is measured or published: nothing computed from the private data leaves the pods outside the "
    "privacy accounting.",
    {
        "source": string(
            "builtin://<dataset>?part=evaluation (the public evaluation part of the built-in training dataset, which "
            "training never reads) or pvc://<claim>/<path> (another .csv, .parquet or .npz file of the training "
            "file's type, encoded with spec.data.schema and spec.data.masking).",
            pattern=EVALUATION_SOURCE,
            max_length=512,
            rules=[
                rule(
                    "!self.startsWith('pvc://') || !self.matches('/[.][.]?(/|$)')",
                    "the path inside the claim may not contain '.' or '..' segments",
                ),
                rule(
                    f"!self.startsWith('pvc://') || self.matches('{PVC_FILE_TYPE}')",
                    "a pvc:// file must be a .csv, .parquet or .npz",
                ),
            ],
        ),
        "samples": samples(),
    },
    required=["source"],
    rules=[dict(each) for each in DATA_SIZE_RULES],  # copies: the generated YAML has no anchors
)

DATA = obj(
    "The training data, all of which DP-SGD reads (none is held out), and an optional public evaluation source. "
    "With spec.model.fromRound (optional there) nothing trains: source names the round's built-in data set and "
    "only evaluation is read, to measure the accuracy of the round's model.",
    {
        "source": data_source(
            "builtin://<dataset>[?shard=i&of=n] (the training part of a scikit-learn dataset) or "
            "pvc://<claim>/<path> (a .csv, .parquet or .npz file on a PersistentVolumeClaim in the model's namespace)."
        ),
        "samples": samples(),
        "schema": SCHEMA,
        "masking": MASKING,
        "evaluation": EVALUATION,
    },
    required=["source"],
    rules=(
        *DATA_SIZE_RULES,
        *DATA_TABLE_RULES,
        rule(
            "!has(self.evaluation) || !self.source.startsWith('builtin://')"
            " || self.evaluation.source == self.source.find('^builtin://[a-z][a-z0-9_]*') + '?part=evaluation'",
            "a built-in dataset is evaluated on its own public evaluation part: builtin://<dataset>?part=evaluation",
            field_path=".evaluation.source",
        ),
        rule(
            "!has(self.evaluation) || !self.source.startsWith('pvc://')"
            f" || (self.evaluation.source.startsWith('pvc://')"
            f" && self.evaluation.source.find('{PVC_FILE_TYPE}') == self.source.find('{PVC_FILE_TYPE}'))",
            "a pvc:// training file is evaluated on a pvc:// file of the same type (it is encoded the same way)",
            field_path=".evaluation.source",
        ),
        rule(
            "!has(self.evaluation) || self.evaluation.source != self.source",
            "the evaluation source cannot be the training data: it is published unaccounted",
            field_path=".evaluation.source",
        ),
    ),
)

# The fields of spec.privacy's budget form: none of them goes with public (see PRIVACY).
BUDGET_FORM = ("budgetRef", "epsilon", "delta", "maxGradNorm", "accountant")

PRIVACY = obj(
    "Differential privacy of the training: either DP-SGD paid from a PrivacyBudget (budgetRef and epsilon), or "
    "{public: true}, training without differential privacy on data no budget of the namespace covers. Which of "
    "the two a model is never changes. The budget form's delta, maxGradNorm and accountant have no schema "
    "default (so that {public: true} stays exactly that); the operator takes 1e-5, 1.0 and prv for them.",
    {
        "budgetRef": name_ref(
            "A PrivacyBudget in the same namespace that pays for the training. Immutable.",
            rules=[
                rule(
                    "self == oldSelf",
                    "spec.privacy.budgetRef is immutable: ε reserved from a budget stays charged to it",
                )
            ],
        ),
        "epsilon": epsilon("The most ε this training may spend (> 0); reserved from the budget before training."),
        "delta": delta("δ of the guarantee (0 < δ < 1); 1e-5 when omitted."),
        "maxGradNorm": number("Per-sample gradient clipping norm (> 0); 1.0 when omitted.", minimum=0,
                              exclusive_minimum=True),
        "accountant": string("Accountant used to calibrate the noise: prv or rdp; prv when omitted.",
                             enum=list(Accountant)),
        "public": boolean(
            "true: train WITHOUT differential privacy (plain SGD or Adam), claiming nothing, on spec.data.source, "
            "which the user declares public. Only true is allowed, and only alone. The operator refuses it "
            "(condition DataProtected, nothing is trained) while any PrivacyBudget of the namespace covers any of "
            "the data, and decides only once it has read every budget of the namespace. Typical use: pretraining "
            "on public data that a private fine-tuning (spec.model.from.secureModelRef) starts from."
        ),
    },
    rules=[
        rule(
            "!has(self.public) || self.public",
            "spec.privacy.public may only be true: to train with differential privacy, omit it and name budgetRef "
            "and epsilon",
            field_path=".public",
        ),
        rule(
            "!has(self.public) || " + " && ".join(f"!has(self.{name})" for name in BUDGET_FORM),
            "spec.privacy is either {public: true} alone or the budget form: with public, "
            f"{', '.join(BUDGET_FORM)} are not allowed",
            field_path=".public",
            reason="FieldValueForbidden",
        ),
        rule(
            "has(self.public) || has(self.budgetRef)",
            "spec.privacy.budgetRef is required to train with differential privacy (or set spec.privacy.public: "
            "true for data no budget covers)",
            field_path=".budgetRef",
            reason="FieldValueRequired",
        ),
        rule(
            "has(self.public) || has(self.epsilon)",
            "spec.privacy.epsilon is required to train with differential privacy: the most ε it may spend",
            field_path=".epsilon",
            reason="FieldValueRequired",
        ),
        rule(
            "has(self.public) == has(oldSelf.public)",
            "a SecureModel cannot switch between public training and training under a PrivacyBudget: create a "
            "new one",
            field_path=".public",
        ),
    ],
)

TRAINING = obj(
    "Optimisation hyper-parameters.",
    {
        "epochs": integer("Passes over the data (≥ 1).", minimum=1, maximum=100000, default=10),
        "batchSize": integer("Expected batch size; sample rate q = batchSize / N (≥ 1).", minimum=1, default=64),
        "learningRate": number("Learning rate (> 0).", minimum=0, exclusive_minimum=True, default=0.1),
        "optimizer": string("sgd or adam.", enum=["sgd", "adam"], default="sgd"),
        "seed": integer(
            "Seed of the weight initialisation (and, with spec.privacy.public, of the shuffling): DP-SGD's noise "
            "and batch sampling always come from a secret source.",
            minimum=0,
            default=0,
            fmt="int64",
        ),
    },
    default={},
)

COMPRESSION = obj(
    "Compression after training.",
    {
        "pruning": obj(
            "Magnitude pruning.",
            {
                "sparsity": number(
                    "Fraction of weights set to zero, in [0, 1).",
                    minimum=0,
                    maximum=1,
                    exclusive_maximum=True,
                    default=0.0,
                ),
            },
            default={},
        ),
        "quantization": string("int8 or none.", enum=["int8", "none"], default="none"),
    },
    default={},
)

SERVING = obj(
    "The inference service (Open Inference Protocol v2 over mutual TLS).",
    {
        "replicas": integer("Serving pods (≥ 0; 0 keeps the model without serving it).", minimum=0, default=1),
        "clients": array(
            "Client identities; each gets a Secret <model>-client-<name> with tls.crt, tls.key and ca.crt. The "
            "serving pods answer only the certificates currently issued to these clients: a client removed from "
            "the list, or a certificate a forced rotation replaced, is refused, though unexpired, as soon as the pods see the "
            "updated allow-list ConfigMap (the kubelet refreshes mounted ConfigMaps within its sync period, a "
            "minute by default). Rate limits go in clientLimits (items stay plain names: a structural schema "
            "cannot validate an item that may be a string or an object).",
            string("A client name (DNS-1123 label).", pattern=DNS_LABEL, max_length=63),
            max_items=64,
            list_type="set",
        ),
        "clientLimits": array(
            "Request rate limits of clients named in clients; a client without an entry is not limited. A "
            "request beyond its client's limit is answered 429 with Retry-After.",
            obj(
                "The most requests one client may send to the model, as a token bucket.",
                {
                    "name": string("A client in clients.", pattern=DNS_LABEL, max_length=63),
                    "requestsPerSecond": number(
                        "Sustained requests per second across all serving pods (> 0). Each of the replicas "
                        "pods allows its share, requestsPerSecond / replicas, so one keep-alive connection, "
                        "which reaches one pod, gets that share.",
                        minimum=0,
                        maximum=1_000_000,
                        exclusive_minimum=True,
                    ),
                    "burst": integer(
                        "Requests a client may send at once after a pause, across all serving pods (≥ 1); "
                        "each pod allows burst / replicas, rounded up.",
                        minimum=1,
                        maximum=1_000_000,
                    ),
                },
                required=["name", "requestsPerSecond", "burst"],
            ),
            max_items=64,
            list_type="map",
            map_keys=["name"],
        ),
        "certificateLifetime": duration(
            "Lifetime of server and client certificates; they are renewed before expiry.",
            default="720h",
            at_least="1h",
            at_most="8760h",
        ),
    },
    default={},
    rules=[
        rule(
            "!has(self.clientLimits) || self.clientLimits.all(l, has(self.clients) && l.name in self.clients)",
            "every clientLimits name must be one of clients",
            field_path=".clientLimits",
        ),
    ],
)

RESOURCES = obj(
    "Resources of the training pod.",
    {
        "gpus": integer("nvidia.com/gpu devices (≥ 0).", minimum=0, maximum=16, default=0),
        "cpu": quantity("CPU, e.g. 1 or 500m.", default="1"),
        "memory": quantity("Memory, e.g. 2Gi.", default="2Gi"),
    },
    default={},
)

SPEC = obj(
    "A model to train privately, compress and serve.",
    {
        "model": MODEL,
        "data": DATA,
        "privacy": PRIVACY,
        "training": TRAINING,
        "compression": COMPRESSION,
        "serving": SERVING,
        "resources": RESOURCES,
    },
    required=["model"],
    rules=[
        rule(
            "has(self.model.fromRound) || has(self.data)",
            "spec.data is required to train: the data DP-SGD reads",
            field_path=".data",
            reason="FieldValueRequired",
        ),
        rule(
            "has(self.model.fromRound) || has(self.privacy)",
            "spec.privacy is required to train: the budget and ε the training may spend, or {public: true}",
            field_path=".privacy",
            reason="FieldValueRequired",
        ),
        rule(
            "!has(self.model.fromRound) || !has(self.privacy)",
            "spec.privacy is not allowed with spec.model.fromRound: nothing is trained or claimed, the round's "
            "silos paid for the model's privacy",
            field_path=".privacy",
            reason="FieldValueForbidden",
        ),
        rule(
            "!has(self.model.fromRound) || !has(self.data) || self.data.source.startsWith('builtin://')",
            "with spec.model.fromRound, spec.data only names the round's built-in data set and its public "
            "evaluation part (a FederatedRound evaluates on built-in data only)",
            field_path=".data.source",
        ),
        rule(
            "has(self.model.fromRound) == has(oldSelf.model.fromRound)",
            "a SecureModel cannot switch between training and serving a FederatedRound's model: create a new one",
            field_path=".model",
        ),
    ],
)

STATUS = obj(
    "Progress and results.",
    {
        "phase": phase("Where the model is in its lifecycle.", list(Phase)),
        "observedGeneration": observed_generation(),
        "conditions": conditions(),
        "privacy": obj(
            "The privacy of the training: what was claimed from the budget, the noise calibrated for it, "
            "and what was spent; with spec.model.fromRound, the round that paid for it; with spec.privacy.public, "
            "that there is none.",
            {
                "public": boolean(
                    "true with spec.privacy.public: trained without differential privacy, nothing claimed or spent "
                    "(the fields about ε, noise and the accountant are absent)."
                ),
                "epsilonClaimed": number(
                    "ε claimed from the budget for this training, the target σ is calibrated for; held for "
                    "the model once the BudgetReserved condition is True."
                ),
                "epsilonSpent": number("ε of the steps actually run, per the accountant."),
                "delta": number("δ of the guarantee."),
                "noiseMultiplier": number("σ the operator calibrated."),
                "sampleRate": number("Poisson sample rate q = batchSize / training examples."),
                "steps": integer("Optimiser steps the training runs (and, after it, ran).", fmt="int64"),
                "accountant": string("Accountant used."),
                "neighbouring": string(
                    "The neighbouring relation ε is stated for: add-remove (one person's record added to or removed "
                    "from the training data). The number of training examples is public (it sets q)."
                ),
                "federatedRound": string(
                    "With spec.model.fromRound: the FederatedRound that trained the model. This model made no claim; "
                    "each silo's ε, σ, q and steps are in that round's status.participants, and the fields above "
                    "other than delta are absent."
                ),
                "note": string("Where the privacy of the served model comes from, in words."),
            },
        ),
        "model": obj(
            "The trained artifact.",
            {
                "digest": string("sha256 of the encrypted artifact."),
                "sizeBytes": integer("Size before compression.", fmt="int64"),
                "compressedSizeBytes": integer("Size after compression.", fmt="int64"),
                "accuracy": number(
                    "Accuracy before compression on all of spec.data.evaluation (public data); absent without it."
                ),
                "compressedAccuracy": number(
                    "Accuracy after compression on all of spec.data.evaluation (public data); absent without it."
                ),
                "sparsity": number("Fraction of zero weights."),
            },
        ),
        "endpoint": string("HTTPS URL of the inference service."),
        "version": string(
            "The version of the spec the conditions, privacy and model describe: a hash of its model, data, "
            "training, privacy and compression. A change of any of them makes a new version; a new training "
            "(under a new claim) only if model, data, training or privacy changed."
        ),
        "servingVersion": string("The version the endpoint serves; the previous one serves until a new one is ready."),
    },
)

# The name prefixes its children's names; the longest, "<name>-compress-<9-character version>", is a
# Job name, which its pods carry as a label value: at most 63 characters.
NAME_MAX_LENGTH = 63 - len("-compress-") - 9

KIND = Kind(
    kind="SecureModel",
    plural="securemodels",
    short_name="smodel",
    description=(
        "A model trained with differentially private SGD against a PrivacyBudget, pruned and "
        "quantised, and served over mutual TLS with the Open Inference Protocol."
    ),
    spec=SPEC,
    status=STATUS,
    printer_columns=(
        column("Phase", ".status.phase"),
        READY_COLUMN,
        column("Epsilon", ".spec.privacy.epsilon", "number", "Most ε the training may spend"),
        column("Spent", ".status.privacy.epsilonSpent", "number", "ε spent"),
        column("Accuracy", ".status.model.compressedAccuracy", "number",
               "Accuracy of the compressed model on the public spec.data.evaluation"),
        column("Endpoint", ".status.endpoint"),
        column("Version", ".status.version", description="The version being made or served", priority=1),
        column("Serving", ".status.servingVersion", description="The version that answers", priority=1),
        AGE_COLUMN,
    ),
    # The name becomes a Service name (DNS-1035) and prefixes the names of Jobs and Secrets.
    name_max_length=NAME_MAX_LENGTH,
    name_pattern=DNS_1035_LABEL,
)
